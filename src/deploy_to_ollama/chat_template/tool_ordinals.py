"""Tool-call ids the Jinja template numbers itself: the n-th call of the conversation prints
``n`` (from 0), and a tool result prints the number of the call whose id it answers.

Command-R, Command R7B and Command A print ``"tool_call_id": "0"``, ``"1"`` ... with a
counter that runs across the whole conversation (``namespace(value=0)``, bumped for every call),
and map a result's ``tool_call_id`` back to that number by walking every message again. Go
templates have no arithmetic, but ``len`` of a string grown by one character per call counts
just as well, and ``range`` over ``$.Messages`` finds the call a result answers
(ollama/ollama ``template/template.go`` hands a TEMPLATE each call's ``ID`` and each result's
``ToolCallID`` since v0.12.10).

The reading: render the sentinel conversations twice, once as they are and once after an
earlier exchange with two more calls. Where the two differ only by a digit shifted by two, the
Jinja printed a call number; those digits are replaced by the sentinel ids, so the usual
inference (:mod:`.tool_shape`) reads them as ``$c.ID`` and ``.ToolCallID``, which
:func:`numbered` then turns into the counting Go code. What it yields must still verify.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .gotext import Act, Piece
from .shape import U1
from .tool_sentinels import CALLS, RESULTS

if TYPE_CHECKING:
    from .shape import TemplateShape
    from .source import TemplateSource
    from .tool_shape import ToolShape

#: The first Ollama release that gives a TEMPLATE call ids and result ids (#12956).
IDS_SINCE = (0, 12, 10)

#: Why the reading is not used on an older server.
NO_IDS = (
    "the Jinja template numbers tool calls across the conversation and maps each result to "
    "its call's number by id; Ollama before v0.12.10 gives a TEMPLATE no call ids"
)

#: An earlier exchange with two calls, put before the sentinel conversation to shift numbers.
_HISTORY: tuple[dict[str, Any], ...] = (
    {"role": "user", "content": "Zqhistuser"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": f"Zqhistid{tag}",
                "type": "function",
                "function": {"name": "Zqhistname", "arguments": {"zqhistkey": "Zqhistval"}},
            }
            for tag in "xy"
        ],
    },
    *(
        {"role": "tool", "content": "Zqhistresult", "name": "Zqhistname", "tool_call_id": tag}
        for tag in ("Zqhistidx", "Zqhistidy")
    ),
    {"role": "assistant", "content": "Zqhistanswer"},
)
_SHIFT = 2

Render = Callable[..., str | None]


def _answering(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The messages with each sentinel result answering the sentinel call of its index (the
    Jinja maps a result to a number only through a call with the same id)."""
    ids = {c["id"] for m in messages for c in (m.get("tool_calls") or ())}
    out = []
    for message in messages:
        copy = dict(message)
        for call, result in zip(CALLS, RESULTS, strict=True):
            if copy.get("tool_call_id") == result["tool_call_id"] and call["id"] in ids:
                copy["tool_call_id"] = call["id"]
        out.append(copy)
    return out


def _with_history(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    lead = 0
    while lead < len(messages) and messages[lead].get("role") == "system":
        lead += 1
    return [*messages[:lead], *(dict(m) for m in _HISTORY), *messages[lead:]]


def _numbered_positions(base: str, shifted: str) -> list[int] | None:
    """Where ``base`` (from its first user message on) prints a call number, read off the
    same text rendered after two earlier calls; None when they differ otherwise."""
    at, at_shifted = base.find(U1), shifted.find(U1)
    if at < 0 or at_shifted < 0:
        return None
    tail, tail_shifted = base[at:], shifted[at_shifted:]
    if len(tail) != len(tail_shifted):
        return None
    found = []
    for n, (a, b) in enumerate(zip(tail, tail_shifted, strict=True)):
        if a == b:
            continue
        if not (a.isdigit() and b.isdigit() and int(b) == int(a) + _SHIFT):
            return None
        found.append(at + n)
    return found


def _marked(render: Render, messages: Sequence[Mapping[str, Any]], **kw: Any) -> str | None:
    """The rendering with each printed call number replaced by the sentinel id it stands for:
    the call's own id for the numbers printed with the calls, the answering result's
    ``tool_call_id`` sentinel for those printed with the results."""
    n_calls = sum(len(m.get("tool_calls") or ()) for m in messages)
    answering = _answering(messages)
    base = render(answering, **kw)
    if n_calls == 0 or base is None:
        return base
    shifted = render(_with_history(answering), **kw)
    positions = _numbered_positions(base, shifted) if shifted is not None else None
    if not positions:
        return base
    out: list[str] = []
    last = 0
    for k, at in enumerate(positions):
        number = int(base[at])
        if number >= len(CALLS):
            return base
        item = CALLS[number] if k < n_calls else RESULTS[number]
        sentinel = str(item["id"] if k < n_calls else item["tool_call_id"])
        out += [base[last:at], sentinel]
        last = at + 1
    return "".join(out) + base[last:]


def numbers_calls(source: TemplateSource) -> bool:
    """Whether the Jinja template prints call numbers instead of call ids (two calls, two
    results, each call's number seen where its id would be)."""
    from .tool_sentinels import call_conv, render_plain

    def render(messages: Sequence[Mapping[str, Any]], **kw: Any) -> str | None:
        return render_plain(source, messages, **kw)

    conv = call_conv(2, content="", results=2, final=True)
    base = render(_answering(conv), gen=True)
    if base is None or any(str(c["id"]) in base for c in CALLS):
        return False
    shifted = render(_with_history(_answering(conv)), gen=True)
    positions = _numbered_positions(base, shifted) if shifted is not None else None
    return bool(positions) and len(positions or ()) >= len(CALLS)


@contextmanager
def marking_numbers() -> Iterator[None]:
    """Inside the block, sentinel renders (:func:`.tool_sentinels.render`) show call numbers
    as the sentinel ids they stand for."""
    from . import tool_sentinels

    token = tool_sentinels.RENDER_WRAPPER.set(_marked)
    try:
        yield
    finally:
        tool_sentinels.RENDER_WRAPPER.reset(token)


#: Go: the number of calls before call ``$k`` of message ``$i`` (``$ordN``'s length).
_CALL_NUMBER: tuple[Piece, ...] = (
    Act('$ordN := ""'),
    Act("range $ordJ, $ordM := slice $.Messages 0 $i"),
    Act("range $ordM.ToolCalls"),
    Act('$ordN = printf "%s." $ordN'),
    Act("end"),
    Act("end"),
    Act("range $ordJ, $ordC := (index $.Messages $i).ToolCalls"),
    Act("if lt $ordJ $k"),
    Act('$ordN = printf "%s." $ordN'),
    Act("end"),
    Act("end"),
    Act("len $ordN"),
)

#: Go: the number of the first call, over the whole conversation, whose id the result answers
#: (nothing when none does, as the Jinja's loop prints nothing then).
_RESULT_NUMBER: tuple[Piece, ...] = (
    Act("$ordID := .ToolCallID"),
    Act('$ordN := ""'),
    Act("$ordHit := false"),
    Act("range $.Messages"),
    Act("range .ToolCalls"),
    Act("if not $ordHit"),
    Act("if eq .ID $ordID"),
    Act("len $ordN"),
    Act("$ordHit = true"),
    Act("end"),
    Act("end"),
    Act('$ordN = printf "%s." $ordN'),
    Act("end"),
    Act("end"),
)


def _swap(pieces: Sequence[Piece], old: str, new: Sequence[Piece]) -> tuple[tuple[Piece, ...], int]:
    out: list[Piece] = []
    seen = 0
    for piece in pieces:
        if isinstance(piece, Act) and piece.code == old:
            out += new
            seen += 1
        else:
            out.append(piece)
    return tuple(out), seen


def numbered(tools: ToolShape) -> ToolShape:
    """``tools`` (a :class:`.tool_shape.ToolShape`) with the call ids and result ids its items
    print turned into the call numbers; unchanged when neither prints."""
    if tools.calls is None:
        return tools
    item, calls_seen = _swap(tools.calls.item, "$c.ID", _CALL_NUMBER)
    result, results_seen = _swap(tools.result, ".ToolCallID", _RESULT_NUMBER)
    if not calls_seen and not results_seen:
        return tools
    return replace(tools, calls=replace(tools.calls, item=item), result=result)


def numbered_tool_shape(source: TemplateSource, shape: TemplateShape) -> ToolShape | None:
    """The tool calls and results read with call numbers in place of ids (None when the Jinja
    template does not number its calls)."""
    from .tool_shape import ToolShape, infer_tool_shape

    if not numbers_calls(source):
        return None
    if not ids_available():
        return ToolShape(reason=NO_IDS)
    with marking_numbers():
        found = infer_tool_shape(source, shape)
    return numbered(found)


def ids_available() -> bool:
    """Whether the Ollama release being verified for gives a TEMPLATE call and result ids."""
    from ..ollama_route import parse_server_version
    from .server_rules import current_version

    version = parse_server_version(current_version())[0]
    return version.newest or version.parts >= IDS_SINCE


__all__ = [
    "IDS_SINCE",
    "NO_IDS",
    "ids_available",
    "marking_numbers",
    "numbered",
    "numbered_tool_shape",
    "numbers_calls",
]
