"""Tool-call arguments the Jinja template prints as the text a client sent.

DeepSeek R1-like templates paste ``tool['function']['arguments']`` onto strings with ``+``:
they raise on an arguments object (transformers' and Ollama's form) and print a JSON text
verbatim (the OpenAI form, which Ollama's ``/v1`` endpoint parses into the object its TEMPLATE
gets). Where the renders show exactly that, the reference side renders tool calls with their
arguments as JSON text and marks that text as a JSON value, so the comparison is the
``json_equivalent`` tier: Ollama prints the object as Go's compact JSON (``json``), the text
a client sends has any layout, and only the value can be the same on both sides.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import TemplateRenderError
from .final_user import view_off

#: The reason a probe compared this way carries (it says what the claim holds for).
TEXT_ARGUMENTS = (
    "the Jinja template pastes tool-call arguments as text (it raises on an arguments "
    "object): compared with the arguments sent as JSON text, by JSON value (Ollama prints "
    "the object as Go's compact JSON)"
)


def as_text(messages: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """``messages`` with every tool call's arguments object replaced by its JSON text
    (Python's default layout, as ``json.dumps`` gives it), and those texts in order.

    >>> as_text([{"role": "assistant", "tool_calls": [
    ...     {"function": {"name": "f", "arguments": {"a": 1}}}]}])[1]
    ['{"a": 1}']
    """
    texts: list[str] = []
    out: list[dict[str, Any]] = []
    for message in messages:
        calls = message.get("tool_calls")
        if not calls:
            out.append(dict(message))
            continue
        changed = []
        for call in calls:
            function = dict(call.get("function") or {})
            if isinstance(function.get("arguments"), Mapping):
                text = json.dumps(function["arguments"], ensure_ascii=False)
                texts.append(text)
                function["arguments"] = text
            changed.append({**call, "function": function})
        out.append({**message, "tool_calls": changed})
    return out, texts


def has_object_arguments(messages: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a tool call in ``messages`` carries its arguments as an object."""
    return any(
        isinstance((call.get("function") or {}).get("arguments"), Mapping)
        for message in messages
        for call in message.get("tool_calls") or ()
    )


def takes_text_arguments(template: str, tokens: Mapping[str, str]) -> bool:
    """Whether the Jinja template raises on an arguments object and prints the same
    arguments given as JSON text verbatim (a sentinel call, rendered both ways)."""
    return _takes_text(template, tuple(sorted(tokens.items())))


_ARGUMENTS = {"zqtextkey": "Zqtextval"}


@functools.lru_cache(maxsize=1024)
def _takes_text(template: str, tokens: tuple[tuple[str, str], ...]) -> bool:
    from .hf_render import render_hf

    def conversation(arguments: Any) -> list[dict[str, Any]]:
        function = {"name": "Zqtextname", "arguments": arguments}
        call = {"id": "Zqtextid1", "type": "function", "function": function}
        return [
            {"role": "user", "content": "Zqtextuser"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            # A result names its tool, as clients send it (Functionary v2.2 prints the name).
            {
                "role": "tool",
                "tool_call_id": "Zqtextid1",
                "name": "Zqtextname",
                "content": "Zqtextresult",
            },
        ]

    text = json.dumps(_ARGUMENTS)
    with view_off():  # cached: a fact about the template, not about a view of it
        try:
            render_hf(template, conversation(_ARGUMENTS), tokens=dict(tokens))
        except TemplateRenderError:
            pass
        else:
            return False  # the object renders: nothing to read as text
        try:
            rendered = render_hf(template, conversation(text), tokens=dict(tokens))
        except TemplateRenderError:
            return False
    return text in rendered


def render_text_arguments(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    mark_json: bool = False,
    **kwargs: Any,
) -> str:
    """``render_hf`` of ``messages`` with their arguments as JSON text; with ``mark_json``,
    each argument text is marked as a JSON value beside the ``tojson`` output.

    Raises:
        TemplateRenderError: the template raises on this conversation too.
    """
    from .hf_render import JSON_OPEN, mark_json_values, render_hf, split_marked

    converted, texts = as_text(messages)
    rendered = render_hf(template, converted, mark_json=mark_json, **kwargs)
    if not mark_json:
        return rendered
    marked = mark_json_values(rendered, texts)
    added = marked.count(JSON_OPEN) - rendered.count(JSON_OPEN)
    if split_marked(marked) is None or added != len(texts):
        raise TemplateRenderError(
            "an argument text is not printed as one JSON value",
            hint="JSON tiers are unavailable for this conversation",
        )
    return marked


def sent_as_text(
    template: str, messages: Sequence[Mapping[str, Any]], tokens: Mapping[str, str]
) -> bool:
    """Whether the reference of ``messages`` has its tool-call arguments sent as JSON text."""
    return has_object_arguments(messages) and takes_text_arguments(template, tokens)


def text_reference(
    template: str, messages: Sequence[Mapping[str, Any]], **kwargs: Any
) -> str | None:
    """The rendering with the arguments sent as JSON text (``render_hf``'s keywords, with
    ``tokens``), where the Jinja template takes them only so; None elsewhere or where that
    raises too."""
    if not sent_as_text(template, messages, kwargs.get("tokens") or {}):
        return None
    try:
        return render_text_arguments(template, messages, **kwargs)
    except TemplateRenderError:
        return None


__all__ = [
    "TEXT_ARGUMENTS",
    "as_text",
    "has_object_arguments",
    "render_text_arguments",
    "sent_as_text",
    "takes_text_arguments",
    "text_reference",
]
