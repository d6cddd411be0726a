"""Tools in the TEMPLATE: definitions, calls and results inferred from sentinel renders.

Every case renders real Jinja (transformers) against our Ollama port, and the claims are
re-rendered by Go's own text/template. A tool probe matches ``json_equivalent`` (never
``exact``) where only the layout of a ``tojson`` value differs; anything else is a difference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.chat_template import TemplateSource, load_probes, translate_template
from deploy_to_ollama.chat_template.prompt_diff import strip_bos
from deploy_to_ollama.chat_template.tool_tag import tool_call_tag
from deploy_to_ollama.chat_template.verify import json_equivalent, verify_template
from support.go_claims import go_mismatches

# Qwen2.5-style: tools as Python JSON in the system turn, <tool_call> JSON calls, results
# grouped in one user turn.
QWEN_LIKE = (
    "{%- if tools %}<|im_start|>system\n"
    "{% if messages[0].role == 'system' %}{{ messages[0].content }}{% else %}You are helpful."
    "{% endif %}\n\n# Tools\n<tools>{% for t in tools %}\n{{ t | tojson }}{% endfor %}\n"
    "</tools><|im_end|>\n"
    "{%- elif messages[0].role == 'system' %}<|im_start|>system\n{{ messages[0].content }}"
    "<|im_end|>\n{%- else %}<|im_start|>system\nYou are helpful.<|im_end|>\n{%- endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'user' or (m.role == 'assistant' and not m.tool_calls) %}"
    "\n<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>"
    "{%- elif m.role == 'assistant' %}\n<|im_start|>assistant\n{{ m.content }}"
    "{%- for c in m.tool_calls %}\n<tool_call>\n"
    '{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}'
    "\n</tool_call>{%- endfor %}<|im_end|>"
    "{%- elif m.role == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}\n<|im_start|>user{% endif %}"
    "\n<tool_response>\n{{ m.content }}\n</tool_response>"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}<|im_end|>{% endif %}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}\n<|im_start|>assistant\n{% endif %}"
)

# Tool parameters listed one by one: no Go template reproduces the per-argument loop yet.
PER_ARGUMENT = (
    "{% if tools %}Tools:{% for t in tools %} {{ t.function.name }}("
    "{% for k, v in t.function.parameters.properties.items() %}{{ k }}: {{ v.type }}"
    "{% endfor %}){% endfor %}\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


#: Parameter descriptions with their quotes escaped: no Ollama template function does that.
UNTRANSLATABLE = PER_ARGUMENT.replace(
    "{{ v.type }}", "{{ v.type }} {{ v.description | replace('\"', '\\\\\"') }}"
)


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def _tool_probes(result: Any) -> dict[str, Any]:
    ids = {p.id for p in load_probes() if p.needs_tools and not p.needs_thinking}
    return {p.probe: p for p in result.report.probes if p.probe in ids}


def test_tool_definitions_calls_and_results_verify_json_equivalent_never_exact() -> None:
    result = translate_template(_source(QWEN_LIKE))
    tools = _tool_probes(result)
    assert result.verified and result.report.tools_verified
    assert "{{- if .Tools }}" in result.template and "range $k, $c := .ToolCalls" in result.template
    assert len(tools) >= 8 and {p.status for p in tools.values()} == {"match"}
    for probe in tools.values():
        # Python prints ", "/": " and Go prints compact JSON: equal values, other bytes.
        assert probe.tier == "json_equivalent" and not probe.exact, probe.probe
        assert probe.expected != probe.actual
        assert strip_bos(probe.expected, probe.actual, "<s>")[0] != probe.actual
    plain = [p for p in result.report.probes if p.probe not in tools and p.status == "match"]
    assert plain and {p.tier for p in plain} == {"exact"}
    assert result.report.exact_count == len(plain)
    assert result.report.json_equivalent_count == len(tools)
    parallel = tools["parallel_tool_calls"].actual
    # Two results of one turn share one user turn, as the Jinja groups them.
    assert parallel.count("<|im_start|>user") == 2  # the question, then both results
    assert parallel.count("<tool_response>") == 2


def test_a_json_value_that_differs_is_a_difference() -> None:
    source = _source(QWEN_LIKE)
    result = translate_template(source)
    wrong = result.template.replace("json $c.Function.Arguments", 'json "Rome"')
    assert wrong != result.template
    suite = [p for p in load_probes() if p.id == "tool_call_and_result"]
    report = verify_template(source, wrong, system=result.system, tools=True, probes=suite)
    (probe,) = report.probes
    assert probe.status == "differs" and probe.tier is None
    assert not report.verified


def test_json_equivalent_needs_equal_text_outside_json() -> None:
    source = _source(QWEN_LIKE)
    result = translate_template(source)
    probe = next(p for p in load_probes() if p.id == "tool_call_and_result")
    checked = _tool_probes(result)[probe.id]
    assert json_equivalent(source, probe, checked.expected, checked.actual)
    assert not json_equivalent(source, probe, checked.expected, checked.actual + " ")
    swapped = checked.actual.replace("<tool_call>", "<tool-call>")
    assert not json_equivalent(source, probe, checked.expected, swapped)


def test_untranslatable_tool_layout_is_not_verified_and_says_why() -> None:
    result = translate_template(_source(UNTRANSLATABLE))
    assert result.report.public_verified  # plain chat still holds
    assert result.report.tools_required and not result.report.tools_verified
    assert not result.verified
    tools = _tool_probes(result)
    assert tools and all(p.status == "skipped" and p.reason for p in tools.values())


def test_tool_call_tag_is_what_the_fine_tune_emits_in_go_too(go_oracle: Any) -> None:
    result = translate_template(_source(QWEN_LIKE))
    tag = tool_call_tag(result.template)
    # Ollama trims the first text of the block and cuts at "{": the tag the fine-tune prints
    # before its JSON (the newline after it is printed by an action, outside the tag).
    assert tag == "<tool_call>"
    call = _tool_probes(result)["tool_call_and_result"].expected
    assert tag + '\n{"name": "get_weather"' in call
    templates = [
        result.template,
        '{{ if .ToolCalls }}[TOOL_CALLS] [{{ range .ToolCalls }}{"name": 1}{{ end }}]{{ end }}',
        "{{ range .Messages }}{{ if .ToolCalls }}{{ range .ToolCalls }}{{ json .Function }}"
        "{{ end }}{{ end }}{{ end }}",
        "{{ if .Content }}x{{ end }}{{ $t := .ToolCalls }}{{ if $t }}<no>{{ end }}"
        "{{ if .ToolCalls }}\n  <call>\n{{ end }}",
        "{{ .Content }}",
    ]
    go = go_oracle.run([{"kind": "tooltag", "template": t} for t in templates])
    for template, answer in zip(templates, go, strict=True):
        ours = tool_call_tag(template)
        assert answer.parse_error is None
        assert (ours is None) == (answer.error == "no ToolCalls block"), template
        assert ours is None or ours == answer.output, template
    assert [tool_call_tag(t) for t in templates[1:]] == ["[TOOL_CALLS] [", "", "<call>", None]


def test_go_renders_the_tool_probes_as_claimed(go_oracle: Any) -> None:
    source = _source(QWEN_LIKE)
    result = translate_template(source)
    checked = [p for p in result.report.probes if p.status == "match"]
    assert go_mismatches(go_oracle, source, result, checked, bos="<s>", same_as_port=True) == []


def _tiny_tokenizer(path: Path, template: str) -> Path:
    """A word-level tokenizer trained on the spot: enough to count tokens on both sides."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["[UNK]"])
    corpus = [template, " ".join(str(p.messages) for p in load_probes())]
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    tokenizer.save(str(path))
    return path


def test_json_equivalent_probes_report_their_token_count_delta(tmp_path: Path) -> None:
    source = TemplateSource(
        template=QWEN_LIKE,
        origin=Path("t.jinja"),
        kind="jinja",
        bos_token="<s>",
        eos_token="</s>",
        tokenizer_file=_tiny_tokenizer(tmp_path / "tokenizer.json", QWEN_LIKE),
    )
    result = translate_template(source)
    assert result.report.token_level
    tools = _tool_probes(result)
    # Compact Go JSON has fewer spaces: other words, other token counts, all reported.
    deltas = [p.token_delta for p in tools.values()]
    assert all(isinstance(d, int) for d in deltas) and any(d != 0 for d in deltas)
    exact = [p for p in result.report.probes if p.tier == "exact"]
    assert exact and all(p.token_delta is None and p.token_match for p in exact)


def test_template_json_shows_each_probe_tier_and_the_exact_count(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from deploy_to_ollama.cli import app, rewrite_default_commands

    jinja = tmp_path / "chat_template.jinja"
    jinja.write_text(QWEN_LIKE, encoding="utf-8")
    args = ["template", "show", str(jinja), "--bos", "<s>", "--eos", "</s>", "--json"]
    run = CliRunner().invoke(app, rewrite_default_commands(args))
    assert run.exit_code == 0, run.stderr
    doc = json.loads(run.stdout)
    tiers = {p["probe"]: p["tier"] for p in doc["probes"]}
    assert tiers["tool_call_and_result"] == "json_equivalent"
    assert tiers["single_user"] == "exact"
    assert doc["exact_probes"] == sum(t == "exact" for t in tiers.values())
    assert doc["json_equivalent_probes"] == sum(t == "json_equivalent" for t in tiers.values())
    summary = CliRunner().invoke(app, rewrite_default_commands(args[:-1]))
    assert f"{doc['exact_probes']} exact, {doc['json_equivalent_probes']} json_equivalent" in (
        summary.stderr
    )


@pytest.mark.ollama
def test_ollama_accepts_the_tool_template_and_reports_tools(
    ollama_server: Any, tmp_path: Path
) -> None:
    """The real test server (0.9.3) parses the TEMPLATE and derives the tools capability."""
    import json
    import urllib.request

    from deploy_to_ollama.modelfile import Modelfile, render_modelfile
    from support.ollama_server import write_tiny_gguf

    result = translate_template(_source(QWEN_LIKE))
    write_tiny_gguf(tmp_path / "tiny.gguf", chat_template="")
    modelfile = Modelfile(from_="./tiny.gguf", template=result.template, system=result.system)
    (tmp_path / "Modelfile").write_text(render_modelfile(modelfile), encoding="utf-8")
    proc = ollama_server.ollama_cli("create", "tools-probe", "-f", str(tmp_path / "Modelfile"))
    assert proc.returncode == 0, proc.stderr[-500:]
    request = urllib.request.Request(
        f"{ollama_server.host}/api/show",
        data=json.dumps({"model": "tools-probe"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as resp:
        shown = json.load(resp)
    assert shown["template"] == result.template
    assert "tools" in shown.get("capabilities", [])


# Calls as bare JSON objects, nothing before the first one: Ollama must expect bare JSON.
BARE_JSON_CALLS = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
    "{% for c in m.tool_calls or [] %}{% if not loop.first %}, {% endif %}"
    "{{ c.function | tojson }}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_calls_without_a_tag_give_an_empty_tag_not_the_glue(go_oracle: Any) -> None:
    result = translate_template(_source(BARE_JSON_CALLS))
    calls = _tool_probes(result)
    assert calls["parallel_tool_calls"].status == "match"
    assert calls["parallel_tool_calls"].tier == "json_equivalent"
    assert "}, {" in (calls["parallel_tool_calls"].expected or "")
    (go,) = go_oracle.run([{"kind": "tooltag", "template": result.template}])
    assert tool_call_tag(result.template) == "" == go.output


# Gemma 4 style: the results print inside the model turn right after its calls, and the
# turn's content only after them (then the end of the turn); no new turn after results.
GEMMA4_LIKE = (
    "{% if tools %}<|turn>system\n{% for t in tools %}<|tool>{{ t.function.name }}:"
    "{{ t.function.description }}<tool|>{% endfor %}<turn|>\n{% endif %}"
    "{%- set ns = namespace(prev='') -%}"
    "{%- for m in messages -%}"
    "{%- if m.role == 'user' -%}<|turn>user\n{{ m.content }}<turn|>\n{% set ns.prev = 'user' %}"
    "{%- elif m.role == 'assistant' -%}"
    "{%- if ns.prev != 'tool' %}<|turn>model\n{% endif -%}"
    "{%- if m.tool_calls -%}"
    "{%- for c in m.tool_calls %}<|tool_call>call:{{ c.function.name }}"
    "{{ c.function.arguments | tojson }}<tool_call|>{% endfor -%}"
    "{%- set scan = namespace(stop=false) -%}"
    "{%- for k in range(loop.index0 + 1, messages | length) -%}"
    "{%- if scan.stop or messages[k].role != 'tool' %}{% set scan.stop = true %}"
    "{%- else %}<|tool_response>{{ messages[k].name }}:{{ messages[k].content }}"
    "<tool_response|>{% endif -%}"
    "{%- endfor -%}"
    "{%- set ns.prev = 'tool' -%}"
    "{%- if m.content %}{{ m.content }}<turn|>\n{% endif -%}"
    "{%- else %}{{ m.content }}<turn|>\n{% set ns.prev = 'assistant' %}{% endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt and ns.prev != 'tool' %}<|turn>model\n{% endif -%}"
)


def test_content_printed_after_the_results_is_kept_there(go_oracle: Any) -> None:
    from support.go_oracle import to_ollama_api_messages

    result = translate_template(_source(GEMMA4_LIKE))
    calls = _tool_probes(result)
    assert result.report.tools_verified
    with_content = calls["tool_call_with_content"]
    assert with_content.status == "match"
    assert (with_content.expected or "").endswith("<tool_response|>Let me check.<turn|>\n")
    probes = {p.id: p for p in load_probes()}
    checked = [p for p in calls.values() if p.status == "match"]
    cases = [
        {
            "kind": "ollama",
            "template": result.template,
            "messages": to_ollama_api_messages(list(probes[c.probe].messages)),
            "tools": list(probes[c.probe].tools) or None,
            "system": result.system or "",
        }
        for c in checked
    ]
    for claim, go in zip(checked, go_oracle.run(cases), strict=True):
        assert not go.failed, (claim.probe, go.error)
        assert go.output == claim.actual, claim.probe
