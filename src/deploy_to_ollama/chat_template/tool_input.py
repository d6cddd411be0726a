"""Tool input that Ollama's API cannot carry: a precise reason instead of a difference.

A probe (ours or one a caller passes to ``verify_template``) may hold what no Ollama request
can: tool-call arguments given as a string that is not a JSON object (Ollama's ``/api/chat``
takes an object), or a tool definition with schema fields Ollama's ``api.Tool`` drops (a
non-object parameter schema, ``additionalProperties``, ``format`` ...: ollama/ollama
``api/types.go``: ``ToolFunctionParameters``, ``ToolProperty``). Such a probe is skipped with
the reason: it tests the input, not the TEMPLATE, and it is never counted as a match.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .probes import Probe

#: Schema fields Ollama keeps for a tool's parameters and for each property.
PARAMETER_FIELDS = frozenset({"type", "$defs", "items", "required", "properties"})
PROPERTY_FIELDS = frozenset(
    {"anyOf", "type", "items", "description", "enum", "properties", "required"}
)


def unsendable_arguments(probe: Probe) -> str | None:
    """Why a tool call of ``probe`` cannot be sent to Ollama (None when all can)."""
    for message in probe.messages:
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            arguments = function.get("arguments")
            name = function.get("name", "?")
            if isinstance(arguments, str):
                try:
                    arguments = json.loads(arguments) if arguments.strip() else {}
                except ValueError:
                    return (
                        f"tool call {name!r} has string arguments that are not JSON "
                        f"({arguments[:40]!r}); Ollama's API takes arguments as a JSON object, "
                        "so no request can carry this conversation"
                    )
            if arguments is not None and not isinstance(arguments, Mapping):
                return (
                    f"tool call {name!r} has arguments that are not a JSON object "
                    f"({type(arguments).__name__}); Ollama's API takes an object"
                )
    return None


def inexpressible_tool(probe: Probe) -> str | None:
    """Why a tool definition of ``probe`` reaches a TEMPLATE changed (None when none does)."""
    for tool in probe.tools:
        function = tool.get("function") or {}
        name = function.get("name", "?")
        params = function.get("parameters")
        if params is None:
            continue
        if not isinstance(params, Mapping) or params.get("type") != "object":
            kind = params.get("type") if isinstance(params, Mapping) else type(params).__name__
            return (
                f"tool {name!r} has a non-object parameter schema ({kind!r}); Ollama's API "
                "describes parameters as an object, so the TEMPLATE cannot print it as sent"
            )
        dropped = _dropped(params, PARAMETER_FIELDS)
        for key, prop in (params.get("properties") or {}).items():
            dropped += [f"{key}.{field}" for field in _dropped(prop, PROPERTY_FIELDS)]
        if dropped:
            return (
                f"tool {name!r} has schema fields Ollama's API drops ({', '.join(dropped[:4])}), "
                "so the TEMPLATE cannot print the definition as sent"
            )
    return None


def _dropped(schema: Any, kept: frozenset[str]) -> list[str]:
    if not isinstance(schema, Mapping):
        return []
    return [str(key) for key in schema if key not in kept]


__all__ = ["PARAMETER_FIELDS", "PROPERTY_FIELDS", "inexpressible_tool", "unsendable_arguments"]
