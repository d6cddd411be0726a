"""The taught fixtures' hand-written Go TEMPLATEs are the same prompts as their Jinja.

Transformers renders the Jinja; real Go (the oracle, Ollama's prompt building) renders the
TEMPLATE. Tool JSON may differ only in layout (Python ``tojson`` vs Go ``json``): lines that
are JSON compare as parsed objects, every other line byte for byte. This is what lets the
live fixture tests stand in for the translator's output until it carries tools and thinking.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from deploy_to_ollama.chat_template.ollama_prompt import render_ollama_prompt
from support.go_oracle import GoOracle, to_ollama_api_messages
from support.taught_tools import (
    THINK_GO_TEMPLATE,
    THINK_JINJA,
    TOOLS_GO_TEMPLATE,
    TOOLS_JINJA,
    WEATHER_TOOL,
    tool_call_message,
    tool_result,
    weather_question,
)

QUESTION = {"role": "user", "content": weather_question("Paris")}
TOOL_CONVERSATIONS: list[tuple[str, list[dict[str, Any]], bool]] = [
    ("question", [QUESTION], True),
    ("no tools offered", [QUESTION], False),
    ("system and tools", [{"role": "system", "content": "Be brief."}, QUESTION], True),
    (
        "tool result",
        [QUESTION, tool_call_message("Paris"), {"role": "tool", "content": tool_result(21)}],
        True,
    ),
    (
        "answered",
        [
            QUESTION,
            tool_call_message("Paris"),
            {"role": "tool", "content": tool_result(21)},
            {"role": "assistant", "content": "It is 21 degrees in Paris."},
            {"role": "user", "content": "Say hello."},
        ],
        True,
    ),
]


def _jinja(template: str, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(
        conversations=[messages], chat_template=template, add_generation_prompt=True, **kwargs
    )
    return str(rendered[0])


def _same_modulo_json(jinja: str, go: str) -> bool:
    left, right = jinja.split("\n"), go.split("\n")
    if len(left) != len(right):
        return False
    for a, b in zip(left, right, strict=True):
        if a == b:
            continue
        try:
            if json.loads(a) != json.loads(b):
                return False
        except json.JSONDecodeError:
            return False
    return True


def _go(oracle: GoOracle, template: str, messages: list[dict[str, Any]], **extra: Any) -> str:
    case = {
        "kind": "ollama",
        "template": template,
        "messages": to_ollama_api_messages(messages),
        **extra,
    }
    result = oracle.run([case])[0]
    assert not result.failed, result
    return result.output


@pytest.mark.parametrize(("label", "messages", "offered"), TOOL_CONVERSATIONS)
def test_tools_template_matches_the_jinja(
    go_oracle: GoOracle, label: str, messages: list[dict[str, Any]], *, offered: bool
) -> None:
    tools = [WEATHER_TOOL] if offered else None
    expected = _jinja(TOOLS_JINJA, messages, tools=tools)
    actual = _go(go_oracle, TOOLS_GO_TEMPLATE, messages, tools=tools)
    assert actual == render_ollama_prompt(TOOLS_GO_TEMPLATE, messages, tools=tools)
    assert _same_modulo_json(expected, actual), (label, expected, actual)
    assert (expected == actual) is not offered  # tool JSON layouts differ, nothing else


def test_json_modulo_comparison_catches_other_differences() -> None:
    """The false case: a changed byte outside JSON, or a changed JSON value, is a difference."""
    assert _same_modulo_json('{"a": 1}\nx', '{"a":1}\nx')
    assert not _same_modulo_json('{"a": 1}\nx', '{"a":2}\nx')
    assert not _same_modulo_json("<tools>\n", "<tool>\n")


@pytest.mark.parametrize("think", [None, True, False])
def test_thinking_template_matches_the_jinja(go_oracle: GoOracle, think: bool | None) -> None:
    messages = [{"role": "user", "content": "Name a fruit."}]
    kwargs = {} if think is None else {"enable_thinking": think}
    expected = _jinja(THINK_JINJA, messages, **kwargs)
    extra = {} if think is None else {"think": think}
    assert _go(go_oracle, THINK_GO_TEMPLATE, messages, **extra) == expected
    closed = "<think>\n\n</think>\n\n"
    assert expected.endswith(closed) is (think is False)
