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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from .gotext import Act, Lit, Piece
from .tool_args import ItemLoop, infer_item_loop

#: JSON schema type names, each rendered to read off how the template prints it.
TYPES = ("string", "number", "integer", "boolean", "array", "object", "null")


def _walk(a: str, b: str, word: str, other: str, at: int) -> list[int] | None:
    """Where ``a`` has ``word`` and ``b`` has ``other``, equal text around and between, the
    first at ``at``; None where the two differ otherwise."""
    i, j, done = at, at, at
    starts: list[int] = []
    while True:
        back = 0
        # A region may start inside text both sides share (`any` vs `any[]`).
        while not (a.startswith(word, i - back) and b.startswith(other, j - back)):
            back += 1
            if back > min(len(word), len(other)) or i - back < done:
                return None
        starts.append(i - back)
        i, j = i - back + len(word), j - back + len(other)
        done = i
        while i < len(a) and j < len(b) and a[i] == b[j]:
            i, j = i + 1, j + 1
        if i == len(a) and j == len(b):
            return starts


def replaced(a: str, b: str, word: str | None = None) -> tuple[str, str, list[int]] | None:
    """(word, other, starts): ``b`` is ``a`` with ``word`` at each of ``starts`` replaced by
    ``other``; ``word`` is found (at most 40 characters) where not given. None where ``a``
    and ``b`` differ otherwise, or not at all."""
    if a == b:
        return None
    at = 0
    while at < min(len(a), len(b)) and a[at] == b[at]:
        at += 1
    tail = 0
    while tail < min(len(a), len(b)) - at and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    for back in range(4):
        for size in [len(word)] if word is not None else range(1, 41):
            w = a[at - back : at - back + size]
            if word is not None and w != word:
                continue
            for extra in range(4):
                if a[len(a) - tail + extra - size : len(a) - tail + extra] != w:
                    continue
                for other_size in range(1, 41):
                    o = b[at - back : at - back + other_size]
                    if b[len(b) - tail + extra - other_size : len(b) - tail + extra] != o:
                        continue
                    starts = _walk(a, b, w, o, at - back)
                    if starts is not None and at - back >= 0:
                        return w, o, starts
    return None


def _mark(text: str, word: str, marks: dict[int, str]) -> str:
    """``text`` with ``word`` at each start in ``marks`` replaced by its mark."""
    for at in sorted(marks, reverse=True):
        text = text[:at] + marks[at] + text[at + len(word) :]
    return text


#: Renders the tool list for (type of ``zqarga``, type of ``zqargc`` or None for one
#: property); None where the template rejects it.
Render = Callable[[str, str | None], str | None]


def constant_type(
    render: Render,
    sentinel: str = "Zqtypea",
    second: str = "Zqtypec",
    *,
    base: str | None = None,
) -> tuple[str, str, str, dict[str, str]] | None:
    """(one property marked, two properties marked, the fixed word, JSON type -> word).

    ``render(type_a, type_c)`` renders the tool list with those property types (the
    sentinel types where ``sentinel``/``second`` are given). The marked renderings have the
    fixed word replaced by the sentinel type wherever it stands for that type (once per list
    of parameters the tool prints); None where the sentinel type does not print as one word
    that ``string`` changes.

    ``base``: a JSON type to read in place of the sentinel type, for a template that rejects
    types it does not know (MiniCPM3 recurses into a type name's letters): the word of
    ``base`` is found beside ``integer``'s and marked as the sentinel type.
    """
    # One property typed as read and as another type; two, then each one typed otherwise.
    variants: list[tuple[str, str | None]] = [(sentinel, None), ("string", None)]
    variants += [(sentinel, second), ("string", second), (sentinel, "string")]
    if base is not None:
        variants = [(base, None), ("integer", None), (base, base), ("integer", base)]
        variants.append((base, "integer"))
    texts = [render(*types) for types in variants]
    if any(text is None for text in texts):
        return None
    one, one_s, two, two_a, two_c = (text or "" for text in texts)
    found = replaced(one, one_s)
    if found is None or "Zq" in found[0] or sentinel in one:
        return None
    word, _, starts = found
    by_a, by_c = replaced(two, two_a, word), replaced(two, two_c, word)
    if by_a is None or by_c is None or not len(by_a[2]) == len(starts) == len(by_c[2]):
        return None
    marks = {at: sentinel for at in by_a[2]} | {at: second for at in by_c[2]}
    if len(marks) != 2 * len(starts):
        return None
    marked_two = _mark(two, word, marks)
    marked_one = _mark(one, word, {at: sentinel for at in starts})
    table = {}
    for name in TYPES:
        text = render(name, None)
        shown = word if text == one else _same_places(one, text, word, starts)
        if shown is not None:
            table[name] = shown
    return marked_one, marked_two, word, table


def _same_places(one: str, text: str | None, word: str, starts: list[int]) -> str | None:
    """What ``text`` prints where ``one`` prints ``word`` at ``starts``, the same at each and
    nothing else changed; None otherwise."""
    if text is None or (len(text) - len(one)) % len(starts):
        return None
    size = len(word) + (len(text) - len(one)) // len(starts)
    shown = text[starts[0] : starts[0] + size]
    rebuilt = _mark(one, word, dict.fromkeys(starts, shown))
    return shown if size > 0 and rebuilt == text else None


def _places(text: str, sentinels: Sequence[str]) -> list[tuple[int, int]]:
    """(start, end) of each occurrence of the sentinels in ``text``, in order."""
    found = []
    for sentinel in sentinels:
        at = text.find(sentinel)
        while at >= 0:
            found.append((at, at + len(sentinel)))
            at = text.find(sentinel, at + 1)
    return sorted(found)


def split_loops(
    one: str, two: str, first: Mapping[str, str], second: Sequence[str], head: str
) -> list[ItemLoop] | None:
    """Two property loops where each tool lists its properties twice (Seed-OSS's signature
    ``def f(city: str)`` and its ``Args``): ``one`` and ``two`` are cut between the lists,
    after the first ``k`` sentinels of ``one`` (``2k`` of ``two``, whose first list holds
    both properties), and each side is read off as one loop; the first cut where both read
    off wins."""
    in_one, in_two = _places(one, list(first)), _places(two, [*first, *second])
    for k in range(1, len(in_one)):
        if 2 * k >= len(in_two):
            break
        head_one, head_two = one[: in_one[k][0]], two[: in_two[2 * k][0]]
        tail_one, tail_two = one[in_one[k - 1][1] :], two[in_two[2 * k - 1][1] :]
        loops = [
            infer_item_loop(head_one, head_two, first, second, head),
            infer_item_loop(tail_one, tail_two, first, second, head),
        ]
        if None not in loops:
            return [loop for loop in loops if loop is not None]
    return None


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


__all__ = [
    "TYPES",
    "Render",
    "constant_type",
    "replaced",
    "required_mark",
    "split_loops",
    "type_chain",
]
