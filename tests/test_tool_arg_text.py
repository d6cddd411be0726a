"""Tool-call arguments pasted as text (``tool_arg_text``): a DeepSeek R1-like Jinja adds
``tool['function']['arguments']`` to strings, so it raises on an arguments object and prints
a JSON text verbatim. Its tool probes are compared with the arguments sent as JSON text, by
JSON value, and re-rendered in real Go; a Jinja that prints the text altered (its first
character cut) stays unclaimed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.chat_template import TemplateSource, translate_template
from deploy_to_ollama.chat_template.tool_arg_text import (
    TEXT_ARGUMENTS,
    as_text,
    takes_text_arguments,
)
from support.go_claims import go_mismatches

_R1_LIKE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<|User|>' + message['content'] }}"
    "{% elif message['role'] == 'assistant' and message['tool_calls'] %}"
    "{{ '<|Assistant|>' + message['content'] + '<|calls|>' }}"
    "{% for tool in message['tool_calls'] %}"
    "{{ '<|call|>' + tool['function']['name'] + '\\n```json\\n' + ARGS + '\\n```<|/call|>' }}"
    "{% endfor %}{{ '<|/calls|><|end|>' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<|Assistant|>' + message['content'] + '<|end|>' }}"
    "{% elif message['role'] == 'tool' %}{{ '<|output|>' + message['content'] + '<|/output|>' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|Assistant|>' }}{% endif %}"
)
PASTED = _R1_LIKE.replace("ARGS", "tool['function']['arguments']")
CUT = _R1_LIKE.replace("ARGS", "tool['function']['arguments'][1:]")
TOOL_PROBES = (
    "tool_call_and_result",
    "parallel_tool_calls",
    "tool_results_then_answer",
    "same_tool_twice",
    "tool_call_with_content",
    "tool_args_unicode_quotes",
)


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def test_arguments_become_their_json_text() -> None:
    messages = [{"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": {"a": "é"}}},
        {"type": "function", "function": {"name": "g", "arguments": '{"b": 1}'}},
    ]}]  # fmt: skip
    converted, texts = as_text(messages)
    assert texts == ['{"a": "é"}']
    assert [c["function"]["arguments"] for c in converted[0]["tool_calls"]] == [
        '{"a": "é"}',
        '{"b": 1}',
    ]
    assert messages[0]["tool_calls"][0]["function"]["arguments"] == {"a": "é"}  # not changed


@pytest.mark.parametrize(("template", "takes"), [(PASTED, True), (CUT, False)])
def test_the_reading_is_observed_from_transformers(template: str, takes: bool) -> None:
    assert takes_text_arguments(template, {"bos_token": "<s>"}) is takes


def test_pasted_arguments_verify_in_real_go(go_oracle: Any) -> None:
    result = translate_template(_source(PASTED))
    assert result.verified
    checked = {p.probe: p for p in result.report.probes if p.probe in TOOL_PROBES}
    assert {p.status for p in checked.values()} == {"match"}
    assert {p.tier for p in checked.values()} == {"json_equivalent"}
    assert {p.reason for p in checked.values()} == {TEXT_ARGUMENTS}
    assert "json $c.Function.Arguments" in result.template.replace("  ", " ")
    assert go_mismatches(go_oracle, _source(PASTED), result, list(checked.values())) == []


def test_altered_argument_text_stays_unclaimed() -> None:
    result = translate_template(_source(CUT))
    checked = [p for p in result.report.probes if p.probe in TOOL_PROBES]
    assert checked
    assert all(p.status != "match" for p in checked)
    assert all(p.reason != TEXT_ARGUMENTS for p in checked)


#: Functionary v2.2's way: a tool result is introduced by the tool's ``name`` (which every
#: client sends with a result; Ollama's TEMPLATE gets it as ``.ToolName``), and a call's
#: arguments are pasted after the function's name.
NAMED_RESULTS = (
    "{% for message in messages %}"
    "{% if message['role'] in ['user', 'system'] %}"
    "{{ '<|from|>' + message['role'] + '\\n<|content|>' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'tool' %}"
    "{{ '<|from|>' + message['name'] + '\\n<|content|>' + message['content'] + '\\n' }}"
    "{% else %}{% if message['content'] %}"
    "{{ '<|from|>assistant\\n<|content|>' + message['content'] + '\\n' }}{% endif %}"
    "{% for call in message['tool_calls'] or [] %}"
    "{{ '<|from|>assistant\\n<|to|>' + call['function']['name'] + '\\n<|content|>' "
    "+ call['function']['arguments'] + '\\n' }}{% endfor %}{{ '<|stop|>\\n' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|from|>assistant\\n' }}{% endif %}"
)


def test_the_sentinel_result_carries_the_tools_name() -> None:
    """A Jinja that labels a result with the tool's name is read too (it raised on the
    sentinel conversation before, for want of the name, and its calls went untranslated)."""
    assert takes_text_arguments(NAMED_RESULTS, {}) is True
    assert (
        takes_text_arguments(NAMED_RESULTS.replace("['arguments']", "['arguments'][1:]"), {})
        is False
    )


def test_named_results_verify_with_a_tool_round_trip(go_oracle: Any) -> None:
    from deploy_to_ollama.capabilities import go_template_has_tool_round_trip

    result = translate_template(_source(NAMED_RESULTS))
    checked = [p for p in result.report.probes if p.probe in TOOL_PROBES]
    assert {p.status for p in checked} == {"match"}
    assert {p.reason for p in checked} == {TEXT_ARGUMENTS}
    assert result.verified
    # Ollama 0.30+ keeps a TEMPLATE with a tool round trip (should_prefer_chat_template).
    assert go_template_has_tool_round_trip(result.template)
    assert go_mismatches(go_oracle, _source(NAMED_RESULTS), result, checked) == []
