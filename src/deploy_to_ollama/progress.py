"""Progress reporting: stages take a ``ProgressReporter``; only this module knows rich."""

from __future__ import annotations

import sys
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

#: The one stderr console of the CLI: stdout carries results only.
console = Console(stderr=True)


class ProgressReporter(Protocol):
    """What a stage may tell about its progress."""

    def start(self, key: str, description: str, total: float | None = None) -> None: ...

    def advance(self, key: str, amount: float = 1, *, completed: float | None = None) -> None: ...

    def done(self, key: str, message: str | None = None) -> None: ...


class NullProgress:
    """Reports nothing: the default for library calls and ``--json``."""

    def start(self, key: str, description: str, total: float | None = None) -> None:
        return None

    def advance(self, key: str, amount: float = 1, *, completed: float | None = None) -> None:
        return None

    def done(self, key: str, message: str | None = None) -> None:
        return None


class RichProgress:
    """Rich progress bars on stderr, one task per key."""

    def __init__(self, *, transient: bool = False, byte_units: bool = False) -> None:
        columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn()]
        columns.append(DownloadColumn() if byte_units else TextColumn("{task.percentage:>3.0f}%"))
        columns.append(TimeElapsedColumn())
        self._progress = Progress(
            *columns, console=console, transient=transient, disable=not sys.stderr.isatty()
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, key: str, description: str, total: float | None = None) -> None:
        self._tasks[key] = self._progress.add_task(description, total=total)

    def advance(self, key: str, amount: float = 1, *, completed: float | None = None) -> None:
        task = self._tasks.get(key)
        if task is None:
            return
        if completed is not None:
            self._progress.update(task, completed=completed)
        else:
            self._progress.advance(task, amount)

    def done(self, key: str, message: str | None = None) -> None:
        task = self._tasks.get(key)
        if task is None:
            return
        total = self._progress.tasks[task].total
        self._progress.update(task, completed=total if total is not None else 1, total=total or 1)
        if message:
            self._progress.console.log(message)
