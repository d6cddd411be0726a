"""Executes parsed Go templates with ``text/template``'s semantics (``exec.go``).

Covers pipelines with Go's interface unwrapping, variables and scopes, ``if``/``with``/``range``
(``else``, ``break``, ``continue``), ``template`` calls, field and method access on the value
model of ``values``, and the ``missingkey`` option (Ollama uses ``zero``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from deploy_to_ollama.chat_template.go_template import nodes as n
from deploy_to_ollama.chat_template.go_template.builtins import (
    FUNCS,
    FuncError,
    FuncSpec,
    indirect_interface,
)
from deploy_to_ollama.chat_template.go_template.values import (
    NO_VALUE,
    GoMap,
    GoValue,
    format_v,
    go_type_name,
    is_true,
)

MAX_TEMPLATE_DEPTH = 200
_MISSING = object()
"""Go's ``missingVal``: no value is being piped into the command."""


class ExecError(Exception):
    """Template execution failed the way Go's ``Execute`` returns an error."""


class _BreakError(Exception):
    pass


class _ContinueError(Exception):
    pass


class Executor:
    """One ``Execute`` call: output buffer, variable stack and options."""

    def __init__(
        self,
        trees: Mapping[str, n.ListNode],
        funcs: Mapping[str, FuncSpec],
        *,
        missing_key_zero: bool = True,
    ) -> None:
        self.trees = trees
        self.funcs = funcs
        self.missing_key_zero = missing_key_zero
        self.out: list[str] = []
        self.vars: list[list[Any]] = []
        self.depth = 0
        # Go's slice builtin does not unwrap interface-typed indexes (unlike index), so we track
        # whether the last field access and the current dot produced interface values.
        self.last_field_iface = False
        self.dot_iface = False

    def run(self, root: n.ListNode, data: Any) -> str:
        self.vars = [["$", data, False]]
        try:
            self.walk(data, root)
        except (_BreakError, _ContinueError) as err:  # pragma: no cover - parser forbids it
            raise ExecError("break/continue outside range") from err
        except RecursionError as err:
            raise ExecError("template recursion too deep") from err
        return "".join(self.out)

    # -- variables ------------------------------------------------------------------------------

    def var_value(self, name: str) -> Any:
        for entry in reversed(self.vars):
            if entry[0] == name:
                return entry[1]
        raise ExecError(f"undefined variable: {name}")

    def var_is_iface(self, name: str) -> bool:
        for entry in reversed(self.vars):
            if entry[0] == name:
                return bool(entry[2])
        return False

    def set_var(self, name: str, value: Any, *, iface: bool = False) -> None:
        for entry in reversed(self.vars):
            if entry[0] == name:
                entry[1] = value
                entry[2] = iface
                return
        raise ExecError(f"undefined variable: {name}")

    # -- walking --------------------------------------------------------------------------------

    def walk(self, dot: Any, node: n.Node) -> None:
        if isinstance(node, n.TextNode):
            self.out.append(node.text)
        elif isinstance(node, n.ListNode):
            for child in node.nodes:
                self.walk(dot, child)
        elif isinstance(node, n.ActionNode):
            value = self.eval_pipeline(dot, node.pipe)
            if not node.pipe.decl:
                self.out.append(printable(value))
        elif isinstance(node, n.RangeNode):
            self.walk_range(dot, node)
        elif isinstance(node, (n.IfNode, n.WithNode)):
            self.walk_if_or_with(dot, node)
        elif isinstance(node, n.TemplateNode):
            self.walk_template(dot, node)
        elif isinstance(node, n.BreakNode):
            raise _BreakError
        elif isinstance(node, n.ContinueNode):
            raise _ContinueError
        elif not isinstance(node, n.CommentNode):
            raise ExecError(f"unknown node: {node!r}")

    def walk_if_or_with(self, dot: Any, node: n.BranchNode) -> None:
        mark = len(self.vars)
        value = self.eval_pipeline(dot, node.pipe)
        if is_true(indirect_interface(value)):
            if isinstance(node, n.WithNode):
                saved_iface, self.dot_iface = self.dot_iface, False
                self.walk(value, node.list)
                self.dot_iface = saved_iface
            else:
                self.walk(dot, node.list)
        elif node.else_list is not None:
            self.walk(dot, node.else_list)
        del self.vars[mark:]

    def walk_range(self, dot: Any, node: n.RangeNode) -> None:
        outer = len(self.vars)
        value = self.eval_pipeline(dot, node.pipe)
        mark = len(self.vars)
        try:
            ran = False
            saved_iface = self.dot_iface
            self.dot_iface = isinstance(value, (list, dict)) or (
                isinstance(value, GoMap) and value.elem_is_interface
            )
            for key, elem in self._range_items(value, node):
                ran = True
                self._range_vars(node.pipe, key, elem)
                try:
                    self.walk(elem, node.list)
                except _ContinueError:
                    pass
                finally:
                    del self.vars[mark:]
            self.dot_iface = saved_iface
            if not ran and node.else_list is not None:
                self.walk(dot, node.else_list)
        except _BreakError:
            pass
        finally:
            del self.vars[outer:]

    def _range_items(self, value: Any, node: n.RangeNode) -> list[tuple[Any, Any]]:
        if isinstance(value, list) or (isinstance(value, GoValue) and value.kind == "slice"):
            items = value if isinstance(value, list) else value.items()
            return list(enumerate(items))
        if isinstance(value, dict) or (isinstance(value, GoValue) and value.kind == "map"):
            mapping = value if isinstance(value, dict) else value.mapping()
            return [(key, mapping[key]) for key in sorted(mapping)]
        if value is NO_VALUE:
            return []
        if isinstance(value, int) and not isinstance(value, bool):
            if len(node.pipe.decl) > 1:
                raise ExecError(f"can't use {value} to iterate over more than one variable")
            return [(i, i) for i in range(value)]
        raise ExecError(f"range can't iterate over {format_v(value)}")

    def _range_vars(self, pipe: n.PipeNode, key: Any, elem: Any) -> None:
        decl = pipe.decl
        if not decl:
            return
        elem_iface = self.dot_iface
        if pipe.is_assign:
            if len(decl) > 1:
                self.set_var(decl[0].ident[0], key)
                self.set_var(decl[1].ident[0], elem, iface=elem_iface)
            else:
                self.set_var(decl[0].ident[0], elem, iface=elem_iface)
            return
        self.vars[-1][1:] = [elem, elem_iface]
        if len(decl) > 1:
            self.vars[-2][1:] = [key, False]

    def walk_template(self, dot: Any, node: n.TemplateNode) -> None:
        tree = self.trees.get(node.name)
        if tree is None:
            raise ExecError(f'no such template "{node.name}"')
        if self.depth >= MAX_TEMPLATE_DEPTH:
            raise ExecError(f"exceeded maximum template depth ({MAX_TEMPLATE_DEPTH})")
        new_dot = self.eval_pipeline(dot, node.pipe) if node.pipe is not None else NO_VALUE
        saved = self.vars, self.dot_iface
        self.vars, self.dot_iface = [["$", new_dot, False]], False
        self.depth += 1
        try:
            self.walk(new_dot, tree)
        finally:
            self.depth -= 1
            self.vars, self.dot_iface = saved

    # -- pipelines and commands -----------------------------------------------------------------

    def eval_pipeline(self, dot: Any, pipe: n.PipeNode) -> Any:
        value: Any = _MISSING
        for cmd in pipe.cmds:
            value = self.eval_command(dot, cmd, value)
            if value is None:
                # Go digs the value out of an empty interface; a nil one becomes invalid.
                value = NO_VALUE
        for var in pipe.decl:
            if pipe.is_assign:
                self.set_var(var.ident[0], value)
            else:
                self.vars.append([var.ident[0], value, False])
        return value

    def eval_command(self, dot: Any, cmd: n.CommandNode, final: Any) -> Any:
        first = cmd.args[0]
        if isinstance(first, n.FieldNode):
            return self.eval_field_chain(dot, dot, first.ident, cmd.args, final)
        if isinstance(first, n.ChainNode):
            return self.eval_chain(dot, first, cmd.args, final)
        if isinstance(first, n.IdentifierNode):
            return self.eval_function(dot, first.name, cmd.args, final)
        if isinstance(first, n.VariableNode):
            return self.eval_variable(dot, first, cmd.args, final)
        self._not_a_function(cmd.args, final)
        if isinstance(first, n.PipeNode):
            return self.eval_pipeline(dot, first)
        if isinstance(first, n.BoolNode):
            return first.value
        if isinstance(first, n.DotNode):
            return dot
        if isinstance(first, n.NilNode):
            raise ExecError("nil is not a command")
        if isinstance(first, n.NumberNode):
            return _number(first)
        if isinstance(first, n.StringNode):
            return first.value
        raise ExecError(f"can't evaluate command {first!r}")

    @staticmethod
    def _not_a_function(args: list[n.Node], final: Any) -> None:
        if len(args) > 1 or final is not _MISSING:
            raise ExecError(f"can't give argument to non-function {args[0]!r}")

    def eval_chain(
        self, dot: Any, chain: n.ChainNode, args: list[n.Node] | None, final: Any
    ) -> Any:
        if isinstance(chain.node, n.NilNode):
            raise ExecError("indirection through explicit nil")
        receiver = self.eval_arg(dot, "untyped", chain.node)
        return self.eval_field_chain(dot, receiver, chain.fields, args, final)

    def eval_variable(
        self, dot: Any, var: n.VariableNode, args: list[n.Node] | None, final: Any
    ) -> Any:
        value = self.var_value(var.ident[0])
        if len(var.ident) == 1:
            self._not_a_function(args or [var], final)
            return value
        return self.eval_field_chain(dot, value, var.ident[1:], args, final)

    def eval_field_chain(
        self, dot: Any, receiver: Any, ident: list[str], args: list[n.Node] | None, final: Any
    ) -> Any:
        for name in ident[:-1]:
            receiver = self.eval_field(dot, name, None, _MISSING, receiver)
        return self.eval_field(dot, ident[-1], args, final, receiver)

    def eval_field(
        self, dot: Any, name: str, args: list[n.Node] | None, final: Any, receiver: Any
    ) -> Any:
        self.last_field_iface = False
        if receiver is NO_VALUE:
            return NO_VALUE
        if receiver is None:
            raise ExecError(f"nil pointer evaluating interface {{}}.{name}")
        if isinstance(receiver, GoValue):
            method = receiver.method(name)
            if method is not None:
                spec = FuncSpec(method, ())
                return self.eval_call(dot, spec, name, args, final)
        has_args = (args is not None and len(args) > 1) or final is not _MISSING
        if isinstance(receiver, GoValue) and receiver.kind in ("struct", "ptr"):
            if receiver.is_nil:
                raise ExecError(f"nil pointer evaluating {receiver.go_type}.{name}")
            try:
                value = receiver.get_field(name)
            except KeyError:
                pass
            else:
                if has_args:
                    raise ExecError(f"{name} has arguments but cannot be invoked as function")
                return value
        mapping = receiver if isinstance(receiver, dict) else None
        if isinstance(receiver, GoValue) and receiver.kind == "map":
            mapping = receiver.mapping()
        if mapping is not None:
            if has_args:
                raise ExecError(f"{name} is not a method but has arguments")
            self.last_field_iface = not isinstance(receiver, GoMap) or receiver.elem_is_interface
            if name in mapping:
                return mapping[name]
            if not self.missing_key_zero:
                return NO_VALUE
            return receiver.zero_value() if isinstance(receiver, GoValue) else None
        raise ExecError(f"can't evaluate field {name} in type {go_type_name(receiver)}")

    def eval_function(self, dot: Any, name: str, args: list[n.Node] | None, final: Any) -> Any:
        spec = self.funcs.get(name)
        if spec is None:
            raise ExecError(f'"{name}" is not a defined function')
        return self.eval_call(dot, spec, name, args, final)

    def eval_call(
        self, dot: Any, spec: FuncSpec, name: str, args: list[n.Node] | None, final: Any
    ) -> Any:
        arg_nodes = args[1:] if args else []
        num_in = len(arg_nodes) + (final is not _MISSING)
        fixed = len(spec.params)
        if spec.variadic is not None:
            if num_in < fixed:
                raise ExecError(
                    f"wrong number of args for {name}: want at least {fixed} got {num_in}"
                )
        elif num_in != fixed:
            raise ExecError(f"wrong number of args for {name}: want {fixed} got {num_in}")
        if name in ("and", "or") and spec is self.funcs.get(name) and spec is FUNCS.get(name):
            return self._and_or(dot, name, arg_nodes, final)
        argv = []
        for i, node in enumerate(arg_nodes):
            kind = spec.params[i] if i < fixed else str(spec.variadic)
            self.last_field_iface = False
            argv.append(self.eval_arg(dot, kind, node))
            if i and name == "slice" and spec is FUNCS["slice"] and self._is_iface_arg(dot, node):
                raise ExecError(
                    "error calling slice: cannot index slice/array with type interface {}"
                )
        if final is not _MISSING:
            last = num_in - 1
            kind = spec.params[last] if last < fixed else str(spec.variadic)
            argv.append(self.validate(final, kind))
        try:
            return spec.fn(*argv)
        except FuncError as err:
            raise ExecError(f"error calling {name}: {err}") from err
        except (ValueError, TypeError, OverflowError, IndexError) as err:
            # A corner of Go's behaviour we do not model: fail like a template error, not a crash.
            raise ExecError(f"error calling {name}: unsupported: {err}") from err

    def _is_iface_arg(self, dot: Any, node: n.Node) -> bool:
        """Whether Go passes this argument as an interface-kinded reflect.Value."""
        if isinstance(node, n.DotNode):
            return self.dot_iface and dot is not NO_VALUE
        if isinstance(node, n.VariableNode) and len(node.ident) == 1:
            return self.var_is_iface(node.ident[0])
        if isinstance(node, (n.FieldNode, n.ChainNode, n.VariableNode)):
            return self.last_field_iface
        return False

    def _and_or(self, dot: Any, name: str, arg_nodes: list[n.Node], final: Any) -> Any:
        value: Any = None
        for node in arg_nodes:
            value = self.eval_arg(dot, "value", node)
            if is_true(indirect_interface(value)) == (name == "or"):
                return value
        if final is not _MISSING:
            value = self.validate(final, "value")
        return value

    def eval_arg(self, dot: Any, kind: str, node: n.Node) -> Any:
        if isinstance(node, n.DotNode):
            return self.validate(dot, kind)
        if isinstance(node, n.NilNode):
            if kind == "any":
                return None
            if kind == "value":
                return NO_VALUE
            raise ExecError(f"cannot assign nil to {_kind_name(kind)}")
        if isinstance(node, n.FieldNode):
            return self.validate(
                self.eval_field_chain(dot, dot, node.ident, [node], _MISSING), kind
            )
        if isinstance(node, n.VariableNode):
            return self.validate(self.eval_variable(dot, node, None, _MISSING), kind)
        if isinstance(node, n.PipeNode):
            return self.validate(self.eval_pipeline(dot, node), kind)
        if isinstance(node, n.IdentifierNode):
            return self.validate(self.eval_function(dot, node.name, None, _MISSING), kind)
        if isinstance(node, n.ChainNode):
            return self.validate(self.eval_chain(dot, node, None, _MISSING), kind)
        if kind == "string":
            if isinstance(node, n.StringNode):
                return node.value
            raise ExecError(f"expected string; found {node!r}")
        if isinstance(node, n.NumberNode):
            return _number(node)
        if isinstance(node, (n.BoolNode, n.StringNode)):
            return node.value
        raise ExecError(f"can't handle {node!r} for arg")

    @staticmethod
    def validate(value: Any, kind: str) -> Any:
        if value is NO_VALUE:
            # interface{} takes it as nil; reflect.Value params take the invalid value as is.
            if kind == "any":
                return None
            if kind in ("value", "untyped"):
                return NO_VALUE
            raise ExecError(f"invalid value; expected {_kind_name(kind)}")
        if kind == "string" and not isinstance(value, str):
            raise ExecError(f"wrong type for value; expected string; got {go_type_name(value)}")
        return value


def _number(node: n.NumberNode) -> int | float:
    value = node.value
    if value != value and "." not in node.text and "e" not in node.text.lower():
        raise ExecError(f"{node.text} overflows int")
    return value


def _kind_name(kind: str) -> str:
    return {"value": "reflect.Value", "string": "string"}.get(kind, "interface {}")


def printable(value: Any) -> str:
    """What Go's ``printValue`` writes for a pipeline result."""
    if value is NO_VALUE:
        return "<no value>"
    if isinstance(value, GoValue) and value.kind == "ptr" and not value.has_stringer():
        return format_v(value, depth=1) if not value.is_nil else "<nil>"
    return format_v(value)
