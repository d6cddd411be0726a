"""Tool turns a Jinja template prints otherwise than an ordinary turn: an assistant message
that carries only tool calls (empty content, as Ollama sends a call).

GLM-4 prints a message only when its content is true, so that message leaves no trace: the
tool result follows the user turn directly (``dropped``). DeepSeek R1's distills print calls
only for a content that is None, so it prints as an empty assistant turn (``empty``). Read off
sentinel renders: the conversations with that message render the same as without it, or as
with the same message without its calls. The TEMPLATE then skips it, or prints it without its
calls; either way it names ``.ToolCalls``, which gives Ollama the tool round trip the Jinja
shows (``capabilities``), and the tool probes prove the prompts.
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


def _conversations(call: dict[str, Any] | None) -> list[list[dict[str, Any]]]:
    """Sentinel conversations around one assistant message ``call`` (None: left out) and its
    result: after the first turn, followed by a user turn, and later on."""
    result: dict[str, Any] = {
        "role": "tool",
        "content": _RESULT,
        "tool_call_id": "call_1",
        "name": "Zqtoolname",
    }
    calls = [call] if call is not None else []
    first: list[dict[str, Any]] = [{"role": "user", "content": U1}, *calls, result]
    later: list[dict[str, Any]] = [
        {"role": "user", "content": U1},
        {"role": "assistant", "content": A1},
        {"role": "user", "content": U2},
        *calls,
        result,
    ]
    return [first, [*first, {"role": "user", "content": U2}], later]


_WITH_CALL: dict[str, Any] = {"role": "assistant", "content": "", "tool_calls": [_CALL]}
_EMPTY: dict[str, Any] = {"role": "assistant", "content": ""}


def _render_same(source: TemplateSource, other: dict[str, Any] | None) -> bool:
    """Every sentinel conversation renders the same with the empty call message as with
    ``other`` in its place (with and without the generation prompt), result printed."""
    from .hf_render import render_hf

    tokens = source.template_variables()
    pairs = zip(_conversations(_WITH_CALL), _conversations(other), strict=True)
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


def drops_empty_calls(source: TemplateSource) -> bool:
    """Whether an assistant message with tool calls and empty content prints nothing: the
    sentinel conversations render the same with that message as without it."""
    return _render_same(source, None)


def ignores_empty_calls(source: TemplateSource) -> bool:
    """Whether the tool calls of an assistant message with empty content print nothing, the
    message printing as an empty turn: the same with its calls as without them (DeepSeek R1's
    distills print calls only for a content that is None; Ollama always sends a string)."""
    return _render_same(source, _EMPTY)


def with_call_turns(source: TemplateSource, shape: TemplateShape) -> TemplateShape:
    """``shape`` with how an assistant message with calls and no content prints, where the
    Jinja drops it or ignores its calls, and what closes a result before an answer."""
    from dataclasses import replace

    between = tool_then_assistant(source, shape)
    if between and between != shape.tool_then_assistant:
        shape = replace(shape, tool_then_assistant=between)
    if shape.call_turn:
        return shape
    if drops_empty_calls(source):
        return replace(shape, call_turn="dropped")
    if ignores_empty_calls(source):
        return replace(shape, call_turn="empty")
    return shape


def tool_then_assistant(source: TemplateSource, shape: TemplateShape) -> str:
    """What the Jinja prints after a tool result that an assistant turn follows, beyond the
    tool turn's suffix and the assistant's opening ("" when nothing more, or unread).

    Read off one sentinel conversation (a call, its result, the answer, a user turn): the text
    between the result and the answer must be the tool suffix, then this, then the opening.
    """
    from .hf_render import render_hf

    if shape.tool_turn is None:
        return ""
    answer: dict[str, Any] = {"role": "assistant", "content": A1}
    conv = [*_conversations(_WITH_CALL)[0], answer, {"role": "user", "content": U2}]
    try:
        text = render_hf(
            source.template, conv, tokens=source.template_variables(), add_generation_prompt=False
        )
    except TemplateRenderError:
        return ""
    start, end = text.find(_RESULT), text.find(A1)
    if start < 0 or end < start:
        return ""
    between = text[start + len(_RESULT) : end]
    suffix, opening = shape.tool_turn[1], shape.assistant_prefix
    if not between.startswith(suffix) or not between.endswith(opening):
        return ""
    return between[len(suffix) : len(between) - len(opening)] if opening else between[len(suffix) :]


__all__ = ["drops_empty_calls", "ignores_empty_calls", "tool_then_assistant", "with_call_turns"]
