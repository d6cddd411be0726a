"""Shared CLI pieces: the app, option aliases, output and error rendering."""

from __future__ import annotations

import contextlib
import json
import sys
import traceback
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from .. import __version__
from ..errors import DeployError
from ..progress import ProgressReporter, RichProgress, configure_output, console
from ..settings import Settings

app = typer.Typer(
    name="deploy-to-ollama",
    help="Deploy Unsloth / PEFT fine-tunes to Ollama with a chat template proven to match.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

HostOpt = Annotated[
    str | None,
    typer.Option(
        "--host", envvar="OLLAMA_HOST", help="Ollama server URL [default: 127.0.0.1:11434]"
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace existing output or model.")]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"deploy-to-ollama {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Show version."),
    ] = None,
    verbose: Annotated[
        int, typer.Option("-v", "--verbose", count=True, help="-v info, -vv debug")
    ] = 0,
) -> None:
    """Deploy fine-tuned models to Ollama and prove they work."""
    configure_output(verbose, Settings.from_env().log_level)


def print_result_json(payload: dict[str, Any]) -> None:
    """Write one JSON document to stdout."""
    sys.stdout.write(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


@contextlib.contextmanager
def reporting(reporter: ProgressReporter, *, json_out: bool) -> Iterator[None]:
    """Show rich progress while a command runs; with ``--json`` an error is a JSON document too."""
    try:
        if isinstance(reporter, RichProgress):
            with reporter:
                yield
        else:
            yield
    except DeployError as err:
        if json_out:
            print_result_json(
                {"ok": False, "error": err.message, "hint": err.hint, "exit_code": err.exit_code}
            )
        raise


def print_error(message: str, *, hint: str | None) -> None:
    """Write ``Error:`` and ``Hint:`` lines to stderr."""
    console.print(f"Error: {message}", style="bold red", markup=False, highlight=False)
    if hint:
        console.print(f"Hint: {hint}", style="yellow", markup=False, highlight=False)


def _is_usage_error(err: BaseException) -> bool:
    """A command-line usage error (unknown option, bad value) from click or typer's own copy.

    typer >= 0.2x raises errors of its vendored click, which are not ``click.ClickException``;
    both kinds carry ``show()`` and ``exit_code``, so they are recognised by those.
    """
    return callable(getattr(err, "show", None)) and isinstance(getattr(err, "exit_code", None), int)


def handle_exception(err: BaseException) -> int:
    """Render ``err`` for the user and return the exit code."""
    if isinstance(err, DeployError):
        print_error(err.message, hint=err.hint)
        if Settings.from_env().debug:
            traceback.print_exception(err)
        return err.exit_code
    if isinstance(err, typer.Abort):
        print_error("aborted", hint=None)
        return 130
    if _is_usage_error(err):
        err.show(file=sys.stderr)  # type: ignore[attr-defined]
        return int(err.exit_code)  # type: ignore[attr-defined]
    traceback.print_exception(err)
    return 1
