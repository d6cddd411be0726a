"""Read per-argument tool calls off sentinel renders: the argument list as a Go ``range``.

Many templates print each argument of a call on its own (Qwen3-Coder's
``<parameter=KEY>\\nVALUE\\n</parameter>``, GLM's ``<arg_key>``/``<arg_value>``, MiniMax's
``<parameter name="KEY">``, DeepSeek V3.2's DSML) instead of the arguments as one JSON value.
We render one call with one argument and with two, read the argument item and the glue between
items, and emit ``range $ak, $av := $c.Function.Arguments``. Ollama hands a TEMPLATE the
arguments as a Go map (ollama/ollama ``template/template.go``: ``templateArgs``), which ``range``
walks in sorted key order; the sentinel keys are sorted so inference sees that order too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .gotext import Act, Lit, Piece
from .loops import extent, generalise

if TYPE_CHECKING:
    from .shape import TemplateShape
    from .source import TemplateSource
    from .tool_shape import ToolShape, _Regions

#: Sentinel argument keys and values of call ``a``; the second key sorts after the first.
KEYS = ("zqkeya", "zqkeyc")
VALUES = ("Zqcallvala", "Zqcallvalc")

#: Stands for a call's whole argument list in a region, until the loop is spliced in.
ARGS_ACT = "__arguments__"


def placeholder(tag: str) -> str:
    """The sentinel that replaces call ``tag``'s argument text in a rendering."""
    return f"Zqargs{tag}holder"


@dataclass(frozen=True, slots=True)
class ItemLoop:
    """A list printed one item per entry of a Go map (arguments, parameter properties)."""

    item_text: str
    """The first sentinel entry as rendered."""
    item: tuple[Piece, ...]
    """The item with the range variables in it."""
    glue: str
    """Between two items (empty when the item carries its own wrapper)."""
    head: str
    """The range action, ``{var}`` standing for the variable that owns the map."""
    sentinels: tuple[str, ...]
    """The first entry's sentinel strings, in the order ``text_for`` replaces them."""

    def text_for(self, values: Sequence[str]) -> str:
        """The item as rendered for an entry whose sentinels are ``values``."""
        text = self.item_text
        for sentinel, value in zip(self.sentinels, values, strict=True):
            text = text.replace(sentinel, value)
        return text

    def pieces(self, var: str) -> list[Piece]:
        """``range`` over ``var``'s map (the glue printed before every item but the first,
        tracked by a variable since a map range has no index)."""
        head: list[Piece] = [Act(self.head.format(var=var))]
        if not self.glue:
            return [*head, *self.item, Act("end")]
        pieces: list[Piece] = [Act("$more := false"), *head]
        pieces += [Act("if $more"), Lit(self.glue), Act("end"), Act("$more = true")]
        return [*pieces, *self.item, Act("end")]


def infer_item_loop(
    one: str, two: str, first: Mapping[str, str], second: Sequence[str], head: str
) -> ItemLoop | None:
    """A map's loop from a rendering with one entry and one with two.

    Args:
        one: the rendering with the first entry only.
        two: the same with the second entry added.
        first: the first entry's sentinels and the Go expression each becomes.
        second: the second entry's sentinels, in the order of ``first``.
        head: the range action (see :attr:`ItemLoop.head`).

    The glue seen between two items is folded into the item where the text after the last
    item starts with it and the text before the first ends with the rest (so an empty map
    prints the wrapper alone, as the Jinja template's loop would).
    """
    start, end = extent(one, list(first))
    start2, end2 = extent(two, list(first))
    start3, end3 = extent(two, second)
    if min(start, start2, start3) < 0 or start != start2 or end2 > start3:
        return None
    before, after, item = one[:start], one[end:], one[start:end]
    swapped = item
    for old, new in zip(first, second, strict=True):
        swapped = swapped.replace(old, new)
    if two[:start] != before or two[end3:] != after or two[start:end2] != item:
        return None
    if two[start3:end3] != swapped:
        return None
    glue = two[end2:start3]
    # The first split of the glue into a start of `after` and an end of `before`.
    splits = range(len(glue) + 1)
    ends = [n for n in splits if after.startswith(glue[:n]) and before.endswith(glue[n:])]
    # Prefer a cut between a tag's end and the next tag or line (not inside a tag name).
    natural = [
        n for n in ends if glue[n - 1 : n] in ("", ">", "\n") and glue[n : n + 1] in ("", "<", "\n")
    ]
    cut = (natural or ends)[0] if ends else None
    if cut is not None:
        item, glue = glue[cut:] + item + glue[:cut], ""
    else:
        # No whole split: the item still takes what closes it (LFM2.5's "'" in k='v', ...).
        tail = 0
        while tail < min(len(glue), len(after)) and glue[tail] == after[tail]:
            tail += 1
        item, glue = item + glue[:tail], glue[tail:]
    pieces = generalise(item, first, [])
    if pieces is None:
        return None
    return ItemLoop(item, tuple(pieces), glue, head, tuple(first))


#: The per-argument loop of a tool call.
ArgumentLoop = ItemLoop


def infer_argument_loop(one: str, two: str) -> ArgumentLoop | None:
    """The argument loop from a region with call ``a`` given one argument and given two."""
    first = {KEYS[0]: "$ak", VALUES[0]: "$av"}
    head = "range $ak, $av := {var}.Function.Arguments"
    return infer_item_loop(one, two, first, [KEYS[1], VALUES[1]], head)


#: Argument values that are not strings, rendered to learn how the Jinja prints them.
NON_STRINGS: tuple[Any, ...] = ({"zqn": "Zqnested"}, True)

#: Go: whether ``$av`` is a string (``%q`` quotes only strings; anything else prints a
#: type name, ``map[``, ``[`` or ``%!q(``).
_IS_STRING = 'if eq (slice (printf "%q" $av) 0 1) "\\""'


def value_mode(one: str, samples: Sequence[tuple[Any, str | None]]) -> str | None:
    """``json`` when the Jinja prints every non-string value with ``tojson``, ``python`` when
    objects go through ``tojson`` and scalars through Python's ``str`` (``True``), None when
    neither was seen. ``one`` is the region with the sentinel string value; each sample is a
    value and the same region rendered with it."""
    from .hf_render import JSON_CLOSE, JSON_OPEN
    from .loops import spans
    from .prompt_diff import same_json

    modes = []
    for value, text in samples:
        if text is None:
            return None
        found = None
        for start, end in spans(text):
            body = text[start + len(JSON_OPEN) : end - len(JSON_CLOSE)]
            try:
                same = same_json(json.loads(body), value)
            except ValueError:
                continue
            if same and text[:start] + VALUES[0] + text[end:] == one:
                found = "json"
        if found is None and isinstance(value, bool) and text.replace(str(value), VALUES[0]) == one:
            found = "python"
        if found is None:
            return None
        modes.append(found)
    if modes[0] != "json":
        return None
    return "python" if "python" in modes else "json"


def with_values(
    loop: ArgumentLoop, one: str, samples: Sequence[tuple[Any, str | None]]
) -> ArgumentLoop:
    """``loop`` printing non-string values as the Jinja does (``value_mode``); unchanged
    (Go's own formatting) when that was not seen."""
    mode = value_mode(one, samples)
    if mode is None:
        return loop
    value: list[Piece] = [Act(_IS_STRING), Act("$av")]
    if mode == "python":
        for go, python in (("true", "True"), ("false", "False"), ("null", "None")):
            value += [Act(f'else if eq (json $av) "{go}"'), Lit(python)]
    value += [Act("else"), Act("json $av"), Act("end")]
    item: list[Piece] = []
    for piece in loop.item:
        item += value if piece == Act("$av") else [piece]
    return replace(loop, item=tuple(item))


def _call_text(loop: ArgumentLoop, call: Mapping[str, Any]) -> str | None:
    """The item as rendered for a sentinel call with exactly one argument."""
    arguments = call["function"]["arguments"]
    if len(arguments) != 1:
        return None
    ((key, value),) = arguments.items()
    return loop.text_for([key, str(value)])


def with_placeholders(
    text: str, loop: ArgumentLoop, calls: Sequence[Mapping[str, Any]], tags: str
) -> str | None:
    """``text`` with each sentinel call's argument text replaced by its placeholder; None
    when a call's arguments are not where the loop says."""
    for call, tag in zip(calls, tags, strict=False):
        item = _call_text(loop, call)
        if item is None:
            return None
        if call["function"]["name"] in text:
            if text.count(item) != 1:
                return None
            text = text.replace(item, placeholder(tag))
    return text


def splice(
    pieces: Sequence[Piece], loop: ItemLoop, var: str, act: str = ARGS_ACT
) -> list[Piece] | None:
    """Replace the placeholder action ``act`` in an item by ``loop``."""
    out: list[Piece] = []
    seen = 0
    for piece in pieces:
        if isinstance(piece, Act) and piece.code == act:
            out += loop.pieces(var)
            seen += 1
        else:
            out.append(piece)
    return out if seen == 1 else None


def per_argument(
    source: TemplateSource, shape: TemplateShape, regions: _Regions
) -> ToolShape | None:
    """Calls whose arguments print one by one: the argument list read off a call with one
    argument and with two, then the calls read off as usual around it (``tool_shape``'s
    regions and call reading, imported here to keep the modules apart)."""
    from .tool_sentinels import CALLS
    from .tool_sentinels import call_conv as _call_conv
    from .tool_sentinels import render as _render
    from .tool_shape import _region, _tool_parts

    one = regions.calls.get((1, ""))

    def region_with(arguments: dict[str, Any]) -> str | None:
        conv = _call_conv(1, content="", results=1, final=regions.final)
        call = conv[1]["tool_calls"][0]
        conv[1]["tool_calls"][0] = {
            **call,
            "function": {**call["function"], "arguments": arguments},
        }
        return _region(_render(source, conv, gen=True), shape, regions)

    two = region_with(dict(zip(KEYS, VALUES, strict=True)))
    if one is None or two is None:
        return None
    args = infer_argument_loop(one, two)
    if args is None:
        return None
    # How a value that is not a string prints (tojson, or Python's str for scalars).
    typed = with_values(args, one, [(v, region_with({KEYS[0]: v})) for v in NON_STRINGS])
    unproven, args = typed is args, typed

    def hide(text: str | None) -> str | None:
        return None if text is None else with_placeholders(text, args, CALLS, "ab")

    calls = {key: hide(text) for key, text in regions.calls.items()}
    if any(text is None for text in calls.values()):
        return None
    results_two = hide(regions.results_two)
    if regions.results_two is not None and results_two is None:
        return None
    hidden = replace(regions, calls={k: v for k, v in calls.items() if v is not None})
    shaped = _tool_parts(source, shape, replace(hidden, results_two=results_two), args)
    return replace(shaped, values_unproven=unproven) if shaped.calls is not None else None


__all__ = [
    "ARGS_ACT",
    "KEYS",
    "NON_STRINGS",
    "VALUES",
    "ArgumentLoop",
    "ItemLoop",
    "infer_argument_loop",
    "infer_item_loop",
    "per_argument",
    "placeholder",
    "splice",
    "value_mode",
    "with_placeholders",
    "with_values",
]
