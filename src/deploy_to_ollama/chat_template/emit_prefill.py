"""The end of a prefilled final assistant message whose content the Jinja template strips.

transformers continues a final assistant message by appending a tag to its content and cutting
the render at that tag, so the content's trailing whitespace survives the template's strip
where what follows the content gives the tag its space back (``TemplateShape.prefill_trailing``).
Ollama renders the TEMPLATE as it stands, so the TEMPLATE prints that whitespace itself.
"""

from __future__ import annotations

from .gotext import Act, Piece
from .shape import TemplateShape


def prefill_trailing(shape: TemplateShape, tag: str) -> list[Piece]:
    """After ``emit_trim.trimmed(".Content", shape.trim("assistant"), tag)``: on the last message,
    the trailing whitespace that the strip removed, where transformers keeps it.

    >>> from dataclasses import replace
    >>> strip = (("assistant", "ws", "ws"),)
    >>> shape = TemplateShape("", "", "", "", "", "", "", "", "drop", trims=strip)
    >>> prefill_trailing(shape, "a")
    []
    >>> [p.code for p in prefill_trailing(replace(shape, prefill_trailing=True), "a")]
    ['if $last', 'if lt $aa $ba', 'slice $sa $ba', 'end', 'end']
    """
    left, right = shape.trim("assistant")
    if not shape.prefill_trailing or not right:
        return []
    s, a, b = f"$s{tag}", f"$a{tag}", f"$b{tag}"
    tail: list[Piece] = [Act(f"slice {s} {b}")]
    if left:
        # Content that is whitespace only is stripped to nothing, the tag's space included.
        tail = [Act(f"if lt {a} {b}"), *tail, Act("end")]
    return [Act("if $last"), *tail, Act("end")]
