"""Run the CLI in-process the way a user's shell would: exit code, stdout and stderr."""

from __future__ import annotations

import pytest

from deploy_to_ollama.cli import main


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``deploy-to-ollama ARGV``: its exit code and what it printed on stdout and stderr."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    out = capsys.readouterr()
    return int(info.value.code or 0), out.out, out.err
