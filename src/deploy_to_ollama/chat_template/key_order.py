"""Tell a key-order difference apart from a real one: Ollama's maps reach a TEMPLATE sorted.

Ollama hands a TEMPLATE a tool call's arguments and a tool's parameter properties as Go maps
(ollama/ollama ``template/template.go``: ``templateArgs``, ``templateProperties``; current
releases keep request order in the API and convert with ``ToMap`` for templates), and Go's
``range`` walks a map in sorted key order. A Jinja template that prints arguments one by one
prints them in request order. No TEMPLATE can reproduce that, so a probe whose only
difference is this order is skipped with that reason: never a match, never a silent pass.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .probes import Probe
from .source import TemplateSource

#: The skip reason (an Ollama limit, like consecutive messages of one role).
KEY_ORDER = (
    "Ollama limit: Ollama hands a TEMPLATE tool-call arguments and tool parameters as Go maps, "
    "which range walks in sorted key order, while the Jinja template prints them in request "
    "order; this probe renders the same once its keys are sorted"
)


def _sorted_dict(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: value[key] for key in sorted(value)}
    return value


def _sorted_call(call: dict[str, Any]) -> dict[str, Any]:
    function = dict(call.get("function") or {})
    if isinstance(function.get("arguments"), dict):
        function["arguments"] = _sorted_dict(function["arguments"])
    return {**call, "function": function}


def _sorted_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = dict(tool.get("function") or {})
    params = function.get("parameters")
    if isinstance(params, dict) and isinstance(params.get("properties"), dict):
        function["parameters"] = {**params, "properties": _sorted_dict(params["properties"])}
    return {**tool, "function": function}


def sorted_probe(probe: Probe) -> Probe | None:
    """``probe`` with argument and property keys in sorted order; None when already so."""
    messages = tuple(
        {**m, "tool_calls": [_sorted_call(c) for c in m["tool_calls"]]}
        if m.get("tool_calls")
        else m
        for m in probe.messages
    )
    tools = tuple(_sorted_tool(t) for t in probe.tools)
    changed = replace(probe, messages=messages, tools=tools)
    same = [list(map(_keys, probe.messages)), list(map(_keys, probe.tools))]
    if same == [list(map(_keys, messages)), list(map(_keys, tools))]:
        return None
    return changed


def _keys(item: dict[str, Any]) -> list[list[str]]:
    """The key orders that sorting may change, for comparison."""
    found = []
    for call in item.get("tool_calls") or ():
        arguments = (call.get("function") or {}).get("arguments")
        if isinstance(arguments, dict):
            found.append(list(arguments))
    params = (item.get("function") or {}).get("parameters")
    if isinstance(params, dict) and isinstance(params.get("properties"), dict):
        found.append(list(params["properties"]))
    return found


def key_order_only(source: TemplateSource, probe: Probe, actual: str) -> bool:
    """Whether the Jinja template, given ``probe`` with its keys sorted, renders what Ollama
    rendered (``actual``, BOS allowance applied), exactly or json_equivalent."""
    from ..errors import TemplateRenderError
    from .hf_render import render_hf
    from .prompt_diff import strip_bos
    from .verify import json_equivalent

    ordered = sorted_probe(probe)
    if ordered is None or not probe.needs_tools:
        return False
    try:
        expected = render_hf(
            source.template,
            list(ordered.messages),
            tokens=source.template_variables(),
            tools=list(ordered.tools) or None,
            kwargs=ordered.template_kwargs,
        )
    except TemplateRenderError:
        return False
    exp, act = strip_bos(expected, actual, source.bos_token)
    return exp == act or json_equivalent(source, ordered, expected, act)


__all__ = ["KEY_ORDER", "key_order_only", "sorted_probe"]
