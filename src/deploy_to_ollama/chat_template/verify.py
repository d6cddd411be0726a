"""Prove an Ollama TEMPLATE renders the same prompt as the Jinja template, probe by probe.

Both sides render every probe: transformers for the Jinja template, our port of Ollama's
prompt building for the Go template. ``verified`` only when every non-skipped probe matches.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import DeployError, TemplateRenderError
from .probes import Probe, load_probes
from .source import TemplateSource

logger = logging.getLogger(__name__)

#: Characters of context shown either side of the first difference.
SNIPPET = 40

Status = Literal["match", "differs", "skipped"]


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

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` form (without the full renderings)."""
        return {
            "probe": self.probe,
            "status": self.status,
            "public": self.public,
            "exact": self.exact,
            "position": self.position,
            "expected": self.expected_snippet,
            "actual": self.actual_snippet,
            "reason": self.reason,
            "token_match": self.token_match,
        }


@dataclass(frozen=True, slots=True)
class VerificationReport:
    """Per-probe results of one TEMPLATE against one Jinja template."""

    probes: tuple[ProbeResult, ...]
    token_level: bool = False

    @property
    def matched(self) -> int:
        """Number of matching probes."""
        return sum(p.status == "match" for p in self.probes)

    @property
    def verified(self) -> bool:
        """Every non-skipped probe matches (and at least one ran)."""
        ran = [p for p in self.probes if p.status != "skipped"]
        return bool(ran) and all(p.status == "match" for p in ran)

    @property
    def public_verified(self) -> bool:
        """Every non-skipped public probe matches (the corpus target)."""
        ran = [p for p in self.probes if p.public and p.status != "skipped"]
        return bool(ran) and all(p.status == "match" for p in ran)

    def first_failure(self) -> ProbeResult | None:
        """The first probe that differs, for one-line reasons."""
        return next((p for p in self.probes if p.status == "differs"), None)


def _hf_side(source: TemplateSource, probe: Probe) -> str | TemplateRenderError:
    from .hf_render import render_hf

    try:
        return render_hf(
            source.template,
            list(probe.messages),
            tokens=source.template_variables(),
            tools=list(probe.tools) or None,
        )
    except TemplateRenderError as err:
        return err


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

    Returns:
        The report; ``verified`` only if every non-skipped probe matched.
    """
    suite = tuple(probes or load_probes())
    refs = references if references is not None else reference_renders(source, suite)
    encoder = _token_encoder(source)
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
        return skipped("tool calling is not translated: the TEMPLATE ignores tools")
    if expected is None:
        return skipped("no transformers rendering")
    if isinstance(expected, Exception):
        return skipped(f"the Jinja template raises: {expected}")
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
    return _compare(source, probe, expected, actual, encode)


def _ollama_side(go_template: str, probe: Probe, system: str | None, *, tools: bool) -> str:
    from .ollama_prompt import render_ollama_prompt

    # A TEMPLATE that claims tools gets the request's tools, as Ollama's /api/chat passes them.
    offered = [dict(t) for t in probe.tools] if tools and probe.tools else None
    return str(
        render_ollama_prompt(
            go_template, [dict(m) for m in probe.messages], system=system, tools=offered
        )
    )


def strip_bos(expected: str, actual: str, bos: str | None) -> tuple[str, str]:
    """Remove one leading BOS where exactly one side has it.

    >>> strip_bos("<s>hi", "hi", "<s>")
    ('hi', 'hi')
    """
    if bos and expected.startswith(bos) != actual.startswith(bos):
        return expected.removeprefix(bos), actual.removeprefix(bos)
    return expected, actual


def first_difference(a: str, b: str) -> int | None:
    """Index of the first differing character, or None when equal.

    >>> first_difference("abc", "abd"), first_difference("ab", "abc"), first_difference("a", "a")
    (2, 2, None)
    """
    if a == b:
        return None
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def _compare(
    source: TemplateSource, probe: Probe, expected: str, actual: str, encode: Any
) -> ProbeResult:
    exp, act = strip_bos(expected, actual, source.bos_token)
    position = first_difference(exp, act)
    token_match = None
    if encode is not None:
        token_match = encode(exp) == encode(act)
    if position is None and token_match is not False:
        return ProbeResult(
            probe=probe.id,
            status="match",
            public=probe.public,
            exact=expected == actual,
            token_match=token_match,
            expected=expected,
            actual=actual,
        )
    status: Status = "differs"
    reason = None
    if probe.ollama_limit:
        status, reason = "skipped", f"Ollama limit: {probe.ollama_limit}"
    elif position is None:
        reason = "same text, different tokens"
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


def _token_encoder(source: TemplateSource) -> Any:
    """A ``str -> ids`` function from the source's tokenizer.json, if there is one."""
    if source.tokenizer_file is None:
        return None
    try:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(source.tokenizer_file))
    except Exception as err:  # a broken tokenizer.json only disables the token-level check
        logger.warning("token-level check disabled: %s", err)
        return None

    def encode(text: str) -> list[int]:
        return list(tokenizer.encode(text, add_special_tokens=False).ids)

    return encode
