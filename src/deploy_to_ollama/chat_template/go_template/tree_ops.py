"""Ollama's walks over a parsed template: ``Identifiers`` (for ``Vars``) and ``deleteNode``.

Both mirror ollama/ollama ``template/template.go``: which nodes they visit decides which
templates Ollama treats as ``.Messages`` templates and what the legacy last turn renders.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from deploy_to_ollama.chat_template.go_template import nodes as n


class TreeWalkError(Exception):
    """Ollama's walk fails (undefined template pipe) or would panic (cut inside an else)."""


def identifiers(node: n.Node | None) -> list[str]:
    """Ollama's ``Identifiers``: field and variable names, skipping chains like Go's walk does."""
    if isinstance(node, n.ListNode):
        return [name for child in node.nodes for name in identifiers(child)]
    if isinstance(node, n.TemplateNode):
        if node.pipe is None:
            raise TreeWalkError("undefined template specified")
        return identifiers(node.pipe)
    if isinstance(node, n.ActionNode):
        return identifiers(node.pipe)
    if isinstance(node, n.BranchNode):
        names = identifiers(node.pipe) + identifiers(node.list)
        if node.else_list is not None:
            names += identifiers(node.else_list)
        return names
    if isinstance(node, n.PipeNode):
        return [name for cmd in node.cmds for arg in cmd.args for name in identifiers(arg)]
    if isinstance(node, (n.FieldNode, n.VariableNode)):
        return list(node.ident)
    return []


def cut_after_response(root: n.ListNode) -> n.ListNode:
    """Ollama's legacy last-turn tree: a copy of ``root`` with everything after the first
    ``.Response`` field removed (``deleteNode``), including its quirks."""
    state = {"cut": False}

    def matches(node: n.Node) -> bool:
        if isinstance(node, n.FieldNode) and "Response" in node.ident:
            state["cut"] = True
            return False
        return state["cut"]

    result = _delete(copy.deepcopy(root), matches)
    assert isinstance(result, n.ListNode)
    return result


def _delete(node: n.Node, matches: Callable[[n.Node], bool]) -> n.Node | None:
    if matches(node):
        return None
    if isinstance(node, n.ListNode):
        node.nodes = [kept for child in node.nodes if (kept := _delete(child, matches)) is not None]
        return node
    if isinstance(node, n.BranchNode):
        # Go walks the branch node itself first, then List and ElseList (never the pipe).
        if matches(node):
            raise TreeWalkError("deleteNode: nil branch")
        body = _delete(node.list, matches)
        if body is None:
            raise TreeWalkError("deleteNode: list removed inside a branch (Ollama panics)")
        node.list = body  # type: ignore[assignment]
        if node.else_list is not None:
            other = _delete(node.else_list, matches)
            if other is None:
                raise TreeWalkError("deleteNode: else removed inside a branch (Ollama panics)")
            node.else_list = other  # type: ignore[assignment]
        return node
    if isinstance(node, n.ActionNode):
        pipe = _delete(node.pipe, matches)
        if pipe is None:
            return None
        return node
    if isinstance(node, n.PipeNode):
        for cmd in node.cmds:
            cmd.args = [kept for arg in cmd.args if (kept := _delete(arg, matches)) is not None]
            if not cmd.args:
                return None
        return node
    return node
