"""Resuming deploy and export: one content key per input, one state file format, and the
cleanup of what dead runs left behind.

A stage records ``{"key": ..., values}`` in a JSON state file once its outputs are under their
final names; a rerun with the same key skips it. Temp files and folders carry the writing
process's PID (``.NAME.pid-1234.partial``, ``.dto-export-pid-1234-*``), and work folders a
``.dto-lock`` with the PID, so a later run can tell a dead run's leftovers from a live one's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._fs import write_text_atomic
from ._version import __version__
from .errors import InputError

logger = logging.getLogger(__name__)

STATE_FILE = "deploy-state.json"
LOCK_FILE = ".dto-lock"
#: ``pid-1234`` (or merge's ``.partial-1234``) inside a temp name: the process that writes it.
_PID_IN_NAME = re.compile(r"(?:pid-|\.partial-)(\d+)")
#: Names our writers give temp files and folders (``_fs.atomic_path``, exports, merges).
_TEMP_NAME = re.compile(r"^\.(?:.*\.partial|.*\.partial-\d+|dto-export-.*|unsloth-.*)$")
_CHUNK = 1 << 20


def stable_hash(*parts: object) -> str:
    """SHA-256 of JSON-serialised ``parts`` (paths as text): the key of a stage's options.

    >>> stable_hash("a", 1) == stable_hash("a", 1) != stable_hash("a", 2)
    True
    """
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def hash_tree(path: Path, *, exclude: Path | None = None) -> str:
    """Content hash of a file or of every file under a folder (names and bytes).

    Hidden files (our state, stamps and temps) are not content; ``exclude`` drops a folder
    inside ``path`` (an ``--out`` inside the source folder holds our outputs, not inputs).
    """
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    skip = exclude.resolve() if exclude is not None else None
    for file in files:
        rel = file.name if path.is_file() else file.relative_to(path).as_posix()
        if rel.startswith(".") or "/." in rel or STATE_FILE in rel:
            continue
        if skip is not None and file.resolve().is_relative_to(skip):
            continue
        digest.update(rel.encode() + b"\0")
        with file.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def tree_identity(path: Path) -> str:
    """A cheap key of a folder nobody edits in place (a base model): names, sizes, mtimes.

    Hashing a multi-GB base on every run costs minutes; a base in the HF cache or a local
    folder changes by being replaced, which changes sizes or mtimes.
    """
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    entries = [
        (p.relative_to(path).as_posix() if p != path else p.name, *_size_mtime(p))
        for p in files
        if not p.name.startswith(".")
    ]
    return stable_hash(str(path.resolve()), entries)


def _size_mtime(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def content_key(path: Path, base: Path | None = None, *, exclude: Path | None = None) -> str:
    """The one content key of an input: the source's bytes, the base's identity, our version.

    Every stage that resumes (deploy's work folder, the export's stamp) keys on this, computed
    once per run. When ``ResolvedInput`` carries its own key, this is the one place to switch.

    Args:
        path: the source (adapter folder, merged model folder, or GGUF file).
        base: the base model folder of an adapter (``tree_identity``, not bytes).
        exclude: a folder inside ``path`` that holds our outputs.
    """
    base_part = tree_identity(base) if base is not None and base.exists() else None
    return stable_hash(hash_tree(path, exclude=exclude), base_part, __version__)


# --------------------------------------------------------------------------- state file


@dataclass
class StateFile:
    """The stage records of one work folder or export: ``{stage: {"key": ..., values}}``."""

    path: Path
    data: dict[str, Any]

    @classmethod
    def load(cls, folder: Path, name: str = STATE_FILE) -> StateFile:
        path = folder / name
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        return cls(path, data if isinstance(data, dict) else {})

    def get(self, stage: str, key: str) -> dict[str, Any] | None:
        """The record of ``stage`` when it was made for ``key``, else None."""
        entry = self.data.get(stage)
        return entry if isinstance(entry, dict) and entry.get("key") == key else None

    def put(self, stage: str, key: str, **values: Any) -> None:
        """Record ``stage`` as done for ``key`` (written atomically at once)."""
        self.data[stage] = {"key": key, **values}
        self.save()

    def reset(self, **values: Any) -> None:
        """Forget every stage (another input now owns the folder)."""
        self.data = dict(values)
        self.save()

    def save(self) -> None:
        write_text_atomic(self.path, json.dumps(self.data, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- liveness


def pid_tag(pid: int | None = None) -> str:
    """The marker temp names carry so that a later run can check the writer is alive.

    >>> pid_tag(42)
    'pid-42'
    """
    return f"pid-{os.getpid() if pid is None else pid}"


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def owner_pid(name: str) -> int | None:
    """The PID a temp name carries, if any.

    >>> owner_pid(".m.gguf.pid-77.x1.partial"), owner_pid(".m.partial-8"), owner_pid(".m.partial")
    (77, 8, None)
    """
    match = _PID_IN_NAME.search(name)
    return int(match.group(1)) if match else None


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one of our temp files or folders.

    >>> [is_temp_name(n) for n in (".a.gguf.pid-1.x.partial", ".dto-export-pid-1-ab", "a.gguf")]
    [True, True, False]
    """
    return bool(_TEMP_NAME.match(name))


def remove_stale_temps(folder: Path) -> list[Path]:
    """Remove temp files and folders in ``folder`` whose writing process is dead.

    A temp without a PID in its name is left alone (an older version, or another tool).

    Returns:
        What was removed.
    """
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        pid = owner_pid(entry.name)
        if not is_temp_name(entry.name) or pid is None or pid_alive(pid):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
            logger.info("removed %s, left by a run that no longer exists (PID %d)", entry, pid)
    return removed


# --------------------------------------------------------------------------- folder locks


def lock_holder(folder: Path) -> int | None:
    """The live PID that holds ``folder`` (its ``.dto-lock``), or None."""
    try:
        pid = int((folder / LOCK_FILE).read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None
    return pid if pid != os.getpid() and pid_alive(pid) else None


@contextlib.contextmanager
def holding(folder: Path) -> Iterator[None]:
    """Mark ``folder`` as in use by this process, so ``cache clean`` leaves it alone.

    The mark is advisory (a PID in a file): a crashed run leaves a dead PID, which counts as
    free. Our own earlier mark is kept (nested use).

    Raises:
        InputError: another live process holds ``folder``.
    """
    holder = lock_holder(folder)
    if holder is not None:
        raise InputError(
            f"{folder} is in use by another deploy-to-ollama run (PID {holder})",
            hint="wait for that run to finish, or use another --keep folder",
        )
    lock = folder / LOCK_FILE
    folder.mkdir(parents=True, exist_ok=True)
    mine = str(os.getpid())
    try:
        previous: str | None = lock.read_text(encoding="utf-8").strip()
    except OSError:
        previous = None
    if previous != mine:
        write_text_atomic(lock, mine + "\n")
    try:
        yield
    finally:
        if previous != mine:
            with contextlib.suppress(OSError):
                lock.unlink()


__all__ = [
    "LOCK_FILE",
    "STATE_FILE",
    "StateFile",
    "content_key",
    "hash_tree",
    "holding",
    "is_temp_name",
    "lock_holder",
    "owner_pid",
    "pid_alive",
    "pid_tag",
    "remove_stale_temps",
    "stable_hash",
    "tree_identity",
]
