"""A leading system message dropped, later ones printed where they stand
(``system_mode`` ``drop`` with a ``mid_system`` wrapper and no system lead-in).

ChatQA's Jinja takes ``messages[0]`` off when it is a system message and prints every other
message that is not a user one with the assistant's ``Assistant:`` label, so a system message in
the middle of the conversation prints as an assistant turn. The TEMPLATE prints a system
message after the first one with the wrapper observed there, trimmed as observed.
"""

from __future__ import annotations

from collections.abc import Callable

from .gotext import Act, Lit, Piece
from .shape import TemplateShape


def later_system(
    shape: TemplateShape, content: Callable[[str, tuple[str, str], str], list[Piece]]
) -> list[Piece]:
    """The branch of a system message after the first message, where the Jinja drops a
    leading one and prints later ones (empty otherwise); ``content(expr, trim, tag)``
    prints ``expr`` trimmed.

    >>> shape = TemplateShape("", "", "", "", "", "", "", "", "drop", mid_system=("A: ", ""))
    >>> later_system(shape, lambda e, t, g: [Act(e)])[0] == Act(
    ...     'else if and (eq .Role "system") (gt $i 0)')
    True
    """
    if shape.system_mode != "drop" or shape.mid_system is None or shape.head_system is not None:
        return []
    prefix, suffix = shape.mid_system
    branch: list[Piece] = [Act('else if and (eq .Role "system") (gt $i 0)'), Lit(prefix)]
    return [*branch, *content(".Content", shape.trim("system_mid"), "m"), Lit(suffix)]


__all__ = ["later_system"]
