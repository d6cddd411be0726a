"""Other readings of where a system message goes, for templates the first reading misses.

The first shape inference reads a system message at the start of a conversation. Clients also
send one in the middle (a persona switch, an instruction added later), and the Jinja templates
disagree on it: DeepSeek-style templates collect every system message into one block before
the first turn (``hoist``); Dolphin/Apriel-style ones print their default system prompt only
when no message at all is a system one (``default_block``); Llama 3 / Phi-4 / Kimi-style ones
print it as a turn of its own where it stands, whose wrapper may cut the text between two turns
elsewhere than the user header we guessed (``resplit``). Each reading is a candidate shape;
the verifier decides."""

from __future__ import annotations

from dataclasses import replace

from .gotext import Act, Lit, Piece
from .shape import A1, SYS2, U1, U2, TemplateShape, _between, _Renderer, _with_system
from .source import TemplateSource

#: A system message after the first turn.
MID = (("user", U1), ("assistant", A1), ("system", SYS2), ("user", U2))


def system_variants(source: TemplateSource, shape: TemplateShape) -> list[TemplateShape]:
    """Shapes that read a mid-conversation system message differently from ``shape``
    (empty when the sentinel render shows nothing else to try)."""
    render = _Renderer(source)
    text = render(MID, gen=False)
    if text is None or SYS2 not in text:
        return []
    found: list[TemplateShape] = []
    if text.find(SYS2) < text.find(U1) and shape.system_mode == "block":
        found.append(replace(shape, system_mode="hoist", mid_system=None))
    if shape.default_system and shape.system_mode == "block" and shape.default_system not in text:
        found.append(replace(shape, system_mode="default_block"))
    moved = _resplit(render, shape, text)
    if moved is not None:
        found.append(moved)
    return found


def _resplit(render: _Renderer, shape: TemplateShape, text: str) -> TemplateShape | None:
    """``shape`` with the cut between assistant suffix and user prefix moved so that a system
    turn between them fits: the longest assistant suffix the system turn also starts with."""
    split = _between(text, A1, SYS2, U2)
    if split is None:
        return None
    pre, post = split[1], split[2]
    if shape.default_system is not None:
        return None
    between = shape.assistant_suffix + shape.user_prefix
    head = shape.head
    best = None
    for k in range(len(between), -1, -1):
        suffix, prefix = between[:k], between[k:]
        if pre.startswith(suffix) and post.endswith(prefix) and head.endswith(prefix):
            best = k
            break
    if best is None or best == len(shape.assistant_suffix):
        return None
    suffix, prefix = between[:best], between[best:]
    moved = replace(
        shape,
        preamble=head[: len(head) - len(prefix)],
        user_prefix=prefix,
        assistant_suffix=suffix,
        system_mode="drop",
        system_prefix="",
        system_suffix="",
        mid_system=(pre[len(suffix) :], post[: len(post) - len(prefix)]),
    )
    return _with_system(render, moved)


def hoisted_system(shape: TemplateShape, empty_system: str, content: list[Piece]) -> list[Piece]:
    """Every system message, joined as Ollama's ``.System`` is (``"\\n\\n"``), printed once
    where a leading system turn goes: what templates that collect them before the first turn
    print. ``content`` prints ``$.System`` with the template's trimming."""
    body: list[Piece] = [Lit(shape.system_prefix), *content, Lit(shape.system_suffix)]
    if empty_system == "render":
        return [*_any_system(), Act("if $anySystem"), *body, Act("end")]
    if empty_system == "default" and shape.default_system:
        default = Lit(shape.system_prefix + shape.default_system + shape.system_suffix)
        return [Act("if $.System"), *body, Act("else"), default, Act("end")]
    return [Act("if $.System"), *body, Act("end")]


def absent_system_default(shape: TemplateShape) -> list[Piece]:
    """The default system turn, printed only when no message is a system one (the Jinja's
    ``ns.found`` test). A Modelfile SYSTEM cannot say this: Ollama prepends it whenever the
    *first* message is not a system one, so a later system message would get it too."""
    default = shape.system_prefix + (shape.default_system or "") + shape.system_suffix
    return [*_any_system(), Act("if not $anySystem"), Lit(default), Act("end")]


def _any_system() -> list[Piece]:
    scan: list[Piece] = [Act("$anySystem := false"), Act("range .Messages")]
    return [*scan, Act('if eq .Role "system"'), Act("$anySystem = true"), Act("end"), Act("end")]


__all__ = ["absent_system_default", "hoisted_system", "system_variants"]
