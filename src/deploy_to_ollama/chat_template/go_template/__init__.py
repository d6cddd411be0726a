"""Go ``text/template`` in Python, with the options and functions Ollama gives its templates.

``parse_template(text).execute(data)`` renders byte-for-byte what Ollama's Go code renders for
the same data (``missingkey=zero``, Ollama's ``json``/``currentDate``/``yesterdayDate``/
``toTypeScriptType``), so prompts can be checked without a Go toolchain or a server.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from deploy_to_ollama.chat_template.go_template import nodes
from deploy_to_ollama.chat_template.go_template.builtins import FUNCS, FuncSpec
from deploy_to_ollama.chat_template.go_template.evaluator import ExecError, Executor
from deploy_to_ollama.chat_template.go_template.parser import parse_trees
from deploy_to_ollama.chat_template.go_template.tree_ops import (
    TreeWalkError,
    cut_after_response,
    identifiers,
)
from deploy_to_ollama.chat_template.go_template.values import NO_VALUE, GoMap, GoSlice, GoValue
from deploy_to_ollama.errors import TemplateRenderError, TemplateSyntaxError

__all__ = [
    "NO_VALUE",
    "GoMap",
    "GoSlice",
    "GoTemplate",
    "GoValue",
    "parse_template",
]

BUILTIN_NAMES = frozenset(
    name
    for name in FUNCS
    if name not in {"json", "currentDate", "yesterdayDate", "toTypeScriptType"}
)
_BUILTINS_ONLY: dict[str, FuncSpec] = {name: FUNCS[name] for name in BUILTIN_NAMES}
_RENDER_HINT = "fix the template, or check the data it is given"


class GoTemplate:
    """A parsed Go template: the main tree plus its ``define``/``block`` trees."""

    def __init__(self, text: str, trees: dict[str, nodes.ListNode]) -> None:
        self.text = text
        self.trees = trees

    @property
    def root(self) -> nodes.ListNode:
        return self.trees[""]

    def execute(self, data: Mapping[str, Any] | Any) -> str:
        """Render with ``data`` as dot, as Ollama's ``Template.Execute`` on the parsed text.

        Raises:
            TemplateRenderError: where Go's ``Execute`` returns an error.
        """
        return self._run(self.root, data, self.trees, FUNCS, missing_key_zero=True)

    def execute_root(self, root: nodes.ListNode, data: Any, *, ollama_options: bool = True) -> str:
        """Render another root against this template's definitions.

        ``ollama_options=False`` mirrors a bare ``template.New("").AddParseTree``: builtins only,
        no ``define``d templates, default ``missingkey`` (Ollama's legacy last turn).
        """
        if ollama_options:
            return self._run(root, data, self.trees, FUNCS, missing_key_zero=True)
        return self._run(root, data, {"": root}, _BUILTINS_ONLY, missing_key_zero=False)

    @staticmethod
    def _run(
        root: nodes.ListNode,
        data: Any,
        trees: Mapping[str, nodes.ListNode],
        funcs: Mapping[str, FuncSpec],
        *,
        missing_key_zero: bool,
    ) -> str:
        executor = Executor(trees, funcs, missing_key_zero=missing_key_zero)
        try:
            return executor.run(root, data)
        except ExecError as err:
            raise TemplateRenderError(f"template: {err}", hint=_RENDER_HINT) from err

    def identifiers(self) -> list[str]:
        """Ollama's ``Vars`` before lower-casing: every field/variable name in every tree.

        Raises:
            TemplateSyntaxError: ``{{ template "x" }}`` without a pipeline, which Ollama rejects.
        """
        try:
            return [name for tree in self.trees.values() for name in identifiers(tree)]
        except TreeWalkError as err:
            raise TemplateSyntaxError(
                f"Ollama rejects this template: {err}",
                hint='pass a pipeline to template calls, e.g. {{ template "name" . }}',
            ) from err

    def references(self, field: str) -> bool:
        """Whether any tree names ``.Field`` (case-insensitive, as Ollama's ``Vars`` compares)."""
        wanted = field.lower()
        names: list[str] = []
        for tree in self.trees.values():
            try:
                names += identifiers(tree)
            except TreeWalkError:
                continue
        return any(name.lower() == wanted for name in names)

    def cut_after_response(self) -> nodes.ListNode:
        """The main tree cut after its first ``.Response`` (Ollama's legacy last turn).

        Raises:
            TemplateRenderError: where Ollama's ``deleteNode`` would panic.
        """
        try:
            return cut_after_response(self.root)
        except TreeWalkError as err:
            raise TemplateRenderError(
                f"Ollama fails on this template: {err}", hint=_RENDER_HINT
            ) from err


PARSE_CACHE_SIZE = 256


@functools.lru_cache(maxsize=PARSE_CACHE_SIZE)
def _parse_cached(text: str) -> dict[str, nodes.ListNode]:
    # Trees are never mutated after parsing (execution and Ollama's walks copy), so callers
    # rendering one template over many probes share one parse.
    return parse_trees(text, FUNCS)


def parse_template(text: str) -> GoTemplate:
    """Parse Go template text with Ollama's function set (cached by text).

    >>> parse_template("{{ range .Messages }}{{ .Role }};{{ end }}").execute(
    ...     {"Messages": [{"Role": "user"}, {"Role": "assistant"}]}
    ... )
    'user;assistant;'

    Raises:
        TemplateSyntaxError: with the line and column Go reports.
    """
    return GoTemplate(text, dict(_parse_cached(text)))
