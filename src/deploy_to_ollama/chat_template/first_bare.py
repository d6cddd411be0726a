"""A user turn at the start of the conversation that opens bare where later ones open with a
wrapper (``TemplateShape.later_user_prefix``).

Smaug's Llama 2 Jinja prints ``bos + '[INST] ' + content`` only for a user message at index 2
or later; the first user message (index 0, or 1 after a system message) gets no opening. A
conversation without system messages hides this (the opening reads as the end of the assistant
turn), a system message in the middle shows it. The TEMPLATE tests the message's index.
"""

from __future__ import annotations

from dataclasses import replace

from .gotext import Act, Lit, Piece
from .shape import A1, SYS, SYS2, U1, U2, TemplateShape, _between, _Renderer

#: Messages before the first one that gets the later opening.
LATER = "gt $i 1"


def bare_first_variant(render: _Renderer, shape: TemplateShape, mid: str) -> TemplateShape | None:
    """``shape`` with the assistant suffix cut before a system turn that follows it in ``mid``
    (user, assistant, system, user) and the rest printed as the opening of user messages at
    index 2 or later; None where ``mid`` does not read so, or two leading system messages do
    not give the user message at index 2 that opening."""
    if shape.system_mode != "block" or not shape.system_prefix:
        return None
    split = _between(mid, A1, SYS2, U2)
    if split is None or not split[1].endswith(shape.system_prefix):
        return None
    suffix = split[1][: len(split[1]) - len(shape.system_prefix)]
    between = shape.assistant_suffix + shape.user_prefix
    if not between.startswith(suffix) or len(between) == len(suffix):
        return None
    later = between[len(suffix) :]
    if later == shape.user_prefix or split[2] != shape.system_suffix + later:
        return None
    third = render([("system", SYS), ("system", SYS2), ("user", U1)], gen=False)
    at = _between(third, SYS2, U1) if third else None
    if at is None or at[1] != shape.system_suffix + later:
        return None
    return replace(shape, assistant_suffix=suffix, later_user_prefix=later)


def user_opening(shape: TemplateShape) -> list[Piece]:
    """A user turn's opening: the later one from index 2 on, where the shape has one.

    >>> shape = TemplateShape("", "", "", "", "", "", "", "", "block")
    >>> user_opening(shape) == [Lit("")]
    True
    >>> user_opening(replace(shape, later_user_prefix="<s>[INST] "))[0] == Act("if gt $i 1")
    True
    """
    if shape.later_user_prefix is None:
        return [Lit(shape.user_prefix)]
    later = Lit(shape.later_user_prefix)
    return [Act(f"if {LATER}"), later, Act("else"), Lit(shape.user_prefix), Act("end")]


__all__ = ["bare_first_variant", "user_opening"]
