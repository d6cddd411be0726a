"""For which Ollama generations a thinking claim holds.

``.Think`` and ``.IsThinkSet`` reached TEMPLATEs in v0.9.0 (ollama/ollama 5f57b0ef4); a
request without ``think`` arrived there as think false. v0.12.4 (90d429f5a, server/routes.go)
turned ``think`` on for every thinking-capable model when a request leaves it unset. A
TEMPLATE proven on one side of that line need not hold on the other. Where an unset ``think``
is true, the Jinja side of such a request is its thinking-on setting (``verify.UNSET_ON``), so
a Jinja whose default is thinking off, joined under ``{{ if not $.Think }}``, holds on both,
with a warning (:data:`DEFAULT_OFF_NOTE`). A thinking claim is verified again with the other
generation's treatment of an unset ``think`` (every other rule as the serving release's), and
the report lists each generation where it holds instead of one unqualified "thinking verified".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .server_rules import current_rules, current_version, using_rules
from .source import TemplateSource

if TYPE_CHECKING:
    from .translate import TranslatedTemplate
    from .verify import VerificationReport


@dataclass(frozen=True, slots=True)
class Generation:
    """Ollama releases that treat a request without ``think`` alike."""

    label: str
    unset_on: bool
    """A request without ``think`` reaches a thinking TEMPLATE as ``.Think`` true."""


#: Oldest first. Before v0.9.0 no TEMPLATE sees ``think`` at all.
GENERATIONS = (
    Generation("0.9.0-0.12.3", unset_on=False),
    Generation(">=0.12.4", unset_on=True),
)


def with_thinking_generations(
    source: TemplateSource, result: TranslatedTemplate, refs: Mapping[str, Any]
) -> TranslatedTemplate:
    """``result`` with the generations its thinking claim holds for (none when thinking is
    not verified)."""
    if not result.report.thinking_verified:
        return result
    held = tuple(_label(g, result.template) for g in GENERATIONS if _holds(source, result, refs, g))
    return replace(result, report=replace(result.report, thinking_generations=held))


def _label(generation: Generation, template: str) -> str:
    """The generation's label, narrowed to v0.11.0 on for a TEMPLATE that reads
    ``.ThinkLevel`` (older servers have no such value: the TEMPLATE fails there).

    >>> _label(GENERATIONS[0], "{{ $.ThinkLevel }}"), _label(GENERATIONS[0], "{{ .Think }}")
    ('0.11.0-0.12.3', '0.9.0-0.12.3')
    """
    if ".ThinkLevel" in template and generation.label.startswith("0.9.0-"):
        return "0.11.0-" + generation.label.removeprefix("0.9.0-")
    return generation.label


def _holds(
    source: TemplateSource,
    result: TranslatedTemplate,
    refs: Mapping[str, Any],
    generation: Generation,
) -> bool:
    """Whether ``result``'s thinking claim survives ``generation``'s unset ``think``: its
    thinking probes verify there and no probe that matched now differs."""
    from ..ollama_route import parse_server_version, prompt_rules
    from .verify import verify_template

    rules = current_rules() or prompt_rules(parse_server_version(None)[0])
    if rules.think_unset_on == generation.unset_on:
        return True  # the generation the claim was verified for
    other = replace(rules, think_unset_on=generation.unset_on)
    with using_rules(other, current_version() or ""):
        report = verify_template(
            source,
            result.template,
            system=result.system,
            tools=".Tools" in result.template,
            references=refs,
        )
    return report.thinking_verified and not _lost(result.report, report)


def _lost(before: VerificationReport, after: VerificationReport) -> list[str]:
    """Probes that matched in ``before`` and differ in ``after``."""
    matched = {p.probe for p in before.probes if p.status == "match"}
    return [p.probe for p in after.probes if p.probe in matched and p.status == "differs"]


def thinking_json(report: VerificationReport) -> dict[str, Any]:
    """The ``thinking`` section of ``--json``: verified, for which server generations, and
    what changes between them (None when nothing does)."""
    return {
        "verified": report.thinking_verified,
        "holds_for": list(report.thinking_holds_for),
        "jinja_default_off": report.thinking_verified and report.thinking_default_off,
        "note": thinking_note(report.thinking_holds_for, default_off=report.thinking_default_off),
    }


#: The warning for a verified claim on a Jinja whose default is not thinking on.
DEFAULT_OFF_NOTE = (
    "the Jinja's default is thinking off (the notebook renders no reasoning unless asked); "
    "Ollama >= 0.12.4 thinks unless the request sends think:false (before v0.12.4 a request "
    "without think gets the Jinja's default)"
)


def thinking_note(held: tuple[str, ...], *, default_off: bool = False) -> str | None:
    """One line where a verified thinking claim does not hold on every generation (``held``:
    ``VerificationReport.thinking_holds_for``), or where the Jinja's default is thinking off
    (``default_off``: ``VerificationReport.thinking_default_off``): a warning, not a failure.

    >>> thinking_note(("0.9.0-0.12.3",))[:67]
    'thinking verified for Ollama 0.9.0-0.12.3 only: from v0.12.4 Ollama'
    >>> thinking_note(("0.9.0-0.12.3", ">=0.12.4")) is None
    True
    >>> thinking_note(("0.9.0-0.12.3", ">=0.12.4"), default_off=True)[:41]
    "the Jinja's default is thinking off (the "
    >>> thinking_note((), default_off=True) is None
    True
    """
    if not held:
        return None
    if len(held) == len(GENERATIONS):
        return DEFAULT_OFF_NOTE if default_off else None
    if GENERATIONS[1].label not in held:
        return (
            f"thinking verified for Ollama {held[0]} only: from v0.12.4 Ollama sends a request "
            "without think as think true, so this TEMPLATE thinks by default there, unlike "
            "the Jinja's default; send think explicitly or redeploy for the newer server"
        )
    if default_off:
        return f"thinking verified for Ollama {', '.join(held)} only: {DEFAULT_OFF_NOTE}"
    return (
        f"thinking verified for Ollama {', '.join(held)} only: before v0.12.4 Ollama sends a "
        "request without think as think false, which this TEMPLATE does not render as the "
        "Jinja's default"
    )


__all__ = [
    "DEFAULT_OFF_NOTE",
    "GENERATIONS",
    "Generation",
    "thinking_json",
    "thinking_note",
    "with_thinking_generations",
]
