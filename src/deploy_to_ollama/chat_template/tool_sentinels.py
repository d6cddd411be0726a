"""The sentinel tools, calls and results the tool inference renders, and how it renders them.

Every tool reading (definitions, calls, results, per-argument and per-property loops) learns
from the same made-up conversations: sentinel strings that cannot occur in a template, so each
one found in a rendering says which field printed there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from ..errors import TemplateRenderError
from .shape import U1, U2
from .source import TemplateSource

#: Sentinel tools: names must not be prefixes of one another.
TOOLS = tuple(
    {
        "type": "function",
        "function": {
            "name": f"Zqtool{tag}name",
            "description": f"Zqtool{tag}desc",
            "parameters": {
                "type": "object",
                "properties": {f"zqarg{tag}": {"type": "string", "description": f"Zqarg{tag}doc"}},
                "required": [f"zqarg{tag}"],
            },
        },
    }
    for tag in "ab"
)
#: Sentinel calls; ids are 9 alphanumerics (Mistral templates reject anything else).
CALLS = tuple(
    {
        "id": f"Zqcallid{tag}",
        "type": "function",
        "function": {"name": f"Zqcall{tag}name", "arguments": {f"zqkey{tag}": f"Zqcallval{tag}"}},
    }
    for tag in "ab"
)
#: Sentinel results answering ``CALLS``.
RESULTS = tuple(
    {
        "role": "tool",
        "content": f"Zqresult{tag}",
        "name": f"Zqresname{tag}",
        "tool_call_id": f"Zqresid{tag}0",
    }
    for tag in "ab"
)
CONTENT = "Zqcallcontent"
#: The assistant's answer after tool results.
A2 = "Zqasstfinal"


#: Set by a reading that must see renders changed (``tool_ordinals.marking_numbers``): called
#: with the plain render, the messages and the keyword arguments.
RENDER_WRAPPER: ContextVar[Callable[..., str | None] | None] = ContextVar(
    "tool_render_wrapper", default=None
)


def render(
    source: TemplateSource,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    gen: bool,
) -> str | None:
    wrapper = RENDER_WRAPPER.get()
    if wrapper is not None:
        return wrapper(
            lambda m, **kw: render_plain(source, m, **kw), messages, tools=tools, gen=gen
        )
    return render_plain(source, messages, tools=tools, gen=gen)


def render_plain(
    source: TemplateSource,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    gen: bool,
) -> str | None:
    """The Jinja rendering with ``tojson`` output marked; None when the template raises.
    Where the Jinja takes tool-call arguments as text only (:mod:`.tool_arg_text`), the calls
    carry their arguments as JSON text, marked as JSON values."""
    from .hf_render import render_hf
    from .tool_arg_text import has_object_arguments, render_text_arguments, takes_text_arguments

    tokens = source.template_variables()
    kwargs: dict[str, Any] = {
        "tokens": tokens,
        "tools": tools,
        "add_generation_prompt": gen,
        "continue_final_message": False,
        "mark_json": True,
    }
    try:
        return render_hf(source.template, messages, **kwargs)
    except TemplateRenderError:
        if not has_object_arguments(messages):
            return None
        if not takes_text_arguments(source.template, tokens):
            return None
    try:
        return render_text_arguments(source.template, messages, **kwargs)
    except TemplateRenderError:
        return None


def calls_rejected(source: TemplateSource) -> str | None:
    """Why no tool inference can start: the Jinja template raises on every sentinel
    conversation with a tool call and its result (None where one renders). Kimi K2's
    ``list.append`` is refused by transformers' immutable sandbox, so the calls have no
    reference rendering to prove a TEMPLATE against."""
    from .hf_render import render_hf
    from .tool_arg_text import takes_text_arguments

    if takes_text_arguments(source.template, source.template_variables()):
        return None
    error = ""
    for final in (True, False):
        try:
            render_hf(
                source.template,
                call_conv(1, content="", results=1, final=final),
                tokens=source.template_variables(),
                add_generation_prompt=True,
            )
        except TemplateRenderError as err:
            error = str(err)
            continue
        return None
    return f"the Jinja template raises on every conversation with tool calls ({error})"


def call_conv(
    calls: int, *, content: str, results: int, final: bool, end: bool = True
) -> list[dict[str, Any]]:
    """A user turn, an assistant turn with ``calls`` calls, ``results`` results, then the final
    answer (``final``: strictly alternating templates reject a user turn right after results)
    and a user turn (``end``)."""
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": U1},
        {"role": "assistant", "content": content, "tool_calls": [dict(c) for c in CALLS[:calls]]},
        *[dict(r) for r in RESULTS[:results]],
    ]
    if final:
        messages.append({"role": "assistant", "content": A2})
    return messages + ([{"role": "user", "content": U2}] if end else [])


__all__ = [
    "A2",
    "CALLS",
    "CONTENT",
    "RENDER_WRAPPER",
    "RESULTS",
    "TOOLS",
    "call_conv",
    "calls_rejected",
    "render",
    "render_plain",
]
