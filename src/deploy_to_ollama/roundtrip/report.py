"""What the round trip found: per-probe render checks, the generation check, the verdict.

A check that did not run is not a pass: without a reference to render with, the verdict is
"NOT verified", and when the render check is required (``deploy``/``check`` without
``--no-verify``) that is one of the report's problems, so it fails with exit code 3.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..errors import RoundTripError

if TYPE_CHECKING:
    from .capability_check import CapabilityCheck

RenderMethod = Literal["debug_render_only", "go_renderer", "not_run"]
Verdict = Literal["PASSED", "FAILED", "NOT verified"]


@dataclass(frozen=True, slots=True)
class ProbeCheck:
    """One probe conversation rendered by Ollama and by the reference."""

    probe: str
    matched: bool
    """Equal token ids (after the BOS the tokenizer itself adds), or equal text without one."""
    exact_text: bool
    expected: str
    actual: str
    first_difference: int | None = None
    """Character offset of the first difference, None when the texts are equal."""


@dataclass(frozen=True, slots=True)
class GenerationCheck:
    """One greedy chat turn against the registered model."""

    question: str
    answer: str
    done_reason: str
    prompt_eval_count: int | None
    expected_prompt_tokens: int | None
    leaks: tuple[str, ...]
    expected_answer: str | None
    problems: tuple[str, ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RoundTripReport:
    """Everything ``check_round_trip`` found; ``passed`` decides the exit code."""

    model: str
    host: str
    server_version: str
    render_method: RenderMethod
    render_note: str | None
    probes: tuple[ProbeCheck, ...]
    generation: GenerationCheck | None
    warnings: tuple[str, ...] = field(default=())
    require_render: bool = False
    """A render check that did not run is a problem (``deploy``/``check`` without
    ``--no-verify``); False only reports it as "NOT verified"."""
    reference: str | None = None
    """What the prompts were compared with (a tokenizer folder, a GGUF's chat template)."""
    capabilities: CapabilityCheck | None = None
    """The server's route for the model and the capabilities it reports, against the Jinja."""

    @property
    def render_verified(self) -> bool:
        return (
            self.render_method != "not_run"
            and bool(self.probes)
            and all(p.matched for p in self.probes)
        )

    @property
    def failures(self) -> list[str]:
        """Checks that ran and failed, one line each."""
        out = [
            f"probe {p.probe}: Ollama's prompt differs from transformers' at character "
            f"{p.first_difference}"
            for p in self.probes
            if not p.matched
        ]
        if self.generation is not None:
            out += list(self.generation.problems)
        caps = self.capabilities
        if caps is not None and caps.required and caps.problem:
            out.append(caps.problem)
        return out

    @property
    def problems(self) -> list[str]:
        """Failed checks, and the render check when it is required but did not run."""
        out = self.failures
        if self.require_render and self.render_method == "not_run":
            out.append(f"render check did not run ({self.render_note}): the prompt is not verified")
        return out

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def verdict(self) -> Verdict:
        """PASSED only when every check ran and held; never for a check that did not run."""
        if self.failures:
            return "FAILED"
        if self.render_method == "not_run":
            return "NOT verified"
        return "PASSED"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["capabilities"] = self.capabilities.to_dict() if self.capabilities else None
        data |= {
            "passed": self.passed,
            "verdict": self.verdict,
            "render_verified": self.render_verified,
            "problems": self.problems,
        }
        return data

    def summary_lines(self) -> list[str]:
        """A short human report (the CLI prints it on stderr)."""
        lines = [f"round trip of {self.model} on {self.host} (Ollama {self.server_version})"]
        if self.render_method == "not_run":
            lines.append(f"  render check: not run ({self.render_note})")
        else:
            ok = sum(p.matched for p in self.probes)
            lines.append(
                f"  render check ({self.render_method}): {ok}/{len(self.probes)} probes match"
                + (f" ({self.reference})" if self.reference else "")
            )
            for probe in self.probes:
                if not probe.matched:
                    lines.append(f"    {probe.probe}: {_diff_snippet(probe)}")
        gen = self.generation
        if gen is not None:
            lines.append(
                f"  generation: {gen.answer.strip()[:80]!r} (done_reason={gen.done_reason}, "
                f"prompt tokens {gen.prompt_eval_count} vs {gen.expected_prompt_tokens} expected)"
            )
            lines += [f"    problem: {p}" for p in gen.problems]
            lines += [f"    warning: {w}" for w in gen.warnings]
        lines += [f"  warning: {w}" for w in self.warnings]
        if self.capabilities is not None:
            caps = self.capabilities
            lines.append(
                f"  route {caps.route}: {caps.reason}; capabilities "
                f"{', '.join(caps.reported) or 'none'}"
            )
            if caps.problem:
                lines.append(f"  {'problem' if caps.required else 'WARNING'}: {caps.problem}")
        verdict: str = self.verdict
        if verdict == "NOT verified":
            verdict += " (exit 3)" if self.require_render else " (--no-verify)"
        lines.append(f"  {verdict}")
        return lines


def _diff_snippet(probe: ProbeCheck) -> str:
    at = probe.first_difference or 0
    lo = max(0, at - 20)
    return (
        f"at {at}: transformers {probe.expected[lo : at + 30]!r} "
        f"vs Ollama {probe.actual[lo : at + 30]!r}"
    )


def raise_for_failure(report: RoundTripReport) -> None:
    """Raise ``RoundTripError`` (exit 3) naming the first failed check, when any failed."""
    problems = report.problems
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise RoundTripError(
            f"round trip of {report.model} failed: {problems[0]}{more}",
            hint="run `deploy-to-ollama check NAME --source DIR` for the full report; "
            "`deploy-to-ollama template diff` shows template differences",
        )


__all__ = [
    "GenerationCheck",
    "ProbeCheck",
    "RenderMethod",
    "RoundTripReport",
    "Verdict",
    "raise_for_failure",
]
