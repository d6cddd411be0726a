"""Templates that render only with tools offered, read with a tool list always passed.

Hermes 2 Pro's tool-use Jinja (and its huggingface.js variant) iterates ``tools`` before the
first message, so transformers raises on every conversation without tools: the notebook runs
it with tools only (an empty list included), and only tool conversations have a reference.
The shape inference renders plain sentinel conversations, so it learns nothing there.
:func:`needs_tools` tells such a template; inside :func:`tools_view` every transformers render
made without tools gets an empty tool list (``render_hf`` asks :func:`tools_view_on`), so the
plain readings see the lead-in with no tool in it, the tool readings (which pass their own
sentinel tools) read the list, and a request without tools prints what the Jinja prints for
an empty list. Probes without tools stay skipped (their reference raises): the proof rests on
the tool probes. References are rendered with the view off (``final_user.view_off``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar

from ..errors import TemplateRenderError
from .source import TemplateSource

_VIEW: ContextVar[bool] = ContextVar("tools_view", default=False)


@contextmanager
def _viewing(*, on: bool) -> Iterator[None]:
    token = _VIEW.set(on)
    try:
        yield
    finally:
        _VIEW.reset(token)


def tools_view() -> AbstractContextManager[None]:
    """Inside the block, a render without tools is made with an empty tool list."""
    return _viewing(on=True)


def tools_view_off() -> AbstractContextManager[None]:
    """Renders without tools as transformers makes them."""
    return _viewing(on=False)


def tools_view_on() -> bool:
    """Whether the view is in force (a cache key part, like ``final_user.active_view``)."""
    return _VIEW.get()


def needs_tools(source: TemplateSource) -> bool:
    """Whether the Jinja raises on a plain user message and renders it with an empty tool
    list offered."""
    from .hf_render import render_hf

    user = [{"role": "user", "content": "Zquserone"}]
    tokens = source.template_variables()
    with tools_view_off():
        try:
            render_hf(source.template, user, tokens=tokens, add_generation_prompt=True)
        except TemplateRenderError:
            pass
        else:
            return False
    with tools_view():
        try:
            text = render_hf(source.template, user, tokens=tokens, add_generation_prompt=True)
        except TemplateRenderError:
            return False
    return "Zquserone" in text


__all__ = ["needs_tools", "tools_view", "tools_view_off", "tools_view_on"]
