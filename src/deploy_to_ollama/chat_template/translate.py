"""Translate a Jinja chat template into an Ollama ``.Messages`` TEMPLATE by observing it.

We render the Jinja template on sentinel conversations, read off each role's wrapper, the
generation prompt, the system placement, a default system prompt and the BOS preamble, emit a
few candidate Go templates, and keep the first that the verifier proves equal on every probe.
No lookup table: a template never seen before goes through the same inference.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import TemplateRenderError, TemplateTranslationError
from .dates import prints_date, translate_dated
from .emit import candidates
from .final_user import active_view, final_user_view, read_final_user
from .gotext import go_string
from .plain_readings import with_plain_readings
from .probes import load_probes
from .server_rules import for_server
from .shape import TemplateShape, infer_shape, tool_turn
from .source import TemplateSource
from .stops import infer_stops
from .system_variants import system_variants
from .thinking import infer_reasoning, reasoning_readings
from .tool_inert import with_inert_tools
from .tool_turns import with_call_turns
from .tools import ToolAnalysis, analyse_tools, verify_tool_probes
from .tools_required import needs_tools, tools_view, tools_view_on
from .translate_tools import tool_extension
from .user_only import user_only_shape
from .verify import VerificationReport, reference_renders, verify_template

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TranslatedTemplate:
    """An Ollama TEMPLATE with its stops, default SYSTEM and the proof it matches."""

    template: str
    stop: tuple[str, ...]
    system: str | None
    report: VerificationReport
    shape: TemplateShape | None = None
    warnings: tuple[str, ...] = field(default=())
    tools_inert: str | None = None
    """Why the TEMPLATE names ``.Tools`` and prints nothing of it (``tool_inert``): the
    evidence that the Jinja ignores the tool list; None when it has no such reference."""

    @property
    def verified(self) -> bool:
        """Every non-skipped probe renders the same prompt on both sides."""
        return self.report.verified


def translate_template(
    source: TemplateSource,
    *,
    references: Mapping[str, Any] | None = None,
    server_version: str | None = None,
) -> TranslatedTemplate:
    """Translate ``source``'s Jinja template into an Ollama TEMPLATE and verify it.

    Args:
        source: the template and tokens (see :func:`load_template_source`).
        references: precomputed transformers renderings (probe id -> text or error), to reuse.
        server_version: the Ollama release that will serve it: every candidate is verified
            with that release's prompt building (None: the newest).

    Returns:
        The best candidate; ``verified`` is true only if every non-skipped probe matched.

    Raises:
        TemplateSyntaxError: the Jinja template does not parse.
        TemplateTranslationError: the Jinja template raises on every probe.
    """
    from .hf_render import check_syntax

    check_syntax(source.template)
    with for_server(server_version):
        if not prints_date(source.template):
            return _translate(source, references)
        return translate_dated(source, lambda: _translate(source, references))


def _translate(source: TemplateSource, references: Mapping[str, Any] | None) -> TranslatedTemplate:
    """The translation with the Jinja's thinking settings joined in (``switched``, ``levels``)."""
    from .levels import with_think_levels
    from .switched import with_switched_thinking
    from .think_generations import with_thinking_generations

    refs = dict(references) if references is not None else reference_renders(source)

    def translated(*, blank: bool) -> TranslatedTemplate:
        result = with_switched_thinking(source, _translate_plain(source, refs, blank=blank), refs)
        result = with_think_levels(source, result, refs)
        return _inert_tools(source, with_thinking_generations(source, result, refs), refs)

    def best() -> TranslatedTemplate:
        result = translated(blank=True)
        if result.shape is not None and result.shape.blank_turn is not None:
            # The blank-turn reading is not carried into every form of tool calls or reasoning
            # (emit._blank_reading): where the TEMPLATE without it proves more, keep that one.
            without = translated(blank=False)
            if _matched(without) > _matched(result):
                return without
        return result

    result = best()
    if result.report.verified:
        return result
    if needs_tools(source):
        # The Jinja renders only with tools offered (tools_required.py): read it with a tool
        # always passed; the proof rests on the tool probes, references rendered as they are.
        with tools_view():
            viewed = best()
        return viewed if _score(viewed.report) > _score(result.report) else result
    final = read_final_user(source)
    if final is None:
        return result
    # A user turn that ends the conversation opens otherwise (final_user.py): infer from
    # renders where it opens like the others, print its own opening in the TEMPLATE, and
    # prove that against the references, which are rendered without the view.
    with final_user_view(final):
        viewed = best()
    return viewed if _score(viewed.report) > _score(result.report) else result


def _inert_tools(
    source: TemplateSource, result: TranslatedTemplate, refs: Mapping[str, Any]
) -> TranslatedTemplate:
    """``result`` keeping Ollama's tools capability where the Jinja has it and ignores the
    tool list (``tool_inert``); else ``result``."""
    found = with_inert_tools(
        source, result.template, result.report, system=result.system, references=refs
    )
    if found is None:
        return result
    template, report, evidence = found
    return replace(result, template=template, report=report, tools_inert=evidence.line())


def _matched(result: TranslatedTemplate) -> int:
    return sum(p.status == "match" for p in result.report.probes)


def _translate_plain(
    source: TemplateSource, refs: dict[str, Any], *, blank: bool = True
) -> TranslatedTemplate:
    """The translation without thinking settings joined (see ``switched.py``); ``blank``:
    with the blank-turn reading where the Jinja shows one."""
    if all(isinstance(value, TemplateRenderError) for value in refs.values()):
        first = next(iter(refs.values()))
        hint = "check that this is a chat template for messages with user/assistant roles"
        if "_token' is undefined" in str(first):
            hint = "the template needs special tokens: pass --bos and --eos (or the model dir)"
        raise TemplateTranslationError(
            f"the chat template raises on every probe conversation ({first})", hint=hint
        )
    warnings: list[str] = []
    tools = analyse_tools(source)
    shape: TemplateShape | None
    try:
        inferred = replace(infer_shape(source), final_user=active_view())
        shape = with_plain_readings(source, inferred, blank=blank)
        if tools.mode == "ignored":
            # Tool definitions change nothing, so tool results are the only tool text to carry.
            shape = replace(shape, tool_turn=tool_turn(source, shape))
            shape = with_call_turns(source, shape)
    except TemplateTranslationError as err:
        logger.info("shape inference failed: %s", err)
        shape = user_only_shape(source)
        if shape is None:
            warnings.append(f"could not infer the template's structure: {err}")
    best: tuple[int, TranslatedTemplate] | None = None
    for reading in _readings(source, shape):
        found = candidates(source, reading)
        for n, (template, system) in enumerate(found):
            # Rank candidates fast; only the winner (or the last) gets a full report.
            report = verify_template(
                source, template, system=system, references=refs, fail_fast=True
            )
            if report.public_verified or n == len(found) - 1:
                report = verify_template(source, template, system=system, references=refs)
            result = TranslatedTemplate(
                template=template,
                stop=infer_stops(source, reading),
                system=system,
                report=report,
                shape=reading,
                warnings=tuple(warnings + _bos_warnings(source, reading)),
            )
            if report.verified:
                result = _add_tools(source, reading, n, result, refs, tools)
                _log(result)
                return result
            if best is None or _score(report) > _score(best[1].report):
                best = (n, result)
    assert best is not None  # candidates() always yields at least the fallback
    n, result = best
    shape = result.shape
    if len(result.report.probes) < len(refs):
        full = verify_template(source, result.template, system=result.system, references=refs)
        result = replace(result, report=full)
    if result.report.public_verified or _no_plain_reference(result.report):
        result = _add_tools(source, shape, n, result, refs, tools)
    else:
        result = _require_tools(_with_tool_probes(source, result, refs, tools), tools)
    _log(result)
    return result


def _no_plain_reference(report: VerificationReport) -> bool:
    """Inside the tools view, no probe without tools has a reference and none differs: the
    tool translation decides (tools_required.py)."""
    return tools_view_on() and report.first_failure() is None


def _readings(
    source: TemplateSource, shape: TemplateShape | None
) -> Iterator[TemplateShape | None]:
    """The inferred shape, then (only if none of its candidates verifies) the other readings
    of a system message in the middle of a conversation."""
    yield shape
    if shape is not None:
        yield from system_variants(source, shape)


def _add_tools(
    source: TemplateSource,
    shape: TemplateShape | None,
    index: int,
    result: TranslatedTemplate,
    refs: Mapping[str, Any],
    tools: ToolAnalysis,
) -> TranslatedTemplate:
    """The result with tools (and thinking) translated where that holds, else with the tool
    probes' reasons."""
    translated = tool_extension(source, shape, index, result, refs, tools) if shape else None
    if isinstance(translated, TranslatedTemplate):
        extended = _require_tools(translated, tools)
    else:
        if translated and tools.mode != "ignored":
            why = f"{tools.reason}; the tool translation failed: {translated}"
            tools = replace(tools, reason=why)
        extended = _require_tools(_with_tool_probes(source, result, refs, tools), tools)
    think = infer_reasoning(source, shape) if shape is not None else None
    if shape is None or think is None:
        return extended
    with_tools = isinstance(translated, TranslatedTemplate)
    for reading in reasoning_readings(think):
        thinking_shape = replace(shape, think=reading)
        attempt = _with_thinking(
            source, thinking_shape, index, extended, refs, tools, with_tools=with_tools
        )
        if attempt is not extended:
            return attempt
    return extended


def _with_thinking(
    source: TemplateSource,
    shape: TemplateShape,
    index: int,
    result: TranslatedTemplate,
    refs: Mapping[str, Any],
    tools: ToolAnalysis,
    *,
    with_tools: bool,
) -> TranslatedTemplate:
    """``result`` redone with reasoning and the thinking switch in it, when every probe that
    matched still matches, none starts to differ, and a thinking probe matches; else
    ``result``.

    ``with_tools``: ``result`` came from the tool translation (which may carry only tool
    results, no ``.Tools`` or ``.ToolCalls``), so the redo goes through it too."""
    template, system = candidates(source, shape)[index]
    report = verify_template(source, template, system=system, references=refs)
    plain = replace(result, template=template, system=system, report=report)
    # The tool extension starts from the thinking TEMPLATE's own report: where tools are
    # ignored it re-runs only the tool probes, so a stale report would hide the thinking ones.
    attempt: TranslatedTemplate | str = "not tried"
    if with_tools:
        attempt = tool_extension(source, shape, index, plain, refs, tools)
    if not isinstance(attempt, TranslatedTemplate):
        attempt = _with_tool_probes(source, plain, refs, tools)
    attempt = replace(attempt, shape=shape)
    old, new = result.report.probes, attempt.report.probes
    matched_before = {p.probe for p in old if p.status == "match"}
    matched = {p.probe for p in new if p.status == "match"}
    differing = {p.probe for p in new if p.status == "differs"}
    thinking = {p.id for p in load_probes() if p.needs_thinking}
    same = matched_before <= matched and not differing - {
        p.probe for p in old if p.status == "differs"
    }
    if same and matched & thinking:
        return _require_tools(attempt, tools)
    logger.info("thinking not translated: a probe would differ")
    return result


def _require_tools(result: TranslatedTemplate, tools: ToolAnalysis) -> TranslatedTemplate:
    """Where the Jinja template prints tool definitions, ``verified`` needs the tool probes."""
    if tools.mode not in ("python_json", "text"):
        return result
    reason = "the Jinja template renders tool definitions"
    return replace(result, report=replace(result.report, tools_required=reason))


def _with_tool_probes(
    source: TemplateSource,
    result: TranslatedTemplate,
    refs: Mapping[str, Any],
    tools: ToolAnalysis,
) -> TranslatedTemplate:
    """Run the tool probes where the Jinja template ignores tools; else say why they skip."""
    report = verify_tool_probes(
        source,
        result.template,
        result.report,
        system=result.system,
        references=refs,
        analysis=tools,
    )
    return replace(result, report=report)


def _log(result: TranslatedTemplate) -> None:
    for warning in result.warnings:
        logger.warning("%s", warning)
    if not result.verified:
        failure = result.report.first_failure()
        where = f" (first difference: probe {failure.probe})" if failure else ""
        logger.warning("the translated TEMPLATE is not verified%s", where)


def _score(report: VerificationReport) -> tuple[bool, int]:
    return report.public_verified, report.matched


def _bos_warnings(source: TemplateSource, shape: TemplateShape | None) -> list[str]:
    bos = source.bos_token
    if not bos or shape is None or not shape.preamble.startswith(bos):
        return []
    if source.add_bos_token:
        return [
            f"the chat template writes {bos} and the tokenizer adds it too (add_bos_token): "
            "tokenizing its output with add_special_tokens=True gives a double BOS; the Ollama "
            "TEMPLATE leaves BOS to the tokenizer"
        ]
    return []


__all__ = ["TemplateShape", "TranslatedTemplate", "go_string", "infer_shape", "translate_template"]
