"""``deploy --mode/--base-model/--expect-base``: flag mistakes are refused before any work.

No server runs here: the host is a closed port, so a refusal that came after the server was
asked would exit 4 instead of the usage error's 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.cli import run_cli
from support.ollama_server import free_port


@pytest.mark.parametrize(
    ("flags", "code", "needle"),
    [
        (["--mode", "lora"], 2, "unknown --mode 'lora'"),
        (["--base-model", "base:q8"], 2, "--base-model needs --mode adapter"),
        (["--expect-base", "apple"], 2, "--expect-base needs --mode adapter"),
        (["--mode", "adapter", "--base-model", "bad name!"], 1, "invalid model name"),
    ],
)
def test_adapter_flags_are_checked_first(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    code: int,
    needle: str,
) -> None:
    host = f"127.0.0.1:{free_port()}"  # nothing listens: a later check would exit 4
    argv = [str(tmp_path), "--name", "x", "--host", host, "--json", *flags]
    got, out, err = run_cli(argv, capsys)
    assert got == code, err
    assert needle in json.loads(out)["error"]
