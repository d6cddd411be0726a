"""Run external tools (llama.cpp, ollama) with captured output and our own errors."""

from __future__ import annotations

import logging
import subprocess
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
) -> subprocess.CompletedProcess[str]:
    """Run ``command``; on failure raise ``error_class`` with the last stderr lines.

    Args:
        command: the program and its arguments.
        what: a few words naming the step, used in the error message.
        cwd: working directory.
        env: full environment for the child (default: inherit).
        hint: what the user should do when it fails.
        error_class: the ``ConversionError`` subclass to raise.
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
