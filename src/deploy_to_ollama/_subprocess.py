"""Run external tools (llama.cpp, ollama) with captured output and our own errors."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import ConversionError, DependencyMissingError

logger = logging.getLogger(__name__)
STDERR_TAIL_LINES = 20


def run_tool(
    command: Sequence[str | Path],
    *,
    what: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    hint: str | None = None,
    error_class: type[ConversionError] = ConversionError,
    die_with_parent: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``command``; on failure raise ``error_class`` with the last stderr lines.

    Args:
        command: the program and its arguments.
        what: a few words naming the step, used in the error message.
        cwd: working directory.
        env: full environment for the child (default: inherit).
        hint: what the user should do when it fails.
        error_class: the ``ConversionError`` subclass to raise.
        die_with_parent: on Linux, SIGKILL the child when we die, so a killed export does
            not leave a long llama-quantize running.
    """
    argv = [str(part) for part in command]
    logger.debug("running %s", " ".join(argv))
    try:
        result = subprocess.run(
            argv,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            capture_output=True,
            text=True,
            check=False,
            preexec_fn=kill_with_parent if die_with_parent else None,
        )
    except FileNotFoundError as err:
        raise DependencyMissingError(
            f"{what}: program not found: {argv[0]}", hint=hint or "run `deploy-to-ollama setup`"
        ) from err
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-STDERR_TAIL_LINES:])
        last = tail.splitlines()[-1] if tail else f"exit code {result.returncode}"
        raise error_class(f"{what} failed: {last}", hint=hint, command=argv, stderr_tail=tail)
    return result


def kill_with_parent() -> None:
    """In a child: get SIGKILL when our process dies, so a killed export stops its workers."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
