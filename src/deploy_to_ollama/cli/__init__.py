"""Command-line interface: the only layer that prints, prompts or exits.

``deploy`` is the default command (``deploy-to-ollama ./lora --name x``) and ``template show``
the default of ``template`` (``deploy-to-ollama template ./model``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

from . import _common
from ._common import app

# Importing a command module registers its commands on ``app``.
from . import template as _template  # noqa: F401  isort: skip
from . import export as _export  # noqa: F401  isort: skip
from . import deploy as _deploy  # noqa: F401  isort: skip
from . import doctor as _doctor  # noqa: F401  isort: skip
from . import run as _run  # noqa: F401  isort: skip
from . import cache as _cache  # noqa: F401  isort: skip

#: Command groups whose first positional argument selects a default sub-command.
DEFAULT_SUBCOMMANDS = {"template": "show"}
DEFAULT_COMMAND = "deploy"


def _top_level_names() -> set[str]:
    names = {
        cmd.name or (cmd.callback.__name__ if cmd.callback else "")
        for cmd in app.registered_commands
    }
    names |= {group.name or "" for group in app.registered_groups}
    return names


def _group_commands(group_name: str) -> set[str]:
    for group in app.registered_groups:
        if group.name == group_name and group.typer_instance is not None:
            return {cmd.name or "" for cmd in group.typer_instance.registered_commands}
    return set()


def rewrite_default_commands(argv: Sequence[str]) -> list[str]:
    """Insert the default command where the user left it out.

    >>> rewrite_default_commands(["./lora", "--name", "x"])
    ['deploy', './lora', '--name', 'x']
    >>> rewrite_default_commands(["template", "./model"])
    ['template', 'show', './model']
    >>> rewrite_default_commands(["--version"])
    ['--version']
    """
    args = list(argv)
    if not args or args[0].startswith("-"):
        return args
    if args[0] not in _top_level_names():
        return [DEFAULT_COMMAND, *args]
    sub = DEFAULT_SUBCOMMANDS.get(args[0])
    if (
        sub
        and len(args) > 1
        and not args[1].startswith("-")
        and args[1] not in _group_commands(args[0])
    ):
        return [args[0], sub, *args[1:]]
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: run the app; every failure leaves through ``handle_exception``.

    Commands never choose exit codes: they raise (``TemplateMismatchError``, ``RoundTripError``
    for exit 3, ``UsageError`` for 2, ...) and ``_common.exit_code_for`` maps the error.
    """
    args = rewrite_default_commands(sys.argv[1:] if argv is None else argv)
    json_requested = "--json" in args
    _common.reset_invocation(json_requested=json_requested)
    try:
        # With standalone_mode=False click returns the code of a `typer.Exit` (--version, ...)
        # and lets usage errors and our own errors propagate to the handler below.
        code = app(args=args, prog_name="deploy-to-ollama", standalone_mode=False)
    except typer.Exit as exit_:
        code = exit_.exit_code
    except (Exception, KeyboardInterrupt) as err:  # one handler for every failure
        code = _common.handle_exception(err, json_requested=json_requested)
    if code == 130 and not _common.error_reported():
        # typer turns a Ctrl-C outside any command (while parsing) into a silent Exit(130).
        code = _common.handle_exception(KeyboardInterrupt(), json_requested=json_requested)
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["app", "main", "rewrite_default_commands"]
