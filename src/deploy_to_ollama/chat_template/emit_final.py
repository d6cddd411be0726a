"""The opening of a user turn in the TEMPLATE's loop, with the final user turn's own opening
(``final_user.py``) where the shape has one. Cut out of ``emit.py``, which assembles whole
TEMPLATEs.
"""

from __future__ import annotations

from .first_bare import user_opening
from .gotext import Act, Lit, Piece
from .shape import TemplateShape

#: The system text as the Jinja reads it: the leading system message's content, if any.
_LEADING_SYSTEM = 'if and $.Messages (eq (index $.Messages 0).Role "system")'


def _ordinary(shape: TemplateShape, last_user: tuple[int, str] | None) -> list[Piece]:
    if last_user is None:
        return user_opening(shape)
    at, text = last_user
    up = shape.user_prefix
    return [Lit(up[:at]), Act("if eq $i $lastUser"), Lit(text), Act("end"), Lit(up[at:])]


def _final(shape: TemplateShape, last_user: tuple[int, str] | None) -> list[Piece] | None:
    """The opening of a user message that ends the conversation; None where the shape's
    ordinary opening does not end with the part the final one replaces."""
    final = shape.final_user
    assert final is not None
    up = shape.user_prefix
    if not up.endswith(final.ordinary):
        return None
    cut = len(up) - len(final.ordinary)
    pieces: list[Piece] = []
    start = 0
    if last_user is not None:
        at, text = last_user
        if at > cut:
            return None  # tool definitions inside the part that differs: not read
        pieces += [Lit(up[:at]), Act("if eq $i $lastUser"), Lit(text), Act("end")]
        start = at
    pieces += [Lit(up[start:cut] + final.before)]
    if final.carries_system:
        leading = Act("(index $.Messages 0).Content")
        pieces += [Act(_LEADING_SYSTEM), leading, Act("else"), Lit(final.default), Act("end")]
        pieces += [Lit(final.after)]
    return pieces


def user_turn_opening(shape: TemplateShape, last_user: tuple[int, str] | None) -> list[Piece]:
    """A user turn's opening inside ``range $i, $_ := .Messages`` (``$last`` set): the final
    opening for a message that ends the conversation, where the shape has one.

    >>> from dataclasses import replace
    >>> from .final_user import FinalUser
    >>> from .gotext import join_pieces
    >>> shape = TemplateShape("", "[INST]", "[/INST]", "", "", "", "", "", "block")
    >>> join_pieces(user_turn_opening(shape, None))
    '[INST]'
    >>> final = FinalUser("INST]", "SYS]", " ", "Hi", carries_system=True)
    >>> print(join_pieces(user_turn_opening(replace(shape, final_user=final), None)))
    {{ if $last }}[SYS]
    {{- if and $.Messages (eq (index $.Messages 0).Role "system") }}
    {{- (index $.Messages 0).Content }}
    {{- else }}Hi
    {{- end }} {{ else }}[INST]
    {{- end }}
    """
    ordinary = _ordinary(shape, last_user)
    if shape.final_user is None:
        return ordinary
    final = _final(shape, last_user)
    if final is None:
        return ordinary
    return [Act("if $last"), *final, Act("else"), *ordinary, Act("end")]


__all__ = ["user_turn_opening"]
