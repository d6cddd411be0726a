"""CLI ``cache list|clean``: show and remove cached exports, deploy work folders, toolchains."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from ..cache import CacheEntry, clean_cache, list_cache, parse_duration
from ._common import JsonOpt, app, print_result_json
from ._common import settings as cli_settings

CACHE_EXAMPLES = """Examples:

  deploy-to-ollama cache list                      # what the cache holds, with sizes

  deploy-to-ollama cache clean                     # deploy work folders + dead runs' leftovers

  deploy-to-ollama cache clean --older-than 7d     # only what was not written for a week

  deploy-to-ollama cache clean --all               # also the llama.cpp toolchain (rebuilt on use)
"""

cache_app = typer.Typer(
    name="cache",
    help="Show or remove what deploy-to-ollama keeps in its cache (DTO_CACHE_DIR).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(cache_app, name="cache")


def _row(entry: CacheEntry, now: float) -> str:
    age_days = max(0.0, now - entry.modified) / 86400
    busy = ""
    if entry.in_use_by is not None:
        busy = "  in use" + (f" by PID {entry.in_use_by}" if entry.in_use_by > 0 else "")
    detail = f"  ({entry.detail})" if entry.detail else ""
    return (
        f"{entry.kind:9} {entry.size_bytes / 1e6:10,.1f} MB {age_days:6.1f} d  "
        f"{entry.path}{detail}{busy}"
    )


@cache_app.command("list", epilog=CACHE_EXAMPLES)
def cache_list(json_out: JsonOpt = False) -> None:
    """List cached items: kind, size, days since last written, and whether a run holds them."""
    settings = cli_settings()
    entries = list_cache(settings.cache_dir)
    total = sum(e.size_bytes for e in entries)
    if json_out:
        print_result_json(
            {
                "cache_dir": str(settings.cache_dir),
                "entries": [e.to_dict() for e in entries],
                "total_bytes": total,
            }
        )
        return
    now = time.time()
    for entry in entries:
        typer.echo(_row(entry, now))
    typer.echo(f"total     {total / 1e6:10,.1f} MB in {settings.cache_dir}")


@cache_app.command("clean", epilog=CACHE_EXAMPLES)
def cache_clean(
    everything: Annotated[
        bool,
        typer.Option("--all", help="Also remove toolchains and downloads (rebuilt on next use)."),
    ] = False,
    older_than: Annotated[
        str | None,
        typer.Option("--older-than", help="Only items not written for this long: 30m, 12h, 7d."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Remove deploy work folders and dead runs' leftovers (with --all, everything) that no
    running deploy-to-ollama holds."""
    age = parse_duration(older_than) if older_than is not None else None
    settings = cli_settings()
    result = clean_cache(settings.cache_dir, everything=everything, older_than=age)
    if json_out:
        print_result_json({"cache_dir": str(settings.cache_dir), **result.to_dict()})
        return
    now = time.time()
    for entry in result.removed:
        typer.echo("removed   " + _row(entry, now).split(None, 1)[1])
    for entry in result.kept_in_use:
        typer.echo("kept      " + _row(entry, now).split(None, 1)[1])
    typer.echo(f"freed {result.freed_bytes / 1e6:,.1f} MB in {settings.cache_dir}")
