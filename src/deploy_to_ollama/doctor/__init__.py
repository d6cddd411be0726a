"""``deploy-to-ollama doctor``: explain and fix chat-template problems of a deployed model.

Read the target (``targets``), pick the reference template (``reference``), run the checks
(``diagnoses``) and, on request, repair (``fix``). ``examine`` ties the first three together.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .diagnoses import DOCTOR_PROBES, Diagnosis, ProbeRender, diagnose
from .fix import FixPlan, FixResult, apply_fix, plan_fix
from .reference import ReferenceChoice, ReferenceTemplate, choose_reference
from .targets import GgufInfo, Target, load_target

#: Version of the ``--json`` document (cli/doctor.py documents it); bump on breaking changes.
SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class DoctorReport:
    """The examined target, the reference used and the diagnoses, worst first."""

    target: Target
    choice: ReferenceChoice
    diagnoses: tuple[Diagnosis, ...]

    @property
    def healthy(self) -> bool:
        """No errors (warnings and notes do not make a model unhealthy)."""
        return not any(d.severity == "error" for d in self.diagnoses)

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` form of the examination."""
        ref = self.choice.reference
        return {
            "schema_version": SCHEMA_VERSION,
            "target": {
                "kind": self.target.kind,
                "name": self.target.label,
                "template": self.target.template,
                "system": self.target.system,
                "stops": self.target.stops,
                "parameters": [list(p) for p in self.target.parameters],
                "route": self.target.route,
                "server_version": self.target.server_version,
            },
            "reference": {
                "origin": ref.origin if ref else None,
                "location": ref.location if ref else None,
                "note": self.choice.note,
                "disagreement": self.choice.disagreement,
            },
            "healthy": self.healthy,
            "diagnoses": [d.to_dict() for d in self.diagnoses],
        }


def examine(target: str, *, source: Path | None = None, host: str | None = None) -> DoctorReport:
    """Load ``target``, choose the reference and run every check.

    Args:
        target: an Ollama model name, a ``.gguf``, a Modelfile, or an HF model/adapter folder.
        source: the fine-tune's folder (tokenizer + chat template); preferred as reference.
        host: Ollama server (``OLLAMA_HOST`` form) for model names and Modelfile FROMs.

    Raises:
        InputError: a target or source doctor cannot read (exit 1).
        OllamaUnavailableError: the server does not answer (exit 4).
    """
    loaded = load_target(target, host=host)
    choice = choose_reference(loaded, source)
    return DoctorReport(loaded, choice, tuple(diagnose(loaded, choice)))


def reexamine(report: DoctorReport, target: str, *, host: str | None) -> DoctorReport:
    """Diagnose the fixed model or Modelfile ``target`` against the same reference."""
    loaded = load_target(target, host=host)
    return DoctorReport(loaded, report.choice, tuple(diagnose(loaded, report.choice)))


__all__ = [
    "DOCTOR_PROBES",
    "SCHEMA_VERSION",
    "Diagnosis",
    "DoctorReport",
    "FixPlan",
    "FixResult",
    "GgufInfo",
    "ProbeRender",
    "ReferenceChoice",
    "ReferenceTemplate",
    "Target",
    "apply_fix",
    "choose_reference",
    "diagnose",
    "examine",
    "load_target",
    "plan_fix",
    "reexamine",
]
