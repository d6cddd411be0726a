"""Where provisioned toolchains live in the cache: versions, a pointer, a build lock, use marks.

Layout inside the cache dir (``NAME`` is ``llama.cpp-<commit>``)::

    NAME -> NAME.<id>           symlink: the current toolchain (switched with one os.replace)
    NAME.<id>/                  one finished toolchain per build, never changed after
    NAME.lock                   held (flock) by the one process that builds; others wait
    .NAME.build-<random>/       work dir of a build in progress

Why versions and a pointer: a rebuild must not pull a toolchain from under a process that is
converting with it. A finished toolchain is never modified or moved; a rebuild makes a new
version and switches the pointer atomically. A process that uses a version holds a shared flock
on its ``IN_USE_FILE`` until it exits; retired versions are removed only when nobody holds it.
A toolchain dir from before this layout (a real dir at ``NAME``) is reused as it is, and moved
aside to a retired version only when it must be replaced.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

IN_USE_FILE = ".dto-in-use"
#: Version dirs whose shared "in use" lock this process holds, with the open descriptors.
_IN_USE: dict[Path, int] = {}


def lock_path(final: Path) -> Path:
    """The build lock of the toolchain pointer ``final``."""
    return final.with_name(final.name + ".lock")


def work_prefix(final: Path) -> str:
    """Name prefix of build work dirs beside ``final`` (hidden; removed when stale)."""
    return f".{final.name}.build-"


@contextlib.contextmanager
def build_lock(final: Path, *, on_wait: Callable[[str], None]) -> Iterator[bool]:
    """Hold the exclusive build lock of ``final``; yield whether we had to wait for it.

    ``on_wait`` is called once, before blocking, with a few words naming the holder, so the
    caller can show that it waits. The lock is a flock: the kernel drops it when the holder
    dies, so a killed build never blocks the next one.
    """
    path = lock_path(final)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        waited = False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waited = True
            on_wait(_holder(path))
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield waited
    finally:
        os.close(fd)


def _holder(path: Path) -> str:
    try:
        pid = path.read_text(encoding="utf-8").strip()
    except OSError:
        pid = ""
    return f"process {pid}" if pid.isdigit() else "another process"


def current_version(final: Path) -> Path | None:
    """The toolchain dir ``final`` stands for: the pointer's target, or ``final`` if a real dir."""
    if final.is_symlink():
        # Not resolve(): the version keeps the cache dir's own spelling, so that it compares
        # equal to the siblings ``collect_garbage`` lists even under a symlinked cache dir.
        target = final.parent / os.readlink(final)
        return target if target.is_dir() else None
    return final if final.is_dir() else None


def new_version_name(final: Path) -> Path:
    """A fresh, unique version dir path beside ``final`` (not created)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return final.with_name(f"{final.name}.{stamp}-{secrets.token_hex(3)}")


def install_version(staged: Path, final: Path) -> Path:
    """Move a finished ``staged`` toolchain to a new version dir and point ``final`` at it.

    The caller holds the build lock. ``final`` always names a complete toolchain: the old one
    until the ``os.replace`` of the pointer, the new one after it.
    """
    (staged / IN_USE_FILE).touch()
    version = new_version_name(final)
    os.rename(staged, version)
    link = final.with_name(f".{final.name}.link-{os.getpid()}")
    link.unlink(missing_ok=True)
    link.symlink_to(version.name)  # relative: the cache dir may be moved as a whole
    if final.is_dir() and not final.is_symlink():
        # A toolchain from before versions: it becomes a retired version (removed when unused).
        retired = new_version_name(final)
        os.rename(final, retired.with_name(retired.name + "-legacy"))
    os.replace(link, final)
    return version


def mark_in_use(version: Path) -> bool:
    """Hold a shared lock on ``version`` until this process exits, so no rebuild removes it.

    Returns False when the version vanished meanwhile (a rebuild retired and removed it between
    our look at the pointer and the lock): the caller looks at the pointer again.
    """
    if version in _IN_USE:
        return True
    try:
        fd = os.open(version / IN_USE_FILE, os.O_RDONLY | os.O_CREAT, 0o644)
    except FileNotFoundError:
        return False
    except OSError:
        return version.is_dir()  # a read-only toolchain nobody can remove either
    fcntl.flock(fd, fcntl.LOCK_SH)
    if not version.is_dir():
        os.close(fd)
        return False
    _IN_USE[version] = fd
    return True


def release(version: Path) -> None:
    """Drop this process's use mark on ``version`` (tests; a CLI run just exits)."""
    fd = _IN_USE.pop(version, None)
    if fd is not None:
        os.close(fd)


def collect_garbage(final: Path) -> list[Path]:
    """Remove retired versions nobody uses and work dirs of dead builds; return what went.

    Call with the build lock held: then no build is running, so every work dir is stale.
    The current version is never touched.
    """
    current = current_version(final)
    removed: list[Path] = []
    for work in final.parent.glob(work_prefix(final) + "*"):
        shutil.rmtree(work, ignore_errors=True)
        removed.append(work)
    for version in final.parent.glob(f"{final.name}.*"):
        if (
            (current and version.name == current.name)
            or version.is_symlink()
            or not version.is_dir()
        ):
            continue
        if _remove_if_unused(version):
            removed.append(version)
    for path in removed:
        logger.debug("removed stale toolchain dir %s", path)
    return removed


def _remove_if_unused(version: Path) -> bool:
    try:
        fd = os.open(version / IN_USE_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a process still converts with it
        shutil.rmtree(version, ignore_errors=True)
        return True
    finally:
        os.close(fd)
