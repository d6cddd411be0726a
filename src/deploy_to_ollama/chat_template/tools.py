"""Decide, by rendering the Jinja template with a sentinel tool, what its tool calling needs.

Ollama's ``json`` prints compact Go JSON (``{"a":1}``) with Go's field order; transformers'
``tojson`` prints Python's ``json.dumps`` (``", "``, ``": "``, optional indent, request key
order). No Go template turns one into the other, so where the Jinja prints tool definitions
the translator (``tool_shape.py``) emits ``.Tools`` and its probes match at the
``json_equivalent`` tier at best; this module classifies the layout, gives the reason a tool
probe stays skipped, and runs the tool probes of templates that ignore tool definitions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from ..errors import TemplateRenderError
from .probes import Probe, load_probes
from .source import TemplateSource
from .verify import ProbeResult, VerificationReport, verify_template

ToolMode = Literal["ignored", "python_json", "text", "raises"]

#: A tool with sentinel names, so its traces in a rendering can be found and classified.
SENTINEL_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "Zqtoolname",
        "description": "Zqtooldesc",
        "parameters": {
            "type": "object",
            "properties": {"zqarg": {"type": "string", "description": "Zqargdesc"}},
            "required": ["zqarg"],
        },
    },
}

_USER = [{"role": "user", "content": "Zquserone"}]


@dataclass(frozen=True, slots=True)
class ToolAnalysis:
    """How the Jinja template renders tool definitions, and why tool probes may not run."""

    mode: ToolMode
    """``ignored``: tools change nothing; ``python_json``: dumped with Python's JSON layout;
    ``text``: rendered some other way; ``raises``: the template fails when given tools."""
    reason: str
    """One line for skipped tool probes (empty when tool definitions are ignored)."""


def _python_layouts(tool: dict[str, Any]) -> list[tuple[str, str]]:
    """(description, text) of the JSON layouts transformers' ``tojson`` can produce."""
    layouts = []
    for value, what in ((tool, "tool"), (tool["function"], "tool function")):
        for indent in (None, 2, 4):
            text = json.dumps(value, ensure_ascii=False, indent=indent)
            how = f"indent={indent}" if indent else "', '/': ' separators"
            layouts.append((f"{what} as Python JSON ({how})", text))
        compact = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        layouts.append((f"{what} as compact JSON in request key order", compact))
    return layouts


def analyse_tools(source: TemplateSource) -> ToolAnalysis:
    """Render one user message with and without the sentinel tool and classify the difference.

    Returns:
        The analysis; only ``ignored`` lets tool probes be verified (Ollama then gets the same
        prompt whatever tools a request carries).
    """
    from .hf_render import render_hf

    tokens = source.template_variables()
    try:
        plain = render_hf(source.template, _USER, tokens=tokens, add_generation_prompt=True)
    except TemplateRenderError as err:
        return ToolAnalysis("raises", f"the Jinja template raises: {err}")
    try:
        with_tools = render_hf(
            source.template, _USER, tokens=tokens, add_generation_prompt=True, tools=[SENTINEL_TOOL]
        )
    except TemplateRenderError as err:
        return ToolAnalysis("raises", f"the Jinja template raises when given tools: {err}")
    if with_tools == plain:
        return ToolAnalysis("ignored", "")
    for what, text in _python_layouts(SENTINEL_TOOL):
        if text in with_tools:
            return ToolAnalysis(
                "python_json",
                f"the Jinja template prints each {what}; Ollama's json prints compact Go JSON "
                "with Go's key order, so no TEMPLATE renders tool definitions byte-equal",
            )
    return ToolAnalysis(
        "text",
        "the Jinja template renders tool definitions in a layout the translator does not "
        "reproduce, so tool probes stay unverified",
    )


#: Why a probe that only offers tools is skipped when the Jinja template ignores tools.
NO_TOOLS = (
    "the Jinja template ignores tool definitions, and Ollama refuses tools for a TEMPLATE "
    "without .Tools (no tools capability): nothing to compare"
)

#: Why a tool probe stays skipped when tools are ignored but calls or results still differ.
UNTRANSLATED_CALLS = (
    "the Jinja template ignores tool definitions but renders tool calls or tool results, "
    "which the TEMPLATE does not translate"
)


def verify_tool_probes(
    source: TemplateSource,
    go_template: str,
    report: VerificationReport,
    *,
    system: str | None,
    references: Mapping[str, Any],
    analysis: ToolAnalysis | None = None,
) -> VerificationReport:
    """Run the tool probes where that is sound, else give their skips the precise reason.

    Where the Jinja template ignores tool definitions, each tool probe with tool calls or
    results is rendered (Ollama side without the tools it would refuse); a probe that matches
    counts, one that differs stays skipped (the TEMPLATE makes no tool claim) with the reason.
    No probe that differs is ever counted as a match.

    Args:
        source: the Jinja template and tokens.
        go_template: the translated TEMPLATE.
        report: its report, tool probes skipped.
        system: the Modelfile SYSTEM.
        references: transformers renderings keyed by probe id.
        analysis: a precomputed :func:`analyse_tools` result.

    Returns:
        The report with the tool probes' new results.
    """
    analysis = analysis or analyse_tools(source)
    needs_tools = {p.id for p in load_probes() if p.needs_tools}
    tool_ids = {p.probe for p in report.probes if p.status == "skipped" and p.probe in needs_tools}
    if not tool_ids:
        return report
    updated: dict[str, ProbeResult] = {}
    if analysis.mode == "ignored":
        # Ollama refuses a request's tools when the TEMPLATE never names .Tools, so the Ollama
        # side gets the messages alone; the Jinja side ignores the tools it is given anyway.
        suite = [replace(p, tools=()) for p in load_probes() if p.id in tool_ids]
        runnable = [p for p in suite if _has_tool_turns(p)]
        ran = verify_template(
            source, go_template, system=system, tools=True, references=references, probes=runnable
        )
        for result in ran.probes:
            updated[result.probe] = (
                result
                if result.status != "differs"
                else ProbeResult(result.probe, "skipped", result.public, reason=UNTRANSLATED_CALLS)
            )
        for probe in suite:
            if not _has_tool_turns(probe):
                updated[probe.id] = ProbeResult(probe.id, "skipped", probe.public, reason=NO_TOOLS)
    else:
        for probe_id in tool_ids:
            old = next(p for p in report.probes if p.probe == probe_id)
            updated[probe_id] = replace(old, reason=analysis.reason)
    return replace(report, probes=tuple(updated.get(p.probe, p) for p in report.probes))


def _has_tool_turns(probe: Probe) -> bool:
    return any(m.get("role") == "tool" or m.get("tool_calls") for m in probe.messages)


__all__ = [
    "NO_TOOLS",
    "SENTINEL_TOOL",
    "UNTRANSLATED_CALLS",
    "ToolAnalysis",
    "analyse_tools",
    "verify_tool_probes",
]
