"""Progress reporting: stages take a ``ProgressReporter``; only this module knows rich."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Protocol

from rich.console import Console
from rich.logging import RichHandler
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
    """Rich progress bars on stderr, one task per key.

    On a terminal the bars redraw in place. Elsewhere (a log file, CI) rich draws nothing; with
    ``lines_when_not_tty`` each step then prints a plain line when it starts, every 10 % for a
    step with a total, and when it ends, so a long ``setup`` is never silent.
    """

    def __init__(
        self, *, transient: bool = False, byte_units: bool = False, lines_when_not_tty: bool = False
    ) -> None:
        columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn()]
        columns.append(DownloadColumn() if byte_units else TextColumn("{task.percentage:>3.0f}%"))
        columns.append(TimeElapsedColumn())
        tty = sys.stderr.isatty()
        self._progress = Progress(*columns, console=console, transient=transient, disable=not tty)
        self._lines = lines_when_not_tty and not tty
        self._tasks: dict[str, TaskID] = {}
        self._reported: dict[str, int] = {}

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, key: str, description: str, total: float | None = None) -> None:
        self._tasks[key] = self._progress.add_task(description, total=total)
        self._reported[key] = 0
        self._line(f"{description} ...")

    def advance(self, key: str, amount: float = 1, *, completed: float | None = None) -> None:
        task = self._tasks.get(key)
        if task is None:
            return
        if completed is not None:
            self._progress.update(task, completed=completed)
        else:
            self._progress.advance(task, amount)
        state = self._progress.tasks[task]
        if state.total and self._lines:
            tenth = int(10 * min(state.completed, state.total) / state.total)
            if tenth > self._reported[key] and tenth < 10:
                self._reported[key] = tenth
                self._line(f"{state.description}: {10 * tenth}%")

    def done(self, key: str, message: str | None = None) -> None:
        task = self._tasks.get(key)
        if task is None:
            return
        state = self._progress.tasks[task]
        total = state.total
        self._progress.update(task, completed=total if total is not None else 1, total=total or 1)
        self._line(f"{state.description}: done ({state.elapsed or 0:.0f} s)")
        if message:
            # print, not log: rich's log() appends the caller's source path to the line.
            self._progress.console.print(message, markup=False, highlight=False)

    def _line(self, text: str) -> None:
        if self._lines:
            console.print(text, markup=False, highlight=False, soft_wrap=True)


#: Third-party loggers whose info and warnings are noise for our users unless ``-v``.
QUIET_LOGGERS: tuple[str, ...] = (
    "transformers", "huggingface_hub", "peft", "torch", "accelerate", "safetensors", "filelock",
)  # fmt: skip


def configure_output(verbosity: int, default_level: str = "WARNING") -> None:
    """Set up our log lines on stderr; silence third-party warnings and bars unless ``-v``.

    Log lines carry the message only (no source paths). At verbosity 0, transformers'
    deprecation notices, Python warnings of the libraries we drive and the progress bars of
    huggingface_hub / transformers (shard loading) are hidden; ``-v`` shows them again, as
    log lines.
    """
    level = {0: default_level, 1: "INFO"}.get(verbosity, "DEBUG")
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False, show_time=False)],
        force=True,
    )
    logging.captureWarnings(capture=True)
    quiet = verbosity == 0
    logging.getLogger("py.warnings").setLevel(logging.ERROR if quiet else logging.NOTSET)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR if quiet else logging.NOTSET)
    if quiet:
        # Read when those libraries are imported (we import them late, inside functions).
        for var, value in (
            ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
            ("TRANSFORMERS_VERBOSITY", "error"),
            ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"),
        ):
            os.environ.setdefault(var, value)
    _set_library_bars(enabled=not quiet)


def _set_library_bars(*, enabled: bool) -> None:
    """Switch the bars of libraries imported already (their env variables were read then)."""
    if "huggingface_hub" in sys.modules:
        import huggingface_hub.utils

        hub_utils: Any = huggingface_hub.utils
        (hub_utils.enable_progress_bars if enabled else hub_utils.disable_progress_bars)()
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        hf_logging: Any = transformers_logging
        (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
