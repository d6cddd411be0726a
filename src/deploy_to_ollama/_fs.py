"""Atomic file writes and disk-space checks."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import DiskSpaceError


@contextlib.contextmanager
def atomic_path(target: Path, *, suffix: str = ".partial") -> Iterator[Path]:
    """Yield a temp path beside ``target``; move it into place only if the block succeeds.

    A crash or Ctrl-C leaves nothing under the final name (the temp file is removed).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text_atomic(target: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes_atomic(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def check_disk_space(directory: Path, needed_bytes: int) -> None:
    """Raise ``DiskSpaceError`` when ``directory`` has less than ``needed_bytes`` free."""
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed_bytes:
        raise DiskSpaceError(
            f"not enough disk space in {directory}: need {needed_bytes / 1e9:.1f} GB, "
            f"have {free / 1e9:.1f} GB",
            hint="free some space or choose another output directory",
        )


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``, or ``{}`` when it is missing, unreadable or not an object.

    For optional side files (generation_config.json, tokenizer_config.json) whose absence
    just means "no defaults".
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
