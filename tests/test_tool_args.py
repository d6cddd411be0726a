"""Tool calls and tool definitions printed one argument / one parameter at a time.

GLM, MiniMax, Qwen3-Coder, DeepSeek V3.2 print each argument of a call (and each parameter
of a tool) on its own. The translator reads those lists off as Go ``range`` loops over
Ollama's maps; Go walks a map in sorted key order, so a probe whose only difference is that
order is skipped with the reason, never counted. Every claim here is re-rendered by Go.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.chat_template import TemplateSource, load_probes, translate_template
from deploy_to_ollama.chat_template.key_order import KEY_ORDER, sorted_probe
from deploy_to_ollama.chat_template.prompt_diff import strip_bos
from deploy_to_ollama.chat_template.tool_tag import tool_call_tag
from deploy_to_ollama.chat_template.translate_tools import ESCAPED, FIELDS_UNPROVEN, VALUES_UNPROVEN
from deploy_to_ollama.chat_template.verify import json_equivalent, verify_template
from support.go_oracle import to_ollama_api_messages
from support.shared import CHAT_TEMPLATES_DIR, corpus_records, require_shared

_TURNS = (
    "{% for m in messages %}<|{{ m.role }}|>\n"
    "{% if m.role == 'tool' %}<tool_response>{{ m.content }}</tool_response>"
    "{% else %}{{ m.content }}"
    "{% for c in m.tool_calls or [] %}<tool_call>{{ c.function.name }}"
    "{% for k, v in c.function.arguments.items() %}"
    "\n<arg_key>{{ k }}</arg_key><arg_value>{{ v }}</arg_value>"
    "{% endfor %}\n</tool_call>{% endfor %}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# GLM-style: definitions as Python JSON, calls with one <arg_key>/<arg_value> per argument.
GLM_LIKE = (
    "{% if tools %}<tools>{% for t in tools %}\n{{ t | tojson }}{% endfor %}\n</tools>\n{% endif %}"
    + _TURNS
)

# Qwen3-Coder-style definitions: one <parameter> block per property, required as JSON.
PARAMS_LIKE = (
    "{% if tools %}<tools>{% for t in tools %}\n<function><name>{{ t.function.name }}</name>"
    "<description>{{ t.function.description }}</description><parameters>"
    "{% for k, v in t.function.parameters.properties.items() %}"
    "\n<parameter><name>{{ k }}</name><type>{{ v.type }}</type>"
    "<description>{{ v.description }}</description></parameter>{% endfor %}"
    "\n<required>{{ t.function.parameters.required | tojson }}</required></parameters>"
    "</function>{% endfor %}\n</tools>\n{% endif %}" + _TURNS
)


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def _tool_probes(result: Any) -> dict[str, Any]:
    ids = {p.id for p in load_probes() if p.needs_tools}
    return {p.probe: p for p in result.report.probes if p.probe in ids}


def _go_holds(go_oracle: Any, source: TemplateSource, result: Any) -> list[str]:
    """Probe ids whose claimed match does not hold when Go renders the TEMPLATE."""
    probes = {p.id: p for p in load_probes()}
    checks = [p for p in result.report.probes if p.status == "match"]
    cases = [
        {
            "kind": "ollama",
            "template": result.template,
            "messages": to_ollama_api_messages(list(probes[c.probe].messages)),
            "system": result.system or "",
            "think": probes[c.probe].think,
            **({"tools": list(probes[c.probe].tools)} if probes[c.probe].tools else {}),
        }
        for c in checks
    ]
    wrong = []
    for checked, go in zip(checks, go_oracle.run(cases), strict=True):
        exp, act = strip_bos(checked.expected or "", go.output, "<s>")
        probe = probes[checked.probe]
        holds = exp == act if checked.tier == "exact" else json_equivalent(source, probe, exp, act)
        if go.failed or not holds:
            wrong.append(checked.probe)
    return wrong


def test_per_argument_calls_become_a_range_over_the_arguments(go_oracle: Any) -> None:
    source = _source(GLM_LIKE)
    result = translate_template(source)
    assert "range $ak, $av := $c.Function.Arguments" in result.template
    assert result.verified and result.report.tools_verified
    tools = _tool_probes(result)
    call = tools["tool_call_and_result"]
    assert call.status == "match"
    # (transformers renders with trim_blocks: the newline after a block tag goes)
    want = "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value></tool_call>"
    assert want in (call.actual or "")
    # title/body in request order: Go prints body first. Skipped with the reason, not a match.
    unsorted = tools["tool_args_unicode_quotes"]
    assert unsorted.status == "skipped" and unsorted.reason == KEY_ORDER
    assert tool_call_tag(result.template) == "<tool_call>"
    assert _go_holds(go_oracle, source, result) == []


def test_a_real_difference_in_argument_text_is_not_taken_for_key_order() -> None:
    source = _source(GLM_LIKE)
    result = translate_template(source)
    broken = result.template.replace("</arg_value>", "</arg_val>")
    assert broken != result.template
    report = verify_template(source, broken, system=result.system, tools=True)
    statuses = {p.probe: p.status for p in report.probes}
    assert statuses["tool_call_and_result"] == "differs"
    assert statuses["tool_args_unicode_quotes"] == "differs"
    assert not report.tools_verified


def test_sorted_probe_changes_only_unsorted_keys() -> None:
    probes = {p.id: p for p in load_probes()}
    assert sorted_probe(probes["tool_call_and_result"]) is None  # one argument: nothing moves
    moved = sorted_probe(probes["tool_args_unicode_quotes"])
    assert moved is not None
    (call,) = next(m for m in moved.messages if m.get("tool_calls"))["tool_calls"]
    assert list(call["function"]["arguments"]) == sorted(call["function"]["arguments"])


def test_per_parameter_definitions_become_a_range_over_the_properties(go_oracle: Any) -> None:
    source = _source(PARAMS_LIKE)
    result = translate_template(source)
    assert "range $pk, $pv := $t.Function.Parameters.Properties" in result.template
    assert "json $t.Function.Parameters.Required" in result.template
    assert result.verified and result.report.tools_verified
    offered = _tool_probes(result)["tools_offered_not_called"]
    assert offered.status == "match"
    assert "<parameter><name>timezone</name><type>string</type>" in (offered.actual or "")
    assert _go_holds(go_oracle, source, result) == []


def test_close_after_tool_results_before_a_user_turn_is_read_off() -> None:
    """Llama 4's shape gives ``<|header_start|>user`` to the assistant suffix; after a tool
    result followed by a user turn the TEMPLATE must still print it."""
    require_shared(CHAT_TEMPLATES_DIR)
    record = next(r for r in corpus_records() if r["_file"] == "llama4__axolotl-llama4.json")
    source = TemplateSource(
        template=record["jinja"],
        origin=CHAT_TEMPLATES_DIR / record["_file"],
        kind="jinja",
        bos_token=record.get("bos_token") or "<s>",
        eos_token=record.get("eos_token") or "</s>",
    )
    result = translate_template(source)
    assert 'Role "user"' in result.template and result.report.tools_verified
    call = _tool_probes(result)["tool_call_and_result"]
    assert call.status == "match"
    assert "<|eot|><|header_start|>user<|header_end|>\n\nShould I" in (call.actual or "")


# Kimi-style: a call's id is built from its name and its index in the turn.
INDEXED = GLM_LIKE.replace(
    "<tool_call>{{ c.function.name }}",
    "<tool_call>functions.{{ c.function.name }}:{{ loop.index0 }} "
    "{{ c.function.arguments | tojson }}",
).replace(
    "{% for k, v in c.function.arguments.items() %}"
    "\n<arg_key>{{ k }}</arg_key><arg_value>{{ v }}</arg_value>{% endfor %}",
    "",
)


def test_a_call_index_printed_by_the_jinja_becomes_the_range_index(go_oracle: Any) -> None:
    source = _source(INDEXED)
    result = translate_template(source)
    assert "{{- $c.Function.Name }}:\n{{- $k }}" in result.template
    assert result.verified and result.report.tools_verified
    parallel = _tool_probes(result)["parallel_tool_calls"]
    assert parallel.status == "match"
    assert "functions.get_weather:0 " in (parallel.actual or "")
    assert "functions.get_time:1 " in (parallel.actual or "")
    assert _go_holds(go_oracle, source, result) == []


# Qwen3.5-style: every assistant turn after the last user message opens with an empty
# <think> block, a turn with tool calls included.
AFTER_QUERY = (
    "{% if tools %}<|im_start|>system\n{% if messages[0].role == 'system' %}"
    "{{ messages[0].content }}\n{% endif %}{% for t in tools %}{{ t | tojson }}\n{% endfor %}"
    "<|im_end|>\n{% elif messages[0].role == 'system' %}<|im_start|>system\n"
    "{{ messages[0].content }}<|im_end|>\n{% endif %}"
    "{% set ns = namespace(last=-1) %}{% for m in messages %}{% if m.role == 'user' %}"
    "{% set ns.last = loop.index0 %}{% endif %}{% endfor %}"
    "{% for m in messages %}"
    "{% if m.role == 'user' %}<|im_start|>user\n{{ m.content }}<|im_end|>\n"
    "{% elif m.role == 'assistant' %}<|im_start|>assistant\n"
    "{% if loop.index0 > ns.last %}<think>\n\n</think>\n\n{% endif %}{{ m.content }}"
    "{% for c in m.tool_calls or [] %}<tool_call>\n"
    '{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}'
    "\n</tool_call>{% endfor %}<|im_end|>\n"
    "{% elif m.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m.content }}\n"
    "</tool_response><|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_a_call_turn_after_the_last_user_message_opens_like_a_final_turn(
    go_oracle: Any,
) -> None:
    source = _source(AFTER_QUERY)
    result = translate_template(source)
    assert "gt $i $queryAt" in result.template
    assert result.verified and result.report.tools_verified
    tools = _tool_probes(result)
    # The conversation ends with the results: the call turn comes after the last question.
    parallel = tools["parallel_tool_calls"]
    assert parallel.status == "match"
    assert "<|im_start|>assistant\n<think>\n\n</think>\n\n<tool_call>" in (parallel.actual or "")
    # A follow-up question comes after the call turn: no <think> block there.
    call = tools["tool_call_and_result"]
    assert call.status == "match" and "<think>" not in (call.actual or "")
    assert tool_call_tag(result.template) == "<tool_call>"
    assert _go_holds(go_oracle, source, result) == []


# DeepSeek V3.2-style: the answer after tool results opens no turn of its own.
BARE_AFTER_RESULTS = (
    "{% if messages[0].role == 'system' %}{{ messages[0].content }}\n{% endif %}"
    "{% if tools %}Tools:{% for t in tools %}\n{{ t | tojson }}{% endfor %}\n{% endif %}"
    "{% set ns = namespace(tool=false) %}{% for m in messages %}"
    "{% if m.role == 'user' %}<U>{{ m.content }}{% set ns.tool = false %}"
    "{% elif m.role == 'assistant' %}{% if not ns.tool %}<A>{% endif %}{{ m.content }}"
    "{% for c in m.tool_calls or [] %}<call>{{ c.function.name }} "
    "{{ c.function.arguments | tojson }}</call>{% endfor %}<eos>{% set ns.tool = false %}"
    "{% elif m.role == 'tool' %}{% if not ns.tool %}<results>{% endif %}"
    "<r>{{ m.content }}</r>{% set ns.tool = true %}"
    "{% if loop.last or messages[loop.index0 + 1].role != 'tool' %}</results>{% endif %}"
    "{% endif %}{% endfor %}{% if add_generation_prompt and not ns.tool %}<A>{% endif %}"
)


# Qwen3-Coder prints objects with tojson and other scalars with Python's str (True, None).
PYTHON_VALUES = GLM_LIKE.replace(
    "<arg_value>{{ v }}</arg_value>",
    "<arg_value>{% if v is mapping or v is sequence and v is not string %}{{ v | tojson }}"
    "{% else %}{{ v | string }}{% endif %}</arg_value>",
)
# GLM prints every value that is not a string with tojson.
JSON_VALUES = GLM_LIKE.replace(
    "<arg_value>{{ v }}</arg_value>",
    "<arg_value>{{ v if v is string else v | tojson }}</arg_value>",
)


def _typed_probe() -> Any:
    base = next(p for p in load_probes() if p.id == "tool_call_and_result")
    arguments = {"city": "Paris", "days": 3, "opts": {"metric": True, "hours": [6, 12]}}
    arguments |= {"alerts": False, "note": None, "zone": 'a "quoted" value'}
    messages = [dict(m) for m in base.messages]
    turn = next(i for i, m in enumerate(messages) if m.get("tool_calls"))
    call = dict(messages[turn]["tool_calls"][0])
    call["function"] = {**call["function"], "arguments": dict(sorted(arguments.items()))}
    messages[turn] = {**messages[turn], "tool_calls": [call]}
    return replace(base, messages=tuple(messages))


def test_values_that_are_not_strings_print_as_the_jinja_prints_them(go_oracle: Any) -> None:
    """Objects, numbers, booleans and null in a per-argument call: tojson (GLM) or Python's
    str for scalars (Qwen3-Coder), in Python and in Go alike; where neither is recognised the
    translation says only string values are proven."""
    probe = _typed_probe()
    for template, python in ((JSON_VALUES, False), (PYTHON_VALUES, True)):
        source = _source(template)
        result = translate_template(source)
        assert result.verified and VALUES_UNPROVEN not in result.warnings
        report = verify_template(
            source, result.template, system=result.system, tools=True, probes=[probe]
        )
        (checked,) = report.probes
        assert checked.status == "match", checked.actual
        actual = checked.actual or ""
        assert ("<arg_value>False</arg_value>" in actual) is python
        assert ("<arg_value>None</arg_value>" in actual) is python
        assert "<arg_value>3</arg_value>" in actual and '"quoted" value<' in actual
        case = {
            "kind": "ollama",
            "template": result.template,
            "messages": to_ollama_api_messages(list(probe.messages)),
            "system": result.system or "",
            "think": None,
            "tools": list(probe.tools),
        }
        (go,) = go_oracle.run([case])
        assert not go.failed and go.output == actual
    plain = translate_template(_source(GLM_LIKE))  # {{ v }}: Python's str for every value
    assert VALUES_UNPROVEN in plain.warnings


# LFM2.5-style: Python call syntax, k='v' joined by ", " (no glue folds into the item whole).
PYTHON_CALLS = GLM_LIKE.replace(
    "<tool_call>{{ c.function.name }}{% for k, v in c.function.arguments.items() %}"
    "\n<arg_key>{{ k }}</arg_key><arg_value>{{ v }}</arg_value>{% endfor %}\n</tool_call>",
    "<tool_call>{{ c.function.name }}({% for k, v in c.function.arguments.items() %}"
    "{{ k }}='{{ v }}'{% if not loop.last %}, {% endif %}{% endfor %})</tool_call>",
)


def test_a_call_without_arguments_prints_its_wrapper_alone(go_oracle: Any) -> None:
    assert PYTHON_CALLS != GLM_LIKE
    source = _source(PYTHON_CALLS)
    result = translate_template(source)
    assert result.verified and result.report.tools_verified
    base = next(p for p in load_probes() if p.id == "tool_call_and_result")
    messages = [dict(m) for m in base.messages]
    turn = next(i for i, m in enumerate(messages) if m.get("tool_calls"))
    call = dict(messages[turn]["tool_calls"][0])
    call["function"] = {**call["function"], "arguments": {}}
    messages[turn] = {**messages[turn], "tool_calls": [call]}
    probe = replace(base, messages=tuple(messages))
    report = verify_template(
        source, result.template, system=result.system, tools=True, probes=[probe]
    )
    (checked,) = report.probes
    assert checked.status == "match" and "<tool_call>get_weather()</tool_call>" in (
        checked.actual or ""
    )
    parallel = _tool_probes(result)["parallel_tool_calls"]
    assert "get_weather(city='Tokyo')</tool_call>" in (parallel.actual or "")
    assert _go_holds(go_oracle, source, result) == []


def test_parameter_fields_beyond_type_and_description_are_said_to_be_unproven() -> None:
    with_enum = PARAMS_LIKE.replace(
        "<description>{{ v.description }}</description>",
        "<description>{{ v.description }}</description>"
        "{% if v.enum %}<enum>{{ v.enum | tojson }}</enum>{% endif %}",
    )
    assert with_enum != PARAMS_LIKE
    result = translate_template(_source(with_enum))
    assert result.report.tools_verified and FIELDS_UNPROVEN in result.warnings
    assert FIELDS_UNPROVEN not in translate_template(_source(PARAMS_LIKE)).warnings


# YandexGPT-style: system messages are dropped; the tool list opens the prompt.
SYSTEM_DROPPED = (
    "{% if tools %}Functions:{% for t in tools %}\n{{ t | tojson }}{% endfor %}\n\n{% endif %}"
    "{% for m in messages %}{% if m.role == 'user' %}USER: {{ m.content }}\n"
    "{% elif m.role == 'assistant' %}ASSISTANT: {{ m.content }}\n"
    "{% elif m.role == 'tool' %}RESULT: {{ m.content }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


@pytest.mark.parametrize(
    ("template", "translated", "probe", "printed"),
    [
        pytest.param(
            BARE_AFTER_RESULTS, 'if ne $prevRole "tool"', "tool_results_then_answer",
            "</results>It is 9 degrees", id="answer-right-after-tool-results-opens-no-turn",
        ),
        pytest.param(
            SYSTEM_DROPPED, ".Tools", "tools_available", r"^Functions:\{",
            id="tools-open-the-prompt-where-system-messages-are-dropped",
        ),
    ],
)  # fmt: skip
def test_a_tool_turn_printed_its_own_way_is_read_off_and_holds_in_go(
    go_oracle: Any, template: str, translated: str, probe: str, printed: str
) -> None:
    """The TEMPLATE has the construct, the probe matches with the text, and Go agrees."""
    source = _source(template)
    result = translate_template(source)
    assert translated in result.template
    assert result.verified and result.report.tools_verified
    checked = _tool_probes(result)[probe]
    assert checked.status == "match"
    assert re.search(printed, checked.actual or "")
    assert _go_holds(go_oracle, source, result) == []


# Qwen3-Coder 30B (Ollama library GGUF): required names one by one, only when there are some.
REQUIRED_LIST = PARAMS_LIKE.replace(
    "\n<required>{{ t.function.parameters.required | tojson }}</required>",
    "{% if t.function.parameters.required %}\n<required>["
    "{% for r in t.function.parameters.required %}{% if not loop.first %}, {% endif %}"
    "`{{ r }}`{% endfor %}]</required>{% endif %}",
)


def test_required_names_printed_one_by_one_become_a_guarded_range(go_oracle: Any) -> None:
    assert REQUIRED_LIST != PARAMS_LIKE
    source = _source(REQUIRED_LIST)
    result = translate_template(source)
    assert "range $rk, $rv := $t.Function.Parameters.Required" in result.template
    assert result.verified and result.report.tools_verified
    offered = next(p for p in load_probes() if p.id == "tools_available")
    tool = offered.tools[0]
    props = {"city": {"type": "string", "description": "City"}, "unit": {"type": "string"}}
    params = {"type": "object", "properties": props, "required": ["city", "unit"]}
    both = {**tool, "function": {**tool["function"], "parameters": params}}
    free = {
        **tool,
        "function": {**tool["function"], "name": "now", "parameters": {**params, "required": []}},
    }
    probe = replace(offered, tools=(both, free))
    report = verify_template(
        source, result.template, system=result.system, tools=True, probes=[probe]
    )
    (checked,) = report.probes
    assert checked.status == "match", checked.actual
    assert "<required>[`city`, `unit`]</required>" in (checked.actual or "")
    assert (checked.actual or "").count("<required>") == 1  # none printed for `now`
    case = {
        "kind": "ollama",
        "template": result.template,
        "messages": to_ollama_api_messages(list(probe.messages)),
        "system": result.system or "",
        "think": None,
        "tools": list(probe.tools),
    }
    (go,) = go_oracle.run([case])
    assert not go.failed and go.output == checked.actual
    assert _go_holds(go_oracle, source, result) == []


# Gemma 4-style: types upper-cased, and an assistant's content after its tool calls.
GEMMA_LIKE = (
    "{% if messages[0].role == 'system' %}{{ messages[0].content }}\n{% endif %}"
    "{% if tools %}{% for t in tools %}<tool>{{ t.function.name }}:{{ t.function.description }}"
    "{% for k, v in t.function.parameters.properties.items() %}"
    "{% if not loop.first %},{% endif %}{{ k }}={{ v.type | upper }}/{{ v.description }}"
    "{% endfor %}</tool>{% endfor %}\n{% endif %}"
    "{% for m in messages %}{% if m.role == 'user' %}<U>{{ m.content }}</U>\n"
    "{% elif m.role == 'assistant' %}<A>{% for c in m.tool_calls or [] %}<call>"
    "{{ c.function.name }}{{ c.function.arguments | tojson }}</call>{% endfor %}"
    "{{ m.content }}</A>\n{% elif m.role == 'tool' %}<T>{{ m.content }}</T>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<A>{% endif %}"
)


def test_transformed_types_and_content_after_calls(go_oracle: Any) -> None:
    source = _source(GEMMA_LIKE)
    result = translate_template(source)
    assert "$ty := print $pv.Type" in result.template and "STRING" in result.template
    assert result.verified and result.report.tools_verified
    offered = _tool_probes(result)["tools_available"]
    assert "city=STRING/City name" in (offered.actual or "")
    with_content = _tool_probes(result)["tool_call_with_content"]
    assert with_content.status == "match"
    assert "</call>" in (with_content.actual or "")
    assert tool_call_tag(result.template) == "<call>"
    assert _go_holds(go_oracle, source, result) == []


def test_tool_text_the_jinja_escapes_is_refused_not_verified() -> None:
    """A template that escapes an apostrophe (as Python's repr or HTML do) matches the
    probes' plain descriptions but not common ones: the reading is refused with the reason."""
    escaped = GEMMA_LIKE.replace(
        "{{ v.description }}", '{{ v.description | replace("\'", "\\\\\'") }}'
    )
    assert escaped != GEMMA_LIKE
    result = translate_template(_source(escaped))
    assert not result.report.tools_verified
    offered = _tool_probes(result)["tools_available"]
    assert offered.status == "skipped" and ESCAPED in (offered.reason or "")
