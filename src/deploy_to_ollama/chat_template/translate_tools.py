"""The tool extension of a verified plain TEMPLATE: tool calls, results and definitions read
off sentinel renders, kept when one extension verifies on every probe, tool probes included.
Cut out of ``translate.py``, which runs the plain, tool and thinking translations in turn.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .emit import candidate_pieces, tool_candidates
from .gotext import join_pieces
from .pyrepr import REPR_SERVER
from .shape import TemplateShape
from .source import TemplateSource
from .tool_escapes import ESCAPED_LEAD, REPR_DIFFERS, repr_reading
from .tool_html import html_escaped
from .tool_opening import OPENS_UNLIKE, marker_moved
from .tool_ordinals import numbered_tool_shape
from .tool_props import (
    SHAPES_UNPROVEN,
    escapes_tool_text,
    prints_other_fields,
    tool_shapes_differ,
)
from .tool_props import definitions as per_property_definitions
from .tool_shape import (
    ToolShape,
    definitions_loop,
    infer_tool_shape,
    last_user_insertion,
    tool_lead,
)
from .tools import ToolAnalysis, verify_tool_probes
from .verify import VerificationReport, verify_template

if TYPE_CHECKING:
    from .translate import TranslatedTemplate

logger = logging.getLogger(__name__)


def tool_extension(
    source: TemplateSource,
    shape: TemplateShape,
    index: int,
    result: TranslatedTemplate,
    refs: Mapping[str, Any],
    analysis: ToolAnalysis,
) -> TranslatedTemplate | str:
    """The verified plain TEMPLATE extended with tool calls, results and definitions, when
    one such extension verifies on every probe, tool probes included; else why not."""
    tool_shape = numbered_tool_shape(source, shape) or infer_tool_shape(source, shape)
    moved = marker_moved(shape) if tool_shape.reason == OPENS_UNLIKE else None
    if moved is not None:
        # The user suffix took the ordinary turn's opening (Command R7B): give it back.
        shape = moved
        tool_shape = numbered_tool_shape(source, shape) or infer_tool_shape(source, shape)
    if tool_shape.calls is None and not tool_shape.results:
        logger.info("tool calls not translated: %s", tool_shape.reason)
        return tool_shape.reason
    plain_pieces, system = candidate_pieces(source, shape, tool_shape)[index]
    plain = join_pieces(plain_pieces)
    # Probes the plain TEMPLATE already fails may fail again; no other may start to.
    allowed = {p.probe for p in result.report.probes if p.status == "differs"}
    if analysis.mode == "ignored":
        # Ollama refuses tools for a TEMPLATE without .Tools: tool turns are all to prove.
        report = verify_tool_probes(
            source, plain, result.report, system=system, references=refs, analysis=analysis
        )
        if _tool_turns_verified(report, allowed):
            return replace(result, template=plain, report=report)
        return "tool calls or results differ"
    loop, lead = definitions_loop(source), tool_lead(source)
    per_property = read_by_property = False
    if loop is None and lead is not None:
        # Parameters printed one by one (Qwen3-Coder): the lead goes with that reading.
        by_property = per_property_definitions(source)
        loop, lead = by_property or (None, lead)
        read_by_property = by_property is not None
        per_property = read_by_property and prints_other_fields(source)
    if loop is None or lead is None:
        logger.info("tool definitions not translated: no loop of sentinel tools found")
        return "the tool definitions do not print as a loop of sentinel-only items"
    with_defs = replace(tool_shape, definitions=loop)
    why = "the tool definitions are not printed before the first user message"
    last_user = last_user_insertion(source, shape)
    found = tool_candidates(source, shape, with_defs, lead, plain_pieces, system, last_user)
    for template in found:  # a release's own reading first (emit_tools.if_tools)
        report = verify_template(source, template, system=system, tools=True, references=refs)
        notes: tuple[str, ...] = ()
        if holds(report, allowed) and report.tools_verified:
            if escapes_tool_text(source, template, system):
                # The Jinja may HTML-escape tool text (Markup + str) or print tool strings as
                # Python's repr (tool|string): try the html reading, then the repr reading.
                escaped = _html_reading(source, template, system, refs, allowed)
                if escaped is not None:
                    template, report = escaped
                else:
                    reading = repr_reading(source, template, system, refs)
                    if isinstance(reading, str):
                        why = reading
                        continue
                    template, report = reading
                    if not (holds(report, allowed) and report.tools_verified):
                        why = REPR_DIFFERS
                        continue
                    notes = (REPR_SERVER,)
            # Said of this TEMPLATE only (one read before may have carried it).
            warnings = _tool_warnings(result, tool_shape, per_property=per_property)
            warnings = tuple(w for w in warnings if w != SHAPES_UNPROVEN)
            if read_by_property and tool_shapes_differ(source, template, system):
                warnings = (*warnings, SHAPES_UNPROVEN)
            return replace(result, template=template, report=report, warnings=warnings + notes)
        failure = report.first_failure()
        if failure is not None and why.startswith("the tool definitions are not"):
            why = f"probe {failure.probe} differs at character {failure.position}"
            if failure.position is None and failure.reason:  # Ollama fails (a missing field)
                why = f"probe {failure.probe}: {failure.reason}"
    return why + (f" ({tool_shape.reason})" if tool_shape.reason else "")


def _html_reading(
    source: TemplateSource,
    template: str,
    system: str | None,
    refs: Mapping[str, Any],
    allowed: set[str],
) -> tuple[str, VerificationReport] | None:
    """``template`` with tool names and descriptions HTML-escaped (``tool_html``) and its
    report, when that prints awkward tool text as the Jinja does and every probe holds."""
    escaped = html_escaped(template)
    if escaped is None or escapes_tool_text(source, escaped, system):
        return None
    report = verify_template(source, escaped, system=system, tools=True, references=refs)
    return (escaped, report) if holds(report, allowed) and report.tools_verified else None


#: How the reason begins when a TEMPLATE that matches the probes is still refused because the
#: Jinja escapes tool text (``tool_escapes.ESCAPED`` names the escaping).
ESCAPED = ESCAPED_LEAD

#: Why tool-call values other than strings carry no proof (per-argument calls).
VALUES_UNPROVEN = (
    "tool-call argument values that are not strings (numbers, booleans, objects) print as "
    "Go formats them: the Jinja template's way was not recognised, only string values are proven"
)


#: Why parameter fields other than type and description carry no proof (per-parameter tools).
FIELDS_UNPROVEN = (
    "the Jinja template prints tool parameters one by one, with fields beyond type and "
    "description (enum, nested object properties, ...) or a missing description otherwise "
    "than an empty one; the TEMPLATE prints type and description only, so only tools whose "
    "parameters have no other fields and a description each are proven"
)


def _tool_warnings(
    result: TranslatedTemplate, tool_shape: ToolShape, *, per_property: bool = False
) -> tuple[str, ...]:
    found = list(result.warnings)
    if tool_shape.values_unproven:
        found.append(VALUES_UNPROVEN)
    if per_property:
        found.append(FIELDS_UNPROVEN)
    return tuple(dict.fromkeys(found))


def holds(report: VerificationReport, allowed: set[str]) -> bool:
    """No probe differs except the ones in ``allowed``, and at least one matched."""
    differing = {p.probe for p in report.probes if p.status == "differs"}
    return differing <= allowed and report.matched > 0


def _tool_turns_verified(report: VerificationReport, allowed: set[str]) -> bool:
    ran = [p for p in report.probes if p.status == "match"]
    return holds(report, allowed) and any(p.probe.startswith("tool") for p in ran)


__all__ = ["ESCAPED", "FIELDS_UNPROVEN", "VALUES_UNPROVEN", "holds", "tool_extension"]
