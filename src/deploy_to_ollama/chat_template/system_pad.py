"""Text the Jinja prints once per system message before its system lead-in
(``TemplateShape.system_pad``).

DeepSeek V2.5's Jinja collects the system prompt in a loop whose body keeps eight spaces of
indentation (``{% if ... %}        {% set ... %}``), so each system message adds them before the
BOS. The TEMPLATE prints the pad in a loop over the system messages, then the rest of the
lead-in once.
"""

from __future__ import annotations

from .gotext import Act, Lit, Piece
from .shape import A1, SYS, SYS2, U1, U2, TemplateShape, _between, _Renderer
from .source import TemplateSource


def observe_system_pad(source: TemplateSource, shape: TemplateShape) -> str | None:
    """The pad, where the text before the first system content grows by the same text with a
    second system message that begins the lead-in with one (None otherwise)."""
    if shape.head_system is None:
        return None
    render = _Renderer(source)
    one = render([("system", SYS), ("user", U1)], gen=False)
    two = render(
        [("system", SYS), ("user", U1), ("assistant", A1), ("system", SYS2), ("user", U2)],
        gen=False,
    )
    split = _between(one, SYS, U1) if one else None
    if split is None or two is None:
        return None
    before = split[0]
    found = [at for at in (two.find(SYS), two.find(SYS2)) if at >= 0]
    if not found:
        return None
    grown = two[: min(found)]
    if len(grown) <= len(before) or not grown.endswith(before):
        return None
    pad = grown[: len(grown) - len(before)]
    return pad if before.startswith(pad) else None


def padded_lead(shape: TemplateShape, before: str) -> list[Piece]:
    """The system lead-in ``before``, its pad printed once per system message.

    >>> from dataclasses import replace
    >>> shape = TemplateShape("", "", "", "", "", "", "", "", "hoist", system_pad="  ")
    >>> padded_lead(shape, "  <s>")[-1] == Lit("<s>")
    True
    >>> padded_lead(replace(shape, system_pad=None), "  <s>") == [Lit("  <s>")]
    True
    """
    pad = shape.system_pad
    if pad is None or not before.startswith(pad):
        return [Lit(before)]
    scan: list[Piece] = [Act("range .Messages"), Act('if eq .Role "system"'), Lit(pad)]
    return [*scan, Act("end"), Act("end"), Lit(before[len(pad) :])]


__all__ = ["observe_system_pad", "padded_lead"]
