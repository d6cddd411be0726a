"""A prompt built from the last turns only: a fixed frame around the last message, the one
before it and the leading system message (``frame_pieces``).

ShieldGemma asks whether the last ``Human Question:`` (or the last ``Chatbot Response:`` to
it) breaks the principle given as the system message; GPT4All's Wizard prints the system
message and ``ASSISTANT:``. No turn wrapper repeats, so the first reading finds none; here the
sentinel renders show that an earlier turn changes nothing and where each content goes.
"""

from __future__ import annotations

from collections.abc import Sequence

from .gotext import Act, Lit, Piece
from .shape import A1, SYS, U1, U2, _Renderer
from .source import TemplateSource

A2 = "Zqassttwo"
#: Go expressions of the slots: the leading system message's, the last and the one before.
SLOTS = {SYS: "$frameSys", U2: "$frameLast", A2: "$frameLast"}
BEFORE_LAST = "$framePrev"


class _EarlierTurnShowsError(Exception):
    """An earlier exchange changes the render: the prompt is not built from the last turns."""


def _frame(render: _Renderer, short: list[tuple[str, str]], *, cont: bool) -> str | None:
    """The render of ``short`` (None where it, or the same after an earlier exchange, raises).

    Raises:
        _EarlierTurnShowsError: the two render differently.
    """
    lead = short[:1] if short[0][0] == "system" else []
    earlier = [*lead, ("user", U1), ("assistant", A1), *short[len(lead) :]]
    text = render(short, gen=not cont, cont=cont)
    longer = render(earlier, gen=not cont, cont=cont)
    if text is None or longer is None:
        return None
    if text != longer:
        raise _EarlierTurnShowsError
    return text


def _slots(text: str, marks: Sequence[tuple[str, str]]) -> list[Piece] | None:
    """``text`` with each sentinel of ``marks`` (sentinel, Go expression) replaced by its
    expression, in the order they appear (None where one is missing)."""
    found = sorted((text.find(mark), mark, expr) for mark, expr in marks)
    if any(at < 0 for at, _, _ in found):
        return None
    pieces: list[Piece] = []
    pos = 0
    for at, mark, expr in found:
        if at < pos:
            return None
        pieces += [Lit(text[pos:at]), Act(expr)]
        pos = at + len(mark)
    return [*pieces, Lit(text[pos:])]


def frame_pieces(source: TemplateSource) -> list[Piece] | None:
    """A TEMPLATE for a Jinja whose prompt depends only on the last two messages and the
    leading system message, as observed; None where an earlier turn changes every render
    (a conversation whose render raises leaves its frame empty: its probes skip)."""
    render = _Renderer(source)
    frames: dict[tuple[bool, str], list[Piece]] = {}
    cases = {
        (True, "user"): ([("system", SYS), ("user", U2)], [(SYS, SLOTS[SYS]), (U2, "$frameLast")]),
        (False, "user"): ([("user", U2)], [(U2, "$frameLast")]),
        (True, "assistant"): (
            [("system", SYS), ("user", U2), ("assistant", A2)],
            [(SYS, SLOTS[SYS]), (U2, BEFORE_LAST), (A2, "$frameLast")],
        ),
        (False, "assistant"): (
            [("user", U2), ("assistant", A2)],
            [(U2, BEFORE_LAST), (A2, "$frameLast")],
        ),
    }
    for key, (messages, marks) in cases.items():
        try:
            text = _frame(render, messages, cont=key[1] == "assistant")
        except _EarlierTurnShowsError:
            return None
        if text is None:
            continue
        used = [(mark, expr) for mark, expr in marks if mark in text]
        pieces = _slots(text, used)
        if pieces is None:
            return None
        frames[key] = pieces
    if not frames:
        return None
    bos = source.bos_token if source.add_bos_token is not False else ""
    return _assemble(frames, bos)


def _strip(pieces: list[Piece], bos: str | None) -> list[Piece]:
    if bos and pieces and isinstance(pieces[0], Lit) and pieces[0].text.startswith(bos):
        return [Lit(pieces[0].text[len(bos) :]), *pieces[1:]]
    return pieces


def _assemble(frames: dict[tuple[bool, str], list[Piece]], bos: str | None) -> list[Piece]:
    head: list[Piece] = [Act('$frameSys := ""'), Act("$frameHas := false")]
    head += [Act('if and .Messages (eq (index .Messages 0).Role "system")')]
    head += [Act("$frameSys = (index .Messages 0).Content"), Act("$frameHas = true"), Act("end")]
    head += [Act("$frameLast := (index .Messages (len (slice .Messages 1))).Content")]
    head += [Act('if eq (index .Messages (len (slice .Messages 1))).Role "assistant"')]
    head += [Act("$framePrev := (index .Messages (len (slice .Messages 2))).Content")]
    body = head + _by_system(frames, "assistant", bos) + [Act("else")]
    return [*body, *_by_system(frames, "user", bos), Act("end")]


def _by_system(
    frames: dict[tuple[bool, str], list[Piece]], role: str, bos: str | None
) -> list[Piece]:
    with_sys = _strip(frames.get((True, role), []), bos)
    without = _strip(frames.get((False, role), []), bos)
    return [Act("if $frameHas"), *with_sys, Act("else"), *without, Act("end")]


__all__ = ["frame_pieces"]
