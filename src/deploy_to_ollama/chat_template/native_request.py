"""The chat body Ollama 0.30+ sends llama-server for a conversation (its *native* path).

The native proof must render what the user's server really sends, not the conversation as a
client wrote it. Ollama 0.33 (ollama/ollama ``llm/llama_server.go``: ``llamaServerChatRequest``,
``llamaServerChatMessage``, ``llamaServerChatToolCalls``, ``llamaServerChatTemplateKwargs``)
sends, per message, the role, the content as a string, ``tool_call_id``, ``name`` (a tool
result's tool name) and ``tool_calls`` (id, index, type ``function``, the function's name and
its arguments object as Go's ``json.Marshal`` text, keys in request order). A message's
thinking is **not** sent, so llama.cpp's engine never sees earlier reasoning. Tools go as
``api.Tool`` marshals them (Go's field order, empty optional fields left out, unknown schema
fields dropped), and ``think`` only as ``chat_template_kwargs`` ``{"enable_thinking": ...}``
whatever switch the Jinja reads; nothing when the request leaves ``think`` unset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .go_template.values import go_json, json_string
from .ollama_prompt import OllamaMessage, to_ollama_messages

#: The key Ollama passes a request's ``think`` under (``llamaServerChatTemplateKwargs``).
THINK_KWARG = "enable_thinking"

__all__ = ["THINK_KWARG", "native_body", "native_messages", "native_tools"]


def native_body(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None,
    *,
    think: bool | str | None,
) -> dict[str, Any]:
    """The ``/apply-template`` (and chat) body Ollama 0.30+ sends for this request; a
    thinking level goes as ``enable_thinking`` (on for high/medium/low/max, as
    ``ThinkValue.Bool``) plus ``reasoning_effort``.

    >>> native_body([{"role": "user", "content": "hi"}], None, think=False)["chat_template_kwargs"]
    {'enable_thinking': False}
    >>> native_body([], None, think="high")["chat_template_kwargs"]
    {'enable_thinking': True, 'reasoning_effort': 'high'}
    """
    body: dict[str, Any] = {"messages": native_messages(messages)}
    if tools:
        body["tools"] = native_tools(tools)
    if isinstance(think, str):
        on = think in ("high", "medium", "low", "max")
        kwargs: dict[str, Any] = {THINK_KWARG: on}
        if think:
            kwargs["reasoning_effort"] = think
        body["chat_template_kwargs"] = kwargs
    elif think is not None:
        body["chat_template_kwargs"] = {THINK_KWARG: bool(think)}
    return body


def native_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each message as ``llamaServerChatMessage`` writes it (no thinking).

    >>> native_messages([{"role": "assistant", "content": None, "reasoning_content": "r"}])
    [{'role': 'assistant', 'content': ''}]
    """
    return [_message(m) for m in to_ollama_messages([dict(m) for m in messages])]


def _message(message: OllamaMessage) -> dict[str, Any]:
    converted: dict[str, Any] = {"role": message.role}
    if message.tool_call_id:
        converted["tool_call_id"] = message.tool_call_id
    if message.tool_name:
        converted["name"] = message.tool_name
    if message.tool_calls:
        converted["tool_calls"] = [_tool_call(call) for call in message.tool_calls]
    converted["content"] = message.content
    return converted


def _tool_call(call: Mapping[str, Any]) -> dict[str, Any]:
    call_json: dict[str, Any] = {}
    if call.get("id"):
        call_json["id"] = call["id"]
    call_json["index"] = call.get("index", 0)
    call_json["type"] = "function"
    arguments = call.get("arguments") or {}
    call_json["function"] = {"name": call.get("name", ""), "arguments": _arguments(arguments)}
    return call_json


def _arguments(arguments: Mapping[str, Any]) -> str:
    """``ToolCallFunctionArguments``: an insertion-ordered map; nested objects are Go maps
    (sorted keys), strings HTML-escaped, as ``json.Marshal`` writes them."""
    pairs = (f"{json_string(str(key))}:{go_json(value)}" for key, value in arguments.items())
    return "{" + ",".join(pairs) + "}"


def native_tools(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each tool as ``api.Tool`` marshals it.

    >>> props = {"x": {"description": "d", "type": "string", "format": "uri"}}
    >>> tool = native_tools([{"function": {"name": "f", "parameters": {"properties": props}}}])
    >>> tool[0]["function"]["parameters"]["properties"]
    {'x': {'type': 'string', 'description': 'd'}}
    """
    return [_tool(tool) for tool in tools]


def _tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": str(tool.get("type") or "")}
    if tool.get("items"):
        out["items"] = _go_any(tool["items"])
    function = tool.get("function") or {}
    fn: dict[str, Any] = {"name": str(function.get("name") or "")}
    if function.get("description"):
        fn["description"] = str(function["description"])
    fn["parameters"] = _parameters(function.get("parameters") or {})
    out["function"] = fn
    return out


def _parameters(params: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": str(params.get("type") or "")}
    for key in ("$defs", "items"):
        if params.get(key):
            out[key] = _go_any(params[key])
    if params.get("required"):
        out["required"] = list(params["required"])
    props = params.get("properties")
    out["properties"] = _properties(props) if isinstance(props, Mapping) else None
    return out


def _properties(props: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k): _property(v if isinstance(v, Mapping) else {}) for k, v in props.items()}


def _property(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``api.ToolProperty``: anyOf, type (one type as a string), items, description, enum,
    properties, required; each left out when empty."""
    out: dict[str, Any] = {}
    any_of = schema.get("anyOf")
    if isinstance(any_of, list) and any_of:
        out["anyOf"] = [_property(s if isinstance(s, Mapping) else {}) for s in any_of]
    kind = schema.get("type")
    types = [kind] if isinstance(kind, str) else list(kind) if isinstance(kind, list) else []
    if types:
        out["type"] = types[0] if len(types) == 1 else types
    if schema.get("items"):
        out["items"] = _go_any(schema["items"])
    if schema.get("description"):
        out["description"] = str(schema["description"])
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        out["enum"] = _go_any(schema["enum"])
    props = schema.get("properties")
    if isinstance(props, Mapping) and props:
        out["properties"] = _properties(props)
    if isinstance(schema.get("required"), list) and schema["required"]:
        out["required"] = list(schema["required"])
    return out


def _go_any(value: Any) -> Any:
    """A field typed ``any``: decoded into Go maps, so objects come back with sorted keys."""
    if isinstance(value, Mapping):
        return {k: _go_any(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_go_any(v) for v in value]
    return value
