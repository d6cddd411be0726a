"""Build Go template text from literal and action pieces, readable yet byte-exact."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Lit:
    """Literal prompt text."""

    text: str


@dataclass(frozen=True, slots=True)
class Act:
    """A Go template action, without its ``{{ }}``."""

    code: str


Piece = Lit | Act


def go_string(value: str) -> str:
    """A Go double-quoted string literal for ``value``.

    >>> go_string('a"b\\n')
    '"a\\\\"b\\\\n"'
    """
    out = []
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _literal(text: str) -> str:
    # "{{" cannot appear in Go template text; print it through an action instead.
    return text.replace("{{", '{{ "{{" }}')


def join_pieces(pieces: Iterable[Piece]) -> str:
    """Concatenate pieces; put actions on their own lines only where trimming is harmless.

    A ``{{-`` trims the newline we add before it, so it is only used when the text before it
    does not itself end with whitespace (which it would eat too).

    >>> join_pieces([Lit("a"), Act("if .X"), Lit(" b\\n"), Act("end")])
    'a\\n{{- if .X }} b\\n{{ end }}'
    """
    out: list[str] = []
    previous: Piece | None = None
    for piece in pieces:
        if isinstance(piece, Lit):
            if piece.text:
                out.append(_literal(piece.text))
                previous = piece
            continue
        safe = previous is None or isinstance(previous, Act) or not previous.text[-1:].isspace()
        if previous is not None and safe:
            out.append("\n{{- " + piece.code + " }}")
        else:
            out.append("{{ " + piece.code + " }}")
        previous = piece
    return "".join(out)
