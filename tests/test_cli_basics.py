"""The CLI shell: version, default commands, error mapping."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from deploy_to_ollama.cli import rewrite_default_commands
from deploy_to_ollama.cli._common import handle_exception
from deploy_to_ollama.cli.template import show_command
from deploy_to_ollama.errors import OllamaUnavailableError, TemplateMismatchError


def test_version_is_printed_and_exits_zero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "deploy_to_ollama", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert result.stdout.startswith("deploy-to-ollama ")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["./lora", "--name", "x"], ["deploy", "./lora", "--name", "x"]),
        (["template", "m.jinja", "--json"], ["template", "show", "m.jinja", "--json"]),
        (["--help"], ["--help"]),
    ],
)
def test_default_commands_are_inserted(argv: list[str], expected: list[str]) -> None:
    assert rewrite_default_commands(argv) == expected


def test_errors_map_to_documented_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert handle_exception(OllamaUnavailableError("down", hint="run `ollama serve`")) == 4
    assert handle_exception(TemplateMismatchError("differs")) == 3
    err = capsys.readouterr().err
    assert "Error: down" in err
    assert "Hint: run `ollama serve`" in err
    # The exception is the one exit-3 path of a real command, not just a class attribute.
    upper = tmp_path / "upper.jinja"
    upper.write_text("{% for m in messages %}{{ m.content | upper }}{% endfor %}")
    with pytest.raises(TemplateMismatchError) as info:
        show_command(upper)
    assert handle_exception(info.value) == 3
    assert "Error: the Ollama TEMPLATE does not reproduce" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["export", "./lora", "--bogus"],
        ["template", "show", "x.jinja", "--no-such-flag"],
        ["export", "./lora", "--out", "d", "--mode", "sideways"],
    ],
)
def test_usage_errors_are_one_line_not_a_traceback(argv: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "deploy_to_ollama", *argv], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error, hint = result.stderr.splitlines()
    assert error.startswith("Error: ") and hint.startswith("Hint: ")
