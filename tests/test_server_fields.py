"""A TEMPLATE is verified only with the values the target Ollama release really hands it.

Releases gained template values over time (``ollama_route.FIELDS_SINCE``): ``.ToolName`` in
v0.9.6, ``.ToolCallID`` and tool-call ``.ID`` in v0.12.10, ``.ThinkLevel`` and
``currentDate`` in v0.11.0, ``toTypeScriptType`` in v0.11.3, ``yesterdayDate`` in v0.13.3.
Our renderer and the Go oracle (real text/template with each release's struct types) must
agree on every release, and the verifier must not call a TEMPLATE verified for a release that
cannot run it; the real 0.9.3 server settles what 0.9.3 does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.chat_template import TemplateSource, translate_template
from deploy_to_ollama.chat_template.ollama_prompt import render_ollama_prompt
from deploy_to_ollama.chat_template.server_rules import for_server
from deploy_to_ollama.errors import DeployError
from support.go_oracle import GoOracle

TOOL_NAME = (
    '{{ range .Messages }}{{ if eq .Role "tool" }}<r name="{{ .ToolName }}">{{ .Content }}'
    "</r>{{ else }}{{ .Role }}:{{ .Content }}{{ range .ToolCalls }}<c>{{ .Function.Name }}"
    "</c>{{ end }}{{ end }}{{ end }}"
)
CALL_IDS = (
    '{{ range .Messages }}{{ if eq .Role "tool" }}<r id="{{ .ToolCallID }}">{{ .Content }}'
    '</r>{{ else }}{{ .Role }}:{{ .Content }}{{ range .ToolCalls }}<c id="{{ .ID }}">'
    "{{ .Function.Name }}</c>{{ end }}{{ end }}{{ end }}"
)
THINK_LEVEL = (
    "{{ if .ThinkLevel }}[{{ .ThinkLevel }}]{{ end }}{{ .ThinkLevel }}|"
    "{{ range .Messages }}{{ .Role }}:{{ .Content }}{{ end }}"
)
TS_TYPE = (
    "{{ range .Tools }}{{ range $k, $v := .Function.Parameters.Properties }}{{ $k }}: "
    "{{ toTypeScriptType $v }};{{ end }}{{ end }}{{ range .Messages }}{{ .Content }}{{ end }}"
)
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
QUESTION = [{"role": "user", "content": "Weather in Paris?"}]
CALL = {
    "role": "assistant",
    "content": "",
    "tool_calls": [
        {"id": "call_1", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    ],
}
RESULT = {"role": "tool", "name": "get_weather", "tool_call_id": "call_1", "content": "21 C"}
CONVERSATIONS = {
    "question": QUESTION,
    "call": [*QUESTION, CALL],
    "result": [*QUESTION, CALL, RESULT],
}
RELEASES = ("0.9.3", "0.9.6", "0.11.0", "0.11.3", "0.12.10", None)


def _ours(template: str, messages: list[dict[str, Any]], version: str | None) -> str | None:
    """Our prompt, or None where we say Ollama ``version`` fails."""
    with for_server(version):
        try:
            return render_ollama_prompt(template, messages, tools=[WEATHER], think=True)
        except DeployError:
            return None


@pytest.mark.parametrize("version", RELEASES, ids=lambda v: v or "newest")
def test_our_renderer_and_real_go_agree_on_every_release(
    go_oracle: Any, version: str | None
) -> None:
    """Each release's struct types in real Go fail exactly where ours do, and print the same
    text elsewhere (a missing field is an exec error, a missing map key nil, a missing
    function a parse error)."""
    from support.go_oracle import to_ollama_api_messages

    cases, ours = [], []
    for template in (TOOL_NAME, CALL_IDS, THINK_LEVEL, TS_TYPE):
        for messages in CONVERSATIONS.values():
            cases.append(
                {
                    "kind": "ollama",
                    "template": template,
                    "messages": to_ollama_api_messages(messages),
                    "tools": [WEATHER],
                    "think": True,
                    "merge_tools": version in ("0.9.3",),
                    "unset_think_off": True,
                    "server": version or "",
                }
            )
            ours.append(_ours(template, messages, version))
    answers = go_oracle.run(cases)
    for case, mine, go in zip(cases, ours, answers, strict=True):
        if go.failed:
            assert mine is None, (case["template"][:40], go.error or go.parse_error)
        else:
            assert mine == go.output, case["template"][:40]


def test_which_release_fails_where() -> None:
    """The releases that lack a value fail with a reason naming it and its release; the ones
    that have it render (so the test above compares real outcomes, not only failures)."""
    outcomes = {v: _ours(TOOL_NAME, CONVERSATIONS["result"], v) for v in RELEASES}
    assert outcomes["0.9.3"] is None
    assert all(outcomes[v] for v in ("0.9.6", "0.11.0", "0.12.10", None))
    ids = {v: _ours(CALL_IDS, CONVERSATIONS["call"], v) for v in RELEASES}
    assert [v for v, out in ids.items() if out is None] == ["0.9.3", "0.9.6", "0.11.0", "0.11.3"]
    assert _ours(CALL_IDS, QUESTION, "0.9.3") == "user:Weather in Paris?"  # never reached
    assert _ours(TS_TYPE, QUESTION, "0.11.0") is None
    assert _ours(TS_TYPE, QUESTION, "0.11.3") == "city: string;Weather in Paris?"
    assert _ours(THINK_LEVEL, QUESTION, "0.9.3") == "<no value>|user:Weather in Paris?"
    assert _ours(THINK_LEVEL, QUESTION, "0.11.0") == "[medium]medium|user:Weather in Paris?"
    with for_server("0.9.3"), pytest.raises(DeployError) as caught:
        render_ollama_prompt(TOOL_NAME, CONVERSATIONS["result"], tools=[WEATHER])
    assert "can't evaluate field ToolName" in str(caught.value)
    assert "Ollama 0.9.3 has no .ToolName (it arrived in v0.9.6)" in str(caught.value)


YANDEX = "other__yandex-yandexgpt-5-lite-8b-instruct.json"


def _corpus_source(name: str) -> TemplateSource:
    import json

    from support.shared import CHAT_TEMPLATES_DIR, require_shared

    record = json.loads((require_shared(CHAT_TEMPLATES_DIR) / name).read_text(encoding="utf-8"))
    return TemplateSource(
        template=record["jinja"], origin=CHAT_TEMPLATES_DIR / name, kind="jinja",
        bos_token=record.get("bos_token") or "<s>", eos_token=record.get("eos_token") or "</s>",
    )  # fmt: skip


def test_a_tool_name_template_fails_on_0_9_3_and_its_reading_without_it_holds() -> None:
    """A Jinja that prints the tool's name next to its result: the newest release's TEMPLATE
    reads ``.ToolName`` and fails on 0.9.3 with the reason; translated for 0.9.3 it names
    the result after the call before it (``without_tool_name``) and is verified there."""
    from deploy_to_ollama.chat_template.probes import load_probes
    from deploy_to_ollama.chat_template.verify import verify_template

    source = _corpus_source(YANDEX)
    newest = translate_template(source)
    assert ".ToolName" in newest.template and newest.report.tools_verified
    probes = [p for p in load_probes() if p.id == "tool_call_and_result"]
    report = verify_template(
        source, newest.template, tools=True, probes=probes, server_version="0.9.3"
    )
    assert report.probes[0].status != "match"
    assert "Ollama 0.9.3 has no .ToolName (it arrived in v0.9.6)" in (report.probes[0].reason or "")
    old = translate_template(source, server_version="0.9.3")
    assert ".ToolName" not in old.template and "$dtoToolName" in old.template
    assert old.report.tools_verified


def test_the_reading_without_tool_name_keeps_the_tool_call_tag(go_oracle: GoOracle) -> None:
    """Ollama parses tool calls with the text of the first if on .ToolCalls
    (tools/template.go): the name-keeping scan must not become that if."""
    source = _corpus_source(YANDEX)
    newest = translate_template(source)
    old = translate_template(source, server_version="0.9.3")
    tags = go_oracle.run(
        [{"kind": "tooltag", "template": t} for t in (newest.template, old.template)]
    )
    assert (tags[1].output, tags[1].error) == (tags[0].output, tags[0].error)


@pytest.mark.ollama
@pytest.mark.slow
def test_the_real_0_9_3_server_fails_where_the_verifier_says(
    ollama_server: Any, tmp_path: Path
) -> None:
    """Deployed on the real Ollama 0.9.3, the newest release's TEMPLATE with ``.ToolName``
    answers a plain chat with the prompt we verified, and refuses a tool conversation with
    Go's missing-field error: exactly the verdicts the verifier gives for 0.9.3."""
    import httpx

    from deploy_to_ollama.chat_template.probes import load_probes
    from deploy_to_ollama.chat_template.verify import verify_template
    from deploy_to_ollama.modelfile import Modelfile
    from deploy_to_ollama.registrar import register_model
    from support.ollama_server import write_tiny_gguf

    source = _corpus_source(YANDEX)
    template = translate_template(source).template
    probes = {p.id: p for p in load_probes()}
    chosen = [probes["single_user"], probes["tool_call_and_result"]]
    report = verify_template(source, template, tools=True, probes=chosen, server_version="0.9.3")
    verdict = {p.probe: p for p in report.probes}
    assert verdict["single_user"].status == "match"
    assert verdict["tool_call_and_result"].status != "match"
    assert ".ToolName" in (verdict["tool_call_and_result"].reason or "")

    name = "toolname-093:latest"
    modelfile = Modelfile(from_=str(write_tiny_gguf(tmp_path / "tiny.gguf")), template=template)
    register_model(name, modelfile, base_dir=tmp_path, host=ollama_server.host, force=True)
    answers = {}
    for probe in chosen:
        ollama_server.mark_log()
        body = {
            "model": name,
            "messages": [dict(m) for m in probe.messages],
            "tools": [dict(t) for t in probe.tools],
            "stream": False,
            "options": {"num_predict": 1},
        }
        answers[probe.id] = httpx.post(f"{ollama_server.host}/api/chat", json=body, timeout=300)
        if probe.id == "single_user":
            assert answers[probe.id].status_code == 200, answers[probe.id].text
            assert ollama_server.prompts()[-1] == verdict["single_user"].actual
    refused = answers["tool_call_and_result"]
    assert refused.status_code != 200
    go_error = "can't evaluate field ToolName in type *api.Message"
    assert go_error in refused.text, refused.text  # 500 on 0.9.3
    assert go_error in (verdict["tool_call_and_result"].reason or "")  # the same, predicted

    # Translated for 0.9.3 (the result named after the call before it): 0.9.3 renders the
    # tool conversation, and the prompt the verifier claimed.
    older = translate_template(source, server_version="0.9.3")
    claimed = next(p for p in older.report.probes if p.probe == "tool_call_and_result")
    assert older.report.tools_verified and claimed.status == "match"
    name = "toolname-093-reading:latest"
    modelfile = Modelfile(from_=str(tmp_path / "tiny.gguf"), template=older.template)
    register_model(name, modelfile, base_dir=tmp_path, host=ollama_server.host, force=True)
    probe = probes["tool_call_and_result"]
    ollama_server.mark_log()
    body = {
        "model": name,
        "messages": [dict(m) for m in probe.messages],
        "tools": [dict(t) for t in probe.tools],
        "stream": False,
        "options": {"num_predict": 1},
    }
    answer = httpx.post(f"{ollama_server.host}/api/chat", json=body, timeout=300)
    assert answer.status_code == 200, answer.text
    # The Jinja prints the tool JSON Python's way: equal as JSON, the rest byte for byte.
    assert claimed.tier == "json_equivalent"
    assert ollama_server.prompts()[-1] == claimed.actual
