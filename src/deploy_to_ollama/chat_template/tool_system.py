"""Where the system prompt goes when tools are offered, where that differs from plain chat.

Some templates place the system message only when tools are offered (ciscai's Mistral v0.3
drops it in plain chat and prints it in the last user turn next to ``[AVAILABLE_TOOLS]``).
We render a conversation with the sentinel tools offered, with and without a system message,
and read the system prompt's wrapper off the one insertion between them.
"""

from __future__ import annotations

from dataclasses import replace

from .shape import A1, SYS, U1, U2, TemplateShape
from .source import TemplateSource
from .tool_sentinels import TOOLS, render


def _insertion(plain: str, with_system: str, before: str) -> str | None:
    """The text ``with_system`` has right before ``before``'s place in ``plain``, when that is
    all it has more.

    >>> _insertion("a U b", "a S U b", "U"), _insertion("a U b", "a S U bY", "U")
    ('S ', None)
    """
    at, size = plain.find(before), len(with_system) - len(plain)
    if at < 0 or size <= 0 or with_system[:at] != plain[:at]:
        return None
    if with_system[at + size :] != plain[at:]:
        return None
    return with_system[at : at + size]


def system_with_tools(source: TemplateSource, shape: TemplateShape) -> TemplateShape | None:
    """``shape`` with the system prompt placed in the last user turn, where the Jinja template
    does so only with tools offered; None where it does not.

    Both readings must hold: with tools, a system message shows inside the last of two user
    turns (not the first) and inside the only one, each time right before the user content.
    """
    if shape.system_mode not in ("drop", "last_user", "final_user"):
        return None
    found: set[tuple[str, str]] = set()
    for turns in ([("user", U1)], [("user", U1), ("assistant", A1), ("user", U2)]):
        messages = [{"role": role, "content": text} for role, text in turns]
        plain = render(source, messages, tools=TOOLS[:1], gen=True)
        with_system = render(
            source, [{"role": "system", "content": SYS}, *messages], tools=TOOLS[:1], gen=True
        )
        if plain is None or with_system is None:
            return None
        inserted = _insertion(plain, with_system, turns[-1][1])
        if inserted is None or inserted.count(SYS) != 1:
            return None
        before, _, after = inserted.partition(SYS)
        found.add((before, after))
    if len(found) != 1:
        return None
    before, after = found.pop()
    variant = replace(shape, system_mode="last_user", system_prefix=before, system_suffix=after)
    return None if variant == shape else variant


__all__ = ["system_with_tools"]
