"""Shared CLI pieces: the app, option aliases, output and the one error → exit-code mapping.

Exit codes (README): 0 ok, 1 ``DeployError`` (bad input, a stage failed), 2 usage error
(click's own or our ``UsageError``), 3 verification failed (``TemplateMismatchError``,
``RoundTripError``), 4 a dependency missing or unreachable, 130 interrupted. ``exit_code_for``
is the only place that decides; commands raise, they never pick a number.
"""

from __future__ import annotations

import contextlib
import json
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from .._version import __version__
from ..errors import DeployError, RoundTripError, RunInterruptedError, TemplateMismatchError
from ..progress import ProgressReporter, RichProgress, configure_output, console
from ..settings import Settings

#: What the user reads on Ctrl-C (writes go to temp names first, so the claim holds).
INTERRUPTED = "interrupted; nothing was written under the final names; rerun to continue"
DEBUG_HINT = "rerun with DTO_DEBUG=1 to see the traceback, and report it as a bug"


@dataclass
class _Invocation:
    """Per-invocation output state: was ``--json`` asked for, was its document written."""

    json: bool = False
    json_written: bool = False
    reported: bool = False
    """An error was rendered (``handle_exception`` ran)."""
    settings: Settings | None = None
    """The environment, read once at the start of the invocation (``settings()``)."""


_RUN = _Invocation()


def reset_invocation(*, json_requested: bool = False) -> None:
    """Forget the previous command's output state (tests run many commands in one process)."""
    _RUN.json = json_requested
    _RUN.json_written = False
    _RUN.reported = False
    _RUN.settings = None


def settings() -> Settings:
    """The configuration of this invocation: read from the environment once, then passed down."""
    if _RUN.settings is None:
        _RUN.settings = Settings.from_env()
    return _RUN.settings


def error_reported() -> bool:
    """Whether an error (an interrupt included) was rendered in this invocation."""
    return _RUN.reported


class _AppGroup(TyperGroup):
    """The root group: Ctrl-C becomes ``RunInterruptedError``; a failed check exits 3 here.

    A verification failure (``TemplateMismatchError``, ``RoundTripError``) is an outcome: the
    command printed its report, then raised. Rendering it inside the app gives every caller
    (console script, ``main()``, ``CliRunner(app)``) exit 3 and the reason. Other errors
    propagate to ``main()`` (callers of ``app`` may catch them) after their ``--json`` document.
    """

    def invoke(self, ctx: Any) -> Any:
        reset_invocation()  # ``--json``'s callback sets it again while the command parses
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as err:
            raise RunInterruptedError(INTERRUPTED) from err
        except (TemplateMismatchError, RoundTripError) as err:
            raise typer.Exit(handle_exception(err)) from err
        except Exception as err:
            if not _is_usage_error(err) and not isinstance(err, typer.Exit):
                write_json_failure(err)
            raise


app = typer.Typer(
    name="deploy-to-ollama",
    cls=_AppGroup,
    help="Deploy Unsloth / PEFT fine-tunes to Ollama with a chat template proven to match.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _remember_json(value: bool) -> bool:
    if value:
        _RUN.json = True
    return value


HostOpt = Annotated[
    str | None,
    typer.Option(
        "--host", envvar="OLLAMA_HOST", help="Ollama server URL [default: 127.0.0.1:11434]"
    ),
]
JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        callback=_remember_json,
        help="Print one JSON document on stdout, also on failure (then with error and hint).",
    ),
]
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
    configure_output(verbose, settings().log_level)


def print_result_json(payload: dict[str, Any]) -> None:
    """Write the command's one JSON document to stdout (``"ok": true`` unless it says)."""
    document = payload if "ok" in payload else {"ok": True, **payload}
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()
    _RUN.json_written = True


def error_fields(err: BaseException) -> dict[str, Any]:
    """The failure keys of a ``--json`` document: ok, error, error_type, hint, exit_code.

    The message stays under ``error`` (a string; doctor's schema v1 only ever adds keys).
    """
    message, hint = describe(err)
    return {
        "ok": False,
        "error": message,
        "error_type": "UsageError" if _is_usage_error(err) else type(err).__name__,
        "hint": hint,
        "exit_code": exit_code_for(err),
    }


def write_json_failure(err: BaseException, payload: dict[str, Any] | None = None) -> None:
    """Under ``--json``, write the failure document unless this command already wrote one."""
    if _RUN.json and not _RUN.json_written:
        print_result_json({**(payload or {}), **error_fields(err)})


def fail(err: DeployError, payload: dict[str, Any] | None = None) -> NoReturn:
    """Raise ``err`` after writing ``payload`` (the command's report) with its failure keys.

    Verification failures (exit 3) go through here: the report is the reason, so the JSON
    document carries both, and the exit code still comes from ``exit_code_for``.
    """
    write_json_failure(err, payload)
    raise err


@contextlib.contextmanager
def reporting(reporter: ProgressReporter, *, json_out: bool) -> Iterator[None]:
    """Show rich progress while a command runs (``--json`` failures are written by the app)."""
    del json_out  # kept for call sites; the app group writes the failure document
    if isinstance(reporter, RichProgress):
        with reporter:
            yield
    else:
        yield


def print_line(text: str, *, style: str | None = None) -> None:
    """One line on stderr, never wrapped: logs and pipes must keep whole lines."""
    console.print(text, style=style, markup=False, highlight=False, soft_wrap=True)


def print_error(message: str, *, hint: str | None) -> None:
    """Write ``Error:`` and ``Hint:`` lines to stderr (one line each, whatever the width)."""
    print_line(f"Error: {message}", style="bold red")
    if hint:
        print_line(f"Hint: {hint}", style="yellow")


def _is_usage_error(err: BaseException) -> bool:
    """A command-line usage error (unknown option, bad value) from click or typer's own copy.

    typer >= 0.2x raises errors of its vendored click, which are not ``click.ClickException``;
    both kinds carry ``show()`` and ``exit_code``, so they are recognised by those.
    """
    return callable(getattr(err, "show", None)) and isinstance(getattr(err, "exit_code", None), int)


def exit_code_for(err: BaseException) -> int:
    """The README's exit code for ``err``; the only place that maps errors to codes.

    >>> from deploy_to_ollama.errors import RoundTripError, UsageError
    >>> exit_code_for(RoundTripError("x")), exit_code_for(UsageError("y"))
    (3, 2)
    >>> exit_code_for(KeyboardInterrupt()), exit_code_for(RuntimeError("bug"))
    (130, 1)
    """
    if isinstance(err, DeployError):
        return err.exit_code
    if isinstance(err, (KeyboardInterrupt, typer.Abort)):
        return 130
    if _is_usage_error(err):
        return 2
    return 1


def describe(err: BaseException) -> tuple[str, str | None]:
    """(one-line message, hint) for any error the CLI can meet."""
    if isinstance(err, DeployError):
        return err.message, err.hint
    if isinstance(err, (KeyboardInterrupt, typer.Abort)):
        return INTERRUPTED, None
    if _is_usage_error(err):
        ctx = getattr(err, "ctx", None)
        path = getattr(ctx, "command_path", None) or "deploy-to-ollama"
        message = str(err.format_message()).rstrip(".")  # type: ignore[attr-defined]
        return " ".join(message.split()), f"see `{path} --help`"
    text = " ".join(str(err).split()) or "no message"
    return f"unexpected {type(err).__name__}: {text}", DEBUG_HINT


def handle_exception(err: BaseException, *, json_requested: bool = False) -> int:
    """Render ``err`` for the user (one line + hint; JSON under ``--json``), return the code.

    ``json_requested`` covers errors raised before ``--json`` was parsed (click usage errors).
    Tracebacks only with ``DTO_DEBUG=1``: a user reads one line saying what to do.
    """
    _RUN.json = _RUN.json or json_requested
    _RUN.reported = True
    write_json_failure(err)
    code = exit_code_for(err)
    if type(err).__name__ == "NoArgsIsHelpError":  # a bare command: its help is the answer
        err.show(file=sys.stderr)  # type: ignore[attr-defined]
        return code
    message, hint = describe(err)
    if code == 130:
        print_line(message)
    else:
        print_error(message, hint=hint)
    if settings().debug:
        traceback.print_exception(err)
    return code
