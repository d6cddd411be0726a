"""Recursive-descent parser for Go's text/template, following ``text/template/parse/parse.go``.

Produces the main tree plus the ``define``/``block`` trees, with Go's parse-time checks
(undefined variables and functions, ``break`` outside ``range``, empty pipelines).
"""

from __future__ import annotations

import re
from collections.abc import Collection

from deploy_to_ollama.chat_template.go_template import nodes as n
from deploy_to_ollama.chat_template.go_template.lexer import Lexer, Token
from deploy_to_ollama.chat_template.go_template.unquote import unquote_char, unquote_string
from deploy_to_ollama.errors import TemplateSyntaxError

MAX_PAREN_DEPTH = 10000
OVERFLOW = float("nan")
"""Placeholder value of an int literal that overflows int; executing it is an error."""
_OCTAL_INT = re.compile(r"[+-]?0[0-7_]+")
_NON_EXECUTABLE = (n.BoolNode, n.DotNode, n.NilNode, n.NumberNode, n.StringNode)


class _End(n.Node):
    """Marker returned by ``{{end}}`` while parsing a list."""


class _Else(n.Node):
    """Marker returned by ``{{else}}`` while parsing a list."""


def is_empty_tree(node: n.Node) -> bool:
    """Go's ``IsEmptyTree``: only whitespace text (and comments) inside."""
    if isinstance(node, n.ListNode):
        return all(is_empty_tree(child) for child in node.nodes)
    if isinstance(node, n.TextNode):
        return not node.text.strip(" \t\r\n")
    return isinstance(node, n.CommentNode)


class Parser:
    """Parses one template text into ``trees`` (name -> root list); ``""`` is the main tree."""

    def __init__(self, text: str, functions: Collection[str]) -> None:
        self.lexer = Lexer(text)
        self.tokens = self.lexer.lex()
        self.index = 0
        self.functions = functions
        self.vars: list[str] = ["$"]
        self.range_depth = 0
        self.paren_depth = 0
        self.trees: dict[str, n.ListNode] = {}

    # -- token helpers -------------------------------------------------------------------------

    def error(self, message: str, token: Token | None = None) -> TemplateSyntaxError:
        at = (
            token
            if token is not None
            else self.tokens[min(max(self.index - 1, 0), len(self.tokens) - 1)]
        )
        return self.lexer.error(message, at.pos)

    def next(self) -> Token:
        token = self.tokens[min(self.index, len(self.tokens) - 1)]
        self.index += 1
        return token

    def backup(self, count: int = 1) -> None:
        self.index -= count

    def peek(self) -> Token:
        return self.tokens[min(self.index, len(self.tokens) - 1)]

    def next_non_space(self) -> Token:
        token = self.next()
        while token.kind == "SPACE":
            token = self.next()
        return token

    def peek_non_space(self) -> Token:
        token = self.next_non_space()
        self.backup()
        return token

    def expect(self, kind: str, context: str) -> Token:
        token = self.next_non_space()
        if token.kind != kind:
            raise self.unexpected(token, context)
        return token

    def unexpected(self, token: Token, context: str) -> TemplateSyntaxError:
        if token.kind == "EOF":
            return self.error(f"unexpected EOF in {context}", token)
        shown = token.value if token.kind != "RIGHT" else "}}"
        return self.error(f"unexpected {shown!r} in {context}", token)

    # -- top level ------------------------------------------------------------------------------

    def parse(self) -> dict[str, n.ListNode]:
        root = n.ListNode(0)
        while self.peek().kind != "EOF":
            if self.peek().kind == "LEFT":
                start = self.index
                self.next()
                if self.next_non_space().kind == "define":
                    self._parse_definition()
                    continue
                self.index = start
            node = self._text_or_action()
            if isinstance(node, (_End, _Else)):
                word = "{{end}}" if isinstance(node, _End) else "{{else}}"
                raise self.error(f"unexpected {word}")
            root.nodes.append(node)
        self._add_tree("", root)
        return self.trees

    def _add_tree(self, name: str, root: n.ListNode) -> None:
        existing = self.trees.get(name)
        if existing is None or is_empty_tree(existing):
            self.trees[name] = root
        elif not is_empty_tree(root):
            raise self.error(f"template: multiple definition of template {name!r}")

    def _parse_definition(self) -> None:
        token = self.next_non_space()
        if token.kind not in ("STRING", "RAWSTRING"):
            raise self.unexpected(token, "define clause")
        name = self._unquote(token)
        self.expect("RIGHT", "define clause")
        saved = self.vars, self.range_depth
        self.vars, self.range_depth = ["$"], 0
        root, end = self._item_list()
        self.vars, self.range_depth = saved
        if not isinstance(end, _End):
            raise self.error("unexpected {{else}} in define clause")
        self._add_tree(name, root)

    def _item_list(self) -> tuple[n.ListNode, n.Node]:
        result = n.ListNode(self.peek_non_space().pos)
        while self.peek_non_space().kind != "EOF":
            node = self._text_or_action()
            if isinstance(node, (_End, _Else)):
                return result, node
            result.nodes.append(node)
        raise self.error("unexpected EOF")

    def _text_or_action(self) -> n.Node:
        token = self.next_non_space()
        if token.kind == "TEXT":
            return n.TextNode(token.pos, token.value)
        if token.kind == "LEFT":
            return self._action()
        raise self.unexpected(token, "input")

    def _action(self) -> n.Node:
        token = self.next_non_space()
        kind = token.kind
        if kind == "block":
            return self._block_control()
        if kind in ("break", "continue"):
            end = self.next_non_space()
            if end.kind != "RIGHT":
                raise self.unexpected(end, f"{{{{{kind}}}}}")
            if self.range_depth == 0:
                raise self.error(f"{{{{{kind}}}}} outside {{{{range}}}}", token)
            return n.BreakNode(token.pos) if kind == "break" else n.ContinueNode(token.pos)
        if kind == "else":
            peek = self.peek_non_space()
            if peek.kind in ("if", "with"):
                return _Else(peek.pos)
            self.expect("RIGHT", "else")
            return _Else(token.pos)
        if kind == "end":
            self.expect("RIGHT", "end")
            return _End(token.pos)
        if kind in ("if", "range", "with"):
            return self._control(kind, token)
        if kind == "template":
            return self._template_control()
        self.backup()
        start = self.peek()
        return n.ActionNode(start.pos, self._pipeline("command", "RIGHT"))

    def _control(self, context: str, token: Token) -> n.Node:
        saved_vars = len(self.vars)
        pipe = self._pipeline(context, "RIGHT")
        if context == "range":
            self.range_depth += 1
        body, nxt = self._item_list()
        if context == "range":
            self.range_depth -= 1
        else_list: n.ListNode | None = None
        if isinstance(nxt, _Else):
            following = self.peek()
            if context in ("if", "with") and following.kind == context:
                self.next()
                else_list = n.ListNode(nxt.pos, [self._control(context, following)])
            else:
                else_list, end = self._item_list()
                if not isinstance(end, _End):
                    raise self.error("expected end; found {{else}}")
        del self.vars[saved_vars:]
        cls = {"if": n.IfNode, "range": n.RangeNode, "with": n.WithNode}[context]
        return cls(token.pos, pipe, body, else_list)

    def _template_name(self, context: str) -> tuple[Token, str]:
        token = self.next_non_space()
        if token.kind not in ("STRING", "RAWSTRING"):
            raise self.unexpected(token, context)
        return token, self._unquote(token)

    def _template_control(self) -> n.Node:
        token, name = self._template_name("template clause")
        pipe: n.PipeNode | None = None
        if self.next_non_space().kind != "RIGHT":
            self.backup()
            pipe = self._pipeline("template clause", "RIGHT")
        return n.TemplateNode(token.pos, name, pipe)

    def _block_control(self) -> n.Node:
        token, name = self._template_name("block clause")
        pipe = self._pipeline("block clause", "RIGHT")
        saved = self.vars, self.range_depth
        self.vars, self.range_depth = ["$"], 0
        root, end = self._item_list()
        self.vars, self.range_depth = saved
        if not isinstance(end, _End):
            raise self.error("unexpected {{else}} in block clause")
        self._add_tree(name, root)
        return n.TemplateNode(token.pos, name, pipe)

    # -- pipelines ------------------------------------------------------------------------------

    def _pipeline(self, context: str, end: str) -> n.PipeNode:
        pipe = n.PipeNode(self.peek_non_space().pos)
        self._declarations(pipe, context)
        while True:
            token = self.next_non_space()
            if token.kind == end:
                self._check_pipeline(pipe, context)
                return pipe
            if token.kind in (
                "BOOL", "CHARCONST", "COMPLEX", "DOT", "FIELD", "IDENT", "NUMBER", "nil",
                "RAWSTRING", "STRING", "VARIABLE", "LPAREN",
            ):  # fmt: skip
                self.backup()
                pipe.cmds.append(self._command())
            else:
                raise self.unexpected(token, context)

    def _declarations(self, pipe: n.PipeNode, context: str) -> None:
        while self.peek_non_space().kind == "VARIABLE":
            start = self.index
            var = self.next_non_space()
            after = self.peek()
            following = self.peek_non_space()
            if following.kind in ("ASSIGN", "DECLARE"):
                pipe.is_assign = following.kind == "ASSIGN"
                self.next_non_space()
                pipe.decl.append(n.VariableNode(var.pos, [var.value]))
                self.vars.append(var.value)
                return
            if following.kind == "CHAR" and following.value == ",":
                self.next_non_space()
                pipe.decl.append(n.VariableNode(var.pos, [var.value]))
                self.vars.append(var.value)
                if context == "range" and len(pipe.decl) < 2:
                    if self.peek_non_space().kind in ("VARIABLE", "RIGHT", "RPAREN"):
                        continue
                    raise self.error("range can only initialize variables")
                raise self.error(f"too many declarations in {context}")
            del after
            self.index = start
            return

    def _check_pipeline(self, pipe: n.PipeNode, context: str) -> None:
        if not pipe.cmds:
            raise self.error(f"missing value for {context}")
        for stage, cmd in enumerate(pipe.cmds[1:], start=2):
            if isinstance(cmd.args[0], _NON_EXECUTABLE):
                raise self.error(f"non executable command in pipeline stage {stage}")

    def _command(self) -> n.CommandNode:
        cmd = n.CommandNode(self.peek_non_space().pos)
        while True:
            self.peek_non_space()
            operand = self._operand()
            if operand is not None:
                cmd.args.append(operand)
            token = self.next()
            if token.kind == "SPACE":
                continue
            if token.kind in ("RIGHT", "RPAREN"):
                self.backup()
            elif token.kind != "PIPE":
                raise self.unexpected(token, "operand")
            break
        if not cmd.args:
            raise self.error("empty command")
        return cmd

    def _operand(self) -> n.Node | None:
        node = self._term()
        if node is None or self.peek().kind != "FIELD":
            return node
        fields: list[str] = []
        while self.peek().kind == "FIELD":
            fields.append(self.next().value[1:])
        if isinstance(node, n.FieldNode):
            return n.FieldNode(node.pos, node.ident + fields)
        if isinstance(node, n.VariableNode):
            return n.VariableNode(node.pos, node.ident + fields)
        if isinstance(node, _NON_EXECUTABLE):
            raise self.error("unexpected . after term")
        return n.ChainNode(node.pos, node, fields)

    def _term(self) -> n.Node | None:
        token = self.next_non_space()
        kind = token.kind
        if kind == "IDENT":
            if token.value not in self.functions:
                raise self.error(f"function {token.value!r} not defined", token)
            return n.IdentifierNode(token.pos, token.value)
        if kind == "DOT":
            return n.DotNode(token.pos)
        if kind == "nil":
            return n.NilNode(token.pos)
        if kind == "VARIABLE":
            return self._use_var(token)
        if kind == "FIELD":
            return n.FieldNode(token.pos, token.value[1:].split("."))
        if kind == "BOOL":
            return n.BoolNode(token.pos, token.value == "true")
        if kind in ("CHARCONST", "COMPLEX", "NUMBER"):
            return self._number(token)
        if kind == "LPAREN":
            self.paren_depth += 1
            if self.paren_depth >= MAX_PAREN_DEPTH:
                raise self.error("max expression depth exceeded")
            pipe = self._pipeline("parenthesized pipeline", "RPAREN")
            self.paren_depth -= 1
            return pipe
        if kind in ("STRING", "RAWSTRING"):
            return n.StringNode(token.pos, token.value, self._unquote(token))
        self.backup()
        return None

    def _use_var(self, token: Token) -> n.VariableNode:
        parts = token.value.split(".")
        if parts[0] not in self.vars:
            raise self.error(f"undefined variable {parts[0]!r}", token)
        return n.VariableNode(token.pos, parts)

    def _unquote(self, token: Token) -> str:
        if token.kind == "RAWSTRING":
            return token.value[1:-1].replace("\r", "")
        try:
            return unquote_string(token.value[1:-1])
        except ValueError as err:
            raise self.error(f"{err}", token) from err

    def _number(self, token: Token) -> n.NumberNode:
        text = token.value
        try:
            if token.kind == "CHARCONST":
                return n.NumberNode(token.pos, text, unquote_char(text[1:-1]))
            if token.kind == "COMPLEX":
                raise ValueError("complex constants are not supported")
            return n.NumberNode(token.pos, text, _number_value(text))
        except IntOverflowError:
            # Go parses it (as uint64) and fails only when the literal is executed.
            return n.NumberNode(token.pos, text, OVERFLOW)
        except ValueError as err:
            raise self.error(f"illegal number syntax: {text!r}", token) from err


INT64_MIN, INT64_MAX, UINT64_MAX = -(1 << 63), (1 << 63) - 1, (1 << 64) - 1


class IntOverflowError(ValueError):
    """An integer literal that only fits uint64: Go fails when executing it, not when parsing."""


def _number_value(text: str) -> int | float:
    """The value Go's ``idealConstant`` gives a number literal (int unless it reads as a float)."""
    if "_" in text and ("__" in text or not _underscores_ok(text)):
        raise ValueError(text)
    clean = text.replace("_", "")
    body = clean.lstrip("+-")
    is_hex = body[:2].lower() == "0x"
    if body.endswith("i"):
        raise ValueError(text)
    if is_hex and "p" in body.lower():
        return float.fromhex(clean)
    if not is_hex and any(c in body for c in ".eE"):
        value = float(clean)
        if value in (float("inf"), float("-inf")):
            raise ValueError(text)
        return value
    value = int(clean, 8) if _OCTAL_INT.fullmatch(clean) else int(clean, 0)
    if INT64_MAX < value <= UINT64_MAX:
        raise IntOverflowError(text)
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"integer overflow: {text!r}")
    return value


def _underscores_ok(text: str) -> bool:
    """Go's ``underscoreOK``: each ``_`` sits between digits or right after a base prefix."""
    body = text.lstrip("+-")
    prefix = 2 if body[:2].lower() in ("0x", "0o", "0b") else (1 if body[:1] == "0" else 0)
    digits = "0123456789abcdefABCDEF" if body[:2].lower() == "0x" else "0123456789"
    for i, ch in enumerate(body):
        if ch != "_":
            continue
        before = body[i - 1] if i else ""
        after = body[i + 1] if i + 1 < len(body) else ""
        if not after or after not in digits:
            return False
        if not (0 < i == prefix or (before and before in digits)):
            return False
    return True


def parse_trees(text: str, functions: Collection[str]) -> dict[str, n.ListNode]:
    """Parse ``text`` into its named trees; ``""`` is the main template."""
    return Parser(text, functions).parse()
