"""A TEMPLATE is verified only with the values the target Ollama release really hands it.

Releases gained template values over time (``ollama_route.FIELDS_SINCE``): ``.ToolName`` in
v0.9.6, ``.ToolCallID`` and tool-call ``.ID`` in v0.12.10, ``.ThinkLevel`` and
``currentDate`` in v0.11.0, ``toTypeScriptType`` in v0.11.3, ``yesterdayDate`` in v0.13.3.
Our renderer and the Go oracle (real text/template with each release's struct types) must
agree on every release, and the verifier must not call a TEMPLATE verified for a release that
cannot run it; the real 0.9.3 server settles what 0.9.3 does.
"""

from __future__ import annotations

from typing import Any

import pytest

from deploy_to_ollama.chat_template.ollama_prompt import render_ollama_prompt
from deploy_to_ollama.chat_template.server_rules import for_server
from deploy_to_ollama.errors import DeployError

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
