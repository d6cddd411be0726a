"""Typed parameter lists: a type printed as a fixed word, a mark on required parameters.

Some templates print each parameter as a typed signature (Apertus's TypeScript
``city?: string``, Seed-OSS's Python ``city: str``). Two things there are not sentinel text:

* the type is mapped to a word of the template's own (``string`` -> ``str``) and any type the
  template does not know, our sentinel type included, prints as one fixed word (``any``,
  ``Any``). :func:`constant_type` finds that word by rendering the sentinel type and
  ``string`` side by side, puts the sentinel back where the word was (so the per-property
  loop reads off as usual) and renders every JSON schema type to learn its word;
* a parameter prints differently when it is required (``city`` vs ``city?``, ``[必填]`` vs
  ``[选填]``). :func:`required_mark` reads the property loop with every parameter optional and
  with every parameter required; where only literal text differs, the item gets a Go flag set
  by walking ``Required`` and prints one text or the other. Go text/template has no ``in``,
  so the walk is the only way to ask whether a name is required.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from .gotext import Act, Lit, Piece
from .tool_args import ItemLoop

#: JSON schema type names, each rendered to read off how the template prints it.
TYPES = ("string", "number", "integer", "boolean", "array", "object", "null")


def _region(a: str, b: str) -> tuple[int, int]:
    """(start, end in ``a``) of the one stretch where ``a`` and ``b`` differ."""
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    tail = 0
    while tail < min(len(a), len(b)) - start and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    return start, len(a) - tail


#: Renders the tool list for (type of ``zqarga``, type of ``zqargc`` or None for one
#: property); None where the template rejects it.
Render = Callable[[str, str | None], str | None]


def _variants(sentinel: str, second: str) -> list[tuple[str, str | None]]:
    """One property with the sentinel type and with ``string``; two with both sentinels,
    the first ``string``, the second ``string``."""
    one: list[tuple[str, str | None]] = [(sentinel, None), ("string", None)]
    return [*one, (sentinel, second), ("string", second), (sentinel, "string")]


def constant_type(
    render: Render, sentinel: str = "Zqtypea", second: str = "Zqtypec"
) -> tuple[str, str, str, dict[str, str]] | None:
    """(one property marked, two properties marked, the fixed word, JSON type -> word).

    ``render(type_a, type_c)`` renders the tool list with those property types (the
    sentinel types where ``sentinel``/``second`` are given). The marked renderings have the
    fixed word replaced by the sentinel type at the place it stands for that type; None where
    the sentinel type does not print as one word that ``string`` changes.
    """
    texts = [render(*types) for types in _variants(sentinel, second)]
    if any(text is None for text in texts):
        return None
    one, one_s, two, two_a, two_c = (text or "" for text in texts)
    start, end = _region(one, one_s)
    word = one[start:end]
    if not word or "Zq" in word or sentinel in one:
        return None
    regions = [_region(two, two_a), _region(two, two_c)]
    if any(two[a:b] != word for a, b in regions) or regions[0][1] > regions[1][0]:
        return None
    (a1, b1), (a2, b2) = regions
    marked_two = two[:a1] + sentinel + two[b1:a2] + second + two[b2:]
    marked_one = one[:start] + sentinel + one[end:]
    table = {}
    for name in TYPES:
        text = render(name, None)
        if text is None or not text.startswith(one[:start]) or not text.endswith(one[end:]):
            continue
        table[name] = text[start : len(text) - (len(one) - end)]
    return marked_one, marked_two, word, table


def type_chain(table: dict[str, str], otherwise: Piece) -> list[Piece]:
    """Go: the word for ``$pv.Type`` from ``table``, else ``otherwise``."""
    pieces: list[Piece] = [Act("$ty := print $pv.Type")]
    for n, (name, shown_as) in enumerate(table.items()):
        pieces += [Act(f'{"else " if n else ""}if eq $ty "{name}"'), Lit(shown_as)]
    return [*pieces, Act("else"), otherwise, Act("end")]


def _segments(pieces: Sequence[Piece]) -> tuple[list[Piece], list[str]]:
    """(actions, literal text before each action and after the last)."""
    acts: list[Piece] = []
    texts = [""]
    for piece in pieces:
        if isinstance(piece, Lit):
            texts[-1] += piece.text
        else:
            acts.append(piece)
            texts.append("")
    return acts, texts


def required_mark(loose: ItemLoop, strict: ItemLoop, var: str = "$t") -> ItemLoop | None:
    """``strict`` (read with every parameter required) with each literal that differs from
    ``loose`` (every parameter optional) printed by whether ``$pk`` is in ``var``'s
    ``Required``; None where more than literal text differs. ``strict`` as it is where
    nothing does."""
    if loose.glue != strict.glue or loose.head != strict.head:
        return None
    acts, texts = _segments(strict.item)
    loose_acts, loose_texts = _segments(loose.item)
    if acts != loose_acts:
        return None
    if texts == loose_texts:
        return strict
    item: list[Piece] = [Act("$req := false"), Act(f"range {var}.Function.Parameters.Required")]
    item += [Act("if eq . $pk"), Act("$req = true"), Act("end"), Act("end")]
    for n, (text, other) in enumerate(zip(texts, loose_texts, strict=True)):
        if text == other:
            item += [Lit(text)] if text else []
        else:
            item += [Act("if $req"), *([Lit(text)] if text else []), Act("else")]
            item += [*([Lit(other)] if other else []), Act("end")]
        if n < len(acts):
            item.append(acts[n])
    return replace(strict, item=tuple(item))


__all__ = ["TYPES", "Render", "constant_type", "required_mark", "type_chain"]
