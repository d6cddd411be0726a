"""The shape of a Jinja template that raises on every conversation with an assistant turn.

GPT4All's DeepSeek R1 distill template filters assistant content through ``regex_replace``,
a filter transformers does not have: every probe with an assistant message raises (and is
skipped), while user and system messages render. The first reading needs a three-turn render
to tell the user opening from the preamble; here the system render tells them apart instead,
and the assistant wrapper is the generation prompt (no probe that renders has another).
"""

from __future__ import annotations

from .shape import (
    A1,
    SYS,
    U1,
    U2,
    TemplateShape,
    _between,
    _common_suffix,
    _observe_trims,
    _Renderer,
    _snap_suffix,
    _with_system,
)
from .source import TemplateSource


def user_only_shape(source: TemplateSource) -> TemplateShape | None:
    """The shape read off one user message with and without a system message before it, where
    a conversation with an assistant turn raises; None where it renders, or where the user
    message does not render the same after a system message."""
    render = _Renderer(source)
    if render([("user", U1), ("assistant", A1), ("user", U2)], gen=False) is not None:
        return None
    u_gen, u_nog = render([("user", U1)], gen=True), render([("user", U1)], gen=False)
    s_nog = render([("system", SYS), ("user", U1)], gen=False)
    if u_gen is None or u_nog is None or s_nog is None or not u_gen.startswith(u_nog):
        return None
    generation = u_gen[len(u_nog) :]
    user = _between(u_nog, U1)
    system = _between(s_nog, SYS, U1)
    if user is None or system is None or system[2] != user[1]:
        return None
    head, tail = user
    mid_su = system[1]
    specials = [*source.added_tokens, *source.template_variables().values()]
    n = _snap_suffix(mid_su, _common_suffix(head, mid_su), specials)
    n = _snap_suffix(head, n, specials)
    shape = TemplateShape(
        preamble=head[: len(head) - n],
        user_prefix=head[len(head) - n :],
        user_suffix=tail,
        user_suffix_last=tail,
        generation_prompt=generation,
        assistant_prefix=generation,
        assistant_prefix_last=generation,
        assistant_suffix="",
        system_mode="drop",
        head=head,
        trims=_observe_trims(render),
    )
    return _with_system(render, shape)


__all__ = ["user_only_shape"]
