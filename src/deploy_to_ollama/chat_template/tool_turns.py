"""Tool turns a Jinja template prints otherwise than an ordinary turn: an assistant message
that carries only tool calls, which some templates drop whole.

GLM-4 prints a message only when its content is true, so an assistant turn with tool calls and
empty content (what Ollama sends for a call) leaves no trace: the tool result follows the user
turn directly. Read off sentinel renders: the conversation with that message and without it
render the same; the TEMPLATE then skips an assistant message with calls and no content, which
also names ``.ToolCalls`` (Ollama's tool round trip, ``capabilities``).
"""

from __future__ import annotations

from typing import Any

from ..errors import TemplateRenderError
from .shape import A1, U1, U2, TemplateShape
from .source import TemplateSource

_RESULT = "Zqtoolresult"
_CALL: dict[str, Any] = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "Zqtoolname", "arguments": {"zqarg": "Zqargvalue"}},
}


def _conversations(*, with_call: bool) -> list[list[dict[str, Any]]]:
    """Sentinel conversations around one call: after the first turn, and later on."""
    call: dict[str, Any] = {"role": "assistant", "content": "", "tool_calls": [_CALL]}
    result: dict[str, Any] = {
        "role": "tool",
        "content": _RESULT,
        "tool_call_id": "call_1",
        "name": "Zqtoolname",
    }
    calls = [call] if with_call else []
    first: list[dict[str, Any]] = [{"role": "user", "content": U1}, *calls, result]
    later: list[dict[str, Any]] = [
        {"role": "user", "content": U1},
        {"role": "assistant", "content": A1},
        {"role": "user", "content": U2},
        *calls,
        result,
    ]
    return [first, [*first, {"role": "user", "content": U2}], later]


def drops_empty_calls(source: TemplateSource) -> bool:
    """Whether an assistant message with tool calls and empty content prints nothing: every
    sentinel conversation renders the same with that message as without it (with and without
    the generation prompt), and prints the tool result."""
    from .hf_render import render_hf

    tokens = source.template_variables()
    pairs = zip(_conversations(with_call=True), _conversations(with_call=False), strict=True)
    for with_call, without in pairs:
        for gen in (True, False):
            try:
                texts = [
                    render_hf(source.template, conv, tokens=tokens, add_generation_prompt=gen)
                    for conv in (with_call, without)
                ]
            except TemplateRenderError:
                return False
            if texts[0] != texts[1] or _RESULT not in texts[0]:
                return False
    return True


def with_dropped_calls(source: TemplateSource, shape: TemplateShape) -> TemplateShape | None:
    """``shape`` reading an assistant message with calls and no content as dropped, where the
    Jinja drops it (None otherwise)."""
    from dataclasses import replace

    if shape.calls_dropped or not drops_empty_calls(source):
        return None
    return replace(shape, calls_dropped=True)


__all__ = ["drops_empty_calls", "with_dropped_calls"]
