"""Ollama's ``toTypeScriptType``: which servers have it, and the type word it prints.

Templates that give tool definitions as a TypeScript-like namespace (gpt-oss's harmony
``type get_weather = (_: { city: string, }) => any;``) need a parameter's type as a
TypeScript word. Ollama's TEMPLATE functions gained ``toTypeScriptType`` in v0.11.3
(ollama/ollama ``template/template.go``, with gpt-oss); a TEMPLATE that calls it does not
even parse on an older server ("function not defined"), so a reading may use it only where
the target server has it. The word it prints is fixed by ``api.ToolProperty.ToTypeScriptType``:
``anyOf`` joined with `` | ``, else each JSON schema type mapped (integer -> ``number``,
array -> ``any[]`` whatever its items, object -> ``Record<string, any>``, unknown -> ``any``),
no type at all -> ``any``; enums, items and nullability are not looked at. A Jinja template
that prints richer types (``string[]``, ``"a" | "b"``) therefore differs for such parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_WORDS = {
    "string": "string",
    "number": "number",
    "integer": "number",
    "boolean": "boolean",
    "array": "any[]",
    "object": "Record<string, any>",
    "null": "null",
}


def has_typescript_function(version: str | None) -> bool:
    """Whether Ollama ``version`` gives TEMPLATEs ``toTypeScriptType`` (None: the newest does).

    >>> [has_typescript_function(v) for v in ("0.9.3", "0.11.2", "0.11.3", None)]
    [False, False, True, True]
    """
    if version is None:
        return True
    from ..ollama_route import FIELDS_SINCE, parse_server_version

    parsed = parse_server_version(version)[0]
    return parsed.newest or parsed.parts >= dict(FIELDS_SINCE)["toTypeScriptType"]


def typescript_type(prop: Mapping[str, Any]) -> str:
    """The word Ollama's ``toTypeScriptType`` prints for one tool parameter schema.

    >>> typescript_type({"type": "integer"}), typescript_type({"type": ["string", "null"]})
    ('number', 'string | null')
    >>> typescript_type({"type": "array", "items": {"type": "string"}}), typescript_type({})
    ('any[]', 'any')
    >>> typescript_type({"anyOf": [{"type": "string"}, {"type": "object"}]})
    'string | Record<string, any>'
    """
    any_of = prop.get("anyOf")
    if isinstance(any_of, list) and any_of:
        return " | ".join(typescript_type(p if isinstance(p, Mapping) else {}) for p in any_of)
    kind = prop.get("type")
    kinds = [kind] if isinstance(kind, str) else list(kind) if isinstance(kind, list) else []
    if not kinds:
        return "any"
    return " | ".join(_WORDS.get(k, "any") if isinstance(k, str) else "any" for k in kinds)


__all__ = ["has_typescript_function", "typescript_type"]
