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
    """Console-script entry point: run the app and map our errors to exit codes."""
    args = rewrite_default_commands(sys.argv[1:] if argv is None else argv)
    try:
        # With standalone_mode=False click *returns* the code of a `typer.Exit` raised inside a
        # command (e.g. exit 3 for a failed check) instead of raising it.
        code = app(args=args, prog_name="deploy-to-ollama", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except KeyboardInterrupt:
        _common.print_error("interrupted", hint=None)
        sys.exit(130)
    except Exception as err:
        sys.exit(_common.handle_exception(err))
    sys.exit(0)


__all__ = ["app", "main", "rewrite_default_commands"]
