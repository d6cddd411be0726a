"""A tool result's tool name looked up from the call it answers, where the Jinja does that.

Some templates print a tool result's name not from the message's ``name`` but from the
assistant call whose id equals the result's ``tool_call_id`` (Solar Open's ``get_tool_name``
macro). The sentinel results answer ids no call has, so the name shows nothing there; we render
once more with the result answering the first sentinel call, and where exactly that call's name
appears in the result item, the item gets a Go lookup over every message's calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .gotext import Act, Lit, Piece
from .source import TemplateSource
from .tool_sentinels import CALLS, RESULTS, call_conv, render

if TYPE_CHECKING:
    from .tool_shape import ToolShape

_CALL: dict[str, Any] = dict(CALLS[0])
_RESULT: dict[str, Any] = dict(RESULTS[0])
#: The sentinel call's id and name, the sentinel result's id and content.
CALL_ID, CALL_NAME = str(_CALL["id"]), str(_CALL["function"]["name"])
RESULT_ID, RESULT_CONTENT = str(_RESULT["tool_call_id"]), str(_RESULT["content"])

#: The lookup: every call (in every message) whose id is the result's, by name, as the Jinja
#: macro loops over all messages and prints each match.
LOOKUP: tuple[Piece, ...] = (
    Act("$rid := .ToolCallID"),
    Act("range $.Messages"),
    Act("range .ToolCalls"),
    Act("if eq .ID $rid"),
    Act(".Function.Name"),
    Act("end"),
    Act("end"),
    Act("end"),
)


def _item_text(item: Sequence[Piece], call_id: str, content: str) -> str | None:
    """The result item as the sentinel result prints it; None for an action we cannot print."""
    values = {".ToolCallID": call_id, ".Content": content}
    out = []
    for piece in item:
        if isinstance(piece, Lit):
            out.append(piece.text)
        elif piece.code in values:
            out.append(values[piece.code])
        else:
            return None
    return "".join(out)


def _insert(item: Sequence[Piece], offset: int) -> list[Piece] | None:
    """``item`` with :data:`LOOKUP` at ``offset`` characters into its text (inside or at the
    edge of a literal); None where that falls inside an action's text."""
    pos = 0
    for n, piece in enumerate(item):
        size = len(_item_text([piece], CALL_ID, RESULT_CONTENT) or "")
        if isinstance(piece, Lit) and pos <= offset <= pos + size:
            cut = offset - pos
            return [
                *item[:n],
                Lit(piece.text[:cut]),
                *LOOKUP,
                Lit(piece.text[cut:]),
                *item[n + 1 :],
            ]
        if offset < pos + size:
            return None
        pos += size
    return None


def _inserted_at(base: str, answered: str, text: str) -> int | None:
    """Where ``answered`` is ``base`` with ``text`` inserted (the first such place)."""
    if len(answered) != len(base) + len(text):
        return None
    common = 0
    while common < len(base) and base[common] == answered[common]:
        common += 1
    for at in range(max(0, common - len(text)), common + 1):
        if answered[at : at + len(text)] == text and answered[at + len(text) :] == base[at:]:
            return at
    return None


def name_from_call(result_item: Sequence[Piece], texts: tuple[str, str]) -> list[Piece] | None:
    """The result item with the name lookup, from two renderings: the result answering an
    unknown id, and the same answering the first call; None where the Jinja does not look up.

    >>> item = [Lit("<r>"), Act(".ToolCallID"), Lit("|"), Act(".Content"), Lit("</r>")]
    >>> a = "<c>Zqcallida Zqcallaname</c><r>Zqresida0|Zqresulta</r>"
    >>> found = name_from_call(item, (a, a.replace("Zqresida0|", "Zqcallida|Zqcallaname")))
    >>> [p.text if isinstance(p, Lit) else p.code for p in found][:4]
    ['<r>', '.ToolCallID', '|', '$rid := .ToolCallID']
    >>> name_from_call(item, (a, a.replace("<c>", "<c>Zqcallaname"))) is None
    True
    """
    unknown, answered = texts
    base = unknown.replace(RESULT_ID, CALL_ID)
    at = _inserted_at(base, answered, CALL_NAME)
    text = _item_text(result_item, CALL_ID, RESULT_CONTENT)
    if at is None or not text:
        return None
    start = base.find(text)
    while start >= 0 and start + len(text) < at:
        start = base.find(text, start + 1)
    if start < 0 or start > at:
        return None
    return _insert(result_item, at - start)


def with_looked_up_names(source: TemplateSource, tools: ToolShape, *, final: bool) -> ToolShape:
    """``tools`` with its result item looking tool names up from the calls, where the Jinja
    does that (``final``: the sentinel conversation has an assistant answer after the result,
    for strictly alternating templates); else ``tools`` unchanged."""
    item = tools.result
    if not item or any(isinstance(p, Act) and p.code == ".ToolName" for p in item):
        return tools
    unknown = call_conv(1, content="", results=1, final=final)
    answered = [dict(m) for m in unknown]
    for message in answered:
        if message.get("role") == "tool":
            message["tool_call_id"] = CALL_ID
    texts = [render(source, conv, gen=True) for conv in (unknown, answered)]
    if texts[0] is None or texts[1] is None:
        return tools
    found = name_from_call(item, (texts[0], texts[1]))
    return replace(tools, result=tuple(found)) if found is not None else tools


#: The first call's name of the latest assistant turn before this message (empty after an
#: assistant turn without calls): gpt-oss names each result after the call before it
#: (``last_tool_call.name``), whatever the result's own name.
PREVIOUS_CALL: tuple[Piece, ...] = (
    Act('$pn := ""'),
    Act("range (slice $.Messages 0 $i)"),
    # (len .ToolCalls), not .ToolCalls: Ollama takes the first {{ if }} naming .ToolCalls
    # as its argument for the tool-call tag, and that must stay the assistant's.
    Act('if and (eq .Role "assistant") (len .ToolCalls)'),
    Act("$pn = (index .ToolCalls 0).Function.Name"),
    Act('else if eq .Role "assistant"'),
    Act('$pn = ""'),
    Act("end"),
    Act("end"),
    Act("$pn"),
)


def names_after_call(texts: Sequence[str]) -> list[str] | None:
    """``texts`` (renderings of sentinel calls and their results) with each later occurrence
    of the first call's name, where no result prints its own name, replaced by the name of
    the result it stands in (the first later one by the first result's, and so on); None
    where results print their own names or the call's name shows once only.

    A result item read off these prints ``.ToolName``; :func:`with_previous_call` turns that
    into :data:`PREVIOUS_CALL`, and the probes (parallel calls of two tools) decide.

    >>> names_after_call(["<c>Zqcallaname</c><r Zqcallaname>1</r><r Zqcallaname>2</r>"])
    ['<c>Zqcallaname</c><r Zqresnamea>1</r><r Zqresnameb>2</r>']
    >>> names_after_call(["<c>Zqcallaname</c><r Zqresnamea>1</r>"]) is None
    True
    """
    names = [str(r["name"]) for r in RESULTS]
    if any(name in text for text in texts for name in names):
        return None
    out = []
    for text in texts:
        first = text.find(CALL_NAME)
        if first < 0:
            out.append(text)
            continue
        head, rest = text[: first + len(CALL_NAME)], text[first + len(CALL_NAME) :].split(CALL_NAME)
        if len(rest) - 1 > len(names):
            return None
        tail = rest[0] + "".join(names[n] + part for n, part in enumerate(rest[1:]))
        out.append(head + tail)
    return out if out != list(texts) else None


def with_previous_call(item: Sequence[Piece]) -> tuple[Piece, ...] | None:
    """The result item with its ``.ToolName`` read as :data:`PREVIOUS_CALL`; None where the
    item prints no tool name."""
    if not any(isinstance(p, Act) and p.code == ".ToolName" for p in item):
        return None
    found: list[Piece] = []
    for piece in item:
        named = isinstance(piece, Act) and piece.code == ".ToolName"
        found.extend(PREVIOUS_CALL if named else (piece,))
    return tuple(found)


__all__ = [
    "LOOKUP",
    "PREVIOUS_CALL",
    "name_from_call",
    "names_after_call",
    "with_looked_up_names",
    "with_previous_call",
]
