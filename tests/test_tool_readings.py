"""Tool readings of session 5 (issue 12, toolsA): JSON computed before it is printed, a system
prompt placed only when tools are offered, a hoisted system lead-in, names looked up by id.

Each case renders real Jinja (transformers) against our Ollama port; every claim is re-rendered
by Go's own text/template, and each reading has a case where it must come out false.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy_to_ollama.chat_template import TemplateSource, load_probes, translate_template
from deploy_to_ollama.chat_template.hf_render import JSON_CLOSE, JSON_OPEN, mark_json_values
from deploy_to_ollama.chat_template.shape import infer_shape
from deploy_to_ollama.chat_template.tool_system import system_with_tools
from support.go_claims import go_mismatches

# ciscai's Mistral v0.3 "sota": the tool list is dumped to JSON before the loop and printed in
# the last user turn, after the calls dumped later; the system prompt shows only with tools.
MISTRAL_SOTA = (
    "{{ bos_token }}{% set ns = namespace(lastuser=-1, system=false, functions=false) %}"
    "{% if tools %}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{% set ns.lastuser = loop.index0 %}{% elif message['role'] == 'system' %}"
    "{% set ns.system = message['content'] %}{% endif %}{% endfor %}"
    "{% set ns.functions = tools|selectattr('type','eq','function')|map(attribute='function')"
    "|list|tojson %}{% endif %}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{% if loop.index0 == ns.lastuser and ns.functions %}{{ '[AVAILABLE_TOOLS] ' }}"
    "{{ ns.functions }}{{ '[/AVAILABLE_TOOLS]' }}{% endif %}{{ '[INST] ' }}"
    "{% if loop.index0 == ns.lastuser and ns.system %}{{ ns.system + ' ' }}{% endif %}"
    "{{ message['content'] }}{{ '[/INST]' }}{% elif message['role'] == 'tool' %}"
    "{{ '[TOOL_RESULTS] ' }}{{ dict(call_id=message['tool_call_id'], "
    "content=message['content'])|tojson }}{{ '[/TOOL_RESULTS]' }}"
    "{% elif message['role'] == 'assistant' %}{% if message['tool_calls'] %}"
    "{{ '[TOOL_CALLS] [' }}{% for call in message['tool_calls'] %}"
    "{% if call['type'] == 'function' %}{{ dict(id=call['id'], name=call['function']['name'], "
    "arguments=call['function']['arguments'])|tojson }}{% endif %}"
    "{% if not loop.last %}{{ ', ' }}{% endif %}{% endfor %}{{ ']' }}"
    "{% else %}{{ message['content'] }}{% endif %}{{ eos_token }}{% endif %}{% endfor %}"
)


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def _tool_probes(result: Any) -> dict[str, Any]:
    ids = {p.id for p in load_probes() if p.needs_tools and not p.needs_thinking}
    return {p.probe: p for p in result.report.probes if p.probe in ids}


def _go_confirms(source: TemplateSource, result: Any, go_oracle: Any) -> int:
    """Re-render every matching probe with Go's text/template; the number of claims checked."""
    checked = [p for p in result.report.probes if p.status == "match"]
    assert go_mismatches(go_oracle, source, result, checked, same_as_port=True) == []
    return len(checked)


def test_json_printed_after_json_dumped_later_is_still_marked() -> None:
    # The first tojson output is printed last: it must not hide the ones printed before it.
    marked = mark_json_values('[1] b {"a": 2} c', ['{"a": 2}', "[1]"])
    assert marked == f'{JSON_OPEN}[1]{JSON_CLOSE} b {JSON_OPEN}{{"a": 2}}{JSON_CLOSE} c'
    # Text that merely looks like an output is marked once, never twice, never out of JSON.
    assert mark_json_values("[1] x", ["[1]", "[1]"]) == f"{JSON_OPEN}[1]{JSON_CLOSE} x"
    assert mark_json_values("[1 x", ["[1]"]) == "[1 x"


def test_mistral_tool_system_in_last_user_turn_verifies_and_go_agrees(go_oracle: Any) -> None:
    source = _source(MISTRAL_SOTA)
    result = translate_template(source)
    tools = _tool_probes(result)
    assert result.verified and result.report.tools_verified
    ran = [p for p in tools.values() if p.status == "match"]
    assert len(ran) >= 6 and all(p.tier == "json_equivalent" for p in ran)
    offered = tools["tools_offered_not_called"]
    # The system prompt shows in the last user turn only because tools are offered.
    assert "[INST] You are a helpful assistant. What can" in (offered.expected or "")
    assert _go_confirms(source, result, go_oracle) >= len(ran)


def test_system_placed_with_tools_is_read_only_where_the_jinja_does_it() -> None:
    source = _source(MISTRAL_SOTA)
    placed = system_with_tools(source, infer_shape(source))
    assert placed is not None
    read = (placed.system_mode, placed.system_prefix, placed.system_suffix)
    assert read == ("last_user", "", " ")
    # The system prompt in the first user turn is not the last-user reading.
    first = MISTRAL_SOTA.replace("{% set ns.lastuser = loop.index0 %}", "").replace(
        "lastuser=-1", "lastuser=0"
    )
    assert system_with_tools(_source(first), infer_shape(_source(first))) is None
    # Nor one printed after the user content.
    after = MISTRAL_SOTA.replace(
        "{% if loop.index0 == ns.lastuser and ns.system %}{{ ns.system + ' ' }}{% endif %}"
        "{{ message['content'] }}",
        "{{ message['content'] }}{% if loop.index0 == ns.lastuser and ns.system %}"
        "{{ ' ' + ns.system }}{% endif %}",
    )
    assert system_with_tools(_source(after), infer_shape(_source(after))) is None


# Solar Open's layout: a provider prompt, then every system message under "## System Prompt",
# then the tools, in one lead-in; a tool result names the call it answers (looked up by id).
SOLAR_LIKE = (
    "{%- macro get_tool_name(messages, tool_call_id) %}"
    "{%- for msg in messages -%}{%- if msg.role == 'assistant' and msg.tool_calls -%}"
    "{%- for tool_call in msg.tool_calls -%}{%- if tool_call.id == tool_call_id -%}"
    "{{- tool_call.function.name }}{%- endif -%}{%- endfor -%}{%- endif -%}{%- endfor -%}"
    "{%- endmacro %}"
    "{%- set ns = namespace(system_messages=[]) -%}"
    "{%- for message in messages -%}{%- if message.role == 'system' -%}"
    "{%- set ns.system_messages = ns.system_messages + [message.content] -%}"
    "{%- endif -%}{%- endfor -%}"
    "<|begin|>system<|content|>{{- '## Provider System Prompt\\n\\nYou are Solar.' }}"
    "{%- if ns.system_messages %}{{- '\\n\\n## System Prompt' }}"
    "{%- for m in ns.system_messages %}{{- '\\n\\n' + m }}{%- endfor %}{%- endif %}"
    "{%- if tools %}{{- '\\n\\n## Tools\\n' }}<|tools:begin|>"
    "{%- for tool in tools %}<|tool:begin|>"
    "{{- tool.function | tojson }}<|tool:end|>{%- endfor %}<|tools:end|>{%- endif %}<|end|>"
    "{%- for message in messages -%}"
    "{%- if message.role == 'user' -%}<|begin|>user<|content|>{{ message.content }}<|end|>"
    "{%- elif message.role == 'tool' -%}"
    "{%- set prev_is_tool = loop.index0 > 0 and messages[loop.index0 - 1].role == 'tool' -%}"
    "{%- set next_is_tool = loop.index0 < (messages | length - 1) and "
    "messages[loop.index0 + 1].role == 'tool' -%}"
    "{%- if not prev_is_tool -%}<|begin|>tool<|tool_response|>{%- endif -%}"
    "<|tool_response:begin|>{{ message.tool_call_id }}<|tool_response:name|>"
    "{{- get_tool_name(messages, message.tool_call_id) }}<|tool_response:result|>"
    "{{- message.content }}<|tool_response:end|>"
    "{%- if not next_is_tool -%}<|end|>{%- endif -%}"
    "{%- elif message.role == 'assistant' -%}"
    "{%- if message.tool_calls -%}<|begin|>assistant<|tool_calls|>"
    "{%- for tool_call in message.tool_calls -%}<|tool_call:begin|>{{ tool_call.id }}"
    "<|tool_call:name|>{{ tool_call.function.name }}<|tool_call:args|>"
    "{{- tool_call.function.arguments | tojson }}<|tool_call:end|>{%- endfor -%}<|calls|>"
    "{%- else -%}<|begin|>assistant<|content|>{{ message.content }}<|end|>{%- endif -%}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|begin|>assistant{%- endif -%}"
)


def test_solar_lead_in_and_names_looked_up_by_call_id_verify_and_go_agrees(
    go_oracle: Any,
) -> None:
    source = _source(SOLAR_LIKE)
    result = translate_template(source)
    probes = {p.probe: p for p in result.report.probes}
    assert result.verified and result.report.tools_verified
    # Every system message joined as Ollama's .System is, in the lead-in.
    assert probes["two_system_messages"].status == "match"
    assert "$.System" in result.template
    # The result names the call it answers: the probe's tool message carries no name.
    answer = probes["tool_call_and_result"]
    assert "<|tool_response:name|>get_weather<|tool_response:result|>" in (answer.expected or "")
    assert "$rid := .ToolCallID" in result.template
    assert _go_confirms(source, result, go_oracle) >= 10


def test_readings_that_do_not_hold_are_not_taken(go_oracle: Any) -> None:
    # The result's own name: no lookup.
    own = SOLAR_LIKE.replace(
        "{{- get_tool_name(messages, message.tool_call_id) }}", "{{- message.name }}"
    )
    result = translate_template(_source(own))
    assert result.report.tools_verified and "$rid" not in result.template
    # System messages joined with one newline: .System (joined with a blank line) does not
    # hold; the messages collected with the template's own separator (system_each) do.
    joined = SOLAR_LIKE.replace("'\\n\\n' + m", "'\\n' + m")
    assert joined != SOLAR_LIKE
    source = _source(joined)
    result = translate_template(source)
    probes = {p.probe: p for p in result.report.probes}
    assert probes["two_system_messages"].status == "match"
    assert "$.System" not in result.template
    assert _go_confirms(source, result, go_oracle) >= 10
    # Upper-cased system messages: no reading holds, and none is claimed.
    upper = SOLAR_LIKE.replace("'\\n\\n' + m", "'\\n\\n' + m|upper")
    assert upper != SOLAR_LIKE
    probes = {p.probe: p for p in translate_template(_source(upper)).report.probes}
    assert probes["two_system_messages"].status == "differs"


# Mistral Small 3.2's layout: a dated default system prompt (only a TEMPLATE with currentDate
# can print it, so the lead-in is copied from observation) and the tools in the last user turn.
MISTRAL_SMALL_32_LIKE = (
    "{%- set default_system_message = 'You are Mistral Small. Today is ' + "
    "strftime_now('%Y-%m-%d') + '.' %}{{- bos_token }}"
    "{%- set system_prompt = default_system_message %}{%- set loop_messages = messages %}"
    "{%- if messages|length > 0 and messages[0]['role'] == 'system' %}"
    "{%- set system_prompt = messages[0]['content'] %}{%- set loop_messages = messages[1:] %}"
    "{%- endif %}"
    "{%- set user_messages = loop_messages | selectattr('role', 'equalto', 'user') | list %}"
    "{{- '[SYSTEM_PROMPT]' + system_prompt + '[/SYSTEM_PROMPT]' }}"
    "{%- for message in loop_messages %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if tools and message == user_messages[-1] %}"
    "{{- '[AVAILABLE_TOOLS]' + tools|tojson + '[/AVAILABLE_TOOLS]' }}{%- endif %}"
    "{{- '[INST]' + message['content'] + '[/INST]' }}"
    "{%- elif message['role'] == 'assistant' %}"
    "{%- if message.get('tool_calls') %}{%- for tool_call in message.tool_calls %}"
    "{{- '[TOOL_CALLS]' + tool_call.function.name + '[CALL_ID]' + tool_call.id }}"
    "{{- '[ARGS]' + tool_call['function']['arguments']|tojson }}{%- endfor %}"
    "{{- eos_token }}{%- else %}{{- message['content'] + eos_token }}{%- endif %}"
    "{%- elif message['role'] == 'tool' %}"
    "{{- '[TOOL_RESULTS]' + message.tool_call_id + '[TOOL_CONTENT]' + message.content"
    " + '[/TOOL_RESULTS]' }}{%- endif %}{%- endfor %}"
)


def test_dated_lead_in_with_tools_in_the_last_user_turn(go_oracle: Any) -> None:
    source = _source(MISTRAL_SMALL_32_LIKE)
    result = translate_template(source)
    assert result.verified and result.report.tools_verified
    assert result.system is None and "currentDate" in result.template
    tools = _tool_probes(result)
    # Two user turns, tools offered: the definitions go into the last one only.
    offered = tools["tools_offered_not_called"]
    assert offered.status == "match"
    assert (offered.expected or "").count("[AVAILABLE_TOOLS]") == 1
    assert "[/INST]I am" in (offered.expected or "")
    assert (offered.expected or "").index("[AVAILABLE_TOOLS]") > (offered.expected or "").index(
        "[/INST]"
    )
    assert _go_confirms(source, result, go_oracle) >= 10
    # Before Ollama 0.11.0 there is no currentDate: the dated default cannot be printed.
    old = translate_template(source, server_version="0.9.3")
    assert not old.verified and not old.report.tools_verified


def test_a_jinja_that_raises_on_every_tool_call_says_so() -> None:
    from deploy_to_ollama.chat_template.tool_sentinels import calls_rejected

    # Kimi K2 (llama.cpp's fixture) queues call ids with list.append, which transformers'
    # immutable sandbox refuses: no reference rendering of a call exists to prove against.
    kimi_like = (
        "{%- set q = namespace(ids=[]) -%}{%- if tools %}<|tools|>{{ tools | tojson }}{% endif -%}"
        "{%- for m in messages -%}"
        "<|im_{{ m.role }}|>{{ m.content }}"
        "{%- for c in m.tool_calls or [] -%}{%- set _ = q.ids.append(c.id) -%}"
        "<|call|>{{ c.function.name }}{%- endfor -%}<|im_end|>{%- endfor -%}"
        "{%- if add_generation_prompt -%}<|im_assistant|>{%- endif -%}"
    )
    reason = calls_rejected(_source(kimi_like))
    assert reason is not None and "'append' of 'list'" in reason
    result = translate_template(_source(kimi_like))
    assert result.report.tools_required and not result.report.tools_verified
    skipped = _tool_probes(result)["tools_offered_not_called"]
    assert skipped.status == "skipped" and "raises on every conversation with tool calls" in (
        skipped.reason or ""
    )
    # A template that renders calls has nothing to say here.
    assert calls_rejected(_source(SOLAR_LIKE)) is None
    assert (
        calls_rejected(_source(kimi_like.replace("{%- set _ = q.ids.append(c.id) -%}", ""))) is None
    )
