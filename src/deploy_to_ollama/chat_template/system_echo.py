"""System messages printed twice: the last one collected before the conversation, and each one
again where it stands (``TemplateShape.system_echo``).

Pivot-MoE's alpaca Jinja opens with the last system message's trimmed content, then prints
every message in its loop, system ones included. The first reading cuts the system turn at the
first copy of the sentinel and takes the second copy for the turn's suffix.
"""

from __future__ import annotations

from dataclasses import replace

from .gotext import Lit, Piece
from .shape import SYS, TemplateShape


def echo_variants(shape: TemplateShape) -> list[TemplateShape]:
    """``shape`` read as hoisting the last system message (or all of them, joined) and
    printing each again in place, where its system suffix holds the sentinel (empty where it
    does not)."""
    if shape.system_mode != "block" or SYS not in shape.system_suffix:
        return []
    at = shape.system_suffix.find(SYS)
    hoisted, rest = shape.system_suffix[:at], shape.system_suffix[at + len(SYS) :]
    if shape.head_system is None or not shape.head_system[1].endswith(rest + shape.user_prefix):
        return []
    base = replace(shape, system_suffix=hoisted, mid_system=None, system_echo=("", rest))
    return [replace(base, system_mode=mode) for mode in ("hoist_last", "hoist")]


def echoed_system(shape: TemplateShape, content: list[Piece]) -> list[Piece]:
    """The in-place copy of a system message (``content``: its printed content), empty
    without the reading.

    >>> shape = TemplateShape("", "", "", "", "", "", "", "", "hoist_last", system_echo=("", "\\n"))
    >>> echoed_system(shape, [Lit("c")])
    [Lit(text=''), Lit(text='c'), Lit(text='\\n')]
    """
    if shape.system_echo is None:
        return []
    prefix, suffix = shape.system_echo
    return [Lit(prefix), *content, Lit(suffix)]


__all__ = ["echo_variants", "echoed_system"]
