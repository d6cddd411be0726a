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

import copy
import re
from dataclasses import replace
from typing import Any

from .gotext import Act, Lit, Piece
from .hf_render import JSON_CLOSE, JSON_OPEN
from .loops import Loop, infer_loop, mentions
from .source import TemplateSource
from .tool_args import ItemLoop, infer_item_loop, splice
from .tool_typed import Render, constant_type, required_mark, split_loops, type_chain

#: Stands for a tool's whole property list until the loop is spliced in.
PROPS_ACT = "__properties__"
#: A JSON value as a marked rendering shows it.
_JSON_SPAN = re.compile(f"{JSON_OPEN}[^{JSON_CLOSE}]*{JSON_CLOSE}")

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


def _shown(props: ItemLoop, tag: str) -> list[str]:
    """Tool ``tag``'s sentinels as the loop's item prints them (a type upper-cased where the
    Jinja template does that), in the loop's order."""
    out = []
    for printed in props.sentinels:
        for plain, mine in zip(_sentinels("a"), _sentinels(tag), strict=True):
            case = next((f for f in (str, *_CASES) if f(plain) == printed), None)
            if case is not None:
                out.append(case(mine))
                break
        else:
            out.append(printed)
    return out


def _placeholder(tag: str, n: int = 0) -> str:
    """Tool ``tag``'s ``n``-th list of properties in a rendering (none a prefix of another)."""
    return f"Zqprops{tag}{n or ''}holder"


def _props_act(n: int) -> str:
    return PROPS_ACT if not n else f"__properties{n}__"


def property_loop(source: TemplateSource) -> ItemLoop | None:
    """The per-property loop where each tool lists its properties once (see
    :func:`property_loops`)."""
    loops = property_loops(source)
    return loops[0] if loops is not None and len(loops) == 1 else None


def property_loops(source: TemplateSource) -> list[ItemLoop] | None:
    """The per-property loops, read off tool ``a`` with one property and with two, first with
    no parameter required (a property name is printed only where its item is), then with
    every one required: where the item prints otherwise for a required parameter (``city``
    vs ``city?``), it asks ``Required`` (:func:`.tool_typed.required_mark`). Two loops where
    a tool lists its properties twice (Seed-OSS's signature, then its ``Args``)."""
    masked = False
    loose = _property_loop(source, required=False)
    if loose is None:
        # The tool's schema dumped beside the lists (Hermes 2 Pro: ``parameters|tojson``
        # after its signature and ``Args``) repeats the property sentinels and types: read
        # the lists with JSON values hidden (the tool-list loop rebuilds those).
        masked = True
        loose = _property_loop(source, required=False, masked=True)
    if loose is None:
        return None
    strict = _property_loop(source, required=True, masked=masked)
    if strict is None or len(strict) != len(loose):
        # Required names printed elsewhere (Qwen3-Coder's block) read as another list.
        return loose
    marked = [required_mark(a, b) for a, b in zip(loose, strict, strict=True)]
    return loose if None in marked else [m for m in marked if m is not None]


def _typed_render(source: TemplateSource, *, required: bool, masked: bool = False) -> Render:
    """Renders tool ``a`` (and ``c``) with the given property types, every parameter
    required or none; ``masked``: each JSON value printed as an empty marked span."""
    from .shape import U1
    from .tool_sentinels import render as _render

    user = [{"role": "user", "content": U1}]

    def render(type_a: str, type_c: str | None) -> str | None:
        tool = _tool("a", None if type_c is None else "c", required=required)
        props = tool["function"]["parameters"]["properties"]
        props["zqarga"]["type"] = type_a
        if type_c is not None:
            props["zqargc"]["type"] = type_c
            if required:
                tool["function"]["parameters"]["required"] = ["zqarga", "zqargc"]
        text = _render(source, user, tools=[tool], gen=True)
        return _JSON_SPAN.sub(JSON_OPEN + JSON_CLOSE, text) if masked and text else text

    return render


def _property_loop(
    source: TemplateSource, *, required: bool, masked: bool = False
) -> list[ItemLoop] | None:
    render = _typed_render(source, required=required, masked=masked)
    one, two = render("Zqtypea", None), render("Zqtypea", "Zqtypec")
    first = dict(zip(_sentinels("a"), ("$pk", "$pv.Type", "$pv.Description"), strict=True))
    second = _sentinels("c")
    table: dict[str, str] = {}
    otherwise: Piece = Act("$ty")
    fixed = None
    if one is None or two is None:
        # The sentinel type rejected (MiniCPM3): ``string``'s word stands in for it.
        found = constant_type(render, base="string")
        if found is None:
            return None
        one, two, fixed, table = found
        first["Zqtypea"] = TYPE_ACT
    elif "Zqtypea" not in one:
        # Types printed transformed (Gemma 4's STRING): read each JSON type's form off.
        shown = next((f(x) for f in _CASES for x in ["Zqtypea"] if f(x) in one), None)
        if shown is None:
            # Or mapped to words of its own, unknown types one fixed word (Apertus's any).
            found = constant_type(render)
            if found is None:
                return None
            one, two, fixed, table = found
            first["Zqtypea"] = TYPE_ACT
            otherwise = Lit(fixed)
        elif f"Zqtype{shown[-1]}" in two:
            return None
        else:
            table = _type_table(source, one, shown)
            first = {
                shown if k == "Zqtypea" else k: TYPE_ACT if k == "Zqtypea" else v
                for k, v in first.items()
            }
            second = [second[0], shown[:-1] + ("C" if shown[-1] == "A" else "c"), second[2]]
    if one.count("zqarga") > 1:
        loops = split_loops(one, two, first, second, _HEAD)
    else:
        loop = infer_item_loop(one, two, first, second, _HEAD)
        loops = [loop] if loop is not None else None
    if loops is None or not table:
        return loops
    typed = []
    for loop in loops:
        item: list[Piece] = []
        for piece in loop.item:
            item += type_chain(table, otherwise) if piece == Act(TYPE_ACT) else [piece]
        text = loop.item_text if fixed is None else loop.item_text.replace("Zqtypea", fixed)
        typed.append(replace(loop, item=tuple(item), item_text=text))
    return typed


#: Stands for a property's type when the Jinja template prints types transformed.
TYPE_ACT = "__type__"

#: Case changes a template may apply to a type name.
_CASES = (str.upper, str.lower, str.capitalize)

#: JSON schema type names, each rendered to read off how the template prints it.
_TYPES = ("string", "number", "integer", "boolean", "array", "object", "null")


def _type_table(source: TemplateSource, one: str, shown: str) -> dict[str, str]:
    """How each JSON schema type prints where the sentinel type printed as ``shown``; a type
    whose rendering changes more than that one word is left out (printed as Go does)."""
    from .shape import U1
    from .tool_sentinels import render as _render

    at = one.find(shown)
    before, after = one[:at], one[at + len(shown) :]
    table = {}
    for name in _TYPES:
        tool = _tool("a", required=False)
        tool["function"]["parameters"]["properties"]["zqarga"]["type"] = name
        text = _render(source, [{"role": "user", "content": U1}], tools=[tool], gen=True)
        if text is None or not text.startswith(before) or not text.endswith(after):
            continue
        table[name] = text[len(before) : len(text) - len(after)]
    return table


def definitions(
    source: TemplateSource,
) -> tuple[Loop, tuple[str, tuple[str, str] | None]] | None:
    """(tool-list loop, lead) for a Jinja template that prints parameters one by one; the
    lead is rendered with the same sentinel tool, so the loop's item text is found in it."""
    from .shape import SYS, U1
    from .tool_defs import tool_lead, tool_subst
    from .tool_sentinels import render as _render

    loops = property_loops(source)
    if loops is None:
        return None
    tools = [_tool("a"), _tool("b")]
    if _render(source, [{"role": "user", "content": U1}], tools=tools, gen=True) is None:
        # The sentinel type rejected: the loops were read with ``string`` in its place.
        for tool in tools:
            for prop in tool["function"]["parameters"]["properties"].values():
                prop["type"] = "string"
    conv = [{"role": "system", "content": SYS}, {"role": "user", "content": U1}]
    renders = [_render(source, conv, tools=tools[:n], gen=True) for n in (1, 2)]
    if None in renders:
        conv = conv[1:]
        renders = [_render(source, conv, tools=tools[:n], gen=True) for n in (1, 2)]
    hidden = [_hide(text, loops, tools) for text in renders]
    required = _required_block(source, loops[0]) if len(loops) == 1 else None
    if required is not None:
        hidden = [_hide_required(text, required[0]) for text in hidden]
    lead = tool_lead(source, tools[:1])
    one, two = hidden
    if one is None or two is None or lead is None:
        return None
    subst = []
    for tool, tag in zip(tools, "ab", strict=True):
        strings, values = tool_subst(tool, "$t")
        params = tool["function"]["parameters"]
        values = [*values, (params["required"], "$t.Function.Parameters.Required")]
        holders = {_placeholder(tag, n): _props_act(n) for n in range(len(loops))}
        subst.append(({**strings, **holders, _req(tag): REQUIRED_ACT}, values))
    found = [
        [*mentions(t), *(_placeholder(tag, n) for n in range(len(loops)))]
        for t, tag in zip(tools, "ab", strict=True)
    ]
    if required is not None:
        found = [[*m, _req(tag)] for m, tag in zip(found, "ab", strict=True)]
    loop = infer_loop(one, two, found, subst)
    if loop is None:
        return None
    item: list[Piece] | None = list(loop.item)
    for n, props in enumerate(loops):
        item = splice(item, props, "$t", _props_act(n)) if item is not None else None
    if item is not None and required is not None:
        block, names = required
        at = block.index(names.item_text)
        pieces: list[Piece] = [Act("if $t.Function.Parameters.Required"), Lit(block[:at])]
        pieces += [*names.pieces("$t"), Lit(block[at + len(names.item_text) :]), Act("end")]
        item = _splice_pieces(item, REQUIRED_ACT, pieces)
    if item is None:
        return None
    text = loop.item_text
    for n, props in enumerate(loops):
        text = text.replace(_placeholder("a", n), props.text_for(_shown(props, "a")))
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
    from .tool_sentinels import render as _render

    user = [{"role": "user", "content": U1}]
    texts: list[str] = []
    for extra, names in ((None, ["zqarga"]), ("c", ["zqarga", "zqargc"]), (None, [])):
        tool = _tool("a", extra)
        tool["function"]["parameters"]["required"] = names
        text = _render(source, user, tools=[tool], gen=True)
        if text is None:
            return None
        for tag in ("a", extra) if extra else ("a",):
            item = props.text_for(_shown(props, tag))
            if text.count(item) != 1:
                return None
            text = text.replace(item, _placeholder(tag))
        texts.append(text)
    one, two, none = texts
    # The second property (and the glue before it) is not what differs here.
    two = two.replace(props.glue + _placeholder("c"), "").replace(_placeholder("c"), "")
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


#: (type, field, value): a parameter field beyond type and description that a template may
#: print (an enum, an array's items, an object's properties, a default).
_OTHER_FIELDS: tuple[tuple[str, str, Any], ...] = (
    ("Zqtypea", "enum", ["Zqenumval"]),
    ("string", "enum", ["Zqenumval"]),
    ("array", "items", {"type": "string"}),
    ("object", "properties", {"zqnested": {"type": "string"}}),
    ("string", "default", "Zqdefault"),
)


def prints_other_fields(source: TemplateSource) -> bool:
    """Whether the Jinja template prints a parameter's fields other than type and
    description (:data:`_OTHER_FIELDS`) or a missing description otherwise
    than an empty one, or prints some type as more than a changed word (Gemma 4's
    ``object``), or maps some type to no word of its own table: the per-property loop prints
    only a type name and a description."""
    from .shape import U1
    from .tool_sentinels import render as _render

    user = [{"role": "user", "content": U1}]
    one = _render(source, user, tools=[_tool("a", required=False)], gen=True)
    shown = next((f("Zqtypea") for f in _CASES if one and f("Zqtypea") in one), None)
    transformed = one is not None and "Zqtypea" not in one and shown is not None
    if transformed and len(_type_table(source, one or "", shown or "")) < len(_TYPES):
        return True
    if one is not None and "Zqtypea" not in one and shown is None:
        found = constant_type(_typed_render(source, required=False))
        if found is not None and len(found[3]) < len(_TYPES):
            return True
    for kind, field, value in _OTHER_FIELDS:
        plain = _tool("a")
        plain["function"]["parameters"]["properties"]["zqarga"]["type"] = kind
        extra = copy.deepcopy(plain)
        extra["function"]["parameters"]["properties"]["zqarga"][field] = value
        texts = [_render(source, user, tools=[t], gen=True) for t in (plain, extra)]
        if texts[0] != texts[1]:
            return True
    # A parameter without a description: Go prints an empty one where the Jinja may print
    # something else (Apertus drops its whole ``// ...`` line).
    plain = _tool("a")
    bare = copy.deepcopy(plain)
    del bare["function"]["parameters"]["properties"]["zqarga"]["description"]
    with_doc = _render(source, user, tools=[plain], gen=True)
    without = _render(source, user, tools=[bare], gen=True)
    return with_doc is not None and without != with_doc.replace("Zqargadoc", "")


#: Tool text with quotes, an apostrophe, a backslash and a newline: a Jinja template that
#: escapes it (Python's repr, HTML entities) prints it unlike any TEMPLATE can.
AWKWARD_TEXT = "It's the user's \"city\"\\ name,\nas written"


def escapes_tool_text(source: TemplateSource, template: str, system: str | None) -> bool:
    """Whether ``template`` prints a tool whose descriptions hold quotes, an apostrophe, a
    backslash or a newline unlike the Jinja template does (the probes' tools hold none)."""
    from .probes import load_probes
    from .verify import verify_template

    offered = next(p for p in load_probes() if p.id == "tools_available")
    tool = offered.tools[0]
    params = tool["function"]["parameters"]
    props = {
        key: {**value, "description": AWKWARD_TEXT} for key, value in params["properties"].items()
    }
    function = {**tool["function"], "description": AWKWARD_TEXT}
    awkward = {**tool, "function": {**function, "parameters": {**params, "properties": props}}}
    probe = replace(offered, id="tools_available", tools=(awkward,))
    report = verify_template(source, template, system=system, tools=True, probes=[probe])
    return any(p.status == "differs" for p in report.probes)


#: Why a per-parameter reading's claim leaves out tools without parameters or with untrimmed
#: descriptions, where the Jinja template prints those otherwise.
SHAPES_UNPROVEN = (
    "the Jinja template prints a tool without parameters, or a description with leading or "
    "trailing spaces, otherwise than the TEMPLATE does (a signature of its own, trim): only "
    "tools with parameters and trimmed descriptions are proven"
)


def tool_shapes_differ(source: TemplateSource, template: str, system: str | None) -> bool:
    """Whether ``template`` prints a tool without parameters, or one whose description has
    spaces around it, unlike the Jinja template (the probes' tools have neither)."""
    from .probes import load_probes
    from .verify import verify_template

    offered = next(p for p in load_probes() if p.id == "tools_available")
    tool = offered.tools[0]
    function = tool["function"]
    bare = {"type": "object", "properties": {}, "required": []}
    variants = [
        {**tool, "function": {**function, "parameters": bare}},
        {**tool, "function": {**function, "description": f" {function['description']}\n"}},
    ]
    # One at a time: a report keys its renders by probe id.
    for variant in variants:
        probe = replace(offered, tools=(variant,))
        report = verify_template(source, template, system=system, tools=True, probes=[probe])
        if any(p.status == "differs" for p in report.probes):
            return True
    return False


def _hide(text: str | None, loops: list[ItemLoop], tools: list[dict[str, Any]]) -> str | None:
    """``text`` with each tool's property items replaced by their placeholders."""
    if text is None:
        return None
    for tool, tag in zip(tools, "ab", strict=False):
        if tool["function"]["name"] not in text:
            continue
        # The longest item first: a shorter one may be part of it (MiniCPM3's bare name).
        for n, props in sorted(enumerate(loops), key=lambda e: -len(e[1].item_text)):
            item = props.text_for(_shown(props, tag))
            if text.count(item) != 1:
                return None
            text = text.replace(item, _placeholder(tag, n))
    return text


__all__ = [
    "AWKWARD_TEXT",
    "PROPS_ACT",
    "SHAPES_UNPROVEN",
    "definitions",
    "escapes_tool_text",
    "prints_other_fields",
    "property_loop",
    "property_loops",
    "tool_shapes_differ",
]
