"""What ``deploy`` and ``export`` report: the data ``--json`` prints and the human summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .roundtrip import RoundTripReport
    from .routing import RouteChoice


@dataclass(frozen=True, slots=True)
class DeployReport:
    """The outcome of one ``deploy`` run (``--json`` prints ``to_dict()``)."""

    name: str
    host: str
    quant: str
    """The quant type of the registered GGUF (an alias resolved; a GGUF source's own type)."""
    gguf: Path
    gguf_bytes: int
    modelfile: Path
    template_verified: bool
    stages: tuple[tuple[str, str], ...]
    """``(stage, "done" | "skipped" | "reused")`` in order."""
    round_trip: RoundTripReport | None
    warnings: tuple[str, ...] = field(default=())
    failed_model: str | None = None
    """What became of the model when its round trip failed: removed, restored or kept."""
    adapter: AdapterFacts | None = None
    """``--mode adapter``: the base it runs on, the bytes uploaded, the base's own round trip."""
    route: RouteChoice | None = None
    """The template route, why, its proof and the capabilities Ollama reports (``routing``)."""
    thinking_holds_for: tuple[str, ...] | None = None
    """The Ollama generations where the TEMPLATE's thinking is verified (``think_generations``;
    empty: it is not; None: no TEMPLATE of ours serves, a native route)."""

    @property
    def passed(self) -> bool:
        round_trip = self.round_trip is None or self.round_trip.passed
        adapter = self.adapter is None or self.adapter.passed
        return round_trip and adapter and (self.route is None or self.route.failure is None)

    @property
    def run_command(self) -> str:
        return f"ollama run {self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.passed,
            "name": self.name,
            "host": self.host,
            "quant": self.quant,
            "gguf": str(self.gguf),
            "gguf_bytes": self.gguf_bytes,
            "modelfile": str(self.modelfile),
            "template_verified": self.template_verified,
            "stages": [{"stage": s, "status": st} for s, st in self.stages],
            "round_trip": self.round_trip.to_dict() if self.round_trip else None,
            "warnings": list(self.warnings),
            "failed_model": self.failed_model,
            "thinking_holds_for": _listed(self.thinking_holds_for),
            "run": self.run_command,
            **(self.route.to_json() if self.route else {}),
        } | (self.adapter.to_dict() if self.adapter else {})

    def summary_lines(self) -> list[str]:
        size = f"{self.gguf_bytes / 1e6:.1f} MB"
        lines = [
            f"model    {self.name} on {self.host}",
            f"quant    {self.quant} ({size}, {self.gguf})",
            f"template {'verified' if self.template_verified else 'NOT verified'}",
        ]
        if self.thinking_holds_for:
            lines.append(f"thinking verified for Ollama {', '.join(self.thinking_holds_for)}")
        lines += self.route.summary_lines() if self.route else []
        rt = self.round_trip
        if rt is None:
            lines.append("check    skipped")
        else:
            lines.append(f"check    {rt.verdict}")
            lines += ["  " + line for line in rt.summary_lines()[1:]]
        lines += [f"warning  {w}" for w in self.warnings]
        if self.failed_model:
            lines.append(f"model    {self.failed_model}")
        if self.adapter is not None:
            lines[1:2] = self.adapter.summary_lines()
        lines.append(f"run      {self.run_command}")
        return lines


def _listed(values: tuple[str, ...] | None) -> list[str] | None:
    return None if values is None else list(values)


@dataclass(frozen=True, slots=True)
class AdapterFacts:
    """What ``deploy --mode adapter`` adds to its report (``FROM base`` + ``ADAPTER``)."""

    base_model: str
    base_registered: str
    """``done`` (registered by this run), ``reused`` (already there) or ``given`` (--base-model)."""
    upload: dict[str, int]
    """``{"bytes_uploaded": N, "bytes_reused": M}`` measured by blob digest on the server."""
    lora: Path
    lora_bytes: int
    base_round_trip: RoundTripReport | None = None
    base_check: dict[str, Any] | None = None
    """What was compared to accept ``--base-model`` (``base_match.BaseMatch.to_dict``)."""

    @property
    def passed(self) -> bool:
        return self.base_round_trip is None or self.base_round_trip.passed

    def to_dict(self) -> dict[str, Any]:
        rt = self.base_round_trip
        return {
            "mode": "adapter",
            "upload": dict(self.upload),
            "base_model": self.base_model,
            "base_registered": self.base_registered,
            "lora": str(self.lora),
            "lora_bytes": self.lora_bytes,
            "base_round_trip": rt.to_dict() if rt else None,
            "base_check": self.base_check,
        }

    def summary_lines(self) -> list[str]:
        up, reused = self.upload["bytes_uploaded"], self.upload["bytes_reused"]
        lines = [
            f"adapter  {self.lora.name} ({self.lora_bytes / 1e6:.2f} MB) on base "
            f"{self.base_model} ({self.base_registered})",
            f"upload   {up:,} bytes uploaded, {reused:,} reused by digest",
        ]
        rt = self.base_round_trip
        if rt is not None:
            lines.append(f"base     {rt.verdict}")
            lines += ["  " + line for line in rt.summary_lines()[1:]]
        return lines


@dataclass(frozen=True, slots=True)
class ExportReport:
    """The outcome of one ``export`` run (``--json`` prints ``to_dict()``)."""

    backend: str
    result: Any
    """``gguf.export.ExportResult`` (llama.cpp) or ``exporting.UnslothSummary``."""
    modelfile: Path
    template_status: str
    """``verified``, ``unverified`` or ``failed: <why>``."""
    hub: dict[str, Any] | None = None
    quality: Any = None
    """``gguf.quality.QualityReport`` of ``export --measure`` (None when not measured)."""

    @property
    def reused(self) -> bool:
        return bool(getattr(self.result, "reused", False))

    @property
    def resumed(self) -> tuple[Path, ...]:
        return tuple(getattr(self.result, "resumed", ()) or ())

    @property
    def files(self) -> tuple[Any, ...]:
        return tuple(self.result.files)

    def to_dict(self) -> dict[str, Any]:
        files = [
            {
                "path": str(f.path),
                "quant": f.quant,
                "bytes": f.size_bytes,
                "role": f.role,
                "tensor_types": dict(getattr(f, "tensor_types", None) or {}) or None,
                "timings": dict(getattr(f, "timings", None) or {}) or None,
            }
            for f in self.files
        ]
        if self.quality is not None:
            for row, f in zip(files, self.files, strict=True):
                measured = self.quality.files.get(f.path)
                if measured is not None:
                    row["quality"] = measured.to_dict()
        result = self.result
        payload: dict[str, Any] = {
            "backend": self.backend,
            "name": result.name,
            "input_kind": result.input_kind,
            "files": files,
            "modelfile": str(self.modelfile),
            "template": self.template_status,
            "merged_dir": str(result.merged_dir) if result.merged_dir else None,
            "pretokenizer_detected": result.pretokenizer_detected,
            "reused": self.reused,
            "resumed": [str(p) for p in self.resumed],
            "hub": self.hub,
        }
        if self.quality is not None:
            summary = self.quality.to_dict()
            summary.pop("files")
            payload["quality"] = summary
        if (weights := getattr(result, "imatrix", None)) is not None:
            payload["imatrix"] = {
                "path": str(weights.path),
                "entries": weights.entries,
                "computed": weights.computed,
                "calibration": weights.calibration,
                "seconds": round(weights.seconds, 1),
            }
        if self.backend == "unsloth":
            payload["general_name"] = "written by Unsloth (not --name)"
        return payload

    def summary_lines(self) -> list[str]:
        lines = []
        if self.reused:
            lines.append("reused the existing export (same inputs)")
        elif self.resumed:
            names = ", ".join(p.name for p in self.resumed)
            lines.append(f"continued an interrupted export (kept {names})")
        for f in self.files:
            line = f"{f.role:8} {f.quant:8} {f.size_bytes / 1e6:10.1f} MB  {f.path}"
            if mixture := getattr(f, "tensor_types", None):
                line += "  (" + ", ".join(f"{n} {t}" for t, n in sorted(mixture.items())) + ")"
            lines.append(line)
            if timings := getattr(f, "timings", None):
                stages = ", ".join(f"{stage} {s:.1f} s" for stage, s in timings.items())
                lines.append(f"{'':8} time: {stages} (busy time; stages overlap)")
        if (weights := getattr(self.result, "imatrix", None)) is not None:
            how = (
                f"computed on {weights.calibration} in {weights.seconds:.1f} s"
                if weights.computed
                else "reused"
            )
            lines.append(f"imatrix: {weights.path} ({weights.entries} entries, {how})")
        lines.append(f"Modelfile: {self.modelfile} (template {self.template_status})")
        if self.quality is not None:
            lines += self.quality.table_lines()
        if self.backend == "unsloth":
            lines.append(f"{self.result.name}: general.name was written by Unsloth")
        if self.hub is not None:
            lines.append(f"pushed {len(self.hub['files'])} files to {self.hub['repo_url']}")
        return lines


__all__ = ["AdapterFacts", "DeployReport", "ExportReport"]
