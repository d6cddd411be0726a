"""What the doctor finds: a ``Diagnosis`` (symptom, evidence, fix), the probe renders that back
it, and the ``DoctorContext`` every check reads. The checks live in ``diagnoses`` (the
catalogue), ``prompt_checks`` (the TEMPLATE's prompt against the reference) and ``routes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .reference import ReferenceChoice, ReferenceTemplate
from .targets import PROMPT_FALLBACK, Target

Severity = Literal["error", "warning", "info"]
ProbeTier = Literal["exact", "json_equivalent", "differs"]

__all__ = ["Diagnosis", "DoctorContext", "ProbeRender", "ProbeTier", "Severity"]


@dataclass(frozen=True, slots=True)
class ProbeRender:
    """One probe rendered by the reference and by Ollama's TEMPLATE."""

    probe: str
    expected: str
    """The reference rendering (what the model saw in training)."""
    actual: str
    """What Ollama sends the model (BOS that llama.cpp adds included)."""
    first_difference: int | None
    summary: str | None = None
    tier: ProbeTier | None = None
    """``exact`` (modulo one leading BOS), ``json_equivalent`` (equal up to the layout of the
    JSON values), or ``differs``; None where only differences are listed."""
    actual_difference: int | None = None
    """Where Ollama's prompt departs, when JSON values of another layout put it elsewhere
    than ``first_difference`` (which indexes the reference); None: the same index."""


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """One problem (or note) about the model, phrased for the user."""

    code: str
    """Stable identifier, e.g. ``no_template`` (part of the --json schema)."""
    severity: Severity
    title: str
    symptom: str
    """What the user sees, in their words."""
    evidence: tuple[str, ...]
    fix: str
    fixable: bool = False
    """``doctor --fix`` repairs it."""
    probes: tuple[ProbeRender, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON form (see cli/doctor.py for the schema)."""
        return {
            "code": self.code,
            "severity": self.severity,
            "title": self.title,
            "symptom": self.symptom,
            "evidence": list(self.evidence),
            "fix": self.fix,
            "fixable": self.fixable,
            "probes": [
                {
                    "probe": p.probe,
                    "expected": p.expected,
                    "actual": p.actual,
                    "first_difference": p.first_difference,
                    "summary": p.summary,
                    "tier": p.tier,
                    "actual_difference": p.actual_difference,
                }
                for p in self.probes
            ],
        }


# --------------------------------------------------------------------------- the checks


@dataclass(frozen=True, slots=True)
class DoctorContext:
    """Everything the checks read."""

    target: Target
    choice: ReferenceChoice

    @property
    def reference(self) -> ReferenceTemplate | None:
        return self.choice.reference

    @property
    def has_template(self) -> bool:
        template = (self.target.template or "").strip()
        return bool(template) and template != PROMPT_FALLBACK
