"""Typed values Ollama hands its templates (``templateMessage`` & co, ``api.ToolProperty``).

Field names, JSON shapes and ``String`` methods follow ollama/ollama ``template/template.go`` and
``api/types.go``, so ``.ToolCalls``, ``.Function.Arguments`` or ``json .Tools`` print exactly as
in Ollama.
"""

from __future__ import annotations

from typing import Any, ClassVar

from deploy_to_ollama.chat_template.go_template.values import (
    NO_VALUE,
    GoMap,
    GoSlice,
    GoValue,
    JsonObject,
    format_v,
    go_json,
)


def _omit_empty(pairs: list[tuple[str, Any, bool]]) -> JsonObject:
    """Build a JSON object, dropping ``omitempty`` fields whose value is empty."""
    kept = [(key, value) for key, value, omit in pairs if not (omit and _is_empty(value))]
    return JsonObject(kept)


def _is_empty(value: Any) -> bool:
    if value is None or value is NO_VALUE:
        return True
    if isinstance(value, (str, list, dict)):
        return len(value) == 0
    if isinstance(value, GoSlice):
        return len(value.values) == 0
    if isinstance(value, GoMap):
        return len(value.values) == 0
    if isinstance(value, ToolPropertiesMap):
        return False
    return False


class PropertyType(GoSlice):
    """``api.PropertyType``: a JSON schema type, one name or several."""

    go_type = "api.PropertyType"

    def stringer(self) -> str:
        if not self.values:
            return ""
        if len(self.values) == 1:
            return str(self.values[0])
        return format_v(list(self.values))

    def to_json(self) -> Any:
        if len(self.values) == 1:
            return self.values[0]
        return None if self.is_nil else list(self.values)


class ToolProperty(GoValue):
    """``api.ToolProperty``; the only value ``toTypeScriptType`` understands."""

    go_type = "api.ToolProperty"
    fields = ("AnyOf", "Type", "Items", "Description", "Enum", "Properties", "Required")

    def __init__(self, schema: dict[str, Any] | None = None) -> None:
        schema = schema or {}
        any_of = schema.get("anyOf")
        self.AnyOf = GoSlice(
            [ToolProperty(s) for s in any_of] if isinstance(any_of, list) else None
        )
        raw_type = schema.get("type")
        if isinstance(raw_type, str):
            self.Type = PropertyType([raw_type])
        else:
            self.Type = PropertyType(list(raw_type) if isinstance(raw_type, list) else None)
        self.Items = go_number_view(schema.get("items"))
        self.Description = str(schema.get("description") or "")
        enum = schema.get("enum")
        self.Enum = GoSlice(go_number_view(enum) if isinstance(enum, list) else None)
        props = schema.get("properties")
        self.Properties = ToolPropertiesMap(props) if isinstance(props, dict) else None
        required = schema.get("required")
        self.Required = GoSlice(list(required) if isinstance(required, list) else None)

    def method(self, name: str) -> Any:
        if name == "ToTypeScriptType":
            return self.to_typescript_type
        return None

    def to_typescript_type(self) -> str:
        if self.AnyOf.values:
            return " | ".join(p.to_typescript_type() for p in self.AnyOf.values)
        types = self.Type.values
        if not types:
            return "any"
        return " | ".join(_TS_TYPES.get(t, "any") for t in types)

    def to_json(self) -> Any:
        return _omit_empty(
            [
                ("anyOf", self.AnyOf, True),
                ("type", self.Type, True),
                ("items", self.Items, True),
                ("description", self.Description, True),
                ("enum", self.Enum, True),
                ("properties", self.Properties, True),
                ("required", self.Required, True),
            ]
        )


_TS_TYPES = {
    "string": "string",
    "number": "number",
    "integer": "number",
    "boolean": "boolean",
    "array": "any[]",
    "object": "Record<string, any>",
    "null": "null",
}


class ToolPropertiesMap(GoValue):
    """``*api.ToolPropertiesMap``: an insertion-ordered map, opaque to templates."""

    kind = "ptr"
    go_type = "*api.ToolPropertiesMap"

    def __init__(self, props: dict[str, Any]) -> None:
        self.props = {
            key: ToolProperty(value if isinstance(value, dict) else {})
            for key, value in props.items()
        }

    def to_json(self) -> Any:
        return JsonObject(list(self.props.items()))


class TemplateProperties(GoMap):
    """``template.templateProperties``: ``map[string]api.ToolProperty`` printing as JSON."""

    go_type = "template.templateProperties"
    elem_is_interface = False

    def stringer(self) -> str:
        return "{}" if self.is_nil else go_json(self)

    def zero_value(self) -> Any:
        return ToolProperty()


class TemplateToolFunctionParameters(GoValue):
    go_type = "template.templateToolFunctionParameters"
    fields = ("Type", "Defs", "Items", "Required", "Properties")

    def __init__(self, params: dict[str, Any]) -> None:
        self.Type = str(params.get("type") or "")
        self.Defs = go_number_view(params.get("$defs"))
        self.Items = go_number_view(params.get("items"))
        required = params.get("required")
        self.Required = GoSlice(list(required) if isinstance(required, list) else None)
        props = params.get("properties")
        if isinstance(props, dict):
            converted = {
                k: ToolProperty(v if isinstance(v, dict) else {}) for k, v in props.items()
            }
            self.Properties = TemplateProperties(converted)
        else:
            self.Properties = TemplateProperties(None)

    def to_json(self) -> Any:
        return _omit_empty(
            [
                ("type", self.Type, False),
                ("$defs", self.Defs, True),
                ("items", self.Items, True),
                ("required", self.Required, True),
                ("properties", self.Properties, False),
            ]
        )


class TemplateToolFunction(GoValue):
    go_type = "template.templateToolFunction"
    fields = ("Name", "Description", "Parameters")

    def __init__(self, function: dict[str, Any]) -> None:
        self.Name = str(function.get("name") or "")
        self.Description = str(function.get("description") or "")
        params = function.get("parameters")
        self.Parameters = TemplateToolFunctionParameters(params if isinstance(params, dict) else {})

    def to_json(self) -> Any:
        return JsonObject(
            [
                ("name", self.Name),
                ("description", self.Description),
                ("parameters", self.Parameters),
            ]
        )


class TemplateTool(GoValue):
    """``template.templateTool``; prints as its JSON."""

    go_type = "template.templateTool"
    fields = ("Type", "Items", "Function")

    def __init__(self, tool: dict[str, Any]) -> None:
        self.Type = str(tool.get("type") or "")
        self.Items = go_number_view(tool.get("items"))
        function = tool.get("function")
        self.Function = TemplateToolFunction(function if isinstance(function, dict) else {})

    def stringer(self) -> str:
        return go_json(self)

    def to_json(self) -> Any:
        return _omit_empty(
            [
                ("type", self.Type, False),
                ("items", self.Items, True),
                ("function", self.Function, False),
            ]
        )


class TemplateTools(GoSlice):
    """``template.templateTools``: nil when the request has no tools; prints as JSON."""

    go_type = "template.templateTools"

    def stringer(self) -> str:
        return go_json(self)


class TemplateArgs(GoMap):
    """``template.templateArgs``: tool-call arguments; ``String`` is their JSON (sorted keys)."""

    go_type = "template.templateArgs"

    def stringer(self) -> str:
        return "{}" if self.is_nil else go_json(self)


class TemplateToolCallFunction(GoValue):
    go_type = "template.templateToolCallFunction"
    fields = ("Index", "Name", "Arguments")

    def __init__(self, index: int, name: str, arguments: dict[str, Any] | None) -> None:
        self.Index = index
        self.Name = name
        self.Arguments = TemplateArgs(go_number_view(arguments) if arguments is not None else None)

    def to_json(self) -> Any:
        return JsonObject(
            [("Index", self.Index), ("Name", self.Name), ("Arguments", self.Arguments)]
        )


class TemplateToolCall(GoValue):
    go_type = "template.templateToolCall"
    fields: ClassVar[tuple[str, ...]] = ("ID", "Function")

    def __init__(self, call_id: str, function: TemplateToolCallFunction) -> None:
        self.ID = call_id
        self.Function = function

    def to_json(self) -> Any:
        return JsonObject([("ID", self.ID), ("Function", self.Function)])


class TemplateMessage(GoValue):
    """``*template.templateMessage``: one collated chat message as templates see it."""

    kind: ClassVar[str] = "ptr"
    go_type = "*template.templateMessage"
    fields: ClassVar[tuple[str, ...]] = (
        "Role",
        "Content",
        "Thinking",
        "Images",
        "ToolCalls",
        "ToolName",
        "ToolCallID",
    )

    def __init__(
        self,
        *,
        role: str,
        content: str,
        thinking: str = "",
        tool_calls: list[TemplateToolCall] | None = None,
        tool_name: str = "",
        tool_call_id: str = "",
    ) -> None:
        self.Role = role
        self.Content = content
        self.Thinking = thinking
        self.Images = GoSlice(None)
        self.ToolCalls = GoSlice(tool_calls)
        self.ToolName = tool_name
        self.ToolCallID = tool_call_id

    def to_json(self) -> Any:
        return JsonObject([(name, getattr(self, name)) for name in self.fields])


class ApiToolCall(TemplateToolCall):
    """``api.ToolCall`` before v0.12.10: no ``ID`` (``.ID`` is a Go exec error there)."""

    go_type = "api.ToolCall"
    fields = ("Function",)

    def to_json(self) -> Any:
        return JsonObject([("Function", self.Function)])


class ApiMessage(TemplateMessage):
    """``*api.Message`` from v0.9.6 to v0.12.9: ``ToolName`` but no ``ToolCallID``."""

    go_type = "*api.Message"
    fields = ("Role", "Content", "Thinking", "Images", "ToolCalls", "ToolName")


class ApiMessageNoToolName(TemplateMessage):
    """``*api.Message`` before v0.9.6: neither ``ToolName`` nor ``ToolCallID``."""

    go_type = "*api.Message"
    fields = ("Role", "Content", "Thinking", "Images", "ToolCalls")


def go_number_view(value: Any) -> Any:
    """JSON data as Go decodes it into ``any``: every number becomes a float64."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, list):
        return [go_number_view(v) for v in value]
    if isinstance(value, dict):
        return {str(k): go_number_view(v) for k, v in value.items()}
    return value
