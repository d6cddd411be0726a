"""Export stamps: a small JSON beside the GGUFs so an identical rerun reuses them.

A pipeline killed after the last rename but before it saved its own state would otherwise meet
OutputExistsError on the rerun. The stamp is keyed by a content hash of every input file plus
the quants, mode, name and tool versions; a changed input still needs ``--force``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .._fs import write_text_atomic

logger = logging.getLogger(__name__)

#: Bump when the stamp layout or what the fingerprint covers changes.
STAMP_FORMAT = 1
_CHUNK = 1 << 20


def stamp_path(out_dir: Path, stem: str) -> Path:
    """Hidden (``select_files`` and Ollama ignore it), one per stem so exports can share a dir.

    >>> stamp_path(Path("out"), "bot").name
    '.bot.dto-export.json'
    """
    return out_dir / f".{stem}.dto-export.json"


def _input_files(roots: Iterable[Path], exclude: Path | None) -> list[Path]:
    files: set[Path] = set()
    for root in roots:
        if root.is_file():
            files.add(root.resolve())
        elif root.is_dir():
            files.update(p.resolve() for p in root.rglob("*") if p.is_file())
    if exclude is not None:  # --out inside the source dir: our own outputs are not inputs
        skip = exclude.resolve()
        files = {p for p in files if not p.is_relative_to(skip)}
    return sorted(files)


def fingerprint_inputs(
    roots: Iterable[Path], settings: dict[str, Any], *, exclude: Path | None = None
) -> str:
    """SHA-256 over ``settings`` (quants, mode, versions...) and the bytes of every input file.

    Only file names and sizes enter besides the bytes: a copied model keeps its key, while one
    changed byte anywhere changes it.
    """
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in _input_files(roots, exclude):
        digest.update(f"\0{path.name}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def write_stamp(
    out_dir: Path, stem: str, fingerprint: str, files: Sequence[Path], result: dict[str, Any]
) -> None:
    """Record what an export wrote (names, sizes, mtimes) under its input fingerprint."""
    outputs = [
        {"name": p.name, "size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns} for p in files
    ]
    payload = {
        "format": STAMP_FORMAT,
        "fingerprint": fingerprint,
        "outputs": outputs,
        "result": result,
    }
    write_text_atomic(stamp_path(out_dir, stem), json.dumps(payload, indent=1, sort_keys=True))


def read_matching_stamp(
    out_dir: Path, stem: str, fingerprint: str, planned: Sequence[Path]
) -> dict[str, Any] | None:
    """The stamped result when it matches ``fingerprint`` and the outputs are untouched."""
    path = stamp_path(out_dir, stem)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(payload, dict) or payload.get("format") != STAMP_FORMAT:
        return None
    if payload.get("fingerprint") != fingerprint:
        logger.info("%s: inputs changed since the last export", path)
        return None
    recorded = {o["name"]: o for o in payload.get("outputs", [])}
    if sorted(recorded) != sorted(p.name for p in planned):
        return None
    for target in planned:
        stat = target.stat()
        entry = recorded[target.name]
        if (stat.st_size, stat.st_mtime_ns) != (entry["size"], entry["mtime_ns"]):
            logger.info("%s changed since it was exported", target)
            return None
    result = payload.get("result")
    return result if isinstance(result, dict) else None
