"""Print a value with its edges' whitespace stripped as the Jinja template strips it.

Ollama's templates have no trim function, so the TEMPLATE scans the bytes itself; cut out of
``emit.py`` so that it and ``emit_tools.py`` share it.
"""

from __future__ import annotations

from .gotext import Act, Lit, Piece

_CHARS = {"nl": (10,), "ws": (32, 9, 10, 13, 11, 12)}


def _is_in(var: str, kind: str) -> str:
    tests = " ".join(f"(eq {var} {code})" for code in _CHARS[kind])
    return f"or {tests}" if len(_CHARS[kind]) > 1 else tests[1:-1]


def trimmed(
    expr: str, trim: tuple[str, str], tag: str, lead: str = "", *, mark: str = ""
) -> list[Piece]:
    """Print ``expr``, stripping whitespace as the Jinja template does (``lead`` before it
    where it is not blank: ``emit_joined``; ``mark``: a variable of the enclosing scope set
    true there, for a test after the scope ends).

    Ollama gives templates no trim function and no arithmetic, so this scans bytes with
    ``range`` over an int (Go >= 1.22), ``index`` and ``break``, from the front for the left
    edge and from the back for the right: ``len (slice $s $k)`` is ``len - k`` and
    ``len (slice $s 1 (len (slice $s $k)))`` is ``len - 1 - k``.
    """
    left, right = trim
    if not left and not right:
        return [Lit(lead), Act(expr)] if lead else [Act(expr)]
    s, a, b, c = f"$s{tag}", f"$a{tag}", f"$b{tag}", f"$c{tag}"
    body: list[Piece] = [Act(f"{s} := {expr}"), Act(f"{a} := {f'len {s}' if left else 0}")]
    body += [Act(f"{b} := {0 if right else f'len {s}'}")]
    if left:
        body += [Act(f"range $k := len {s}"), Act(f"{c} := index {s} $k")]
        body += [Act(f"if not ({_is_in(c, left)})"), Act(f"{a} = $k"), Act("break")]
        body += [Act("end"), Act("end")]
    if right:
        back = f"len (slice {s} 1 (len (slice {s} $k)))"
        body += [Act(f"range $k := len {s}"), Act(f"{c} := index {s} ({back})")]
        body += [Act(f"if not ({_is_in(c, right)})"), Act(f"{b} = len (slice {s} $k)")]
        body += [Act("break"), Act("end"), Act("end")]
    body += [Act(f"if lt {a} {b}"), *([Lit(lead)] if lead else [])]
    body += [*([Act(f"{mark} = true")] if mark else []), Act(f"slice {s} {a} {b}")]
    return [*body, Act("end")]


__all__ = ["trimmed"]
