"""Atomic file writes and disk-space checks."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import DiskSpaceError, InputError


@contextlib.contextmanager
def atomic_path(target: Path, *, suffix: str = ".partial") -> Iterator[Path]:
    """Yield a temp path beside ``target``; move it into place only if the block succeeds.

    A crash or Ctrl-C leaves nothing under the final name (the temp file is removed). The temp
    name carries our PID, so that a run killed too hard to clean up (SIGKILL, power loss) leaves
    a file the next run can tell is dead (``resume.remove_stale_temps``).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.pid-{os.getpid()}."
    fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=target.parent)
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


def _existing_ancestor(directory: Path) -> Path:
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _mount_point(path: Path) -> Path:
    """The mount point holding ``path`` (the "device" a full-disk message names)."""
    probe = path.resolve()
    while not os.path.ismount(probe) and probe != probe.parent:
        probe = probe.parent
    return probe


def check_disk_space(directory: Path, needed_bytes: int) -> None:
    """Raise ``DiskSpaceError`` when ``directory`` has less than ``needed_bytes`` free.

    Checked before a merge or conversion with an estimate, so a full disk is reported in a
    second, before anything is half-written.
    """
    probe = _existing_ancestor(directory)
    free = shutil.disk_usage(probe).free
    if free < needed_bytes:
        raise DiskSpaceError(
            f"no space left on {_mount_point(probe)} for {directory}: needs "
            f"{math.ceil(needed_bytes / 1e6):,} MB, {free // 1_000_000:,} MB free",
            hint="free some space, or write elsewhere (--out/--keep, or DTO_CACHE_DIR for "
            "the cache); `deploy-to-ollama cache clean` removes old exports",
        )


def check_writable_dir(directory: Path, *, what: str) -> None:
    """Refuse an output directory that is a file or cannot be written, before any work.

    Raises:
        InputError: ``directory`` (or the nearest existing parent) is a file or not writable.
    """
    if directory.exists() and not directory.is_dir():
        raise InputError(
            f"{what} {directory} is a file, not a folder",
            hint=f"pass a folder for {what} (it is created when missing)",
        )
    probe = _existing_ancestor(directory)
    if not probe.is_dir():
        raise InputError(
            f"{what} {directory} cannot be created: {probe} is a file",
            hint=f"pass a folder for {what} whose parents are folders",
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(
            f"{what} {directory} is not writable ({probe} is read-only for this user)",
            hint=f"pass a writable folder for {what}, or fix its permissions",
        )


def raise_for_os_error(err: OSError, target: Path, *, what: str) -> None:
    """Turn a full disk or a read-only target met while writing into our one-line errors."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        raise DiskSpaceError(
            f"no space left on {_mount_point(_existing_ancestor(target))} while writing {target}",
            hint="free some space and rerun: finished files are kept, nothing half-written is",
        ) from err
    if err.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        raise InputError(
            f"cannot write {what} {target}: {err.strerror}",
            hint=f"pass a writable folder for {what}, or fix its permissions",
        ) from err


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
