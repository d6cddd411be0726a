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


def test_python_json_tool_definitions_are_skipped_with_the_reason() -> None:
    for template, layout in ((TOOLS_AS_JSON, "', '/': ' separators"), (TOOLS_INDENTED, "indent=4")):
        result = translate_template(_source(template))
        assert result.verified
        for probe in _tool_results(result).values():
            assert probe.status == "skipped"
            assert layout in (probe.reason or "") and "compact Go JSON" in (probe.reason or "")
        assert 'eq .Role "tool"' not in result.template


def test_forcing_tool_probes_on_json_definitions_shows_the_difference() -> None:
    """The skip is not hiding a match: given tools, the best TEMPLATE does differ."""
    source = _source(TOOLS_AS_JSON)
    result = translate_template(source)
    suite = [p for p in load_probes() if p.needs_tools]
    forced = verify_template(
        source, result.template, system=result.system, tools=True, probes=suite
    )
    assert {p.status for p in forced.probes} == {"differs"}
    assert '{"type": "function"' in (forced.probes[0].expected or "")


def test_other_tool_layouts_and_raising_templates_say_why() -> None:
    assert analyse_tools(_source(TOOL_NAMES_ONLY)).mode == "text"
    raising = "{% if tools %}{{ raise_exception('no tools') }}{% endif %}" + PLAIN_CHATML
    analysis = analyse_tools(_source(raising))
    assert analysis.mode == "raises" and "no tools" in analysis.reason
    assert analyse_tools(_source(PLAIN_CHATML)).mode == "ignored"


def test_untranslated_tool_calls_stay_skipped_never_counted() -> None:
    result = translate_template(_source(CALLS_AS_TEXT))
    tools = _tool_results(result)
    assert result.verified
    assert tools["tool_call_and_result"].status == "skipped"
    assert tools["tool_call_and_result"].reason == UNTRANSLATED_CALLS
