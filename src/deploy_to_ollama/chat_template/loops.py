"""Read a list off renderings with one and two items: the loop a Go template needs.

An item is found by its sentinel strings (widened to the JSON value around them); its text
becomes Go pieces: sentinels turn into expressions, JSON values printed by ``tojson`` into
Ollama's ``json`` (objects rebuilt key by key). Used for tool definitions, calls and results.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .gotext import Act, Lit, Piece
from .hf_render import JSON_CLOSE, JSON_OPEN, split_marked

#: Anything left over that starts like this is a sentinel the Go side cannot reproduce.
SENTINEL_PREFIXES = ("Zq", "zq")


@dataclass(frozen=True, slots=True)
class Loop:
    """One list as the Jinja template prints it."""

    before: str
    item: tuple[Piece, ...]
    """The item, with the loop variable's expressions in it."""
    glue: str
    after: str
    item_text: str
    """The first item's rendered text (with JSON marks), to find it inside a wrapper."""
    whole: bool = False
    """``item`` prints the whole list (a JSON list rebuilt by its own loop)."""


def spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each marked JSON span, marks included."""
    spans, pos = [], 0
    while (start := text.find(JSON_OPEN, pos)) >= 0:
        end = text.find(JSON_CLOSE, start)
        if end < 0:
            break
        spans.append((start, end + 1))
        pos = end + 1
    return spans


def extent(
    text: str, mentions: Sequence[str], lo: int = 0, hi: int | None = None
) -> tuple[int, int]:
    """First and last character of ``text[lo:hi]`` that belong to an item: its sentinels,
    widened to the JSON span around them. (-1, -1) when none occurs."""
    hi = len(text) if hi is None else hi
    found: list[tuple[int, int]] = []
    for mention in mentions:
        at = text.find(mention, lo, hi)
        while at >= 0:
            found.append((at, at + len(mention)))
            at = text.find(mention, at + 1, hi)
    if not found:
        return -1, -1
    start, end = min(a for a, _ in found), max(b for _, b in found)
    for a, b in spans(text):
        if a < start < b:
            start = a
        if a < end <= b:
            end = b
    return start, end


def mentions(item: Mapping[str, Any]) -> list[str]:
    """The sentinel strings of a tool, call or result."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str) and value.startswith(SENTINEL_PREFIXES):
            found.append(value)
        elif isinstance(value, Mapping):
            for key, sub in value.items():
                walk(key)
                walk(sub)
        elif isinstance(value, list):
            for sub in value:
                walk(sub)

    walk(dict(item))
    return found


def generalise(
    text: str, strings: Mapping[str, str], values: Sequence[tuple[Any, str]]
) -> list[Piece] | None:
    """Turn one rendered item into pieces: sentinel ``strings`` become their Go expression, a
    marked JSON value equal to one of ``values`` becomes ``json <expr>`` (objects are rebuilt
    key by key). None when a sentinel would be left as literal text."""
    pieces_in = split_marked(text)
    if pieces_in is None:
        return None
    out: list[Piece] = []
    for is_json, part in pieces_in:
        if is_json:
            try:
                value = json.loads(part)
            except ValueError:
                return None
            built = json_pieces(value, strings, values)
            if built is None:
                return None
            out += built
        else:
            out += _string_pieces(part, strings)
    if any(isinstance(p, Lit) and any(s in p.text for s in SENTINEL_PREFIXES) for p in out):
        return None
    return out


def _string_pieces(text: str, strings: Mapping[str, str]) -> list[Piece]:
    out: list[Piece] = []
    pos = 0
    while pos < len(text):
        hits = [(text.find(s, pos), s) for s in strings if text.find(s, pos) >= 0]
        if not hits:
            break
        at, sentinel = min(hits, key=lambda hit: (hit[0], -len(hit[1])))
        if at > pos:
            out.append(Lit(text[pos:at]))
        out.append(Act(strings[sentinel]))
        pos = at + len(sentinel)
    if pos < len(text):
        out.append(Lit(text[pos:]))
    return out


def json_pieces(
    value: Any, strings: Mapping[str, str], values: Sequence[tuple[Any, str]]
) -> list[Piece] | None:
    from .prompt_diff import same_json

    for known, expr in values:
        if same_json(value, known):
            return [Act(f"json {expr}")]
    if isinstance(value, str) and value in strings:
        return [Act(f"json {strings[value]}")]
    if isinstance(value, dict):
        out: list[Piece] = [Lit("{")]
        for n, (key, sub) in enumerate(value.items()):
            built = json_pieces(sub, strings, values)
            if built is None or str(key).startswith(SENTINEL_PREFIXES):
                return None
            out += [Lit(("," if n else "") + json.dumps(key) + ":"), *built]
        return [*out, Lit("}")]
    if isinstance(value, list):
        out = [Lit("[")]
        for n, sub in enumerate(value):
            built = json_pieces(sub, strings, values)
            if built is None:
                return None
            out += [*([Lit(",")] if n else []), *built]
        return [*out, Lit("]")]
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return None if any(s in text for s in SENTINEL_PREFIXES) else [Lit(text)]


def _indexed(first: list[Piece], second: list[Piece], index: str) -> list[Piece] | None:
    """``first`` with the loop index as ``index`` where the two items differ only by one
    literal ``0`` becoming ``1`` (Kimi's ``functions.NAME:0``); None otherwise."""
    if len(first) != len(second):
        return None
    out: list[Piece] = []
    seen = False
    for a, b in zip(first, second, strict=True):
        if a == b:
            out.append(a)
            continue
        if not (isinstance(a, Lit) and isinstance(b, Lit)) or len(a.text) != len(b.text):
            return None
        diff = [n for n, (x, y) in enumerate(zip(a.text, b.text, strict=True)) if x != y]
        if seen or len(diff) != 1 or (a.text[diff[0]], b.text[diff[0]]) != ("0", "1"):
            return None
        at = diff[0]
        if a.text[at + 1 : at + 2].isdigit() or a.text[at - 1 : at].isdigit():
            return None
        out += [Lit(a.text[:at]), Act(index), Lit(a.text[at + 1 :])]
        seen = True
    return out if seen else None


def infer_loop(
    one: str,
    two: str,
    mentions: Sequence[Sequence[str]],
    subst: Sequence[tuple[Mapping[str, str], Sequence[tuple[Any, str]]]],
    index: str | None = None,
) -> Loop | None:
    """A loop from a region rendered with one item and with two.

    Args:
        one: the region with item 0 only.
        two: the region with items 0 and 1.
        mentions: each item's sentinel strings.
        subst: each item's (strings, values) for :func:`generalise`.
        index: the Go variable of the loop index, where an item may print it.
    """
    a0, e0 = extent(one, mentions[0])
    b0, f0 = extent(two, mentions[0])
    a1, e1 = extent(two, mentions[1])
    if min(a0, b0, a1) < 0 or not f0 <= a1:
        return None
    before, after = one[:a0], one[e0:]
    if two[:b0] != before or two[e1:] != after:
        return None
    first = generalise(one[a0:e0], *subst[0])
    again = generalise(two[b0:f0], *subst[0])
    second = generalise(two[a1:e1], *subst[1])
    if first is None or first != again or second is None:
        return None
    if first != second:
        first = _indexed(first, second, index) if index is not None else None
        if first is None:
            return None
    return Loop(before, tuple(first), two[f0:a1], after, one[a0:e0])


def single_loop(
    one: str, mentions: Sequence[str], subst: tuple[Mapping[str, str], Sequence[tuple[Any, str]]]
) -> Loop | None:
    """A loop seen with one item only (the template rejects two): no glue is known."""
    start, end = extent(one, mentions)
    item = generalise(one[start:end], *subst) if start >= 0 else None
    if item is None:
        return None
    return Loop(one[:start], tuple(item), "", one[end:], one[start:end])


__all__ = [
    "SENTINEL_PREFIXES",
    "Loop",
    "extent",
    "generalise",
    "infer_loop",
    "json_pieces",
    "mentions",
    "single_loop",
    "spans",
]
