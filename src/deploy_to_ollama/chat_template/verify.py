"""Prove an Ollama TEMPLATE renders the same prompt as the Jinja template, probe by probe.

Both sides render every probe: transformers for the Jinja template, our port of Ollama's
prompt building for the Go template. A probe matches at one of two tiers: ``exact`` (the same
bytes, modulo one leading BOS) or ``json_equivalent`` (the same bytes outside the JSON values
that the Jinja template printed with ``tojson``, and each of those values parses to the same
object on both sides: Ollama's ``json`` prints compact Go JSON, transformers Python's layout).
``verified`` only when every non-skipped probe matches at one of them. A template that prints
the current date matches only if it matches on another day too (``dates``).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from ..errors import DeployError, TemplateRenderError
from .dates import checked, follow_date, follows_dates, on_other_day, prints_date
from .final_user import view_off
from .key_order import KEY_ORDER, key_order_only
from .probes import Probe, load_probes
from .prompt_diff import first_difference, json_pieces_match, strip_bos, token_encoder
from .source import TemplateSource
from .tool_input import inexpressible_tool, unsendable_arguments

logger = logging.getLogger(__name__)

#: Characters of context shown either side of the first difference.
SNIPPET = 40

Status = Literal["match", "differs", "skipped"]
Tier = Literal["exact", "json_equivalent"]


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The outcome of one probe."""

    probe: str
    status: Status
    public: bool
    exact: bool = False
    """Byte-equal without the leading-BOS allowance."""
    position: int | None = None
    """First differing character (after the BOS allowance)."""
    expected_snippet: str | None = None
    """transformers' text around the difference."""
    actual_snippet: str | None = None
    """Ollama's text around the difference."""
    reason: str | None = None
    token_match: bool | None = None
    expected: str | None = None
    actual: str | None = None
    tier: Tier | None = None
    """How a match was proven: ``exact`` bytes (modulo one leading BOS) or ``json_equivalent``;
    None for a probe that differs or was skipped."""
    token_delta: int | None = None
    """Ollama's token count minus transformers' for a json_equivalent match (with a tokenizer)."""
    unset_think_on: bool = False
    """The probe leaves ``think`` unset and was compared as ``think: true`` (:data:`UNSET_ON`):
    the server thinks for such a request to a thinking TEMPLATE, so the Jinja side is its
    thinking-on setting, not its default."""

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` form (without the full renderings)."""
        return {
            "probe": self.probe,
            "status": self.status,
            "tier": self.tier,
            "public": self.public,
            "exact": self.exact,
            "token_delta": self.token_delta,
            "position": self.position,
            "expected": self.expected_snippet,
            "actual": self.actual_snippet,
            "reason": self.reason,
            "token_match": self.token_match,
            "unset_think_on": self.unset_think_on,
            "note": UNSET_ON if self.unset_think_on else None,
        }


@dataclass(frozen=True, slots=True)
class VerificationReport:
    """Per-probe results of one TEMPLATE against one Jinja template."""

    probes: tuple[ProbeResult, ...]
    token_level: bool = False
    tools_required: str | None = None
    """Why tool probes must be among the matches (the Jinja template renders tools); None
    when it does not."""
    server_version: str | None = None
    """The Ollama release whose prompt building the Ollama side used (None: the newest)."""
    thinking_generations: tuple[str, ...] = ()
    """The Ollama generations (``think_generations.GENERATIONS``) where the thinking probes
    verified, as checked when the TEMPLATE was chosen (see :attr:`thinking_holds_for`)."""
    thinking_default_off: bool = False
    """The Jinja's default is not thinking on, and the TEMPLATE switches thinking anyway: a
    request without ``think`` is the default before v0.12.4, thinking on from v0.12.4
    (``think_generations.thinking_note`` warns)."""

    @property
    def matched(self) -> int:
        """Number of matching probes (either tier)."""
        return sum(p.status == "match" for p in self.probes)

    @property
    def exact_count(self) -> int:
        """Matches proven byte for byte (modulo one leading BOS)."""
        return sum(p.status == "match" and p.tier == "exact" for p in self.probes)

    @property
    def json_equivalent_count(self) -> int:
        """Matches proven only up to the layout of JSON values."""
        return sum(p.status == "match" and p.tier == "json_equivalent" for p in self.probes)

    @property
    def tools_verified(self) -> bool:
        """At least one tool probe ran and every tool probe that ran matches."""
        ran = [p for p in self.probes if p.probe in _tool_probe_ids() and p.status != "skipped"]
        return bool(ran) and all(p.status == "match" for p in ran)

    @property
    def thinking_verified(self) -> bool:
        """At least one thinking probe ran and every thinking probe that ran matches."""
        ids = frozenset(p.id for p in load_probes() if p.needs_thinking)
        ran = [p for p in self.probes if p.probe in ids and p.status != "skipped"]
        return bool(ran) and all(p.status == "match" for p in ran)

    @property
    def thinking_holds_for(self) -> tuple[str, ...]:
        """The Ollama generations where the thinking claim holds; empty while thinking is not
        verified (a later step, such as the fixed-date check, may turn a probe into a
        difference after the generations were checked)."""
        return self.thinking_generations if self.thinking_verified else ()

    @property
    def verified(self) -> bool:
        """Every non-skipped probe matches (and at least one ran); where the Jinja template
        renders tools, tool probes must be among the matches."""
        ran = [p for p in self.probes if p.status != "skipped"]
        if self.tools_required and not self.tools_verified:
            return False
        return bool(ran) and all(p.status == "match" for p in ran)

    @property
    def public_verified(self) -> bool:
        """Every non-skipped public probe matches (the corpus target)."""
        ran = [p for p in self.probes if p.public and p.status != "skipped"]
        return bool(ran) and all(p.status == "match" for p in ran)

    def first_failure(self) -> ProbeResult | None:
        """The first probe that differs, for one-line reasons."""
        return next((p for p in self.probes if p.status == "differs"), None)


#: What a probe compared as ``think: true`` (:attr:`ProbeResult.unset_think_on`) says.
UNSET_ON = (
    "think unset = think true on Ollama >= 0.12.4: the request leaves think unset, which that "
    "server sends to a thinking TEMPLATE as think true, so the Jinja side is rendered with "
    "thinking on"
)

#: Why tool probes do not run for a TEMPLATE that does not claim tools.
NO_TOOLS = "tool calling is not translated: the TEMPLATE ignores tools"


def _tool_probe_ids() -> frozenset[str]:
    return frozenset(p.id for p in load_probes() if p.needs_tools)


def _hf_side(
    source: TemplateSource, probe: Probe, *, mark_json: bool = False
) -> str | TemplateRenderError:
    from .hf_render import render_hf
    from .thinking import think_kwargs

    args: dict[str, Any] = {
        "tokens": source.template_variables(),
        "tools": list(probe.tools) or None,
        "kwargs": think_kwargs(source, think=probe.think),
        "mark_json": mark_json,
    }
    # A reference is transformers' own render, whatever view the inference has on.
    with view_off():
        try:
            return render_hf(source.template, list(probe.messages), **args)
        except TemplateRenderError as err:
            from .tool_arg_text import text_reference

            return text_reference(source.template, probe.messages, **args) or err


def reference_renders(
    source: TemplateSource, probes: Sequence[Probe] | None = None
) -> dict[str, str | TemplateRenderError]:
    """transformers' rendering of every probe (or the error it raised), keyed by probe id."""
    return {probe.id: _hf_side(source, probe) for probe in probes or load_probes()}


def verify_template(
    source: TemplateSource,
    go_template: str,
    *,
    system: str | None = None,
    tools: bool = False,
    references: Mapping[str, Any] | None = None,
    probes: Sequence[Probe] | None = None,
    fail_fast: bool = False,
    server_version: str | None = None,
) -> VerificationReport:
    """Render every probe through both templates and compare.

    Args:
        source: the Jinja template and its tokens.
        go_template: the Ollama TEMPLATE.
        system: the Modelfile SYSTEM (Ollama prepends it when a request has no system message).
        tools: whether the TEMPLATE claims tool support; if not, tool probes are skipped.
        references: transformers renderings from :func:`reference_renders`, to reuse.
        probes: the probe suite (default: the packaged one).
        fail_fast: stop at the first public probe that differs (to rank candidates quickly).
        server_version: render the Ollama side with this release's prompt building
            (``ollama_route.prompt_rules``); None: the rules already in force (newest).

    Returns:
        The report; ``verified`` only if every non-skipped probe matched.
    """
    from .server_rules import current_version, for_server

    with for_server(server_version):
        report = _verify(
            source, go_template, system, references, probes, tools=tools, fail_fast=fail_fast
        )
        return replace(report, server_version=current_version())


def _verify(
    source: TemplateSource,
    go_template: str,
    system: str | None,
    references: Mapping[str, Any] | None,
    probes: Sequence[Probe] | None,
    *,
    tools: bool,
    fail_fast: bool,
) -> VerificationReport:
    if follows_dates() and prints_date(source.template):
        go_template = follow_date(source.template, go_template)
    suite = tuple(probes or load_probes())
    refs = references if references is not None else reference_renders(source, suite)
    encoder = token_encoder(source)
    results: list[ProbeResult] = []
    for probe in suite:
        result = _check(
            source, go_template, system, probe, refs.get(probe.id), tools=tools, encode=encoder
        )
        results.append(result)
        if fail_fast and result.status == "differs" and probe.public:
            break
    return VerificationReport(probes=tuple(results), token_level=encoder is not None)


def _check(
    source: TemplateSource,
    go_template: str,
    system: str | None,
    probe: Probe,
    expected: Any,
    *,
    tools: bool,
    encode: Any,
) -> ProbeResult:
    def skipped(reason: str) -> ProbeResult:
        return ProbeResult(probe=probe.id, status="skipped", public=probe.public, reason=reason)

    if probe.needs_tools and not tools:
        return skipped(NO_TOOLS)
    if probe.needs_thinking and not _thinks(go_template):
        return skipped(NO_THINKING)
    if expected is None:
        return skipped("no transformers rendering")
    if _sent_as_on(go_template, probe):
        probe, expected = replace(probe, think=True), _on_reference(source, probe)
        result = _check(source, go_template, system, probe, expected, tools=tools, encode=encode)
        return replace(result, unset_think_on=True)
    if isinstance(expected, Exception):
        from .system_variants import rejected_reason

        return skipped(rejected_reason(probe.messages, expected))
    if probe.needs_tools and (unsendable := unsendable_arguments(probe)):
        return skipped(unsendable)
    try:
        actual = _ollama_side(go_template, probe, system, tools=tools)
    except DeployError as err:
        return ProbeResult(
            probe=probe.id,
            status="differs",
            public=probe.public,
            reason=f"the Ollama TEMPLATE fails: {err}",
            expected=expected,
        )
    result = _compare(source, probe, expected, actual, encode)
    if result.status == "match":
        from .tool_arg_text import TEXT_ARGUMENTS, sent_as_text

        if sent_as_text(source.template, probe.messages, source.template_variables()):
            result = replace(result, reason=TEXT_ARGUMENTS)
    if result.status != "match" or not prints_date(source.template) or not checked():
        return result
    return on_other_day(source, go_template, system, probe, result, tools=tools, encode=encode)


#: Why thinking probes do not run for a TEMPLATE without the thinking capability.
NO_THINKING = (
    "the TEMPLATE has no thinking capability (no .Thinking inside the messages loop), so "
    "Ollama refuses a request's think: nothing to compare"
)


def _sent_as_on(go_template: str, probe: Probe) -> bool:
    """Whether the server in force sends ``probe`` to ``go_template`` as ``think: true``:
    the probe leaves ``think`` unset, the TEMPLATE thinks and the server is v0.12.4 or newer
    (server/routes.go sets a missing think to true for a thinking-capable model before the
    TEMPLATE runs, ``.IsThinkSet`` included). The Jinja side follows: its thinking-on setting
    is what such a request gets, whatever the Jinja's default."""
    from .server_rules import current_rules, unset_think_on

    return probe.think is None and unset_think_on(current_rules()) and _thinks(go_template)


def sent_probe(probe: Probe, go_template: str) -> Probe:
    """``probe`` as the server in force sends it to ``go_template``: with ``think: true``
    where it leaves think unset and the server (>= 0.12.4) turns that on (:data:`UNSET_ON`).
    For checks outside :func:`verify_template` (the doctor's conversations)."""
    return replace(probe, think=True) if _sent_as_on(go_template, probe) else probe


def unset_think_kwargs(source: TemplateSource, go_template: str) -> dict[str, Any]:
    """The Jinja variables for a request without ``think`` to ``go_template`` on the server
    in force: the thinking switch on where that server sends it as think true
    (:data:`UNSET_ON`), none elsewhere. For checks outside the probe suite (the doctor)."""
    from .server_rules import current_rules, unset_think_on
    from .thinking import think_kwargs

    if unset_think_on(current_rules()) and _thinks(go_template):
        return think_kwargs(source, think=True)
    return {}


def _on_reference(source: TemplateSource, probe: Probe) -> str | TemplateRenderError:
    """transformers' rendering of ``probe`` with the Jinja's thinking switch on (cached: every
    candidate TEMPLATE of one source asks for the same; not where the date is printed, which
    a pinned clock changes)."""
    on = replace(probe, think=True)
    if prints_date(source.template):
        return _hf_side(source, on)
    tokens = tuple(sorted(source.template_variables().items()))
    payload = json.dumps([on.messages, on.tools], ensure_ascii=False)  # key order kept
    from .thinking import switch_name

    return _rendered_on(source.template, tokens, switch_name(source), payload)


@functools.lru_cache(maxsize=4096)
def _rendered_on(
    template: str, tokens: tuple[tuple[str, str], ...], name: str, payload: str
) -> str | TemplateRenderError:
    from .hf_render import render_hf
    from .tool_arg_text import text_reference

    messages, tools = json.loads(payload)
    args: dict[str, Any] = {"tokens": dict(tokens), "tools": tools or None, "kwargs": {name: True}}
    with view_off():
        try:
            return render_hf(template, messages, **args)
        except TemplateRenderError as err:
            return text_reference(template, messages, **args) or err


def _thinks(go_template: str) -> bool:
    from .ollama_prompt import template_thinks

    try:
        return template_thinks(go_template)
    except DeployError:
        return False


def _ollama_side(go_template: str, probe: Probe, system: str | None, *, tools: bool) -> str:
    from .ollama_prompt import render_ollama_prompt
    from .server_rules import current_rules, merges_tool_results

    # A TEMPLATE that claims tools gets the request's tools, as Ollama's /api/chat passes them.
    offered = [dict(t) for t in probe.tools] if tools and probe.tools else None
    return str(
        render_ollama_prompt(
            go_template,
            [dict(m) for m in probe.messages],
            system=system,
            tools=offered,
            think=probe.think,
            merge_tool_results=merges_tool_results(current_rules()),
        )
    )


def _compare(
    source: TemplateSource, probe: Probe, expected: str, actual: str, encode: Any
) -> ProbeResult:
    exp, act = strip_bos(expected, actual, source.bos_token)
    position = first_difference(exp, act)
    tier: Tier | None = "exact" if position is None else None
    if tier is None and json_equivalent(source, probe, expected, act):
        tier = "json_equivalent"
    token_match, token_delta = None, None
    if encode is not None and tier is not None:
        exp_ids, act_ids = encode(exp), encode(act)
        token_match = exp_ids == act_ids
        if tier == "json_equivalent":
            token_delta = len(act_ids) - len(exp_ids)
    if tier == "json_equivalent" or (tier == "exact" and token_match is not False):
        return ProbeResult(
            probe=probe.id,
            status="match",
            public=probe.public,
            exact=expected == actual,
            token_match=token_match,
            expected=expected,
            actual=actual,
            tier=tier,
            token_delta=token_delta,
        )
    from .server_rules import joined_results_limit

    status: Status = "differs"
    reason = None
    limit = probe.ollama_limit or joined_results_limit(probe.messages)
    if limit:
        status, reason = "skipped", f"Ollama limit: {limit}"
    elif probe.needs_tools and key_order_only(source, probe, actual):
        status, reason = "skipped", KEY_ORDER
    elif probe.needs_tools and (changed := inexpressible_tool(probe)):
        status, reason = "skipped", changed
    elif position is None:
        reason = "same text, different tokens"
    else:
        from .system_variants import dropped_reason

        reason = dropped_reason(probe.messages, expected)
    at = position or 0
    return ProbeResult(
        probe=probe.id,
        status=status,
        public=probe.public,
        position=position,
        expected_snippet=exp[max(0, at - SNIPPET) : at + SNIPPET],
        actual_snippet=act[max(0, at - SNIPPET) : at + SNIPPET],
        reason=reason,
        token_match=token_match,
        expected=expected,
        actual=actual,
    )


def json_equivalent(source: TemplateSource, probe: Probe, expected: str, actual: str) -> bool:
    """The ``json_equivalent`` tier: whether ``actual`` equals ``expected`` outside its
    ``tojson`` values, and each of those parses to the same JSON as ``actual`` holds there.

    ``actual`` has its BOS allowance applied already; ``expected`` is re-rendered with marked
    ``tojson`` output, which must give the same text once the marks are removed.
    """
    from .hf_render import JSON_CLOSE, JSON_OPEN, split_marked

    if JSON_OPEN in expected or JSON_CLOSE in expected:
        return False
    packaged = {p.id: p for p in load_probes()}.get(probe.id)
    candidates = [probe] + ([packaged] if packaged is not None and packaged != probe else [])
    for candidate in candidates:
        marked = _hf_side(source, candidate, mark_json=True)
        if isinstance(marked, TemplateRenderError):
            continue
        if marked.replace(JSON_OPEN, "").replace(JSON_CLOSE, "") != expected:
            continue
        pieces = split_marked(marked)
        if pieces is None or not any(is_json for is_json, _ in pieces):
            return False
        bos = source.bos_token
        if bos and pieces[0][1].startswith(bos) and not pieces[0][0] and not actual.startswith(bos):
            pieces[0] = (False, pieces[0][1][len(bos) :])
        return json_pieces_match(pieces, actual)
    return False
