"""The Go value model the evaluator works on, with Go's ``fmt`` ``%v`` and ``encoding/json`` output.

Plain Python data stands for what ``encoding/json`` decodes into ``any``: ``dict`` is
``map[string]any`` (printed and encoded with sorted keys), ``list`` is ``[]any``, ``None`` is a
nil interface, ``int``/``float``/``str``/``bool`` are Go ``int``/``float64``/``string``/``bool``.
``NO_VALUE`` is Go's invalid ``reflect.Value`` (what ``<no value>`` prints). Typed Go values
(Ollama's structs, slices and maps with ``String`` methods) subclass ``GoValue``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any, ClassVar


class NoValue:
    """Go's invalid ``reflect.Value``: a missing key after the interface was unwrapped."""

    _instance: ClassVar[NoValue | None] = None

    def __new__(cls) -> NoValue:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NO_VALUE"


NO_VALUE = NoValue()


class JsonObject:
    """A JSON object whose keys keep their order (Go structs, ordered maps)."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        self.pairs = pairs


class GoValue:
    """A typed Go value: struct (or pointer to one), slice or map, maybe with a String method."""

    kind: ClassVar[str] = "struct"
    """Go reflect kind after pointer indirection: ``struct``, ``ptr``, ``slice`` or ``map``."""
    go_type: ClassVar[str] = "struct"
    fields: ClassVar[tuple[str, ...]] = ()
    is_nil: bool = False

    def get_field(self, name: str) -> Any:
        """Field value by Go name; ``KeyError`` when the type has no such field."""
        if name in self.fields:
            return getattr(self, name)
        raise KeyError(name)

    def method(self, name: str) -> Callable[..., Any] | None:
        """A Go method reachable from templates (``String``, ``ToTypeScriptType``), or None."""
        if name == "String" and type(self).stringer is not GoValue.stringer:
            return self.stringer
        return None

    def stringer(self) -> str:
        """Go's ``String()``; subclasses that implement ``fmt.Stringer`` override it."""
        raise NotImplementedError

    def zero_value(self) -> Any:
        """Zero value of the map's element type, what ``missingkey=zero`` yields (nil: None)."""
        return None

    def has_stringer(self) -> bool:
        return type(self).stringer is not GoValue.stringer

    def items(self) -> list[Any]:
        """Slice elements (slice kind only)."""
        raise NotImplementedError

    def mapping(self) -> dict[str, Any]:
        """Map entries (map kind only)."""
        raise NotImplementedError

    def to_json(self) -> Any:
        """What ``encoding/json`` would marshal, as plain data / ``JsonObject``."""
        raise NotImplementedError


class GoSlice(GoValue):
    """A typed Go slice; ``None`` items mean a nil slice."""

    kind = "slice"

    def __init__(self, values: list[Any] | None) -> None:
        self.values = values or []
        self.is_nil = values is None

    def items(self) -> list[Any]:
        return self.values

    def to_json(self) -> Any:
        return None if self.is_nil else list(self.values)


class GoMap(GoValue):
    """A typed Go ``map[string]T``; ``None`` means a nil map."""

    kind = "map"
    elem_is_interface: ClassVar[bool] = True
    """Whether T is ``any`` (entries then come out as interface values, as from JSON maps)."""

    def __init__(self, values: dict[str, Any] | None) -> None:
        self.values = values or {}
        self.is_nil = values is None

    def mapping(self) -> dict[str, Any]:
        return self.values

    def to_json(self) -> Any:
        return None if self.is_nil else dict(self.values)


def reflect_kind(value: Any) -> str:
    """Go reflect kind of a model value (``invalid`` for nil interfaces and ``NO_VALUE``)."""
    if value is None or value is NO_VALUE:
        return "invalid"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "slice"
    if isinstance(value, dict):
        return "map"
    if isinstance(value, GoValue):
        return value.kind
    return "func"


def go_type_name(value: Any) -> str:
    """Go's ``%T`` of a model value, used in error text and ``%!verb(type=value)``."""
    if value is None or value is NO_VALUE:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "[]interface {}"
    if isinstance(value, dict):
        return "map[string]interface {}"
    if isinstance(value, GoValue):
        return value.go_type
    return type(value).__name__


def is_true(value: Any) -> bool:
    """Go's template truth: non-zero numbers, non-empty strings/collections, non-nil, structs."""
    kind = reflect_kind(value)
    if kind == "invalid":
        return False
    if kind in ("bool", "int", "float"):
        return bool(value)
    if kind == "string" or isinstance(value, (list, dict)):
        return len(value) > 0
    if isinstance(value, GoValue):
        if value.kind == "slice":
            return len(value.items()) > 0
        if value.kind == "map":
            return len(value.mapping()) > 0
        return not value.is_nil
    return True


# -- numbers -----------------------------------------------------------------------------------


def _shortest_digits(value: float) -> tuple[str, int]:
    """Shortest round-trip digits and decimal point position: value = 0.DIGITS * 10**point."""
    sign, digits, exponent = Decimal(repr(abs(value))).as_tuple()
    del sign
    text = "".join(map(str, digits)).lstrip("0") or "0"
    stripped = text.rstrip("0") or "0"
    point = len("".join(map(str, digits)).lstrip("0")) + int(exponent)
    if text == "0":
        return "0", 1
    return stripped, point


def _format_exponent(digits: str, point: int, *, min_exp_digits: int = 2) -> str:
    exp = point - 1
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    sign = "-" if exp < 0 else "+"
    return f"{mantissa}e{sign}{abs(exp):0{min_exp_digits}d}"


def _format_fixed(digits: str, point: int) -> str:
    if point <= 0:
        return "0." + "0" * (-point) + digits
    if point >= len(digits):
        return digits + "0" * (point - len(digits))
    return digits[:point] + "." + digits[point:]


def _special_float(value: float) -> str | None:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return None


def format_float_v(value: float) -> str:
    """``fmt`` ``%v`` of a float64: shortest ``%g``, exponent form when exp < -4 or exp >= 6.

    >>> [format_float_v(x) for x in (1.5, 2.0, 100000.0, 1e6, 1234567.0, 0.0001, 1e-5)]
    ['1.5', '2', '100000', '1e+06', '1.234567e+06', '0.0001', '1e-05']
    """
    special = _special_float(value)
    if special is not None:
        return special
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + "0"
    digits, point = _shortest_digits(value)
    exp = point - 1
    if exp < -4 or exp >= 6:  # strconv fmtEFG: shortest %g decides with precision 6
        return sign + _format_exponent(digits, point)
    return sign + _format_fixed(digits, point)


def format_float_json(value: float) -> str:
    """``encoding/json`` float64: fixed notation unless < 1e-6 or >= 1e21, exponent trimmed.

    >>> [format_float_json(x) for x in (2.0, 1e20, 1e21, 1e-7, 0.5)]
    ['2', '100000000000000000000', '1e+21', '1e-7', '0.5']
    """
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign = "-" if value < 0 else ""
    digits, point = _shortest_digits(value)
    magnitude = abs(value)
    if magnitude < 1e-6 or magnitude >= 1e21:
        return sign + _format_exponent(digits, point, min_exp_digits=1)
    return sign + _format_fixed(digits, point)


# -- fmt %v ------------------------------------------------------------------------------------


def format_v(value: Any, *, depth: int = 0, plus: bool = False) -> str:
    """Go ``fmt.Sprint`` of one operand (``%v``), honouring ``String`` methods like fmt does."""
    if value is None or value is NO_VALUE:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float_v(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "[" + " ".join(format_v(v, depth=depth + 1, plus=plus) for v in value) + "]"
    if isinstance(value, dict):
        return _format_map(value, depth, plus=plus)
    if isinstance(value, GoValue):
        return _format_go_value(value, depth, plus=plus)
    return str(value)


def _format_map(value: dict[str, Any], depth: int, *, plus: bool) -> str:
    parts = (f"{key}:{format_v(value[key], depth=depth + 1, plus=plus)}" for key in sorted(value))
    return "map[" + " ".join(parts) + "]"


def _format_go_value(value: GoValue, depth: int, *, plus: bool) -> str:
    if value.has_stringer() and not (value.is_nil and value.kind == "ptr"):
        return value.stringer()
    if value.kind == "slice":
        return "[" + " ".join(format_v(v, depth=depth + 1, plus=plus) for v in value.items()) + "]"
    if value.kind == "map":
        return _format_map(value.mapping(), depth, plus=plus)
    if value.is_nil:
        return "<nil>"
    shown = []
    for name in value.fields:
        text = format_v(value.get_field(name), depth=depth + 1, plus=plus)
        shown.append(f"{name}:{text}" if plus else text)
    body = "{" + " ".join(shown) + "}"
    return "&" + body if value.kind == "ptr" and depth == 0 else body


def sprint(args: list[Any]) -> str:
    """``fmt.Sprint``: a space between operands when neither side is a string."""
    out: list[str] = []
    prev_string = False
    for i, arg in enumerate(args):
        is_string = isinstance(arg, str)
        if i > 0 and not is_string and not prev_string:
            out.append(" ")
        out.append(format_v(arg))
        prev_string = is_string
    return "".join(out)


def sprintln(args: list[Any]) -> str:
    """``fmt.Sprintln``: operands always separated by spaces, newline appended."""
    return " ".join(format_v(arg) for arg in args) + "\n"


# -- encoding/json -----------------------------------------------------------------------------

_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r"}
_JSON_ESCAPES["\t"] = "\\t"
for _code in (*range(0x20), ord("<"), ord(">"), ord("&")):
    _JSON_ESCAPES.setdefault(chr(_code), f"\\u{_code:04x}")
_JSON_ESCAPES["\u2028"] = "\\u2028"
_JSON_ESCAPES["\u2029"] = "\\u2029"
_JSON_TABLE = str.maketrans(_JSON_ESCAPES)


def json_string(text: str) -> str:
    r"""A JSON string literal exactly as Go's ``encoding/json`` writes it (HTML-safe escapes).

    >>> print(json_string('<a href="x">&\u2028é'))
    "\u003ca href=\"x\"\u003e\u0026\u2028é"
    """
    if any("\udc80" <= ch <= "\udcff" for ch in text):
        text = "".join("\ufffd" if "\udc80" <= ch <= "\udcff" else ch for ch in text)
    return '"' + text.translate(_JSON_TABLE) + '"'


class JsonUnsupportedError(ValueError):
    """Go's json.Marshal fails (NaN/Inf); Ollama's ``json`` func then yields an empty string."""


def go_json(value: Any) -> str:
    """Go ``json.Marshal`` of a model value (map keys sorted, struct fields in order)."""
    return "".join(_json_parts(value))


def _json_parts(value: Any) -> Iterator[str]:
    if value is None or value is NO_VALUE:
        yield "null"
    elif isinstance(value, bool):
        yield "true" if value else "false"
    elif isinstance(value, int):
        yield str(value)
    elif isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise JsonUnsupportedError(value)
        yield format_float_json(value)
    elif isinstance(value, str):
        yield json_string(value)
    elif isinstance(value, list):
        yield from _json_seq(value)
    elif isinstance(value, dict):
        yield from _json_pairs(sorted(value.items()))
    elif isinstance(value, JsonObject):
        yield from _json_pairs(value.pairs)
    elif isinstance(value, GoValue):
        yield from _json_parts(value.to_json())
    else:
        raise JsonUnsupportedError(value)


def _json_seq(values: list[Any]) -> Iterator[str]:
    yield "["
    for i, item in enumerate(values):
        if i:
            yield ","
        yield from _json_parts(item)
    yield "]"


def _json_pairs(pairs: list[tuple[str, Any]]) -> Iterator[str]:
    yield "{"
    for i, (key, item) in enumerate(pairs):
        if i:
            yield ","
        yield json_string(key)
        yield ":"
        yield from _json_parts(item)
    yield "}"
