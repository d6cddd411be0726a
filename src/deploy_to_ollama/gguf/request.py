"""What an export is asked for and what it returns (one level below the export routes, so
``export``, ``routes`` and ``adapter`` share them without importing each other)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .imatrix import Imatrix, ImatrixChoice
from .steps import GgufFile

Mode = Literal["merged", "adapter"]


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """Everything ``export_gguf`` needs, validated by the CLI or the pipeline."""

    source: Path
    out_dir: Path
    quants: tuple[str, ...] = ("q4_k_m",)
    base: Path | None = None
    mode: Mode = "merged"
    save_merged: Path | None = None
    name: str | None = None
    force: bool = False
    quantizer: str = "auto"
    """``Settings.quantizer``: ``llama-quantize`` forces the two-step route."""
    content_key: str | Callable[[], str | None] | None = None
    """The input's content key when the caller computed it (``resume.content_key``), or the
    call that waits for it (being hashed meanwhile); asked for only when the stamp needs it."""
    disk_reserve_bytes: int = 0
    """Free space to leave on the output's filesystem (``Settings.disk_reserve_bytes``)."""
    imatrix: ImatrixChoice | None = None
    """``--imatrix``: quantize with an importance matrix (computed or given)."""


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What the export wrote and learned."""

    files: tuple[GgufFile, ...]
    name: str
    input_kind: str
    chat_template: str | None
    merged_dir: Path | None = None
    pretokenizer_detected: str | None = None
    max_buffered_tensors: int = 0
    base_dir: Path | None = None
    """The base model an adapter was merged into (None for merged or GGUF inputs)."""
    notes: tuple[str, ...] = field(default=())
    reused: bool = False
    """True when an identical earlier export (same input bytes and options) was kept."""
    resumed: tuple[Path, ...] = ()
    """Files an interrupted run of the same export had finished, kept rather than remade."""
    imatrix: Imatrix | None = None
    """The importance matrix the quantized files were made with."""

    @property
    def path(self) -> Path:
        """The first model GGUF (the one to put after ``FROM``)."""
        return next(f.path for f in self.files if f.role in ("model", "base"))


__all__ = ["ExportRequest", "ExportResult", "Mode"]
