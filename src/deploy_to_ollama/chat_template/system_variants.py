"""Other readings of where a system message goes, for templates the first reading misses.

The first shape inference reads a system message at the start of a conversation. Clients also
send one in the middle (a persona switch, an instruction added later), and the Jinja templates
disagree on it: DeepSeek-style templates collect the system messages into one block before
the first turn (all joined: ``hoist``; only the last: ``hoist_last``); Dolphin/Apriel-style
ones print their default system prompt only when no message at all is a system one
(``default_block``); Llama 3 / Phi-4 / Kimi-style ones print it as a turn of its own where it
stands, whose wrapper may cut the text between two turns elsewhere than the user header we
guessed (``resplit``). Each reading is a candidate shape; the verifier decides."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from .first_bare import bare_first_variant
from .gotext import Act, Lit, Piece
from .shape import A1, SYS, SYS2, U1, U2, TemplateShape, _between, _Renderer, _with_system
from .source import TemplateSource
from .system_absent import empty_default_variant
from .system_each import EACH, each_system_scan
from .system_echo import echo_variants

#: A system message after the first turn.
MID = (("user", U1), ("assistant", A1), ("system", SYS2), ("user", U2))


def system_variants(source: TemplateSource, shape: TemplateShape) -> list[TemplateShape]:
    """Shapes that read a mid-conversation system message differently from ``shape``
    (empty when the sentinel render shows nothing else to try)."""
    render = _Renderer(source)
    text = render(MID, gen=False)
    if text is None or SYS2 not in text:
        if shape.default_system and shape.system_mode == "block":
            # No later system message to read, yet the default may be the TEMPLATE's own
            # (a dated one cannot be a Modelfile SYSTEM: mistral.rs's Mistral Small 3).
            return [replace(shape, system_mode="default_block")]
        return []
    found: list[TemplateShape] = []
    sep = _hoist_sep(render)
    if text.find(SYS2) < text.find(U1) and shape.system_mode == "block":
        # Joined as Ollama's .System is, or only the last one (DeepSeek R1 overwrites).
        for mode in ("hoist", "hoist_last"):
            found.append(replace(shape, system_mode=mode, mid_system=None))
        if sep is not None:
            found.append(replace(shape, system_mode="hoist", mid_system=None, hoist_sep=sep))
    if text.find(SYS2) < text.find(U1) and shape.system_mode == "drop" and shape.head_system:
        # A lead-in copied from observation (Solar Open's provider prompt, then "## System
        # Prompt"): every system message joined into it, or the last one.
        for mode in ("hoist", "hoist_last"):
            found.append(replace(shape, system_mode=mode, mid_system=None))
        if sep is not None:
            found.append(replace(shape, system_mode="hoist", mid_system=None, hoist_sep=sep))
    if shape.default_system and shape.system_mode == "block" and shape.default_system not in text:
        found.append(replace(shape, system_mode="default_block"))
    moved = _resplit(render, shape, text)
    if moved is not None:
        found.append(moved)
    bare = bare_first_variant(render, shape, text)
    if bare is not None:
        found.append(bare)
    found += echo_variants(shape)
    empty = empty_default_variant(shape, source.bos_token or "")
    if empty is not None:
        found.append(empty)
    return found


def _hoist_sep(render: _Renderer) -> str | None:
    """What the Jinja prints between two collected system messages (None where it does not
    collect a later one right after the first)."""
    text = render([("system", SYS), *MID], gen=False)
    split = _between(text, SYS, SYS2, U1) if text else None
    return split[1] if split is not None else None


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


def hoisted_expr(shape: TemplateShape) -> tuple[list[Piece], str]:
    """(scan, expression) of the hoisted system text: Ollama's ``.System`` (every system
    message joined with ``"\n\n"``) for ``hoist``, the last one's content for ``hoist_last``."""
    if shape.system_mode == "hoist" and shape.hoist_sep is not None:
        return each_system_scan(shape), EACH
    if shape.system_mode != "hoist_last":
        return [], "$.System"
    scan = [Act('$lastSystem := ""'), Act("range .Messages"), Act('if eq .Role "system"')]
    return [*scan, Act("$lastSystem = .Content"), Act("end"), Act("end")], "$lastSystem"


def any_system() -> list[Piece]:
    """``$anySystem``: whether any message is a system one."""
    return _any_system()


def hoisted_system(
    shape: TemplateShape, empty_system: str, content: Callable[[str], list[Piece]]
) -> list[Piece]:
    """The system messages printed once where a leading system turn goes, as templates that
    collect them before the first turn do: all of them joined as Ollama's ``.System`` is
    (``"\n\n"``, mode ``hoist``) or only the last one (``hoist_last``). ``content(expr)``
    prints ``expr`` with the template's trimming."""
    scan, expr = hoisted_expr(shape)
    body: list[Piece] = [Lit(shape.system_prefix), *content(expr), Lit(shape.system_suffix)]
    if empty_system == "render":
        return [*scan, *_any_system(), Act("if $anySystem"), *body, Act("end")]
    if empty_system == "default" and shape.default_system:
        default = Lit(shape.system_prefix + shape.default_system + shape.system_suffix)
        return [*scan, Act(f"if {expr}"), *body, Act("else"), default, Act("end")]
    return [*scan, Act(f"if {expr}"), *body, Act("end")]


def absent_system_default(shape: TemplateShape) -> list[Piece]:
    """The default system turn, printed only when no message is a system one (the Jinja's
    ``ns.found`` test). A Modelfile SYSTEM cannot say this: Ollama prepends it whenever the
    *first* message is not a system one, so a later system message would get it too."""
    default = shape.system_prefix + (shape.default_system or "") + shape.system_suffix
    return [*_any_system(), Act("if not $anySystem"), Lit(default), Act("end")]


def _any_system() -> list[Piece]:
    scan: list[Piece] = [Act("$anySystem := false"), Act("range .Messages")]
    return [*scan, Act('if eq .Role "system"'), Act("$anySystem = true"), Act("end"), Act("end")]


def system_content(
    shape: TemplateShape, content: Callable[[str, tuple[str, str], str], list[Piece]]
) -> list[Piece]:
    """A system message's content inside the messages loop, trimmed as the Jinja trims the
    first one (``$i`` 0) and as it trims later ones, where the two differ (none for later
    ones where the Jinja drops them: ``TemplateShape.mid_dropped``).
    ``content(expr, trim, tag)`` prints ``expr`` with that trimming."""
    first, later = shape.trim("system"), shape.trim("system_mid")
    if shape.mid_dropped:
        # Only the first message's content is printed; later ones keep their wrapper only.
        return [Act("if eq $i 0"), *content(".Content", first, "s"), Act("end")]
    if first == later:
        return content(".Content", first, "s")
    return [
        Act("if eq $i 0"),
        *content(".Content", first, "s"),
        Act("else"),
        *content(".Content", later, "m"),
        Act("end"),
    ]


def later_systems(messages: Sequence[Mapping[str, Any]]) -> list[str]:
    """Contents of the system messages that come after some other message.

    >>> later_systems([{"role": "system", "content": "a"}, {"role": "user", "content": "b"},
    ...                {"role": "system", "content": "c"}])
    ['c']
    """
    seen_other, found = False, []
    for message in messages:
        if message.get("role") == "system" and seen_other:
            found.append(str(message.get("content") or ""))
        elif message.get("role") != "system":
            seen_other = True
    return found


def rejected_reason(messages: Sequence[Mapping[str, Any]], error: Exception) -> str:
    """Why a probe is skipped when the Jinja template raises on it, naming a later system
    message as what it rejects where the conversation has one."""
    if later_systems(messages):
        return f"the Jinja template rejects a system message after the first turn: {error}"
    return f"the Jinja template raises: {error}"


def dropped_reason(messages: Sequence[Mapping[str, Any]], expected: str) -> str | None:
    """Why a probe differs when the Jinja template leaves a later system message out."""
    dropped = [c for c in later_systems(messages) if c and c not in expected]
    if dropped:
        return (
            "the Jinja template drops a system message after the first turn (its text is not "
            "in the prompt); the TEMPLATE prints it"
        )
    return None


__all__ = [
    "absent_system_default",
    "any_system",
    "dropped_reason",
    "hoisted_expr",
    "hoisted_system",
    "later_systems",
    "rejected_reason",
    "system_content",
    "system_variants",
]
