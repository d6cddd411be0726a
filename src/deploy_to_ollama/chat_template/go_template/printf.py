"""Go ``fmt.Sprintf`` for the verbs templates use (``%s %d %v %q %t %x %X %f %e %g %c %U %o %b``).

Wrong-type, missing and extra operands produce Go's own ``%!verb(type=value)`` markers, because
a template that misuses ``printf`` still renders in Ollama and the prompt must match it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deploy_to_ollama.chat_template.go_template.values import (
    NO_VALUE,
    GoValue,
    format_float_v,
    format_v,
    go_type_name,
)

_SIMPLE_QUOTE = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_SIMPLE_QUOTE |= {"\v": "\\v", "\\": "\\\\"}


@dataclass(slots=True)
class Spec:
    """One parsed conversion: flags, width, precision and verb."""

    verb: str = "v"
    minus: bool = False
    plus: bool = False
    sharp: bool = False
    space: bool = False
    zero: bool = False
    width: int | None = None
    prec: int | None = None
    notes: str = ""
    """Go's ``%!(BADWIDTH)``/``%!(BADPREC)`` markers, written before the operand."""


def go_quote(text: str, quote: str = '"') -> str:
    """``strconv.Quote`` (or ``QuoteRune`` with ``'``): printable runes kept, others escaped."""
    out = [quote]
    for ch in text:
        if ch == quote:
            out.append("\\" + ch)
        elif ch in _SIMPLE_QUOTE:
            out.append(_SIMPLE_QUOTE[ch])
        elif "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append(quote)
    return "".join(out)


def _pad(text: str, spec: Spec, *, numeric: bool = False) -> str:
    if spec.width is None or len(text) >= spec.width:
        return text
    fill = spec.width - len(text)
    if spec.minus:
        return text + " " * fill
    if spec.zero:
        if numeric and text[:1] in "+- ":
            return text[0] + "0" * fill + text[1:]
        return "0" * fill + text
    return " " * fill + text


def _bad_verb(value: Any, spec: Spec) -> str:
    """Go's ``%!verb(type=value)``, the value printed with ``%v`` under the same flags."""
    if value is None or value is NO_VALUE:
        return f"%!{spec.verb}(<nil>)"
    shown = format_operand(value, Spec(**{**_spec_dict(spec), "verb": "v"}))
    return f"%!{spec.verb}({go_type_name(value)}={shown})"


def _sign(spec: Spec, *, negative: bool) -> str:
    if negative:
        return "-"
    if spec.plus:
        return "+"
    return " " if spec.space else ""


def _format_int(value: int, spec: Spec) -> str:
    verb = spec.verb
    if verb in ("c", "q"):
        valid = 0 <= value <= 0x10FFFF and not 0xD800 <= value < 0xE000
        rune = chr(value) if valid else "\ufffd"
        return _pad(rune if verb == "c" else go_quote(rune, "'"), spec)
    if verb == "U":
        text = f"U+{value % (1 << 64) if value < 0 else value:04X}"
        return _pad(text, spec)
    bases = {"d": 10, "v": 10, "b": 2, "o": 8, "O": 8, "x": 16, "X": 16}
    if verb not in bases:
        return _bad_verb(value, spec)
    digits = {10: "{:d}", 2: "{:b}", 8: "{:o}", 16: "{:x}"}[bases[verb]].format(abs(value))
    if verb == "X":
        digits = digits.upper()
    if spec.prec is not None:
        digits = digits.rjust(spec.prec, "0") if spec.prec or value else ""
    prefix = ""
    if spec.sharp or verb == "O":
        prefix = {"o": "0", "O": "0o", "x": "0x", "X": "0X", "b": "0b"}.get(verb, "")
        if verb == "o" and digits.startswith("0"):
            prefix = ""
    text = _sign(spec, negative=value < 0) + prefix + digits
    if spec.prec is not None:
        return _pad(text, Spec(minus=spec.minus, width=spec.width))
    return _pad(text, spec, numeric=True)


def _format_float(value: float, spec: Spec) -> str:
    verb = spec.verb
    if verb == "v" and spec.prec is not None:
        verb = "g"
    if verb in ("v", "g", "G") and spec.prec is None:
        body = format_float_v(abs(value)) if value == value else "NaN"
    elif verb in ("x", "X"):
        body = _hex_float(abs(value), spec.prec)
    elif verb in ("f", "F", "e", "E", "g", "G"):
        prec = 6 if spec.prec is None else spec.prec
        body = format(abs(value), f".{prec}{verb.lower() if verb == 'F' else verb}")
        body = body.replace("inf", "+Inf").replace("nan", "NaN").replace("INF", "+Inf")
    else:
        return _bad_verb(value, spec)
    if verb in ("G", "E") and "e" in body:
        body = body.upper()
    if verb == "X":
        body = body.upper()
    if body in ("NaN", "+Inf"):
        text = body if body == "NaN" else ("-Inf" if value < 0 else "+Inf")
        return _pad(text, Spec(minus=spec.minus, width=spec.width))
    negative = value < 0 or (value == 0 and str(value).startswith("-"))
    return _pad(_sign(spec, negative=negative) + body, spec, numeric=True)


def _ascii_escape(ch: str) -> str:
    code = ord(ch)
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _hex_float(value: float, prec: int | None) -> str:
    """Go's ``%x`` of a float: ``0x1.cp+01`` (trailing zeros dropped, two-digit exponent)."""
    if value != value or value in (float("inf"), float("-inf")):
        return "NaN" if value != value else "+Inf"
    mantissa, exponent = value.hex().split("p")
    head, _, frac = mantissa.partition(".")
    if value == 0:
        head, frac, exponent = "0x0", "", "+0"
    # With a precision, cut digits are not rounded (Go rounds; templates never ask for it).
    frac = frac[:prec].ljust(prec, "0") if prec is not None else frac.rstrip("0")
    sign = exponent[0] if exponent[0] in "+-" else "+"
    digits = exponent.lstrip("+-")
    return f"{head}{'.' + frac if frac else ''}p{sign}{int(digits):02d}"


def _format_str(value: str, spec: Spec) -> str:
    verb = spec.verb
    if spec.prec is not None and verb in ("s", "v", "q", "x", "X"):
        value = value[: spec.prec]
    if verb in ("s", "v"):
        return _pad(value, spec)
    if verb == "q":
        if spec.sharp and "`" not in value and all(c == "\t" or c >= " " for c in value):
            return _pad("`" + value + "`", spec)
        quoted = go_quote(value)
        if spec.plus:
            quoted = "".join(c if ord(c) < 0x80 else _ascii_escape(c) for c in quoted)
        return _pad(quoted, spec)
    if verb in ("x", "X"):
        data = value.encode("utf-8", "surrogateescape")
        sep = " " if spec.space else ""
        pieces = [
            (("0x" if verb == "x" else "0X") if spec.sharp else "") + f"{b:02x}" for b in data
        ]
        text = sep.join(pieces) if spec.space else "".join(pieces)
        if not spec.space and spec.sharp and data:
            text = ("0x" if verb == "x" else "0X") + data.hex()
        return _pad(text.upper() if verb == "X" else text, spec)
    return _bad_verb(value, spec)


def format_operand(value: Any, spec: Spec, *, depth: int = 0) -> str:
    """Format one ``printf`` operand with its verb, recursing into containers like fmt does."""
    if spec.verb == "T":
        return _pad(go_type_name(value), spec)
    if value is None or value is NO_VALUE:
        # Nested nils print plainly whatever the verb; a top-level nil only under %v.
        return _pad("<nil>", spec) if spec.verb == "v" or depth else _bad_verb(value, spec)
    if isinstance(value, bool):
        if spec.verb in ("t", "v"):
            return _pad("true" if value else "false", spec)
        return _bad_verb(value, spec)
    if isinstance(value, int):
        return _format_int(value, spec)
    if isinstance(value, float):
        return _format_float(value, spec)
    if isinstance(value, str):
        return _format_str(value, spec)
    if isinstance(value, GoValue) and value.has_stringer() and spec.verb in "vsxXq":
        return _format_str(value.stringer(), spec)
    return _format_container(value, spec, depth)


def _format_container(value: Any, spec: Spec, depth: int) -> str:
    if spec.verb == "v" and spec.width is None and not spec.plus:
        return format_v(value, depth=depth)
    inner = Spec(**{**_spec_dict(spec), "width": spec.width})
    if isinstance(value, list) or (isinstance(value, GoValue) and value.kind == "slice"):
        items = value if isinstance(value, list) else value.items()
        return "[" + " ".join(format_operand(v, inner, depth=depth + 1) for v in items) + "]"
    if isinstance(value, dict) or (isinstance(value, GoValue) and value.kind == "map"):
        entries = value if isinstance(value, dict) else value.mapping()
        parts = (
            f"{format_operand(k, inner, depth=depth + 1)}:"
            f"{format_operand(entries[k], inner, depth=depth + 1)}"
            for k in sorted(entries)
        )
        return "map[" + " ".join(parts) + "]"
    if isinstance(value, GoValue):
        shown: list[str] = []
        for name in value.fields:
            text = format_operand(value.get_field(name), inner, depth=depth + 1)
            shown.append(f"{name}:{text}" if spec.plus and spec.verb == "v" else text)
        body = "{" + " ".join(shown) + "}"
        return "&" + body if value.kind == "ptr" and depth == 0 else body
    return _bad_verb(value, spec)


def _spec_dict(spec: Spec) -> dict[str, Any]:
    return {name: getattr(spec, name) for name in Spec.__slots__}


def _parse_number(fmt: str, i: int) -> tuple[int | None, int]:
    start = i
    while i < len(fmt) and fmt[i].isdigit():
        i += 1
    return (int(fmt[start:i]) if i > start else None), i


def sprintf(fmt: str, args: list[Any]) -> str:
    """Go ``fmt.Sprintf`` over model values."""
    out: list[str] = []
    state = _ArgState(len(args))
    i = 0
    while i < len(fmt):
        j = fmt.find("%", i)
        if j < 0:
            out.append(fmt[i:])
            break
        out.append(fmt[i:j])
        spec, i = _parse_spec(fmt, j + 1, args, state)
        if spec is None:
            out.append("%!(NOVERB)")
            break
        out.append(spec.notes)
        if spec.verb == "%":
            out.append("%")
            continue
        if state.bad_index:
            out.append(f"%!{spec.verb}(BADINDEX)")
            continue
        if state.next >= len(args):
            out.append(f"%!{spec.verb}(MISSING)")
            continue
        out.append(format_operand(args[state.next], spec))
        state.next += 1
    if not state.reordered and state.next < len(args):
        extra = ", ".join(
            "<nil>" if a is None or a is NO_VALUE else f"{go_type_name(a)}={format_v(a)}"
            for a in args[state.next :]
        )
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


@dataclass(slots=True)
class _ArgState:
    """Go's ``argNum``/``reordered``/``goodArgNum`` bookkeeping for explicit ``%[n]`` indexes."""

    count: int
    next: int = 0
    reordered: bool = False
    bad_index: bool = False


def _arg_index(fmt: str, i: int, state: _ArgState) -> int:
    """Consume an explicit ``[n]`` argument index at ``fmt[i]``, if any."""
    if i >= len(fmt) or fmt[i] != "[":
        return i
    state.reordered = True
    end = fmt.find("]", i)
    digits = fmt[i + 1 : end] if end > 0 else ""
    if end < 0 or not digits.isdigit() or not 1 <= int(digits) <= state.count:
        state.bad_index = True
        return end + 1 if end > 0 else len(fmt)
    state.next = int(digits) - 1
    return end + 1


def _star(fmt: str, i: int, args: list[Any], state: _ArgState) -> tuple[int | None, int]:
    value = None
    if state.next < len(args):
        arg = args[state.next]
        if isinstance(arg, int) and not isinstance(arg, bool):
            value = arg
    state.next += 1
    return value, i + 1


def _parse_spec(fmt: str, i: int, args: list[Any], state: _ArgState) -> tuple[Spec | None, int]:
    spec = Spec()
    state.bad_index = False
    flags = {"-": "minus", "+": "plus", "#": "sharp", " ": "space", "0": "zero"}
    while i < len(fmt) and fmt[i] in flags:
        setattr(spec, flags[fmt[i]], True)
        i += 1
    if spec.minus:
        spec.zero = False
    i = _arg_index(fmt, i, state)
    if i < len(fmt) and fmt[i] == "*":
        spec.width, i = _star(fmt, i, args, state)
        if spec.width is None:
            spec.notes += "%!(BADWIDTH)"
        elif spec.width < 0:
            spec.minus, spec.zero, spec.width = True, False, -spec.width
    else:
        spec.width, i = _parse_number(fmt, i)
    if i < len(fmt) and fmt[i] == ".":
        i = _arg_index(fmt, i + 1, state)
        if i < len(fmt) and fmt[i] == "*":
            spec.prec, i = _star(fmt, i, args, state)
            if spec.prec is None or spec.prec < 0:
                spec.notes += "%!(BADPREC)"
                spec.prec = None
        else:
            prec, i = _parse_number(fmt, i)
            spec.prec = prec or 0
    i = _arg_index(fmt, i, state)
    if i >= len(fmt):
        return None, i
    spec.verb = fmt[i]
    return spec, i + 1
