"""An assistant message with tool calls and no content that the Jinja drops whole (GLM-4
prints only messages with content): the TEMPLATE skips it too, naming ``.ToolCalls``, so the
tool conversations verify and Ollama sees a tool round trip. A Jinja that prints the call
when there is no content stays unclaimed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy_to_ollama.capabilities import compare_capabilities
from deploy_to_ollama.chat_template import TemplateSource, translate_template
from deploy_to_ollama.chat_template.tool_turns import (
    drops_empty_calls,
    ignores_empty_calls,
    tool_then_assistant,
)
from deploy_to_ollama.ollama_route import ModelFacts, select_route
from support.go_claims import go_mismatches

GLM_LIKE = (
    "[gMASK]<sop>{% for item in messages %}{% if item['tools'] is defined %}<|system|>\n"
    "{{ item['tools'] | tojson }}{% endif %}{% if item['content'] %}<|{{ item['role'] }}|>\n"
    "{{ item['content'] }}{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>"
    "{% endif %}"
)
#: Near-miss: with no content, the call's name prints in the assistant's place.
CALL_PRINTED = GLM_LIKE.replace(
    "{{ item['content'] }}{% endif %}",
    "{{ item['content'] }}{% elif item['tool_calls'] %}<|assistant|>\n"
    "{{ item['tool_calls'][0]['function']['name'] }}{% endif %}",
)
DEEPSEEK_DISTILL_LIKE = (
    "{{ bos_token }}{%- for m in messages -%}"
    "{%- if m['role'] == 'user' -%}<|User|>{{ m['content'] }}"
    "{%- elif m['role'] == 'assistant' and m['content'] is none -%}"
    "{%- for t in m['tool_calls'] -%}<|Assistant|><|call|>{{ t['function']['name'] }}"
    "{%- endfor -%}"
    "{%- elif m['role'] == 'assistant' -%}<|Assistant|>{{ m['content'] }}<|end|>"
    "{%- elif m['role'] == 'tool' -%}<|output|>{{ m['content'] }}<|/output|>"
    "{%- endif -%}{%- endfor -%}{%- if add_generation_prompt -%}<|Assistant|>{%- endif -%}"
)
#: Near-miss: calls print whatever the content.
CALLS_PRINTED = DEEPSEEK_DISTILL_LIKE.replace(
    "and m['content'] is none", "and m['tool_calls'] is defined"
)
PHI4_MINI_REASONING_LIKE = (
    "<|system|>Be brief.{% for m in messages %}{% if m['role'] == 'system' %} "
    "{{ m['content'] }}{% endif %}{% endfor %}<|end|>{% for m in messages %}"
    "{% if m['role'] != 'system' %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% else %}{{ eos_token }}{% endif %}"
    "{# tool_calls #}"
)
#: Near-miss: an answer after a result opens with text taken from that result.
ANSWER_QUOTES_RESULT = PHI4_MINI_REASONING_LIKE.replace(
    "{% if m['role'] != 'system' %}",
    "{% if m['role'] == 'assistant' and loop.previtem and loop.previtem['role'] == 'tool' %}"
    "<|after {{ loop.previtem['content'][:3] }}|>{% endif %}{% if m['role'] != 'system' %}",
)
TOOL_TURNS = ("tool_call_and_result", "tool_results_then_answer", "same_tool_twice")


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def test_a_dropped_call_turn_is_skipped_by_the_template(go_oracle: Any) -> None:
    source = _source(GLM_LIKE)
    assert drops_empty_calls(source)
    result = translate_template(source)
    assert result.verified and result.shape is not None and result.shape.call_turn == "dropped"
    statuses = {p.probe: p.status for p in result.report.probes}
    assert all(statuses[name] == "match" for name in TOOL_TURNS)
    assert compare_capabilities(source.template, result.template).parity
    assert go_mismatches(go_oracle, source, result) == []


def test_a_call_printed_without_content_is_not_read_as_dropped() -> None:
    source = _source(CALL_PRINTED)
    assert not drops_empty_calls(source)
    result = translate_template(source)
    assert result.shape is None or result.shape.call_turn != "dropped"
    statuses = {p.probe: p.status for p in result.report.probes}
    assert all(statuses[name] != "match" for name in TOOL_TURNS)


def test_calls_ignored_for_empty_content_keep_the_round_trip(go_oracle: Any) -> None:
    source = _source(DEEPSEEK_DISTILL_LIKE)
    assert ignores_empty_calls(source) and not drops_empty_calls(source)
    result = translate_template(source)
    assert result.verified and result.shape is not None and result.shape.call_turn == "empty"
    statuses = {p.probe: p.status for p in result.report.probes}
    assert all(statuses[name] == "match" for name in TOOL_TURNS)
    assert compare_capabilities(source.template, result.template).parity
    decision = select_route(ModelFacts(template=result.template, jinja=source.template), "0.33.0")
    assert decision.path == "rendered"
    assert go_mismatches(go_oracle, source, result) == []


def test_calls_printed_for_empty_content_are_not_read_as_ignored() -> None:
    source = _source(CALLS_PRINTED)
    assert not ignores_empty_calls(source) and not drops_empty_calls(source)
    result = translate_template(source)
    assert result.shape is None or result.shape.call_turn == ""
    assert ".ToolCalls" not in result.template or any(
        p.status == "match" and p.probe == "tool_call_and_result" for p in result.report.probes
    )


def test_a_result_closed_before_the_answer_is_read_off(go_oracle: Any) -> None:
    """Each turn closes at the next one's start: after a result, the answer's opening is
    printed by the result's turn, as the user's suffix prints it after a user message."""
    source = _source(PHI4_MINI_REASONING_LIKE)
    result = translate_template(source)
    assert result.verified and result.shape is not None
    assert result.shape.tool_then_assistant == "<|end|><|assistant|>"
    statuses = {p.probe: p.status for p in result.report.probes}
    assert all(statuses[name] == "match" for name in (*TOOL_TURNS, "tools_available"))
    assert compare_capabilities(source.template, result.template).parity
    assert go_mismatches(go_oracle, source, result) == []


def test_an_answer_quoting_the_result_is_not_claimed() -> None:
    source = _source(ANSWER_QUOTES_RESULT)
    result = translate_template(source)
    assert result.shape is not None
    assert tool_then_assistant(source, result.shape) == "<|end|><|after Zqt|><|assistant|>"
    statuses = {p.probe: p.status for p in result.report.probes}
    assert statuses["tool_results_then_answer"] != "match"
    assert result.tools_inert is None


#: R1-distill-Qwen-32B's way (llama.cpp's copy): the calls close with an eos, then the content
#: (empty or not) prints as a turn of its own, before any result.
CONTENT_AFTER_CALLS = (
    "{{ bos_token }}{%- for m in messages -%}"
    "{%- if m['role'] == 'user' -%}<|User|>{{ m['content'] }}{%- endif -%}"
    "{%- if m['role'] == 'assistant' and m['tool_calls'] -%}<|Assistant|><|calls|>"
    "{%- for t in m['tool_calls'] -%}<|call|>{{ t['function']['name'] }}\\n"
    "{{ t['function']['arguments'] | tojson }}<|/call|>{%- endfor -%}<|/calls|><|end|>"
    "{%- endif -%}"
    "{%- if m['role'] == 'assistant' and m['content'] is not none -%}"
    "<|Assistant|>{{ m['content'] }}<|end|>{%- endif -%}"
    "{%- if m['role'] == 'tool' -%}<|output|>{{ m['content'] }}<|/output|>{%- endif -%}"
    "{%- endfor -%}{%- if add_generation_prompt -%}<|Assistant|>{%- endif -%}"
)


def test_content_printed_after_the_calls_closes_the_turn(go_oracle: Any) -> None:
    """The turn with calls ends after its content's eos, not at the first eos (which closes
    the calls): otherwise the content lands before its own ``<|Assistant|>``."""
    from deploy_to_ollama.chat_template.tool_shape import infer_tool_shape

    source = _source(CONTENT_AFTER_CALLS)
    result = translate_template(source)
    assert result.shape is not None
    tools = infer_tool_shape(source, result.shape)
    assert tools.calls_end.endswith("<|/calls|><|end|><|Assistant|><|end|>")
    assert tools.result_open == "<|output|>"
    statuses = {p.probe: p.status for p in result.report.probes}
    assert statuses["tool_call_with_content"] == "match"
    assert all(statuses[name] == "match" for name in TOOL_TURNS)
    assert result.verified
    decision = select_route(ModelFacts(template=result.template, jinja=source.template), "0.33.0")
    assert decision.path == "rendered"
    assert go_mismatches(go_oracle, source, result) == []


def test_content_after_the_calls_printed_altered_is_not_claimed() -> None:
    """Near-miss: the content after the calls is upper-cased; the turn's end moves all the
    same, but no TEMPLATE prints it so, and the probe stays unproven."""
    altered = CONTENT_AFTER_CALLS.replace(
        "<|Assistant|>{{ m['content'] }}<|end|>", "<|Assistant|>{{ m['content'] | upper }}<|end|>"
    )
    source = _source(altered)
    assert "| upper" in source.template
    result = translate_template(source)
    statuses = {p.probe: p.status for p in result.report.probes}
    assert statuses["tool_call_with_content"] != "match"
    assert not result.verified
