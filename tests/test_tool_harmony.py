"""gpt-oss's (harmony) tool layout: only the first call of a turn prints, each result is
named after the call before it, and the content (or reasoning) of a turn with calls prints
only until an answer follows. Each reading is rendered by real Go, and each has a case where
it must not apply."""

from __future__ import annotations

import json
from typing import Any

import pytest

from deploy_to_ollama.chat_template import TemplateSource, translate_template
from deploy_to_ollama.chat_template.gotext import Act, Lit, join_pieces
from deploy_to_ollama.chat_template.tool_names import (
    names_after_call,
    with_previous_call,
)
from deploy_to_ollama.chat_template.tool_sentinels import CALLS
from deploy_to_ollama.chat_template.tool_shape import ANSWERED_SCAN, first_call_only
from support.go_oracle import to_ollama_api_messages


def _call(name: str, city: str) -> dict[str, Any]:
    return {"id": f"id_{city}", "function": {"name": name, "arguments": {"city": city}}}


CONVERSATION: list[dict[str, Any]] = [
    {"role": "user", "content": "u1"},
    {"role": "assistant", "content": "", "tool_calls": [_call("wx", "A"), _call("tm", "B")]},
    {"role": "tool", "content": "r1", "name": "wx"},
    {"role": "tool", "content": "r2", "name": "tm"},
    {"role": "assistant", "content": "answer"},
    {"role": "user", "content": "u2"},
    {"role": "assistant", "content": "look", "tool_calls": [_call("tm", "C")]},
    {"role": "tool", "content": "r3", "name": "tm"},
]


def _go(go_oracle: Any, template: str, messages: list[dict[str, Any]]) -> str:
    case = {"kind": "ollama", "template": template, "messages": to_ollama_api_messages(messages)}
    (result,) = go_oracle.run([case])
    assert not result.failed, result.error or result.parse_error
    return str(result.output)


def test_results_named_after_the_call_before_them(go_oracle: Any) -> None:
    item = (Lit("<"), Act(".ToolName"), Lit(">"), Act(".Content"))
    named = with_previous_call(item)
    assert named is not None
    body = [Act("range $i, $_ := .Messages"), Act('if eq .Role "tool"'), *named, Act("end")]
    out = _go(go_oracle, join_pieces([*body, Act("end")]), CONVERSATION)
    # The second result of the first turn is "tm" by its own name, "wx" by the call before.
    assert out == "<wx>r1<wx>r2<tm>r3"
    assert with_previous_call((Lit("<"), Act(".Content"))) is None


def test_only_the_first_call_prints(go_oracle: Any) -> None:
    name = str(CALLS[0]["function"]["name"])
    subst = ({name: "$c.Function.Name"}, [])
    loop = first_call_only(f"[{name}]", [name], subst)
    assert loop is not None
    body = [Act("range .Messages"), Act("range $k, $c := .ToolCalls"), *loop.item, Act("end")]
    out = _go(go_oracle, join_pieces([*body, Act("end")]), CONVERSATION)
    assert out == "wxtm"  # wx of the first turn (tm, its second call, dropped), tm of the last
    assert first_call_only("[no sentinel]", [name], subst) is None


def test_content_of_a_call_turn_prints_until_answered(go_oracle: Any) -> None:
    body = [
        Act("range $i, $_ := .Messages"),
        Act("if .ToolCalls"),
        *ANSWERED_SCAN,
        Act("if not $answered"),
        Lit("["),
        Act(".Content"),
        Lit("]"),
        Act("end"),
        Act("end"),
        Act("end"),
    ]
    out = _go(go_oracle, join_pieces(body), CONVERSATION)
    assert out == "[look]"  # the first call turn is answered later: its content is dropped


def test_names_after_call_needs_the_calls_name_again() -> None:
    own = "<c>Zqcallaname</c><r Zqresnamea>1</r>"
    assert names_after_call([own]) is None
    assert names_after_call(["<c>Zqcallaname</c><r>1</r>"]) is None
    assert names_after_call(["<c>Zqcallaname</c><r Zqcallaname>1</r>"]) == [
        "<c>Zqcallaname</c><r Zqresnamea>1</r>"
    ]


def _gpt_oss(jinja: str | None = None) -> Any:
    from support.shared import CHAT_TEMPLATES_DIR, require_shared

    require_shared(CHAT_TEMPLATES_DIR)
    path = CHAT_TEMPLATES_DIR / "gpt-oss__openai-gpt-oss-120b.json"
    record = json.loads(path.read_text())
    source = TemplateSource(
        template=jinja or record["jinja"],
        origin=path,
        kind="jinja",
        bos_token=record.get("bos_token") or "<s>",
        eos_token=record.get("eos_token") or "</s>",
    )
    return record["jinja"], translate_template(source)


@pytest.mark.slow
def test_gpt_oss_tools_and_thinking_verify() -> None:
    _, result = _gpt_oss()
    report = result.report
    assert report.verified and report.tools_verified and report.thinking_verified
    assert "$pn = (index .ToolCalls 0).Function.Name" in result.template
    assert "$answered" in result.template


@pytest.mark.slow
def test_gpt_oss_naming_results_by_their_own_name_is_read_so() -> None:
    """The must-be-false case: where the Jinja names a result by its own name, the TEMPLATE
    does not look the previous call up (and still verifies)."""
    jinja, _ = _gpt_oss()
    own = jinja.replace(
        '{{- "<|start|>functions." + last_tool_call.name }}',
        '{{- "<|start|>functions." + message.name }}',
    )
    assert own != jinja
    _, result = _gpt_oss(own)
    assert "$pn = (index .ToolCalls 0).Function.Name" not in result.template
    assert result.report.tools_verified
