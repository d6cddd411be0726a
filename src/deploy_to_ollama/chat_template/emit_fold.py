"""Content the Jinja rewrites before printing it: ``.replace(old, new)`` chains
(``TemplateShape.folds``).

Falcon's instruct template prints ``content.replace('\\r\\n', '\\n').replace('\\n\\n', '\\n')``
(then trimmed): a blank line in a message reaches the model as one newline. Ollama gives
templates no replace function, so the TEMPLATE rebuilds the text with ``printf``, scanning
byte offsets with ``range`` over an int and finding ``k + len(old)`` as the length of
``printf`` of the text up to ``k`` and a pad as long as ``old`` (templates have no arithmetic).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .gotext import Act, Piece, go_string
from .shape import U1, U2, _between, _Renderer
from .source import TemplateSource

#: The rewrites a reading may find, in the order they are tried and applied (Python's
#: ``str.replace``: left to right, without overlaps).
CANDIDATES: tuple[tuple[str, str], ...] = (("\r\n", "\n"), ("\n\n", "\n"))
#: Each role's sentinel conversation and the content that carries the probe text.
_CONVS: dict[str, Callable[[str], list[tuple[str, str]]]] = {
    "user": lambda c: [("user", c)],
    "assistant": lambda c: [("user", U1), ("assistant", c), ("user", U2)],
}


def _python_chain(text: str, folds: Sequence[tuple[str, str]]) -> str:
    for old, new in folds:
        text = text.replace(old, new)
    return text


def observe_folds(source: TemplateSource) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    """Per role, the rewrites its content goes through, read off messages that hold each
    candidate's ``old`` between two sentinels, then checked on a text that exercises the chain
    (``\\r\\n\\r\\n`` and three newlines) against Python's replace."""
    render = _Renderer(source)
    found: list[tuple[str, tuple[tuple[str, str], ...]]] = []
    for role, conv in _CONVS.items():
        folds = []
        for old, new in CANDIDATES:
            if _printed(render, conv, "A" + old + "B") == "A" + new + "B":
                folds.append((old, new))
        if not folds:
            continue
        probe = "A\r\n\r\nB\n\n\nC"
        if _printed(render, conv, probe) != _python_chain(probe, folds):
            continue
        found.append((role, tuple(folds)))
    return tuple(found)


def _printed(
    render: _Renderer, conv: Callable[[str], list[tuple[str, str]]], inner: str
) -> str | None:
    """What ``inner`` prints as, between two sentinel ends of the same content."""
    mark_a, mark_b = "Zqfoldstart", "Zqfoldend"
    text = render(conv(mark_a + inner + mark_b), gen=False)
    split = _between(text, mark_a, mark_b) if text else None
    return split[1] if split else None


def folded(expr: str, folds: Sequence[tuple[str, str]], tag: str) -> tuple[list[Piece], str]:
    """(pieces that set ``$r<tag>`` to ``expr`` rewritten by ``folds``, that variable), or no
    pieces and ``expr`` itself without folds.

    >>> folded(".Content", (), "u")
    ([], '.Content')
    >>> pieces, var = folded(".Content", (("\\n\\n", "\\n"),), "u")
    >>> var, pieces[0]
    ('$ru1', Act(code='$fs := .Content'))
    """
    pieces: list[Piece] = []
    current = expr
    for n, (old, new) in enumerate(folds, start=1):
        var = f"$r{tag}{n}"
        pieces += [Act(f"$fs := {current}") if n == 1 else Act(f"$fs = {current}")]
        pieces += _replace_scan(var, old, new)
        current = var
    return pieces, current


def _replace_scan(var: str, old: str, new: str) -> list[Piece]:
    """``var`` := ``$fs`` with every ``old`` (left to right, no overlaps) replaced by ``new``."""
    pad = go_string("." * len(old))
    end = f'len (printf "%s%s" (slice $fs 0 $k) {pad})'
    found = f"and (le $fe (len $fs)) (eq (slice $fs $k $fe) {go_string(old)})"
    pieces: list[Piece] = [Act(f'{var} := ""'), Act("$fst := 0"), Act("$fnx := 0")]
    pieces += [Act("range $k := len $fs"), Act("if ge $k $fnx"), Act(f"$fe := {end}")]
    pieces += [Act(f"if {found}")]
    pieces += [Act(f'{var} = printf "%s%s%s" {var} (slice $fs $fst $k) {go_string(new)}')]
    pieces += [Act("$fst = $fe"), Act("$fnx = $fe"), Act("end"), Act("end"), Act("end")]
    return [*pieces, Act(f'{var} = printf "%s%s" {var} (slice $fs $fst)')]


__all__ = ["folded", "observe_folds"]
