"""Tool calling: tool probes run only where the Jinja template's tool text is reproducible.

Every case renders real Jinja (transformers) and our Ollama port; a tool probe counts as a
match only when both prompts are equal, and otherwise stays skipped with a reason that says why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy_to_ollama.chat_template import TemplateSource, load_probes, translate_template
from deploy_to_ollama.chat_template.tools import NO_TOOLS, UNTRANSLATED_CALLS, analyse_tools
from deploy_to_ollama.chat_template.verify import verify_template

# ChatML that knows nothing about tools: a tool result is one more role turn.
PLAIN_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen2.5-style: tool definitions dumped with tojson inside the system turn.
TOOLS_AS_JSON = (
    "{% if tools %}<|im_start|>system\n# Tools\n{% for t in tools %}{{ t | tojson }}\n"
    "{% endfor %}<|im_end|>\n{% endif %}" + PLAIN_CHATML
)

# Llama-3.1-style indent=4 dump.
TOOLS_INDENTED = TOOLS_AS_JSON.replace("t | tojson", "t | tojson(indent=4)")

# Tool results named after the tool, so the TEMPLATE must print .ToolName.
NAMED_RESULTS = (
    "{% for m in messages %}{% if m.role == 'tool' %}<|im_start|>tool name={{ m.name }}\n"
    "{{ m.content }}<|im_end|>\n{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Only the tool names appear, in a layout of its own.
TOOL_NAMES_ONLY = (
    "{% if tools %}Tools: {% for t in tools %}{{ t.function.name }} {% endfor %}\n{% endif %}"
    + PLAIN_CHATML
)

# Renders assistant tool calls as text the TEMPLATE does not reproduce.
CALLS_AS_TEXT = PLAIN_CHATML.replace(
    "{{ m.content }}",
    "{{ m.content }}{% for c in m.tool_calls or [] %}CALL {{ c.function.name }}{% endfor %}",
)

# Prints each argument as key=value: the translator has no per-argument loop (yet).
CALLS_PER_ARGUMENT = PLAIN_CHATML.replace(
    "{{ m.content }}",
    "{{ m.content }}{% for c in m.tool_calls or [] %}{% for k, v in c.function.arguments.items() %}"
    "{{ k }}={{ v }}{% endfor %}{% endfor %}",
)


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def _tool_results(result: Any) -> dict[str, Any]:
    return {p.probe: p for p in result.report.probes if p.probe.startswith("tool")}


def test_template_ignoring_tools_verifies_tool_results_with_a_tool_turn() -> None:
    result = translate_template(_source(PLAIN_CHATML))
    tools = _tool_results(result)
    assert result.verified
    assert tools["tool_call_and_result"].status == "match"
    # Ollama would refuse the tools of a TEMPLATE without .Tools: no claim on tool definitions.
    assert tools["tools_available"].status == "skipped"
    assert tools["tools_available"].reason == NO_TOOLS
    assert ".Tools" not in result.template
    assert 'eq .Role "tool"' in result.template
    call = tools["tool_call_and_result"]
    assert '<|im_start|>tool\n{"temperature": 21' in (call.expected or "")
    assert call.expected == call.actual


def test_tool_result_name_becomes_tool_name() -> None:
    result = translate_template(_source(NAMED_RESULTS))
    assert ".ToolName }}" in result.template
    assert _tool_results(result)["tool_call_and_result"].status == "match"
    assert "tool name=get_weather" in (_tool_results(result)["tool_call_and_result"].actual or "")


def test_python_json_tool_definitions_are_translated_json_equivalent() -> None:
    """Tool definitions printed as Python JSON now go into the TEMPLATE (``.Tools``); their
    probes match at the json_equivalent tier, never exact (Go prints compact JSON)."""
    for template in (TOOLS_AS_JSON, TOOLS_INDENTED):
        result = translate_template(_source(template))
        assert result.verified and result.report.tools_verified
        assert "{{- if .Tools }}" in result.template
        offered = _tool_results(result)["tools_available"]
        assert offered.status == "match" and offered.tier == "json_equivalent"
        assert not offered.exact and offered.expected != offered.actual


def test_forcing_tool_probes_on_json_definitions_shows_the_difference() -> None:
    """The plain TEMPLATE (no .Tools) given tools does differ: tool probes only count for the
    TEMPLATE that carries the definitions."""
    from deploy_to_ollama.chat_template.emit import candidates
    from deploy_to_ollama.chat_template.shape import infer_shape

    source = _source(TOOLS_AS_JSON)
    plain, system = candidates(source, infer_shape(source))[0]
    suite = [p for p in load_probes() if p.needs_tools]
    forced = verify_template(source, plain, system=system, tools=True, probes=suite)
    assert "differs" in {p.status for p in forced.probes}
    assert "match" not in {p.status for p in forced.probes if p.probe == "tools_available"}
    assert '{"type": "function"' in (forced.probes[0].expected or "")


def test_other_tool_layouts_and_raising_templates_say_why() -> None:
    assert analyse_tools(_source(TOOL_NAMES_ONLY)).mode == "text"
    raising = "{% if tools %}{{ raise_exception('no tools') }}{% endif %}" + PLAIN_CHATML
    analysis = analyse_tools(_source(raising))
    assert analysis.mode == "raises" and "no tools" in analysis.reason
    assert analyse_tools(_source(PLAIN_CHATML)).mode == "ignored"


def test_untranslated_tool_calls_stay_skipped_never_counted() -> None:
    result = translate_template(_source(CALLS_PER_ARGUMENT))
    tools = _tool_results(result)
    assert result.verified
    assert tools["tool_call_and_result"].status == "skipped"
    assert tools["tool_call_and_result"].reason == UNTRANSLATED_CALLS


def test_tool_calls_printed_as_text_are_translated() -> None:
    result = translate_template(_source(CALLS_AS_TEXT))
    call = _tool_results(result)["tool_call_and_result"]
    assert result.verified and call.status == "match" and call.tier == "exact"
    assert "CALL get_weather" in (call.actual or "") and "$c.Function.Name" in result.template
