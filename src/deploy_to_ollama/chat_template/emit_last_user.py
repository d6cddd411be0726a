"""Tool definitions inside the last user turn (Mistral's ``[AVAILABLE_TOOLS]``), for the
TEMPLATE readings that print them there: ``$lastUser`` and the user prefix that carries them.
Cut out of ``emit.py``, which assembles whole TEMPLATEs.
"""

from __future__ import annotations

from dataclasses import replace

from .gotext import Act, Lit, Piece
from .shape import TemplateShape


def prefix_out_of_head(shape: TemplateShape, after: str) -> tuple[TemplateShape, str] | None:
    """The lead-in without the first user prefix it ends with (printed in the loop instead);
    None where it does not end with it."""
    up = shape.user_prefix
    if not up or not after.endswith(up) or not shape.head.endswith(up):
        return None
    head = shape.head[: len(shape.head) - len(up)]
    return replace(shape, head=head), after[: len(after) - len(up)]


def last_user_scan(last_user: tuple[int, str] | None) -> list[Piece]:
    """``$lastUser``: index of the last user message, where tool definitions go."""
    if last_user is None:
        return []
    pieces = [Act("$lastUser := -1"), Act("range $i, $m := .Messages")]
    return [*pieces, Act('if eq $m.Role "user"'), Act("$lastUser = $i"), Act("end"), Act("end")]


def user_prefix_in_loop(
    shape: TemplateShape, last_user: tuple[int, str] | None, *, every: bool
) -> list[Piece]:
    """A user turn's prefix in the loop of ``emit._emit_header``: with tool definitions in the
    last one, every turn prints it (``every``); without, only turns after the first."""
    if last_user is None:
        return [] if every else [Lit(shape.user_prefix)]
    if not every:
        return []
    at, text = last_user
    up = shape.user_prefix
    return [Lit(up[:at]), Act("if eq $i $lastUser"), Lit(text), Act("end"), Lit(up[at:])]


__all__ = ["last_user_scan", "prefix_out_of_head", "user_prefix_in_loop"]
