"""System messages collected before the first turn one by one, each trimmed, with the
template's own separator between them (``TemplateShape.hoist_sep``): Nemotron-Mini prints
``'\\n' + content.strip()`` per system message, Phi-4-mini-reasoning joins them with a space,
where Ollama's ``.System`` joins them with a blank line.

Ollama gives templates no join or trim function, so the scan builds the text with ``printf``
and cuts each content with ``slice`` at indices found as ``emit_trim.trimmed`` finds them.
"""

from __future__ import annotations

from .gotext import Act, Piece, go_string
from .shape import TemplateShape

#: Python's ``str.strip()`` whitespace (``ws``) and newlines only (``nl``), as bytes.
_CHARS = {"nl": (10,), "ws": (32, 9, 10, 13, 11, 12)}
#: The collected text, for ``system_variants.hoisted_expr``.
EACH = "$sysEach"


def _not_in(var: str, kind: str) -> str:
    tests = " ".join(f"(eq {var} {code})" for code in _CHARS[kind])
    return f"not (or {tests})" if len(_CHARS[kind]) > 1 else f"not {tests}"


def _bounds(trim: tuple[str, str]) -> list[Piece]:
    """``$aj``/``$bj``: where ``$sj`` starts and ends once trimmed as ``trim`` says."""
    left, right = trim
    pieces: list[Piece] = [Act(f"$aj := {'len $sj' if left else 0}")]
    pieces += [Act(f"$bj := {0 if right else 'len $sj'}")]
    if left:
        pieces += [Act("range $k := len $sj"), Act("$cj := index $sj $k")]
        pieces += [Act(f"if {_not_in('$cj', left)}"), Act("$aj = $k"), Act("break"), Act("end")]
        pieces += [Act("end")]
    if right:
        back = "len (slice $sj 1 (len (slice $sj $k)))"
        pieces += [Act("range $k := len $sj"), Act(f"$cj := index $sj ({back})")]
        pieces += [Act(f"if {_not_in('$cj', right)}"), Act("$bj = len (slice $sj $k)")]
        pieces += [Act("break"), Act("end"), Act("end")]
    return pieces


def each_system_scan(shape: TemplateShape) -> list[Piece]:
    """``$sysEach``: every system message's content, trimmed as the first one is, joined with
    ``shape.hoist_sep``.

    >>> shape = TemplateShape("", "", "", "", "", "", "", "", "hoist", hoist_sep=" ")
    >>> [p.code for p in each_system_scan(shape)][4:6]
    ['$sysEach = printf "%s%s%s" $sysEach $sysSep .Content', '$sysSep = " "']
    """
    add = f'{EACH} = printf "%s%s%s" {EACH} $sysSep'
    trim = shape.trim("system")
    if trim == ("", ""):
        body: list[Piece] = [Act(f"{add} .Content")]
    else:
        body = [Act("$sj := .Content"), *_bounds(trim), Act("if lt $aj $bj")]
        body += [Act(f"{add} (slice $sj $aj $bj)"), Act("else")]
        body += [Act(f'{EACH} = printf "%s%s" {EACH} $sysSep'), Act("end")]
    sep = go_string(shape.hoist_sep or "")
    scan: list[Piece] = [Act(f'{EACH} := ""'), Act('$sysSep := ""'), Act("range .Messages")]
    return [
        *scan,
        Act('if eq .Role "system"'),
        *body,
        Act(f"$sysSep = {sep}"),
        Act("end"),
        Act("end"),
    ]
