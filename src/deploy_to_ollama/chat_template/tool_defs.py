"""Where and how a Jinja template prints the tool definitions, read off as a loop.

The list of offered tools prints once per conversation (in the system turn, before the first
user turn, or inside the last user turn as Mistral's ``[AVAILABLE_TOOLS]``); the calls and
results that recur turn by turn are :mod:`.tool_shape`'s.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .gotext import Act, Lit
from .loops import Loop, infer_loop, json_pieces, mentions, spans
from .shape import SYS, U1, U2, TemplateShape
from .source import TemplateSource
from .tool_sentinels import TOOLS
from .tool_sentinels import render as _render

#: Go expression for each sentinel string of tool ``k``.
_TOOL_TEXT = {"name": ".Function.Name", "description": ".Function.Description"}


def tool_subst(tool: Mapping[str, Any], var: str) -> tuple[dict[str, str], list[tuple[Any, str]]]:
    function = tool["function"]
    strings = {function[key]: f"{var}{expr}" for key, expr in _TOOL_TEXT.items()}
    params = function["parameters"]
    values = [
        (dict(tool), var),
        (dict(function), f"{var}.Function"),
        (params, f"{var}.Function.Parameters"),
        (params["properties"], f"{var}.Function.Parameters.Properties"),
    ]
    return strings, values


def definitions_loop(source: TemplateSource) -> Loop | None:
    """How the tool list prints, learned from whole renderings with one and with two tools."""
    conv = [{"role": "system", "content": SYS}, {"role": "user", "content": U1}]
    one = _render(source, conv, tools=TOOLS[:1], gen=True)
    two = _render(source, conv, tools=TOOLS, gen=True)
    if one is None or two is None:
        conv = conv[1:]
        one = _render(source, conv, tools=TOOLS[:1], gen=True)
        two = _render(source, conv, tools=TOOLS, gen=True)
    if one is None or two is None:
        return None
    subst = [tool_subst(t, "$t") for t in TOOLS]
    return infer_loop(one, two, [mentions(t) for t in TOOLS], subst) or _list_loop(one, two, subst)


def _list_loop(
    one: str, two: str, subst: Sequence[tuple[Mapping[str, str], Sequence[tuple[Any, str]]]]
) -> Loop | None:
    """The tool list dumped whole (``tools | tojson``): one JSON list, rebuilt by a loop."""
    spans_one, spans_two = spans(one), spans(two)
    if len(spans_one) != len(spans_two):
        return None
    for (a, b), (c, d) in zip(spans_one, spans_two, strict=True):
        try:
            first, both = json.loads(one[a + 1 : b - 1]), json.loads(two[c + 1 : d - 1])
        except ValueError:
            continue
        if not (isinstance(first, list) and isinstance(both, list) and len(first) == 1):
            continue
        if len(both) != 2 or one[:a] != two[:c] or one[b:] != two[d:]:
            continue
        item = json_pieces(first[0], *subst[0])
        if item is None or item != json_pieces(both[1], *subst[1]):
            continue
        pieces = (Lit("["), Act("range $k, $t := $.Tools"), Act("if $k"), Lit(","), Act("end"))
        return Loop("", (*pieces, *item, Act("end"), Lit("]")), "", "", one[a:b], whole=True)
    return None


def tool_lead(
    source: TemplateSource, tools: Sequence[Mapping[str, Any]] = TOOLS[:1]
) -> tuple[str, tuple[str, str] | None] | None:
    """(head, (before, after) the system content) up to the first user content, rendered with
    one sentinel tool offered (JSON marked); None when the Jinja template rejects it."""
    user = {"role": "user", "content": U1}
    alone = _render(source, [user], tools=tools, gen=False)
    if alone is None or U1 not in alone:
        return None
    with_system = _render(
        source, [{"role": "system", "content": SYS}, user], tools=tools, gen=False
    )
    head_system = None
    if with_system is not None and SYS in with_system and U1 in with_system:
        at, end = with_system.find(SYS), with_system.find(U1)
        if at < end:
            head_system = (with_system[:at], with_system[at + len(SYS) : end])
    return alone[: alone.find(U1)], head_system


def last_user_insertion(source: TemplateSource, shape: TemplateShape) -> tuple[int, str] | None:
    """Where tool definitions go when the Jinja template prints them inside the last user
    turn (Mistral's ``[AVAILABLE_TOOLS]``): (offset into the user prefix, marked text)."""
    from .shape import A1, MARKER_RE

    conv = [{"role": "user", "content": U1}, {"role": "assistant", "content": A1}]
    conv.append({"role": "user", "content": U2})
    plain = _render(source, conv, gen=True)
    tools = _render(source, conv, tools=TOOLS[:1], gen=True)
    if plain is None or tools is None or len(tools) <= len(plain):
        return None
    at = 0
    while at < len(plain) and plain[at] == tools[at]:
        at += 1
    for match in MARKER_RE.finditer(plain):
        if match.start() < at < match.end():
            at = match.start()
    size = len(tools) - len(plain)
    inserted = tools[at : at + size]
    if tools != plain[:at] + inserted + plain[at:]:
        return None
    turn = plain.find(A1) + len(A1) + len(shape.assistant_suffix)
    offset = at - turn
    if not 0 <= offset <= len(shape.user_prefix) or plain.find(U2) != turn + len(shape.user_prefix):
        return None
    return offset, inserted


__all__ = ["definitions_loop", "last_user_insertion", "tool_lead", "tool_subst"]
