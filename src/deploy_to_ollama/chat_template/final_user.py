"""A user turn that ends the conversation opening otherwise, with the system prompt in it.

mistral.rs's Mistral Small 3 Jinja prints every user message as ``[INST]U[/INST]`` except one
that is the conversation's last message (``loop.last``): that one prints
``[SYSTEM_PROMPT]S\\n\\nU[/SYSTEM_PROMPT]``, S being the system message or, without one, the
default system prompt the Jinja also prints before the conversation. Every sentinel render the
shape inference makes (one user message, three turns) ends with such a turn, so the final
opening passes for the ordinary one and the system text for part of it.

:func:`read_final_user` reads the two openings off renders where a user turn is followed by
another one (ordinary) and where one ends the conversation (final), with and without a system
message. :func:`final_user_view` then lets the inference see renders in which the final user
turn opens like any other (``render_hf`` applies :func:`neutral_render`), so every existing
reading applies; the shape carries the final opening (``TemplateShape.final_user``) and the
emitter prints it for a user message that ends the conversation. Verification never sees the
view: references are rendered with it off (:func:`view_off`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from .source import TemplateSource
from .tools_required import tools_view_off

U1, U2, U3 = "Zquserone", "Zqusertwo", "Zqusertri"
A1, A2 = "Zqasstone", "Zqassttwo"
SYS = "Zqsysalpha"


@dataclass(frozen=True, slots=True)
class FinalUser:
    """How a user message that ends the conversation opens, against an ordinary one."""

    ordinary: str
    """The end of an ordinary user opening that the final one replaces (``INST]``)."""
    before: str
    """The final opening up to the system text (``SYSTEM_PROMPT]``)."""
    after: str
    """The final opening after the system text (``\\n\\n``)."""
    default: str
    """The system text printed there when the conversation has no system message."""
    carries_system: bool
    """Whether the final opening holds the system text at all (else it is ``before`` only)."""

    def opening(self, system: str | None) -> str:
        """The final opening for a conversation whose system message is ``system``."""
        if not self.carries_system:
            return self.before
        return self.before + (self.default if system is None else system) + self.after


_VIEW: ContextVar[FinalUser | None] = ContextVar("final_user_view", default=None)


@contextmanager
def final_user_view(final: FinalUser) -> Iterator[None]:
    """Inside the block, every transformers render shows the final user turn's opening as an
    ordinary one (for the inference only)."""
    token = _VIEW.set(final)
    try:
        yield
    finally:
        _VIEW.reset(token)


@contextmanager
def view_off() -> Iterator[None]:
    """Renders as transformers makes them, whatever view is on (the proof's references):
    this one and ``tools_required``'s."""
    token = _VIEW.set(None)
    try:
        with tools_view_off():
            yield
    finally:
        _VIEW.reset(token)


def active_view() -> FinalUser | None:
    """The view in force (None: renders are transformers' own); also a cache key part."""
    return _VIEW.get()


def neutral_render(text: str, messages: Sequence[Mapping[str, Any]], *, continued: bool) -> str:
    """``text`` with the final user turn's opening made ordinary, where a view is on and the
    conversation ends with a user message whose final opening ``text`` shows; else ``text``."""
    final = _VIEW.get()
    if final is None or continued or not messages or messages[-1].get("role") != "user":
        return text
    content = messages[-1].get("content")
    if not isinstance(content, str) or not content.strip():
        return text
    first = messages[0]
    system = first.get("content") if first.get("role") == "system" else None
    if system is not None and not isinstance(system, str):
        return text
    opening = final.opening(system)
    for printed in dict.fromkeys((content, content.strip())):
        at = text.rfind(printed)
        if at >= 0 and text[:at].endswith(opening):
            return text[: at - len(opening)] + final.ordinary + text[at:]
    return text


def _render(source: TemplateSource, turns: Sequence[tuple[str, str]]) -> str | None:
    from .shape import _Renderer

    with view_off():  # the openings as transformers prints them
        return _Renderer(source)(turns, gen=False)


def _openings(text: str | None) -> tuple[str, str] | None:
    """(before ``U2``, before ``U3``), each after the assistant message before it."""
    if text is None:
        return None
    marks = [text.find(mark) for mark in (A1, U2, A2, U3)]
    if min(marks) < 0 or marks != sorted(marks):
        return None
    a1, u2, a2, u3 = marks
    return text[a1 + len(A1) : u2], text[a2 + len(A2) : u3]


def _common_prefix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def read_final_user(source: TemplateSource) -> FinalUser | None:
    """The final user opening, where it differs from an ordinary one; None where it does not
    or the renders do not show it (see the module docstring)."""
    turns = [("user", U1), ("assistant", A1), ("user", U2), ("assistant", A2), ("user", U3)]
    plain = _openings(_render(source, turns))
    with_system = _openings(_render(source, [("system", SYS), *turns]))
    if plain is None or with_system is None or plain[0] == plain[1]:
        return None
    ordinary_full, final_full = plain
    if with_system[0] != ordinary_full:
        return None  # the ordinary opening depends on the system message: another reading
    shared = _common_prefix(ordinary_full, final_full)
    final_sys = with_system[1]
    if not final_sys.startswith(final_full[:shared]):
        return None
    ordinary, final, final_sys = (
        ordinary_full[shared:],
        final_full[shared:],
        final_sys[shared:],
    )
    at = final_sys.find(SYS)
    if at < 0:
        if final_sys != final:
            return None
        return FinalUser(ordinary, final, "", "", carries_system=False)
    before, after = final_sys[:at], final_sys[at + len(SYS) :]
    if len(final) < len(before) + len(after):
        return None
    if not (final.startswith(before) and final.endswith(after)):
        return None
    default = final[len(before) : len(final) - len(after)]
    return FinalUser(ordinary, before, after, default, carries_system=True)


__all__ = [
    "FinalUser",
    "active_view",
    "final_user_view",
    "neutral_render",
    "read_final_user",
    "view_off",
]
