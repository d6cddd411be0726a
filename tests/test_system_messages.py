"""System messages where clients put them: first, in the middle, twice; Mistral's system prompt
folded into the last user turn; verification for the serving Ollama's prompt building.

Every claim is re-rendered by the real Go oracle, and each template is also checked on
conversations written here, held out from the packaged probes (the issue's shortfall came from
others' conversations the probes did not cover).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.chat_template import TemplateSource, load_probes, translate_template
from deploy_to_ollama.chat_template.hf_render import render_hf
from deploy_to_ollama.chat_template.server_rules import has_consecutive_tool_results
from deploy_to_ollama.chat_template.verify import (
    json_equivalent,
    strip_bos,
    unset_think_kwargs,
    verify_template,
)
from deploy_to_ollama.errors import TemplateRenderError
from support.go_oracle import to_ollama_api_messages
from support.shared import CHAT_TEMPLATES_DIR, corpus_records, require_shared

# DeepSeek-R1 style: the last system message, wherever it stands, printed once before the turns.
HOISTED_LAST = (
    "{{ bos_token }}{% set ns = namespace(sys='') %}{% for m in messages %}"
    "{% if m.role == 'system' %}{% set ns.sys = m.content %}{% endif %}{% endfor %}{{ ns.sys }}"
    "{% for m in messages %}{% if m.role == 'user' %}<|U|>{{ m.content }}"
    "{% elif m.role == 'assistant' %}<|A|>{{ m.content }}<|fin|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|A|>{% endif %}"
)

# Every system message joined with a blank line, printed once in a block before the turns.
HOISTED_JOINED = (
    "{% set ns = namespace(sys='', first=true) %}{% for m in messages %}"
    "{% if m.role == 'system' %}{% if ns.first %}{% set ns.sys = m.content %}"
    "{% set ns.first = false %}{% else %}{% set ns.sys = ns.sys + '\\n\\n' + m.content %}"
    "{% endif %}{% endif %}{% endfor %}{% if ns.sys %}### System:\n{{ ns.sys }}\n\n{% endif %}"
    "{% for m in messages %}{% if m.role == 'user' %}### User:\n{{ m.content }}\n\n"
    "{% elif m.role == 'assistant' %}### Assistant:\n{{ m.content }}\n\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}### Assistant:\n{% endif %}"
)

# Llama-3 style: each message a header turn where it stands, system ones included.
IN_PLACE = (
    "{{ bos_token }}{% for m in messages %}<|hd|>{{ m.role }}<|/hd|>\n\n"
    "{{ m.content | trim }}<|eot|>{% endfor %}"
    "{% if add_generation_prompt %}<|hd|>assistant<|/hd|>\n\n{% endif %}"
)

# Dolphin style: a default system turn only when no message at all is a system one.
DEFAULT_UNLESS_ANY = (
    "{% set ns = namespace(found=false) %}{% for m in messages %}"
    "{% if m.role == 'system' %}{% set ns.found = true %}{% endif %}{% endfor %}"
    "{% if not ns.found %}<|im_start|>system\nYou are Quill, a terse helper.<|im_end|>\n"
    "{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# A system message counts only first; later ones vanish from the prompt.
DROPS_LATER = (
    "{% for m in messages %}{% if m.role == 'system' %}{% if loop.first %}"
    "<<{{ m.content }}>>\n{% endif %}{% elif m.role == 'user' %}Q: {{ m.content }}\n"
    "{% else %}A: {{ m.content }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}A:{% endif %}"
)

# Mistral v0.3 / Nemo / Small: the system prompt goes into the last user turn, and roles that
# do not alternate raise.
MISTRAL_V3 = (
    '{%- if messages[0]["role"] == "system" %}{%- set system_message = messages[0]["content"] %}'
    "{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}"
    "{%- endif %}{{- bos_token }}{%- for message in loop_messages %}"
    '{%- if (message["role"] == "user") != (loop.index0 % 2 == 0) %}'
    '{{- raise_exception("After the optional system message, conversation roles must '
    'alternate user/assistant/user/assistant/...") }}{%- endif %}'
    '{%- if message["role"] == "user" %}{%- if loop.last and system_message is defined %}'
    '{{- "[INST] " + system_message + "\\n\\n" + message["content"] + "[/INST]" }}'
    '{%- else %}{{- "[INST] " + message["content"] + "[/INST]" }}{%- endif %}'
    '{%- elif message["role"] == "assistant" %}{{- " " + message["content"] + eos_token}}'
    '{%- else %}{{- raise_exception("Only user and assistant roles are supported!") }}'
    "{%- endif %}{%- endfor %}"
)

# Conversations of our own, none of them a packaged probe.
HELD_OUT_MID_SYSTEM: list[list[dict[str, Any]]] = [
    [
        {"role": "user", "content": "Plan a picnic."},
        {"role": "assistant", "content": "Bring bread, cheese and 🍓."},
        {"role": "system", "content": 'Be brief; quote "exactly" what\'s asked.'},
        {"role": "user", "content": "What about drinks?"},
        {"role": "assistant", "content": "Lemonade."},
        {"role": "user", "content": "Danke — und Servietten?"},
    ],
    [
        {"role": "system", "content": "Du bist hilfsbereit."},
        {"role": "user", "content": "Wie spät ist es?"},
        {"role": "assistant", "content": "Das weiß ich nicht."},
        {"role": "user", "content": "Schätze!"},
        {"role": "assistant", "content": "Etwa Mittag."},
        {"role": "system", "content": "Antworte ab jetzt auf Englisch."},
        {"role": "user", "content": "And now?"},
    ],
    [
        {"role": "user", "content": "ping"},
        {"role": "assistant", "content": "pong"},
        {"role": "system", "content": "  Padded rule.  \n"},
        {"role": "user", "content": "ping again"},
    ],
]

HELD_OUT_ALTERNATING: list[list[dict[str, Any]]] = [
    [
        {"role": "system", "content": "Reply in haiku."},
        {"role": "user", "content": "Spring?"},
        {"role": "assistant", "content": "Blossoms on the path"},
        {"role": "user", "content": "Winter?"},
        {"role": "assistant", "content": 'Snow hides the "old" road'},
        {"role": "user", "content": "Summer — 夏?"},
    ],
    [
        {"role": "user", "content": "One."},
        {"role": "assistant", "content": "Two."},
        {"role": "user", "content": "Three."},
    ],
    [
        {"role": "system", "content": "Count."},
        {"role": "user", "content": "Start."},
        {"role": "assistant", "content": "1, 2,"},
    ],
]


def _source(template: str, **kw: Any) -> TemplateSource:
    tokens = {"bos_token": "<s>", "eos_token": "</s>"} | kw
    return TemplateSource(template=template, origin=Path("t.jinja"), kind="jinja", **tokens)


def _status(result: Any, probe: str) -> Any:
    return next(p for p in result.report.probes if p.probe == probe)


def _jinja(
    source: TemplateSource, messages: list[dict[str, Any]], go_template: str = ""
) -> str | None:
    """transformers' rendering of a request without think, as the server sends it to
    ``go_template``: with the thinking switch on where the newest Ollama turns an unset think
    true for a thinking TEMPLATE (``unset_think_kwargs``)."""
    kwargs = unset_think_kwargs(source, go_template) if go_template else {}
    try:
        return render_hf(
            source.template, messages, tokens=source.template_variables(), kwargs=kwargs
        )
    except TemplateRenderError:
        return None


def _go_case(result: Any, messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "kind": "ollama",
        "template": result.template,
        "messages": to_ollama_api_messages(messages),
        "system": result.system or "",
        "think": None,
        **extra,
    }


def _held_out_mismatches(
    go_oracle: Any,
    pairs: list[tuple[TemplateSource, Any]],
    conversations: list[list[dict[str, Any]]],
) -> tuple[int, list[tuple[str, int, str]]]:
    """Go renders of verified TEMPLATEs vs transformers on held-out conversations: how many
    ran, and the ones that differ (the Jinja raising on one is no claim)."""
    cases, expected = [], []
    for source, result in pairs:
        for n, messages in enumerate(conversations):
            want = _jinja(source, messages, result.template)
            if want is not None:
                cases.append(_go_case(result, messages))
                expected.append((str(source.origin), n, want, source.bos_token))
    wrong = []
    for (origin, n, want, bos), go in zip(expected, go_oracle.run(cases), strict=True):
        exp, act = strip_bos(want, go.output, bos)
        if go.failed or exp != act:
            wrong.append((origin, n, go.error or act[-300:]))
    return len(cases), wrong


@pytest.mark.parametrize(
    ("template", "mode"),
    [
        (HOISTED_LAST, "hoist_last"),
        (HOISTED_JOINED, "hoist"),
        (IN_PLACE, None),
        (DEFAULT_UNLESS_ANY, "default_block"),
    ],
)
def test_mid_conversation_system_is_rendered_where_the_jinja_puts_it(
    template: str, mode: str | None, go_oracle: Any
) -> None:
    source = _source(template)
    result = translate_template(source)
    assert result.verified, [
        (p.probe, p.expected_snippet) for p in result.report.probes if p.status == "differs"
    ]
    for probe in ("mid_system", "two_system_messages", "system_multi_turn"):
        assert _status(result, probe).status == "match", probe
    if mode is not None:
        assert result.shape is not None and result.shape.system_mode == mode
    if mode == "default_block":
        # The TEMPLATE prints the default itself: a Modelfile SYSTEM would be prepended to a
        # conversation whose system message comes later.
        assert result.system is None and "You are Quill" in result.template
    ran, wrong = _held_out_mismatches(go_oracle, [(source, result)], HELD_OUT_MID_SYSTEM)
    assert ran == len(HELD_OUT_MID_SYSTEM) and wrong == []


def test_the_same_reading_fails_where_the_jinja_differs() -> None:
    """Joined and last-only hoisting are told apart by the two-system probe: verifying the
    joined reading's TEMPLATE against the last-only Jinja must fail on it."""
    joined = translate_template(_source(HOISTED_JOINED))
    last_only = _source(HOISTED_JOINED.replace("ns.sys + '\\n\\n' + m.content", "m.content"))
    report = verify_template(last_only, joined.template, system=joined.system)
    assert not report.verified
    failure = report.first_failure()
    assert failure is not None and failure.probe == "two_system_messages"


def test_a_jinja_that_drops_later_system_messages_is_matched_or_reported() -> None:
    """Where the Jinja leaves a later system message out, the TEMPLATE leaves it out too; a
    TEMPLATE that prints it is not verified, and the report says what the Jinja does."""
    source = _source(DROPS_LATER)
    result = translate_template(source)
    assert result.verified and _status(result, "mid_system").status == "match"
    assert "Be brief" not in (_jinja(source, HELD_OUT_MID_SYSTEM[0]) or "Be brief")
    printing = (
        '{{- range .Messages }}{{ if eq .Role "system" }}<<{{ .Content }}>>\n'
        '{{ else if eq .Role "user" }}Q: {{ .Content }}\n{{ else }}A: {{ .Content }}\n'
        "{{ end }}{{ end }}A:"
    )
    report = verify_template(source, printing)
    mid = next(p for p in report.probes if p.probe == "mid_system")
    assert not report.verified and mid.status == "differs"
    assert mid.reason is not None and "drops a system message after the first turn" in mid.reason


def test_mistral_v3_folds_the_system_prompt_into_the_last_user_turn(go_oracle: Any) -> None:
    source = _source(MISTRAL_V3)
    result = translate_template(source)
    assert result.verified
    assert result.shape is not None and result.shape.system_mode in ("last_user", "final_user")
    mid = _status(result, "mid_system")
    assert mid.status == "skipped"
    assert mid.reason is not None and "rejects a system message after the first turn" in mid.reason
    assert "must alternate" in mid.reason
    ran, wrong = _held_out_mismatches(go_oracle, [(source, result)], HELD_OUT_ALTERNATING)
    assert ran == len(HELD_OUT_ALTERNATING) and wrong == []
    # The system prompt is where Mistral puts it: the last user turn, not the first.
    system_first = HELD_OUT_ALTERNATING[0]
    text = _jinja(source, system_first) or ""
    assert text.index("Reply in haiku.") > text.index("Snow hides")


# ChatML with tool results as their own turns; the Go TEMPLATE below is its translation.
CHATML_TOOLS = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
GO_CHATML_TOOLS = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n{{ if .Tools }}{{ end }}"
)


def test_verification_uses_the_serving_versions_prompt_building(go_oracle: Any) -> None:
    """Ollama up to v0.9.5 joins consecutive tool results before the TEMPLATE sees them: two
    results the Jinja prints apart match on the newest rules and cannot on 0.9.3 (a skip that
    says so); Go's own collate agrees with both renders."""
    source = _source(CHATML_TOOLS)
    probe = next(p for p in load_probes() if p.id == "parallel_tool_calls")
    newest = verify_template(source, GO_CHATML_TOOLS, tools=True, probes=[probe])
    old = verify_template(
        source, GO_CHATML_TOOLS, tools=True, probes=[probe], server_version="0.9.3"
    )
    (new_result,), (old_result,) = newest.probes, old.probes
    assert new_result.status == "match" and newest.server_version is None
    assert old_result.status == "skipped" and old.server_version == "0.9.3"
    assert (
        old_result.reason is not None
        and "0.9.3 joins consecutive tool results" in old_result.reason
    )
    later = verify_template(
        source, GO_CHATML_TOOLS, tools=True, probes=[probe], server_version="0.9.6"
    )
    assert later.probes[0].status == "match"
    messages = list(probe.messages)
    base = {
        "kind": "ollama",
        "template": GO_CHATML_TOOLS,
        "messages": to_ollama_api_messages(messages),
        "system": "",
        "think": None,
        "tools": list(probe.tools),
    }
    joined, apart = go_oracle.run([{**base, "merge_tools": True}, {**base, "merge_tools": False}])
    assert apart.output == new_result.actual
    want = _jinja(source, messages)
    assert joined.output != want and "\n\n" in joined.output.split("<|im_start|>tool\n")[1]


def test_translation_records_the_server_version() -> None:
    result = translate_template(_source(IN_PLACE), server_version="0.9.3")
    assert result.report.server_version == "0.9.3"
    assert translate_template(_source(IN_PLACE)).report.server_version is None


@pytest.mark.slow
def test_corpus_verified_templates_hold_on_held_out_mid_system_conversations(
    go_oracle: Any,
) -> None:
    """The issue's shortfall, searched for again with conversations of the same kind that no
    probe contains: every verified corpus TEMPLATE renders them as its Jinja does (in Go)."""
    require_shared(CHAT_TEMPLATES_DIR)
    pairs = []
    for record in corpus_records():
        source = TemplateSource(
            template=record["jinja"],
            origin=CHAT_TEMPLATES_DIR / record["_file"],
            kind="jinja",
            bos_token=record.get("bos_token") or "<s>",
            eos_token=record.get("eos_token") or "</s>",
        )
        try:
            result = translate_template(source)
        except Exception:  # a template that does not translate makes no claim
            continue
        if result.verified:
            pairs.append((source, result))
    assert len(pairs) >= 200
    ran, wrong = _held_out_mismatches(go_oracle, pairs, HELD_OUT_MID_SYSTEM + HELD_OUT_ALTERNATING)
    assert ran > 600
    assert wrong == []


@pytest.mark.slow
def test_corpus_claims_for_ollama_0_9_3_hold_in_go_with_joined_tool_results(
    go_oracle: Any,
) -> None:
    """Verified for 0.9.3, a probe with consecutive tool results is a claim only where the
    joined results render as the Jinja prints them apart; Go's collate with the 0.9.x rule
    agrees with every such claim, and every other one is skipped with the reason."""
    require_shared(CHAT_TEMPLATES_DIR)
    probes = {p.id: p for p in load_probes()}
    cases, claims, skipped = [], [], 0
    for record in corpus_records():
        source = TemplateSource(
            template=record["jinja"],
            origin=CHAT_TEMPLATES_DIR / record["_file"],
            kind="jinja",
            bos_token=record.get("bos_token") or "<s>",
            eos_token=record.get("eos_token") or "</s>",
        )
        try:
            result = translate_template(source, server_version="0.9.3")
        except Exception:  # a template that does not translate makes no claim
            continue
        for checked in result.report.probes:
            probe = probes[checked.probe]
            if not has_consecutive_tool_results(probe.messages):
                continue
            if checked.status == "skipped" and "joins consecutive tool results" in (
                checked.reason or ""
            ):
                skipped += 1
            if checked.status != "match":
                continue
            # Ollama 0.9.3 as a whole: joined results, unset think stays off, its own types.
            case = _go_case(
                result, list(probe.messages), merge_tools=True, unset_think_off=True, server="0.9.3"
            )
            if ".Tools" in result.template and probe.tools:
                case["tools"] = list(probe.tools)
            cases.append(case)
            claims.append((record["_file"], checked, source))
    assert claims and skipped
    wrong = []
    for (name, checked, source), go in zip(claims, go_oracle.run(cases), strict=True):
        exp, act = strip_bos(checked.expected or "", go.output, source.bos_token)
        probe = probes[checked.probe]
        if checked.tier == "exact":
            holds = exp == act
        else:
            holds = json_equivalent(source, probe, checked.expected or "", act)
        if go.failed or not holds:
            wrong.append((name, checked.probe))
    assert wrong == []


TOOL_RESULTS_APART = (
    "{% for m in messages %}{% if m.role == 'tool' %}<tool>{{ m.content }}</tool>\n"
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_template_show_verifies_for_the_given_ollama_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from support.cli import run_cli

    folder = tmp_path / "model"
    folder.mkdir()
    config = {"chat_template": TOOL_RESULTS_APART, "eos_token": "<|im_end|>", "bos_token": None}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    docs = {}
    for version in ("0.9.3", "0.33.0"):
        code, out, _ = run_cli(
            ["template", "show", str(folder), "--ollama-version", version, "--json"], capsys
        )
        assert code == 0, out
        docs[version] = json.loads(out)
        assert docs[version]["ollama_version"] == version
    old = {p["probe"]: p for p in docs["0.9.3"]["probes"]}
    new = {p["probe"]: p for p in docs["0.33.0"]["probes"]}
    assert new["same_tool_twice"]["status"] == "match"
    assert old["same_tool_twice"]["status"] == "skipped"
    assert "0.9.3 joins consecutive tool results" in old["same_tool_twice"]["reason"]
    code, out, err = run_cli(
        ["template", "show", str(folder), "--ollama-version", "banana"], capsys
    )
    assert code == 2 and "--ollama-version" in err and out == ""


def test_ollama_prompt_follows_the_rules_in_force() -> None:
    """Any Ollama-side render inside ``for_server`` (a doctor check, a deploy's verification)
    uses that release's collate; outside it, the newest."""
    from deploy_to_ollama.chat_template.ollama_prompt import render_ollama_prompt
    from deploy_to_ollama.chat_template.server_rules import for_server

    template = "{{ range .Messages }}[{{ .Role }}:{{ .Content }}]{{ end }}"
    messages = [{"role": "tool", "content": "a"}, {"role": "tool", "content": "b"}]
    assert render_ollama_prompt(template, messages) == "[tool:a][tool:b]"
    with for_server("0.9.3"):
        assert render_ollama_prompt(template, messages) == "[tool:a\n\nb]"
        with for_server(None):  # None keeps the rules already in force
            assert render_ollama_prompt(template, messages) == "[tool:a\n\nb]"
    with for_server("0.9.6"):
        assert render_ollama_prompt(template, messages) == "[tool:a][tool:b]"
    assert render_ollama_prompt(template, messages, merge_tool_results=True) == "[tool:a\n\nb]"
