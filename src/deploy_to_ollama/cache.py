"""What our cache folder holds (deploy work folders, toolchains, downloads) and removing it.

A folder another live process holds is never removed: deploy work folders carry a ``.dto-lock``
with the owner's PID (``resume.holding``), and file locks in the cache root (the toolchain
build's) are probed without blocking.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .errors import UsageError
from .resume import STATE_FILE, is_temp_name, lock_holder, owner_pid, pid_alive, pid_tag

logger = logging.getLogger(__name__)

EntryKind = Literal["deploy", "toolchain", "download", "unsloth", "temp", "other"]
#: Kinds ``cache clean`` removes without ``--all``: what a rerun makes again in seconds to
#: minutes from the user's own files. Toolchains and downloads take a network and a build.
CHEAP_KINDS: frozenset[str] = frozenset({"deploy", "temp"})
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One top-level item of the cache."""

    path: Path
    kind: EntryKind
    size_bytes: int
    modified: float
    """Newest mtime inside (seconds since the epoch): when it was last written."""
    in_use_by: int | None = None
    """The live PID holding it, if any (it is then never removed)."""
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "kind": self.kind,
            "bytes": self.size_bytes,
            "modified": self.modified,
            "in_use_by": self.in_use_by,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class CleanResult:
    """What ``clean_cache`` removed and what it left because a live process held it."""

    removed: tuple[CacheEntry, ...]
    kept_in_use: tuple[CacheEntry, ...]

    @property
    def freed_bytes(self) -> int:
        return sum(e.size_bytes for e in self.removed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "removed": [e.to_dict() for e in self.removed],
            "kept_in_use": [e.to_dict() for e in self.kept_in_use],
            "freed_bytes": self.freed_bytes,
        }


def parse_duration(text: str) -> float:
    """Seconds in ``30m``, ``12h``, ``7d``, ``2w`` (a bare number is seconds).

    >>> parse_duration("7d"), parse_duration("90"), parse_duration("1.5h")
    (604800.0, 90.0, 5400.0)

    Raises:
        UsageError: not a number with an optional s/m/h/d/w unit.
    """
    match = _DURATION.match(text)
    if not match:
        raise UsageError(
            f"--older-than {text!r} is not a duration", hint="use e.g. 30m, 12h, 7d or 2w"
        )
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _tree_stats(path: Path) -> tuple[int, float]:
    """Total bytes and newest mtime under ``path`` (symlinks not followed)."""
    total = 0
    newest = path.lstat().st_mtime
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current)) if current.is_dir() else []
        except OSError:
            continue
        for entry in entries:
            with contextlib.suppress(OSError):
                stat = entry.stat(follow_symlinks=False)
                total += stat.st_size
                newest = max(newest, stat.st_mtime)
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
    if path.is_file():
        total = path.lstat().st_size
    return total, newest


def _kind(path: Path) -> EntryKind:
    name = path.name
    if is_temp_name(name) or name.startswith(".dto-trash-"):
        return "temp"
    if name.startswith("llama.cpp-"):
        return "toolchain"
    if name == "src":
        return "download"
    if name.startswith("unsloth"):
        return "unsloth"
    return "other"


def _locked_by_someone(lock_file: Path) -> bool:
    """Whether another process holds an ``flock`` on ``lock_file`` (probed, not waited for)."""
    try:
        fd = os.open(lock_file, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _root_locks_held(cache_dir: Path) -> bool:
    """A build or download is under way (the toolchain's file lock in the cache root)."""
    return any(_locked_by_someone(p) for p in cache_dir.glob("*.lock") if p.is_file())


def _deploy_detail(folder: Path) -> str:
    ggufs = sorted(p.name for p in folder.glob("*.gguf"))
    return ", ".join(ggufs) if ggufs else "no GGUF"


def list_cache(cache_dir: Path) -> list[CacheEntry]:
    """Every top-level item of the cache, with its size and whether a live process holds it.

    Deploy work folders (``deploy/<key>``) are listed one by one.
    """
    if not cache_dir.is_dir():
        return []
    busy_root = _root_locks_held(cache_dir)
    entries: list[CacheEntry] = []
    for path in sorted(cache_dir.iterdir()):
        if path.name == "deploy" and path.is_dir():
            entries += _deploy_entries(path)
            continue
        if path.suffix == ".lock" and path.is_file():
            continue
        size, modified = _tree_stats(path)
        kind = _kind(path)
        holder = owner_pid(path.name) if kind == "temp" else None
        in_use = holder if holder is not None and pid_alive(holder) else None
        if in_use is None and busy_root and kind in ("toolchain", "download", "temp"):
            in_use = -1  # held through a file lock whose owner we cannot name
        entries.append(CacheEntry(path, kind, size, modified, in_use))
    return entries


def _deploy_entries(deploy_root: Path) -> list[CacheEntry]:
    entries = []
    for folder in sorted(p for p in deploy_root.iterdir() if p.is_dir()):
        size, modified = _tree_stats(folder)
        kind: EntryKind = "deploy" if (folder / STATE_FILE).exists() else "temp"
        entries.append(
            CacheEntry(
                folder, kind, size, modified, lock_holder(folder), detail=_deploy_detail(folder)
            )
        )
    return entries


def clean_cache(
    cache_dir: Path,
    *,
    everything: bool = False,
    older_than: float | None = None,
    now: float | None = None,
    kinds: Iterable[str] | None = None,
) -> CleanResult:
    """Remove cached items no live process holds.

    Args:
        cache_dir: the cache root (``Settings.cache_dir``).
        everything: also toolchains, downloads and Unsloth's caches (``--all``), not only
            deploy work folders and leftovers of dead runs.
        older_than: only items not written for this many seconds.
        now: the current time (for tests), default ``time.time()``.
        kinds: restrict to these kinds (overrides ``everything``).

    Returns:
        What was removed and what was kept because it is in use.
    """
    wanted = set(kinds) if kinds is not None else None
    current = time.time() if now is None else now
    removed: list[CacheEntry] = []
    kept: list[CacheEntry] = []
    for entry in list_cache(cache_dir):
        if wanted is not None and entry.kind not in wanted:
            continue
        if wanted is None and not everything and entry.kind not in CHEAP_KINDS:
            continue
        if older_than is not None and current - entry.modified < older_than:
            continue
        if entry.in_use_by is not None or not _remove(entry.path):
            kept.append(entry)
            continue
        removed.append(entry)
    return CleanResult(tuple(removed), tuple(kept))


def _remove(path: Path) -> bool:
    """Move ``path`` aside, re-check nobody took it meanwhile, then delete it.

    The rename is atomic, so a deploy starting right now finds either the whole folder (and
    its lock) or none; after it a folder that was taken is moved back.
    """
    trash = path.with_name(f".dto-trash-{pid_tag()}-{path.name}")
    try:
        os.replace(path, trash)
    except OSError as err:
        logger.info("could not remove %s: %s", path, err)
        return False
    if trash.is_dir() and lock_holder(trash) is not None:
        os.replace(trash, path)
        return False
    if trash.is_dir() and not trash.is_symlink():
        shutil.rmtree(trash, ignore_errors=True)
    else:
        trash.unlink(missing_ok=True)
    return True


__all__ = ["CacheEntry", "CleanResult", "clean_cache", "list_cache", "parse_duration"]
