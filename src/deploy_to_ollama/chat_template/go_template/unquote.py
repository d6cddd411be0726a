"""Go string and rune literal unquoting (``strconv.Unquote`` semantics for templates)."""

from __future__ import annotations

_SIMPLE = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92}


def _escape(body: str, i: int, quote: str, out: bytearray) -> int:
    """Decode the escape starting after the backslash at ``body[i]``; return the next index."""
    ch = body[i]
    if ch in _SIMPLE:
        out.append(_SIMPLE[ch])
        return i + 1
    if ch == quote:
        out.append(ord(quote))
        return i + 1
    if ch == "x":
        digits = body[i + 1 : i + 3]
        out.append(int(_hex(digits, 2), 16))
        return i + 3
    if ch in "uU":
        size = 4 if ch == "u" else 8
        code = int(_hex(body[i + 1 : i + 1 + size], size), 16)
        if code > 0x10FFFF or 0xD800 <= code < 0xE000:
            raise ValueError("invalid syntax")
        out += chr(code).encode("utf-8")
        return i + 1 + size
    if ch in "01234567":
        digits = body[i : i + 3]
        if len(digits) != 3 or any(d not in "01234567" for d in digits) or int(digits, 8) > 255:
            raise ValueError("invalid syntax")
        out.append(int(digits, 8))
        return i + 3
    raise ValueError("invalid syntax")


def _hex(digits: str, size: int) -> str:
    if len(digits) != size or any(d not in "0123456789abcdefABCDEF" for d in digits):
        raise ValueError("invalid syntax")
    return digits


def unquote_string(body: str) -> str:
    """Decode the inside of a Go double-quoted string literal.

    ``\\x`` and octal escapes give raw bytes, so the result is decoded as UTF-8 with
    ``surrogateescape`` to keep invalid sequences byte-exact.
    """
    out = bytearray()
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            i = _escape(body, i + 1, '"', out)
        elif ch == '"':
            raise ValueError("invalid syntax")
        else:
            out += ch.encode("utf-8", "surrogateescape")
            i += 1
    return out.decode("utf-8", "surrogateescape")


def unquote_char(body: str) -> int:
    """Decode the inside of a Go rune literal (``'a'``, ``'\\n'``) to its code point."""
    if body.startswith("\\"):
        out = bytearray()
        end = _escape(body, 1, "'", out)
        if end != len(body):
            raise ValueError("invalid syntax")
        if body[1] in "x01234567":
            return out[0]
        return ord(out.decode("utf-8"))
    if len(body) != 1:
        raise ValueError("invalid syntax")
    return ord(body)
