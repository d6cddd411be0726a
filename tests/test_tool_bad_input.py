"""Tool input no Ollama request can carry gets a precise skip reason, never a pass.

String arguments that are not JSON, a non-object parameter schema, schema fields Ollama's API
drops, and a Jinja template that renders tools only by raising: each probe is skipped with
the reason, and a report whose tool probes are all skipped is not ``tools_verified``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from deploy_to_ollama.chat_template import TemplateSource, load_probes, translate_template
from deploy_to_ollama.chat_template.probes import Probe
from deploy_to_ollama.chat_template.verify import verify_template
from test_tool_args import GLM_LIKE, INDEXED


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def _probe(probe_id: str) -> Probe:
    return next(p for p in load_probes() if p.id == probe_id)


def _run(template: str, go_template: str, system: str | None, probe: Probe) -> object:
    report = verify_template(
        _source(template), go_template, system=system, tools=True, probes=[probe]
    )
    (result,) = report.probes
    return result, report


def test_string_arguments_that_are_not_json_are_skipped_with_the_reason() -> None:
    # The Jinja side prints the arguments with tojson, so it renders a string too.
    result = translate_template(_source(INDEXED))
    good = _probe("tool_call_and_result")
    checked, _ = _run(INDEXED, result.template, result.system, good)
    assert checked.status == "match"  # the same conversation with object arguments holds
    messages = [dict(m) for m in good.messages]
    call_turn = next(i for i, m in enumerate(messages) if m.get("tool_calls"))
    call = dict(messages[call_turn]["tool_calls"][0])
    call["function"] = {**call["function"], "arguments": "city=Paris"}
    messages[call_turn] = {**messages[call_turn], "tool_calls": [call]}
    bad = replace(good, messages=tuple(messages))
    checked, report = _run(INDEXED, result.template, result.system, bad)
    assert checked.status == "skipped"
    assert "string arguments that are not JSON" in checked.reason
    assert "'city=Paris'" in checked.reason
    assert not report.tools_verified  # nothing ran: no tool claim


def test_a_non_object_schema_and_dropped_fields_are_skipped_with_the_reason() -> None:
    result = translate_template(_source(GLM_LIKE))
    offered = _probe("tools_available")
    checked, _ = _run(GLM_LIKE, result.template, result.system, offered)
    assert checked.status == "match"
    tool = dict(offered.tools[0])
    array = {**tool, "function": {**tool["function"], "parameters": {"type": "array"}}}
    checked, report = _run(
        GLM_LIKE, result.template, result.system, replace(offered, tools=(array,))
    )
    assert checked.status == "skipped" and "non-object parameter schema ('array')" in checked.reason
    assert not report.tools_verified
    params = {**tool["function"]["parameters"], "additionalProperties": False}
    extra = {**tool, "function": {**tool["function"], "parameters": params}}
    checked, _ = _run(GLM_LIKE, result.template, result.system, replace(offered, tools=(extra,)))
    assert checked.status == "skipped" and "additionalProperties" in checked.reason


def test_a_schema_ollama_keeps_still_differs_when_the_template_is_wrong() -> None:
    result = translate_template(_source(GLM_LIKE))
    wrong = result.template.replace("<tools>", "<tool-list>")
    assert wrong != result.template
    checked, _ = _run(GLM_LIKE, wrong, result.system, _probe("tools_available"))
    assert checked.status == "differs"


def test_tools_rendered_only_through_raise_exception_say_so_for_every_tool_probe() -> None:
    raising = (
        "{% if tools %}{{ raise_exception('tools are not supported') }}{% endif %}"
        + (GLM_LIKE.split("{% endif %}", 1)[1])
    )
    result = translate_template(_source(raising))
    tools = [p for p in result.report.probes if p.probe in {q.id for q in load_probes() if q.tools}]
    assert tools and all(p.status == "skipped" for p in tools)
    assert all("tools are not supported" in (p.reason or "") for p in tools)
    assert not result.report.tools_verified and ".Tools" not in result.template
