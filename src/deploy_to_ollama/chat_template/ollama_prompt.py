"""The prompt Ollama builds for ``/api/chat`` from a TEMPLATE, messages, tools and ``think``.

Mirrors ollama/ollama ``server/routes.go`` (Modelfile SYSTEM prepended, ``think`` defaulted on
for templates with inferred thinking tags), ``server/prompt.go`` and ``template/template.go``
(``collate``, the ``.Messages`` path, the legacy ``.Prompt``/``.Response`` turn walk and the
appended ``{{ .Response }}``). Not modelled: context truncation, images, Modelfile MESSAGE
entries, built-in renderers/parsers and the qwen3/deepseek-r1 ``<think>`` filtering.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from typing import Any

from deploy_to_ollama.chat_template.go_template import GoTemplate, nodes, parse_template
from deploy_to_ollama.chat_template.go_template.ollama_types import (
    ApiMessage,
    ApiMessageNoToolName,
    ApiToolCall,
    TemplateMessage,
    TemplateTool,
    TemplateToolCall,
    TemplateToolCallFunction,
    TemplateTools,
)
from deploy_to_ollama.errors import InputError, TemplateRenderError, TemplateSyntaxError

__all__ = [
    "OllamaMessage",
    "infer_thinking_tags",
    "render_ollama_prompt",
    "template_thinks",
    "to_ollama_messages",
]


@dataclass(slots=True)
class OllamaMessage:
    """An ``api.Message`` as Ollama decodes it from a chat request."""

    role: str
    content: str
    thinking: str = ""
    tool_calls: list[dict[str, Any]] | None = None
    tool_name: str = ""
    tool_call_id: str = ""


def _content_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    raise InputError(
        f"message content of type {type(content).__name__} cannot be sent to Ollama",
        hint="Ollama's chat API takes message content as a string; join text parts first",
    )


def _tool_calls(message: dict[str, Any]) -> list[dict[str, Any]] | None:
    calls = message.get("tool_calls")
    if not calls:
        return None
    result = []
    for call in calls:
        function = call.get("function") or {}
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            text = arguments
            try:
                arguments = json.loads(text) if text.strip() else None
            except json.JSONDecodeError as err:
                raise InputError(
                    f"tool call arguments are not JSON: {text[:60]!r}",
                    hint="pass tool call arguments as an object",
                ) from err
        if arguments is not None and not isinstance(arguments, dict):
            raise InputError(
                "tool call arguments must be a JSON object",
                hint="pass tool call arguments as an object",
            )
        result.append(
            {
                "id": str(call.get("id") or ""),
                "index": int(function.get("index") or 0),
                "name": str(function.get("name") or ""),
                "arguments": arguments,
            }
        )
    return result


def to_ollama_messages(messages: list[dict[str, Any]]) -> list[OllamaMessage]:
    """Convert HF/OpenAI chat messages to Ollama's ``api.Message`` view.

    ``tool_calls[].function.arguments`` may be an object or a JSON string; a tool result's
    ``name`` becomes ``tool_name``; ``thinking`` or ``reasoning_content`` become ``thinking``.

    Raises:
        InputError: content that is not a string, or arguments that are not a JSON object.
    """
    result = []
    for message in messages:
        thinking = message.get("thinking") or message.get("reasoning_content") or ""
        result.append(
            OllamaMessage(
                role=str(message.get("role") or "").lower(),
                content=_content_text(message),
                thinking=str(thinking),
                tool_calls=_tool_calls(message),
                tool_name=str(message.get("tool_name") or message.get("name") or ""),
                tool_call_id=str(message.get("tool_call_id") or ""),
            )
        )
    return result


def _collate(
    messages: list[OllamaMessage], *, merge_tools: bool = False
) -> tuple[str, list[OllamaMessage]]:
    """Ollama's ``collate``: join system contents; merge same-role neighbours except tools
    (tools too with ``merge_tools``: Ollama up to v0.9.5)."""
    system: list[str] = []
    collated: list[OllamaMessage] = []
    for message in messages:
        if message.role == "system":
            system.append(message.content)
        joins = message.role != "tool" or merge_tools
        if collated and collated[-1].role == message.role and joins:
            last = collated[-1]
            collated[-1] = OllamaMessage(
                last.role,
                last.content + "\n\n" + message.content,
                last.thinking,
                last.tool_calls,
                last.tool_name,
                last.tool_call_id,
            )
        else:
            collated.append(message)
    return "\n\n".join(system), collated


def _template_message(message: OllamaMessage, missing: frozenset[str]) -> TemplateMessage:
    """The message as the server's template sees it; fields in ``missing`` (the release lacks
    them, ``PromptRules.missing``) are absent, so naming one is Go's exec error there too."""
    call_type = ApiToolCall if ".ID" in missing else TemplateToolCall
    calls = None
    if message.tool_calls is not None:
        calls = [
            call_type(
                call["id"],
                TemplateToolCallFunction(call["index"], call["name"], call["arguments"]),
            )
            for call in message.tool_calls
        ]
    message_type: type[TemplateMessage] = TemplateMessage
    if ".ToolName" in missing:
        message_type = ApiMessageNoToolName
    elif ".ToolCallID" in missing:
        message_type = ApiMessage
    return message_type(
        role=message.role,
        content=message.content,
        thinking=message.thinking,
        tool_calls=calls,
        tool_name=message.tool_name,
        tool_call_id=message.tool_call_id,
    )


def _template_tools(tools: list[dict[str, Any]] | None) -> TemplateTools:
    if tools is None:
        return TemplateTools(None)
    return TemplateTools([TemplateTool(tool) for tool in tools])


def _response_action() -> nodes.ActionNode:
    field = nodes.FieldNode(0, ["Response"])
    return nodes.ActionNode(0, nodes.PipeNode(0, cmds=[nodes.CommandNode(0, [field])]))


@functools.lru_cache(maxsize=256)
def _template_facts(template: str) -> tuple[frozenset[str], bool]:
    """Lower-cased ``Vars`` and whether Ollama infers thinking tags (cached per template)."""
    tmpl = parse_template(template)
    names = frozenset(name.lower() for name in tmpl.identifiers())
    return names, all(infer_thinking_tags(tmpl))


def template_thinks(template: str) -> bool:
    """Whether Ollama gives this TEMPLATE the thinking capability (both tags inferred).

    Raises:
        TemplateSyntaxError: the template does not parse.
    """
    return _template_facts(template)[1]


def _prepare(template: str) -> tuple[GoTemplate, frozenset[str], bool]:
    """Ollama's ``template.Parse``: parse, compute ``Vars``, append ``{{ .Response }}``."""
    tmpl = parse_template(template)
    names, thinks = _template_facts(template)
    if "messages" not in names and "response" not in names:
        # A new root list: the parsed trees are cached and shared, never mutated.
        root = tmpl.root
        tmpl.trees[""] = nodes.ListNode(root.pos, [*root.nodes, _response_action()])
    return tmpl, names, thinks


def _think_values(*, think: bool | str | None) -> dict[str, Any]:
    if think is None:
        return {"Think": False, "ThinkLevel": "", "IsThinkSet": False}
    if isinstance(think, str):
        enabled = think in ("high", "medium", "low", "max")
        return {"Think": enabled, "ThinkLevel": think, "IsThinkSet": True}
    return {"Think": think, "ThinkLevel": "medium" if think else "", "IsThinkSet": True}


def render_ollama_prompt(
    template: str,
    messages: list[dict[str, Any]],
    *,
    system: str | None = None,
    tools: list[dict[str, Any]] | None = None,
    think: bool | str | None = None,
    merge_tool_results: bool | None = None,
) -> str:
    """Render exactly the prompt Ollama sends to the model for an ``/api/chat`` request.

    Args:
        template: the Modelfile TEMPLATE (Go template text).
        messages: HF/OpenAI-format chat messages.
        system: the Modelfile SYSTEM, prepended when the first message is not a system one.
        tools: tool definitions (OpenAI JSON schema shape), as in the request's ``tools``.
        think: the request's ``think``; None lets Ollama (>= 0.12.4, see
            ``server_rules.for_server``) enable it for thinking templates.
        merge_tool_results: join consecutive tool results as Ollama up to v0.9.5 does
            (``ollama_route.prompt_rules``); the newest releases keep them apart. None: as
            the rules in force say (``server_rules.for_server``; the newest outside it).

    Raises:
        TemplateSyntaxError: the template does not parse, or Ollama would reject it.
        TemplateRenderError: executing it fails (Ollama answers the request with an error).
        InputError: a message Ollama's API could not decode.
    """
    tmpl, names, thinks = _prepare(template)
    missing = _missing_values()
    _check_functions(template, missing)
    msgs = to_ollama_messages(messages)
    if msgs and msgs[0].role != "system" and system:
        msgs.insert(0, OllamaMessage("system", system))
    from deploy_to_ollama.chat_template.server_rules import (
        current_rules,
        merges_tool_results,
        unset_think_on,
    )

    if think is None and thinks and unset_think_on(current_rules()):
        think = True  # server/routes.go since v0.12.4; before, unset stays false
    think_values = _think_values(think=think)
    if ".ThinkLevel" in missing:
        del think_values["ThinkLevel"]  # a missing key: Go's missingkey=zero gives nil
    if merge_tool_results is None:
        merge_tool_results = merges_tool_results(current_rules())
    joined_system, collated = _collate(msgs, merge_tools=merge_tool_results)
    if "messages" in names:
        data = {
            "System": joined_system,
            "Messages": _message_slice(collated, missing),
            "Tools": _template_tools(tools),
            "Response": "",
            **think_values,
        }
        try:
            return tmpl.execute(data)
        except TemplateRenderError as err:
            raise _explained(err, missing) from err
    return _render_legacy(tmpl, collated, think_values)


def _message_slice(collated: list[OllamaMessage], missing: frozenset[str]) -> Any:
    from deploy_to_ollama.chat_template.go_template import GoSlice

    return GoSlice([_template_message(m, missing) for m in collated])


def _missing_values() -> frozenset[str]:
    """The template values the server version in force lacks (none for the newest)."""
    from deploy_to_ollama.chat_template.server_rules import current_rules

    rules = current_rules()
    return frozenset(name for name, _ in rules.missing) if rules is not None else frozenset()


def _since(name: str) -> str:
    from deploy_to_ollama.chat_template.server_rules import current_rules, current_version

    rules = current_rules()
    release = dict(rules.missing).get(name, "a later release") if rules else "a later release"
    version = current_version() or "this release"
    what = name if name.startswith(".") else f"function {name}"
    return f"Ollama {version} has no {what} (it arrived in {release})"


def _check_functions(template: str, missing: frozenset[str]) -> None:
    """Go checks function names when it parses: a TEMPLATE calling a function the release
    lacks is refused as a whole there (``ollama create`` fails), whatever the request."""
    absent = sorted(name for name in missing if not name.startswith(".") and name in template)
    used = [name for name in absent if _calls_function(template, name)]
    if used:
        raise TemplateSyntaxError(
            f'template: function "{used[0]}" not defined: {_since(used[0])}',
            hint="deploy for a newer Ollama, or translate without this function",
        )


def _calls_function(template: str, name: str) -> bool:
    """Whether any tree of ``template`` names the function ``name`` (not text that spells it)."""
    stack: list[Any] = list(parse_template(template).trees.values())
    while stack:
        node = stack.pop()
        if isinstance(node, nodes.IdentifierNode) and node.name == name:
            return True
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, nodes.Node):
            stack.extend(getattr(node, f.name) for f in dataclasses.fields(node))
    return False


#: Message and tool-call fields that releases gained (``.ThinkLevel`` is a map key instead:
#: missing there, it is nil, never an error).
_STRUCT_FIELDS = frozenset({".ToolName", ".ToolCallID", ".ID"})


def _explained(err: TemplateRenderError, missing: frozenset[str]) -> TemplateRenderError:
    """Go's "can't evaluate field X" on a field the release lacks, with the release that
    added it, so the verdict says why the newest release renders it and this one does not."""
    for name in sorted(missing & _STRUCT_FIELDS):
        if f"can't evaluate field {name[1:]} in type" in str(err):
            return TemplateRenderError(f"{err}: {_since(name)}", hint=err.hint)
    return err


def _render_legacy(
    tmpl: GoTemplate, collated: list[OllamaMessage], think_values: dict[str, Any]
) -> str:
    """Ollama's path for templates without ``.Messages``: one full render per completed turn,
    then the template cut after its first ``.Response`` for the last turn."""
    out: list[str] = []
    turn = {"System": "", "Prompt": "", "Response": ""}

    def flush() -> None:
        out.append(tmpl.execute({**turn, **think_values}))
        turn.update(System="", Prompt="", Response="")

    for message in collated:
        if message.role == "system":
            if turn["Prompt"] or turn["Response"]:
                flush()
            turn["System"] = message.content
        elif message.role == "user":
            if turn["Response"]:
                flush()
            turn["Prompt"] = message.content
        elif message.role == "assistant":
            turn["Response"] = message.content
    last = tmpl.cut_after_response()
    out.append(tmpl.execute_root(last, {**turn, **think_values}, ollama_options=False))
    return "".join(out)


def infer_thinking_tags(tmpl: GoTemplate) -> tuple[str, str]:
    """Ollama's ``thinking.InferTags``: the text around ``.Thinking`` inside ``range .Messages``.

    Both tags non-empty means Ollama gives the model the thinking capability, and then an
    ``/api/chat`` request without ``think`` is treated as ``think: true``.
    """
    tags = ["", ""]
    _visit_thinking(tmpl.root, [], tags)
    return tags[0], tags[1]


def _range_uses_messages(node: nodes.RangeNode) -> bool:
    stack: list[nodes.Node] = [node.pipe]
    while stack:
        current = stack.pop()
        if isinstance(current, nodes.FieldNode) and current.ident[0] == "Messages":
            return True
        if isinstance(current, nodes.PipeNode):
            stack.extend(current.cmds)
        elif isinstance(current, nodes.CommandNode):
            stack.extend(current.args)
    return False


def _visit_thinking(node: nodes.Node | None, ancestors: list[nodes.Node], tags: list[str]) -> None:
    if node is None:
        return
    ancestors.append(node)
    if isinstance(node, nodes.FieldNode) and node.ident and node.ident[0] == "Thinking":
        _take_tags(ancestors, tags)
    children: list[nodes.Node | None] = []
    if isinstance(node, nodes.ListNode):
        children = list(node.nodes)
    elif isinstance(node, nodes.BranchNode):
        children = [node.pipe, node.list, node.else_list]
    elif isinstance(node, (nodes.ActionNode, nodes.TemplateNode)):
        children = [node.pipe]
    elif isinstance(node, nodes.PipeNode):
        children = list(node.cmds)
    elif isinstance(node, nodes.CommandNode):
        children = list(node.args)
    for child in children:
        _visit_thinking(child, ancestors, tags)
    ancestors.pop()


def _take_tags(ancestors: list[nodes.Node], tags: list[str]) -> None:
    recent = next((a for a in reversed(ancestors) if isinstance(a, nodes.RangeNode)), None)
    if recent is None or not _range_uses_messages(recent):
        return
    for ancestor in reversed(ancestors):
        if isinstance(ancestor, nodes.ListNode):
            first, last = ancestor.nodes[0], ancestor.nodes[-1]
            if isinstance(first, nodes.TextNode):
                tags[0] = first.text.strip()
            if isinstance(last, nodes.TextNode):
                tags[1] = last.text.strip()
            return
