"""Tool definitions that print each parameter on its own (Qwen3-Coder's ``<parameter>`` blocks).

When the tool list does not read off as sentinel-only items, we try once more with each
tool's parameter properties as their own loop: render tool ``a`` with one property and with
two (types and descriptions are sentinels too), read the property item off as
``range $pk, $pv := $t.Function.Parameters.Properties`` (``$pk``, ``$pv.Type``,
``$pv.Description``), hide each tool's property text behind a placeholder and read the tool
list as usual. Ollama's properties reach a TEMPLATE as a Go map, walked in sorted key order
(``key_order.py`` says so for a probe whose properties are not sorted).
"""

from __future__ import annotations

from typing import Any

from .gotext import Act, Lit, Piece
from .loops import Loop, infer_loop, mentions
from .source import TemplateSource
from .tool_args import ItemLoop, infer_item_loop, splice

#: Stands for a tool's whole property list until the loop is spliced in.
PROPS_ACT = "__properties__"

_HEAD = "range $pk, $pv := {var}.Function.Parameters.Properties"


def _tool(tag: str, extra: str | None = None, *, required: bool = True) -> dict[str, Any]:
    """A sentinel tool whose property type is a sentinel too (``extra``: a second one)."""
    props = {f"zqarg{tag}": {"type": f"Zqtype{tag}", "description": f"Zqarg{tag}doc"}}
    if extra is not None:
        props[f"zqarg{extra}"] = {"type": f"Zqtype{extra}", "description": f"Zqarg{extra}doc"}
    return {
        "type": "function",
        "function": {
            "name": f"Zqtool{tag}name",
            "description": f"Zqtool{tag}desc",
            "parameters": {
                "type": "object",
                "properties": props,
                "required": [f"zqarg{tag}"] if required else [],
            },
        },
    }


def _sentinels(tag: str) -> list[str]:
    return [f"zqarg{tag}", f"Zqtype{tag}", f"Zqarg{tag}doc"]


def _placeholder(tag: str) -> str:
    return f"Zqprops{tag}holder"


def property_loop(source: TemplateSource) -> ItemLoop | None:
    """The per-property loop, read off tool ``a`` with one property and with two (no
    ``required`` list, so a property name is printed only where its item is)."""
    from .shape import U1
    from .tool_shape import _render

    user = [{"role": "user", "content": U1}]
    one = _render(source, user, tools=[_tool("a", required=False)], gen=True)
    two = _render(source, user, tools=[_tool("a", "c", required=False)], gen=True)
    if one is None or two is None:
        return None
    first = dict(zip(_sentinels("a"), ("$pk", "$pv.Type", "$pv.Description"), strict=True))
    return infer_item_loop(one, two, first, _sentinels("c"), _HEAD)


def definitions(
    source: TemplateSource,
) -> tuple[Loop, tuple[str, tuple[str, str] | None]] | None:
    """(tool-list loop, lead) for a Jinja template that prints parameters one by one; the
    lead is rendered with the same sentinel tool, so the loop's item text is found in it."""
    from .shape import SYS, U1
    from .tool_shape import _render, _tool_subst, tool_lead

    props = property_loop(source)
    if props is None:
        return None
    tools = [_tool("a"), _tool("b")]
    conv = [{"role": "system", "content": SYS}, {"role": "user", "content": U1}]
    renders = [_render(source, conv, tools=tools[:n], gen=True) for n in (1, 2)]
    if None in renders:
        conv = conv[1:]
        renders = [_render(source, conv, tools=tools[:n], gen=True) for n in (1, 2)]
    hidden = [_hide(text, props, tools) for text in renders]
    required = _required_block(source, props)
    if required is not None:
        hidden = [_hide_required(text, required[0]) for text in hidden]
    lead = tool_lead(source, tools[:1])
    one, two = hidden
    if one is None or two is None or lead is None:
        return None
    subst = []
    for tool, tag in zip(tools, "ab", strict=True):
        strings, values = _tool_subst(tool, "$t")
        params = tool["function"]["parameters"]
        values = [*values, (params["required"], "$t.Function.Parameters.Required")]
        subst.append(({**strings, _placeholder(tag): PROPS_ACT, _req(tag): REQUIRED_ACT}, values))
    found = [[*mentions(t), _placeholder(tag)] for t, tag in zip(tools, "ab", strict=True)]
    if required is not None:
        found = [[*m, _req(tag)] for m, tag in zip(found, "ab", strict=True)]
    loop = infer_loop(one, two, found, subst)
    if loop is None:
        return None
    item = splice(loop.item, props, "$t", PROPS_ACT)
    if item is not None and required is not None:
        block, names = required
        at = block.index(names.item_text)
        pieces: list[Piece] = [Act("if $t.Function.Parameters.Required"), Lit(block[:at])]
        pieces += [*names.pieces("$t"), Lit(block[at + len(names.item_text) :]), Act("end")]
        item = _splice_pieces(item, REQUIRED_ACT, pieces)
    if item is None:
        return None
    text = loop.item_text.replace(_placeholder("a"), props.text_for(_sentinels("a")))
    if required is not None:
        text = text.replace(_req("a"), required[0])
    return Loop(loop.before, tuple(item), loop.glue, loop.after, text), lead


#: Stands for a tool's list of required parameter names until its loop is spliced in.
REQUIRED_ACT = "__required__"


def _req(tag: str) -> str:
    return f"Zqreq{tag}holder"


def _required_block(source: TemplateSource, props: ItemLoop) -> tuple[str, ItemLoop] | None:
    """(tool ``a``'s block of required names, the names' loop) where the Jinja template prints
    required names one by one and only when there are some (Qwen3-Coder's ``[`a`, `b`]``);
    None where it does not (a ``tojson`` list is rebuilt by ``json`` instead)."""
    from .shape import U1
    from .tool_shape import _render

    user = [{"role": "user", "content": U1}]
    texts: list[str] = []
    for extra, names in ((None, ["zqarga"]), ("c", ["zqarga", "zqargc"]), (None, [])):
        tool = _tool("a", extra)
        tool["function"]["parameters"]["required"] = names
        text = _render(source, user, tools=[tool], gen=True)
        if text is None:
            return None
        for tag in ("a", extra) if extra else ("a",):
            item = props.text_for(_sentinels(tag))
            if text.count(item) != 1:
                return None
            text = text.replace(item, _placeholder(tag))
        texts.append(text)
    one, two, none = texts
    two = two.replace(_placeholder("c"), "")  # the second property is not what differs here
    head = "range $rk, $rv := {var}.Function.Parameters.Required"
    names_loop = infer_item_loop(one, two, {"zqarga": "$rv"}, ["zqargc"], head)
    if names_loop is None or len(one) <= len(none):
        return None
    at = 0
    while at < len(none) and one[at] == none[at]:
        at += 1
    block = one[at : at + len(one) - len(none)]
    if one != none[:at] + block + none[at:] or block.count(names_loop.item_text) != 1:
        return None
    return block, names_loop


def _hide_required(text: str | None, block: str) -> str | None:
    """``text`` with each tool's block of required names replaced by its placeholder."""
    if text is None:
        return None
    for tag in "ab":
        mine = block.replace("zqarga", f"zqarg{tag}")
        if f"Zqtool{tag}name" in text:
            if text.count(mine) != 1:
                return None
            text = text.replace(mine, _req(tag))
    return text


def _splice_pieces(pieces: list[Piece], act: str, replacement: list[Piece]) -> list[Piece] | None:
    out: list[Piece] = []
    seen = 0
    for piece in pieces:
        if isinstance(piece, Act) and piece.code == act:
            out += replacement
            seen += 1
        else:
            out.append(piece)
    return out if seen == 1 else None


def prints_other_fields(source: TemplateSource) -> bool:
    """Whether the Jinja template prints a parameter's fields other than type and
    description (an ``enum`` here): the per-property loop prints only those two."""
    from .shape import U1
    from .tool_shape import _render

    user = [{"role": "user", "content": U1}]
    plain = _tool("a")
    extra = _tool("a")
    props = extra["function"]["parameters"]["properties"]
    props["zqarga"] = {**props["zqarga"], "enum": ["Zqenumval"]}
    return _render(source, user, tools=[plain], gen=True) != _render(
        source, user, tools=[extra], gen=True
    )


def _hide(text: str | None, props: ItemLoop, tools: list[dict[str, Any]]) -> str | None:
    """``text`` with each tool's property item replaced by its placeholder."""
    if text is None:
        return None
    for tool, tag in zip(tools, "ab", strict=False):
        if tool["function"]["name"] not in text:
            continue
        item = props.text_for(_sentinels(tag))
        if text.count(item) != 1:
            return None
        text = text.replace(item, _placeholder(tag))
    return text


__all__ = ["PROPS_ACT", "definitions", "prints_other_fields", "property_loop"]
