"""The tool-call tag Ollama looks for in a model's output, read from the TEMPLATE.

Ollama does not ask the model how it calls tools: it takes the first text inside the TEMPLATE's
first ``{{ if .ToolCalls }}`` block, trims it and cuts it at ``{`` (ollama/ollama
``tools/template.go``: ``parseTag``, ``findToolCallNode``, ``findTextNode``). An empty tag makes
Ollama expect bare JSON. This module reproduces that rule so the translator can check the tag
equals what the fine-tune emits before a call.
"""

from __future__ import annotations

from collections.abc import Sequence

from .go_template import nodes, parse_template

__all__ = ["tool_call_tag"]


def tool_call_tag(template: str) -> str | None:
    """The tag Ollama's tool parser will look for; None when no ``if .ToolCalls`` block exists.

    >>> tool_call_tag("{{ if .ToolCalls }}<tool_call>\\n{{ range .ToolCalls }}{}{{ end }}{{ end }}")
    '<tool_call>'
    >>> tool_call_tag('{{ if .ToolCalls }}[TOOL_CALLS] [{"name": {{ end }}')
    '[TOOL_CALLS] ['
    >>> tool_call_tag("{{ .Content }}") is None
    True

    Raises:
        TemplateSyntaxError: the template does not parse.
    """
    block = _find_tool_calls(parse_template(template).root.nodes)
    if block is None:
        return None
    text = _first_text(block.list.nodes)
    if text is None:
        return ""
    return text.text.strip().replace("\r\n", "\n").split("{")[0]


def _mentions_tool_calls(node: nodes.IfNode) -> bool:
    return any(
        isinstance(arg, nodes.FieldNode) and "ToolCalls" in arg.ident
        for cmd in node.pipe.cmds
        for arg in cmd.args
    )


def _find_tool_calls(children: Sequence[nodes.Node]) -> nodes.IfNode | None:
    """Depth first through if/range/with bodies (and else branches), like ``findToolCallNode``."""
    for node in children:
        if isinstance(node, nodes.IfNode) and _mentions_tool_calls(node):
            return node
        if isinstance(node, nodes.ListNode):
            lists = [node]
        elif isinstance(node, nodes.BranchNode):
            lists = [node.list, *([node.else_list] if node.else_list is not None else [])]
        else:
            continue
        for body in lists:
            found = _find_tool_calls(body.nodes)
            if found is not None:
                return found
    return None


def _first_text(children: Sequence[nodes.Node]) -> nodes.TextNode | None:
    """The first text before any action, like ``findTextNode``: an if/range/with body is
    searched (then its else branch) and ends the search either way."""
    for node in children:
        if isinstance(node, nodes.TextNode):
            return node
        if isinstance(node, nodes.ListNode):
            found = _first_text(node.nodes)
            if found is not None:
                return found
        elif isinstance(node, nodes.BranchNode):
            found = _first_text(node.list.nodes)
            if found is None and node.else_list is not None:
                found = _first_text(node.else_list.nodes)
            return found
        elif isinstance(node, nodes.ActionNode):
            return None
    return None
