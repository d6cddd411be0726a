"""Parse-tree nodes of Go's text/template, mirroring the shapes of Go's ``text/template/parse``.

Only what execution and Ollama's tree walks (``Identifiers``, ``deleteNode``) need is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Node:
    """Base of every node; ``pos`` is the byte offset used in error messages."""

    pos: int


@dataclass(slots=True)
class TextNode(Node):
    text: str


@dataclass(slots=True)
class ListNode(Node):
    nodes: list[Node] = field(default_factory=list)


@dataclass(slots=True)
class DotNode(Node):
    pass


@dataclass(slots=True)
class NilNode(Node):
    pass


@dataclass(slots=True)
class BoolNode(Node):
    value: bool


@dataclass(slots=True)
class NumberNode(Node):
    text: str
    value: int | float
    """Go's ideal-constant choice: float when the text has ``.eEpP`` (not hex), else int."""


@dataclass(slots=True)
class StringNode(Node):
    quoted: str
    value: str


@dataclass(slots=True)
class FieldNode(Node):
    ident: list[str]


@dataclass(slots=True)
class VariableNode(Node):
    ident: list[str]
    """``["$x", "Field", ...]``; the first element is the variable name with its ``$``."""


@dataclass(slots=True)
class IdentifierNode(Node):
    name: str


@dataclass(slots=True)
class ChainNode(Node):
    node: Node
    fields: list[str]


@dataclass(slots=True)
class CommandNode(Node):
    args: list[Node] = field(default_factory=list)


@dataclass(slots=True)
class PipeNode(Node):
    decl: list[VariableNode] = field(default_factory=list)
    is_assign: bool = False
    cmds: list[CommandNode] = field(default_factory=list)


@dataclass(slots=True)
class ActionNode(Node):
    pipe: PipeNode


@dataclass(slots=True)
class BranchNode(Node):
    """Shared shape of ``if``, ``range`` and ``with``."""

    pipe: PipeNode
    list: ListNode
    else_list: ListNode | None


@dataclass(slots=True)
class IfNode(BranchNode):
    pass


@dataclass(slots=True)
class RangeNode(BranchNode):
    pass


@dataclass(slots=True)
class WithNode(BranchNode):
    pass


@dataclass(slots=True)
class TemplateNode(Node):
    name: str
    pipe: PipeNode | None


@dataclass(slots=True)
class BreakNode(Node):
    pass


@dataclass(slots=True)
class ContinueNode(Node):
    pass


@dataclass(slots=True)
class CommentNode(Node):
    text: str
