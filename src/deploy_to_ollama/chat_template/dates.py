"""Templates that print the current date: a claim must hold tomorrow too.

transformers gives a chat template ``strftime_now`` (Llama 3.1/3.2 "Today Date: 03 Dec 2026",
Granite, SmolLM3); a rendering made today holds today's date. A TEMPLATE that matched it by
holding that date as a literal is wrong tomorrow, so verification renders such probes a second
time on another, fixed day, on both sides: transformers with ``strftime_now`` pinned to that day
and the Ollama side with ``currentDate`` pinned to it. Only a TEMPLATE that prints the date
through Ollama's ``currentDate`` (ollama/ollama ``template/template.go``, from v0.11.0: the
server's local date as ``YYYY-MM-DD``, its format argument ignored) can match on both days.
The translator cuts that string into the Jinja's ``strftime`` format (:func:`follow_date`) for
servers that have the function; for older ones each dated probe differs, with the reason.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .probes import Probe
    from .source import TemplateSource
    from .translate import TranslatedTemplate
    from .verify import ProbeResult, VerificationReport

#: Two fixed days that differ in day, month, year and weekday; the check uses the one that is
#: not today, so the second rendering always falls on another day than the first.
OTHER_DAYS = (dt.datetime(2031, 2, 9, 13, 5, 7), dt.datetime(2029, 11, 23, 8, 45, 30))

#: The first Ollama release whose TEMPLATE functions include ``currentDate``.
CURRENT_DATE_SINCE = (0, 11, 0)

_PINNED: ContextVar[dt.datetime | None] = ContextVar("pinned_day", default=None)
_UNCHECKED: ContextVar[bool] = ContextVar("dates_unchecked", default=False)
_FOLLOW: ContextVar[bool] = ContextVar("dates_followed", default=False)


@contextmanager
def pinned_day(day: dt.datetime) -> Iterator[None]:
    """Inside the block, transformers' ``strftime_now`` and our port of Ollama's
    ``currentDate``/``yesterdayDate`` see ``day`` as now."""
    token = _PINNED.set(day)
    try:
        yield
    finally:
        _PINNED.reset(token)


@contextmanager
def unchecked() -> Iterator[None]:
    """Inside the block, verification compares on today only (see :func:`translate_dated`)."""
    token = _UNCHECKED.set(True)
    try:
        yield
    finally:
        _UNCHECKED.reset(token)


def checked() -> bool:
    """Whether verification renders date-printing probes on a second day (outside
    :func:`unchecked`: always)."""
    return not _UNCHECKED.get()


@contextmanager
def following_dates() -> Iterator[None]:
    """Inside the block, verification judges each TEMPLATE as :func:`follow_date` rewrites
    it: the translator's candidates, whose winner is returned rewritten the same way."""
    token = _FOLLOW.set(True)
    try:
        yield
    finally:
        _FOLLOW.reset(token)


def follows_dates() -> bool:
    """Whether :func:`following_dates` is in force."""
    return _FOLLOW.get()


def translate_dated(
    source: TemplateSource, translate: Callable[[], TranslatedTemplate]
) -> TranslatedTemplate:
    """Run ``translate`` for a template that prints the current date.

    Where the serving Ollama has ``currentDate``, every candidate is verified as
    :func:`follow_date` rewrites it (on today and on another day) and the winner is returned
    rewritten. Where it has none, candidates are ranked on today's rendering, and then every
    probe whose Jinja rendering changes with the day differs: the TEMPLATE, with no date
    function, renders the same text on every day, so it cannot match on both.
    """
    from .server_rules import current_version

    if has_date_function(current_version()):
        with following_dates():
            result = translate()
        return replace(result, template=follow_date(source.template, result.template))
    with unchecked():
        result = translate()
    return replace(result, report=_fixed_date_differs(source, result))


def _fixed_date_differs(source: TemplateSource, result: TranslatedTemplate) -> VerificationReport:
    from .probes import load_probes
    from .server_rules import current_version
    from .verify import reference_renders

    matched = {p.probe for p in result.report.probes if p.status == "match"}
    suite = [p for p in load_probes() if p.id in matched]
    today = reference_renders(source, suite)
    with pinned_day(other_day()):
        later = reference_renders(source, suite)
    reason = fixed_date_reason(result.template, current_version(), result.system)
    probes = tuple(
        replace(p, status="differs", tier=None, reason=reason)
        if p.status == "match"
        and "currentDate" not in result.template
        and isinstance(today.get(p.probe), str)
        and today.get(p.probe) != later.get(p.probe)
        else p
        for p in result.report.probes
    )
    return replace(result.report, probes=probes)


def on_other_day(
    source: TemplateSource,
    go_template: str,
    system: str | None,
    probe: Probe,
    result: ProbeResult,
    *,
    tools: bool,
    encode: Any,
) -> ProbeResult:
    """Keep a match of a date-printing template only if it also holds on another day: both
    sides render again with the clock pinned there (:func:`pinned_day`); a TEMPLATE holding
    today's date as a literal differs."""
    from ..errors import DeployError, TemplateRenderError
    from .server_rules import current_version
    from .verify import _compare, _hf_side, _ollama_side

    version = current_version()
    if "currentDate" in go_template and not has_date_function(version):
        return replace(
            result,
            status="differs",
            tier=None,
            reason=f"the Ollama TEMPLATE fails: Ollama {version} has no function currentDate",
        )
    with pinned_day(other_day()):
        later = _hf_side(source, probe)
        if isinstance(later, TemplateRenderError) or later == result.expected:
            return result  # this conversation does not print the date
        try:
            actual = _ollama_side(go_template, probe, system, tools=tools)
        except DeployError:
            actual = ""
        again = _compare(source, probe, later, actual, encode)
    if again.status == "match":
        return result
    return replace(
        again,
        status="differs",
        reason=fixed_date_reason(go_template, version, system),
        tier=None,
    )


def now() -> dt.datetime:
    """The pinned day (see :func:`pinned_day`), else the local time."""
    return _PINNED.get() or dt.datetime.now()


def pinned() -> dt.datetime | None:
    """The day pinned by :func:`pinned_day`, if any."""
    return _PINNED.get()


def other_day(today: dt.date | None = None) -> dt.datetime:
    """A fixed day that is not ``today`` (default: the pinned day or the local date).

    >>> other_day(dt.date(2031, 2, 9)).year, other_day(dt.date(2026, 12, 3)).year
    (2029, 2031)
    """
    today = today or now().date()
    return next(day for day in OTHER_DAYS if day.date() != today)


def prints_date(template: str) -> bool:
    """Whether a Jinja template can print the current date (it calls ``strftime_now``).

    >>> prints_date('{{ strftime_now("%d %b %Y") }}'), prints_date("{{ date_string }}")
    (True, False)
    """
    return "strftime_now" in template


def has_date_function(version: str | None) -> bool:
    """Whether Ollama ``version`` gives TEMPLATEs ``currentDate`` (None: the newest does).

    >>> has_date_function("0.9.3"), has_date_function("0.11.0"), has_date_function(None)
    (False, True, True)
    """
    if version is None:
        return True
    from ..ollama_route import parse_server_version

    parsed = parse_server_version(version)[0]
    return parsed.newest or parsed.parts >= CURRENT_DATE_SINCE


#: ``strftime`` directives a TEMPLATE can print from ``currentDate``'s ``YYYY-MM-DD``.
_SLICES = {"d": (8, 10), "m": (5, 7), "Y": (0, 4), "y": (2, 4)}
_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_FORMAT = re.compile(r"""strftime_now\(\s*(?:"([^"\\]*)"|'([^'\\]*)')\s*\)""")


def date_formats(template: str) -> list[str]:
    """The literal formats a Jinja template hands ``strftime_now``.

    >>> date_formats('{% set d = strftime_now("%d %b %Y") %}{{ strftime_now("%Y") }}')
    ['%d %b %Y', '%Y']
    """
    return [double or single for double, single in _FORMAT.findall(template)]


def go_date(fmt: str) -> str | None:
    """Go template text that prints ``strftime(fmt)`` of ``currentDate``; None for a
    directive that cannot be cut from ``YYYY-MM-DD`` (weekdays, times).

    >>> go_date("%Y")
    '{{ slice currentDate 0 4 }}'
    >>> go_date("%A") is None
    True
    """
    out, i = [], 0
    while i < len(fmt):
        if fmt[i] != "%":
            out.append(fmt[i])
            i += 1
            continue
        code = fmt[i + 1 : i + 2]
        i += 2
        if code == "%":
            out.append("%")
        elif code in _SLICES:
            start, end = _SLICES[code]
            out.append(f"{{{{ slice currentDate {start} {end} }}}}")
        elif code in ("b", "B"):
            out.append(_month(full=code == "B"))
        else:
            return None
    return "".join(out)


def _month(*, full: bool) -> str:
    """The month name, branching on ``currentDate``'s month digits."""
    branches = [
        f'{{{{ {"if" if n == 0 else "else if"} eq (slice currentDate 5 7) "{n + 1:02d}" }}}}'
        + (name if full else name[:3])
        for n, name in enumerate(_MONTHS)
    ]
    return "".join(branches) + "{{ end }}"


def follow_date(jinja: str, go_template: str) -> str:
    """``go_template`` with today's date, as the Jinja's ``strftime_now`` formats print it,
    replaced by Ollama's ``currentDate`` cut into the same format (unchanged where a format
    cannot be cut or the TEMPLATE does not hold today's text). Verification judges the result:
    a replacement that lands on the wrong text differs on the second day.
    """
    today = now()
    for fmt in sorted(set(date_formats(jinja)), key=len, reverse=True):
        text, go = today.strftime(fmt), go_date(fmt)
        if go is not None and len(text) >= 6:
            go_template = _replace_outside_actions(go_template, text, go)
    return go_template


def _replace_outside_actions(template: str, old: str, new: str) -> str:
    """Replace ``old`` in the template's text, never inside ``{{ ... }}`` actions.

    >>> _replace_outside_actions('a 2026 {{ "2026" }} 2026', "2026", "X")
    'a X {{ "2026" }} X'
    """
    pieces = re.split(r"({{.*?}})", template, flags=re.DOTALL)
    return "".join(p if p.startswith("{{") else p.replace(old, new) for p in pieces)


def fixed_date_reason(go_template: str, version: str | None, system: str | None = None) -> str:
    """Why a TEMPLATE (and its Modelfile SYSTEM) does not follow the date the Jinja prints."""
    if not has_date_function(version):
        return (
            f"the Jinja prints the current date; Ollama {version} has no date function "
            "(currentDate arrived in v0.11.0), so the TEMPLATE can only hold a fixed date"
        )
    if system and _holds_today(system):
        return (
            "the Jinja prints the current date; the TEMPLATE puts it in the Modelfile SYSTEM, "
            "plain text without functions, which holds a fixed date"
        )
    return _template_reason(go_template)


def _holds_today(text: str) -> bool:
    """Whether ``text`` holds today's date in one of the layouts chat templates print."""
    today = now()
    return any(today.strftime(f) in text for f in ("%Y-%m-%d", "%d %b %Y", "%d %B %Y", "%B %d, %Y"))


def _template_reason(go_template: str) -> str:
    if "currentDate" in go_template:
        return "the Jinja prints the current date; the TEMPLATE's currentDate gives another text"
    return "the Jinja prints the current date; the TEMPLATE holds a fixed date"


__all__ = [
    "CURRENT_DATE_SINCE",
    "OTHER_DAYS",
    "checked",
    "date_formats",
    "fixed_date_reason",
    "follow_date",
    "following_dates",
    "follows_dates",
    "go_date",
    "has_date_function",
    "now",
    "on_other_day",
    "other_day",
    "pinned",
    "pinned_day",
    "prints_date",
    "translate_dated",
    "unchecked",
]
