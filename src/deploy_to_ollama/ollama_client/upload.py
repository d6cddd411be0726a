"""What a registration really sent to Ollama: blob bytes uploaded vs already there by digest.

Ollama stores every file by its sha256, so a file whose digest the server already has is never
sent again (``ollama create`` and our API path both ask ``HEAD /api/blobs/<digest>`` first). We
ask the same question before the registration and again after it: a file missing before and
present after was uploaded, one present before was reused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import RegistrationError
from ..progress import NullProgress, ProgressReporter
from .client import OllamaClient
from .create import file_digest


@dataclass(frozen=True, slots=True)
class UploadStats:
    """Bytes a registration uploaded and bytes it reused by digest."""

    bytes_uploaded: int = 0
    bytes_reused: int = 0

    def __add__(self, other: UploadStats) -> UploadStats:
        return UploadStats(
            self.bytes_uploaded + other.bytes_uploaded, self.bytes_reused + other.bytes_reused
        )

    def to_dict(self) -> dict[str, int]:
        """The ``"upload"`` object of ``--json``.

        >>> UploadStats(5, 7).to_dict()
        {'bytes_uploaded': 5, 'bytes_reused': 7}
        """
        return {"bytes_uploaded": self.bytes_uploaded, "bytes_reused": self.bytes_reused}


@dataclass(frozen=True, slots=True)
class BlobCensus:
    """Which local files the server had (by digest) before a registration."""

    host: str
    present: tuple[tuple[Path, str, int], ...]
    """``(path, digest, size)`` of files whose blob the server already stored."""
    missing: tuple[tuple[Path, str, int], ...]


def take_census(
    client: OllamaClient, files: Sequence[Path], progress: ProgressReporter | None = None
) -> BlobCensus:
    """Hash ``files`` and ask the server which of their blobs it already has."""
    reporter = progress or NullProgress()
    present: list[tuple[Path, str, int]] = []
    missing: list[tuple[Path, str, int]] = []
    for path in dict.fromkeys(files):
        digest = file_digest(path, reporter)
        entry = (path, digest, path.stat().st_size)
        (present if client.has_blob(digest) else missing).append(entry)
    return BlobCensus(client.host, tuple(present), tuple(missing))


def settle_census(client: OllamaClient, census: BlobCensus) -> UploadStats:
    """After the registration: every missing blob must now be on the server (it was uploaded).

    Raises:
        RegistrationError: a blob the registration should have uploaded is not there.
    """
    for path, digest, _ in census.missing:
        if not client.has_blob(digest):
            raise RegistrationError(
                f"Ollama registered the model but has no blob {digest[:19]} of {path.name}",
                hint="check the server log; the upload did not arrive",
            )
    return UploadStats(
        bytes_uploaded=sum(size for *_, size in census.missing),
        bytes_reused=sum(size for *_, size in census.present),
    )


def model_bytes(client: OllamaClient, name: str) -> int:
    """The size ``ollama list`` reports for ``name`` (0 when not listed)."""
    for model in client.list().models:
        if model.model == name:
            return int(model.size or 0)
    return 0


__all__ = ["BlobCensus", "UploadStats", "model_bytes", "settle_census", "take_census"]
