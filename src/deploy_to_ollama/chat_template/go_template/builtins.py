"""Go's predefined template functions plus Ollama's (``json``, ``currentDate``, ``yesterdayDate``,
``toTypeScriptType``), with Go's argument rules and error conditions.

``and``/``or`` short-circuit and live in the evaluator; everything else is a plain function over
model values (see ``values``) that raises ``FuncError`` where Go's function returns an error.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

from deploy_to_ollama.chat_template.go_template.printf import sprintf
from deploy_to_ollama.chat_template.go_template.values import (
    NO_VALUE,
    GoValue,
    JsonUnsupportedError,
    format_v,
    go_json,
    go_type_name,
    is_true,
    reflect_kind,
    sprint,
    sprintln,
)


class FuncError(Exception):
    """A template function returned an error (Go: ``error calling NAME: ...``)."""


@dataclass(frozen=True, slots=True)
class FuncSpec:
    """Signature of a template function as Go's ``evalCall`` checks it."""

    fn: Callable[..., Any]
    params: tuple[str, ...]
    """Fixed parameter kinds: ``value``, ``any`` or ``string``."""
    variadic: str | None = None
    """Kind of the variadic tail, or None when the function is not variadic."""


def indirect_interface(value: Any) -> Any:
    """Go's ``indirectInterface``: a nil interface becomes the invalid value."""
    return NO_VALUE if value is None else value


_BASIC = {"bool", "int", "float", "string"}


def _basic_kind(value: Any) -> str:
    kind = reflect_kind(value)
    return kind if kind in _BASIC else "invalid"


def _is_nil(value: Any) -> bool:
    if value is NO_VALUE or value is None:
        return True
    return isinstance(value, GoValue) and value.is_nil


def eq(arg1: Any, *rest: Any) -> bool:
    """Go ``eq``: true when ``arg1`` equals any later argument; basic kinds must agree."""
    arg1 = indirect_interface(arg1)
    if not rest:
        raise FuncError("missing argument for comparison")
    k1 = _basic_kind(arg1)
    for arg in rest:
        arg = indirect_interface(arg)
        k2 = _basic_kind(arg)
        if k1 != k2:
            if arg1 is not NO_VALUE and arg is not NO_VALUE:
                raise FuncError(
                    f"incompatible types for comparison: {go_type_name(arg1)} and "
                    f"{go_type_name(arg)}"
                )
            continue
        if k1 != "invalid":
            if arg1 == arg:
                return True
            continue
        if _eq_composite(arg1, arg):
            return True
    return False


def _eq_composite(arg1: Any, arg: Any) -> bool:
    kinds = {reflect_kind(arg1), reflect_kind(arg)}
    if len(kinds) > 1 and "invalid" not in kinds:
        raise FuncError("non-comparable types")
    if _is_nil(arg1) or _is_nil(arg):
        return _is_nil(arg1) == _is_nil(arg)
    if reflect_kind(arg) == "ptr":
        return arg1 is arg
    raise FuncError(f"non-comparable type {format_v(arg)}: {go_type_name(arg)}")


def lt(arg1: Any, arg2: Any) -> bool:
    """Go ``lt``: ordered comparison of two basic values of the same kind."""
    arg1, arg2 = indirect_interface(arg1), indirect_interface(arg2)
    k1, k2 = _basic_kind(arg1), _basic_kind(arg2)
    if k1 == "invalid" or k2 == "invalid":
        raise FuncError("invalid type for comparison")
    if k1 != k2:
        raise FuncError("incompatible types for comparison")
    if k1 == "bool":
        raise FuncError("invalid type for comparison")
    return bool(arg1 < arg2)


def le(arg1: Any, arg2: Any) -> bool:
    return lt(arg1, arg2) or eq(arg1, arg2)


def _index_arg(index: Any, cap: int) -> int:
    index = indirect_interface(index)
    if isinstance(index, bool) or not isinstance(index, int):
        if index is NO_VALUE:
            raise FuncError("cannot index slice/array with nil")
        raise FuncError(f"cannot index slice/array with type {go_type_name(index)}")
    if index < 0 or index > cap:
        raise FuncError(f"index out of range: {index}")
    return index


def _sequence(item: Any) -> list[Any] | bytes | None:
    if isinstance(item, list):
        return item
    if isinstance(item, str):
        return item.encode("utf-8", "surrogateescape")
    if isinstance(item, GoValue) and item.kind == "slice":
        return item.items()
    return None


def index(item: Any, *indexes: Any) -> Any:
    """Go ``index``: successive indexing of slices, strings (bytes) and maps."""
    item = indirect_interface(item)
    if item is NO_VALUE:
        raise FuncError("index of untyped nil")
    for raw in indexes:
        if item is None:
            raise FuncError("index of nil pointer")
        seq = _sequence(item)
        if seq is not None:
            position = _index_arg(raw, len(seq))
            if position == len(seq):
                raise FuncError(f"index out of range: {position}")
            item = seq[position]
            continue
        mapping = item if isinstance(item, dict) else None
        if isinstance(item, GoValue) and item.kind == "map":
            mapping = item.mapping()
        if mapping is None:
            raise FuncError(f"can't index item of type {go_type_name(item)}")
        key = indirect_interface(raw)
        if not isinstance(key, str):
            raise FuncError(f"value has type {go_type_name(key)}; should be string")
        item = mapping.get(key)
    return item


def slice_(item: Any, *indexes: Any) -> Any:
    """Go ``slice``: ``item[i:j]`` on strings (bytes) and slices."""
    item = indirect_interface(item)
    if item is NO_VALUE:
        raise FuncError("slice of untyped nil")
    if len(indexes) > 3:
        raise FuncError(f"too many slice indexes: {len(indexes)}")
    seq = _sequence(item)
    if seq is None:
        raise FuncError(f"can't slice item of type {go_type_name(item)}")
    if isinstance(item, str) and len(indexes) == 3:
        raise FuncError("cannot 3-index slice a string")
    bounds = [0, len(seq)]
    for i, raw in enumerate(indexes):
        if i < 2:
            bounds[i] = _index_arg(raw, len(seq))
        else:
            third = _index_arg(raw, len(seq))
            if bounds[1] > third:
                raise FuncError(f"invalid slice index: {bounds[1]} > {third}")
    if bounds[0] > bounds[1]:
        raise FuncError(f"invalid slice index: {bounds[0]} > {bounds[1]}")
    part = seq[bounds[0] : bounds[1]]
    if isinstance(part, bytes):
        return part.decode("utf-8", "surrogateescape")
    return list(part)


def length(item: Any) -> int:
    """Go ``len`` of strings (bytes), slices and maps."""
    if item is None:
        raise FuncError("len of nil pointer")
    if isinstance(item, str):
        return len(item.encode("utf-8", "surrogateescape"))
    if isinstance(item, (list, dict)):
        return len(item)
    if isinstance(item, GoValue) and item.kind == "slice":
        return len(item.items())
    if isinstance(item, GoValue) and item.kind == "map":
        return len(item.mapping())
    raise FuncError(f"len of type {go_type_name(item)}")


def _eval_args(args: tuple[Any, ...]) -> str:
    """Go's ``evalArgs`` for html/js/urlquery: one string as is, otherwise Sprint."""
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    shown = ["<no value>" if a is NO_VALUE or a is None else a for a in args]
    return sprint(shown)


_HTML = {"\0": "\ufffd", '"': "&#34;", "'": "&#39;", "&": "&amp;", "<": "&lt;", ">": "&gt;"}
_HTML_TABLE = str.maketrans(_HTML)
_JS = {"\\": "\\\\", "'": "\\'", '"': '\\"', "<": "\\u003C", ">": "\\u003E", "&": "\\u0026"}
_JS["="] = "\\u003D"


def html(*args: Any) -> str:
    return _eval_args(args).translate(_HTML_TABLE)


def js(*args: Any) -> str:
    out = []
    for ch in _eval_args(args):
        if ch in _JS:
            out.append(_JS[ch])
        elif ch < " ":
            out.append(f"\\u00{ord(ch):02X}")
        elif ord(ch) >= 0x80 and not ch.isprintable():
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return "".join(out)


def urlquery(*args: Any) -> str:
    return quote_plus(_eval_args(args).encode("utf-8", "surrogateescape"), safe="-_.~")


def call(fn: Any, *args: Any) -> Any:
    """Go ``call``: no template data of ours holds functions, so this always fails like Go does."""
    del args
    if fn is None or fn is NO_VALUE:
        raise FuncError("call of nil")
    raise FuncError(f"non-function of type {go_type_name(fn)}")


def ollama_json(value: Any) -> str:
    """Ollama's ``json``: ``json.Marshal`` with the error dropped (an empty string)."""
    try:
        return go_json(value)
    except JsonUnsupportedError:
        return ""


def current_date(*args: str) -> str:
    """Ollama's ``currentDate``: today in local time as YYYY-MM-DD (format argument ignored);
    verification pins the day through :func:`~deploy_to_ollama.chat_template.dates.pinned_day`."""
    from deploy_to_ollama.chat_template.dates import now

    del args
    return now().strftime("%Y-%m-%d")


def yesterday_date(*args: str) -> str:
    from deploy_to_ollama.chat_template.dates import now

    del args
    return (now() - dt.timedelta(days=1)).strftime("%Y-%m-%d")


def to_typescript_type(value: Any) -> str:
    """Ollama's ``toTypeScriptType``: only ``api.ToolProperty`` values have a type; else ``any``."""
    method = value.method("ToTypeScriptType") if isinstance(value, GoValue) else None
    return str(method()) if method is not None else "any"


# Parameter kinds: "value" is Go's reflect.Value (an invalid value is an error), "any" is
# interface{} (an invalid value becomes nil), "string" must hold a string.
FUNCS: dict[str, FuncSpec] = {
    "and": FuncSpec(lambda *a: a, ("value",), "value"),
    "or": FuncSpec(lambda *a: a, ("value",), "value"),
    "not": FuncSpec(lambda a: not is_true(indirect_interface(a)), ("value",)),
    "len": FuncSpec(length, ("value",)),
    "index": FuncSpec(index, ("value",), "value"),
    "slice": FuncSpec(slice_, ("value",), "value"),
    "print": FuncSpec(lambda *a: sprint(list(a)), (), "any"),
    "println": FuncSpec(lambda *a: sprintln(list(a)), (), "any"),
    "printf": FuncSpec(lambda f, *a: sprintf(f, list(a)), ("string",), "any"),
    "html": FuncSpec(html, (), "any"),
    "js": FuncSpec(js, (), "any"),
    "urlquery": FuncSpec(urlquery, (), "any"),
    "eq": FuncSpec(eq, ("value",), "value"),
    "ne": FuncSpec(lambda a, b: not eq(a, b), ("value", "value")),
    "lt": FuncSpec(lt, ("value", "value")),
    "le": FuncSpec(le, ("value", "value")),
    "gt": FuncSpec(lambda a, b: not le(a, b), ("value", "value")),
    "ge": FuncSpec(lambda a, b: not lt(a, b), ("value", "value")),
    "call": FuncSpec(call, ("value",), "value"),
    "json": FuncSpec(ollama_json, ("any",)),
    "currentDate": FuncSpec(current_date, (), "string"),
    "yesterdayDate": FuncSpec(yesterday_date, (), "string"),
    "toTypeScriptType": FuncSpec(to_typescript_type, ("any",)),
}
