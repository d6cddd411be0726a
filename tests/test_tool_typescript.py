"""``toTypeScriptType``: the word our Python rule predicts is the word real Go prints, and a
server older than v0.11.3 refuses a TEMPLATE that calls it (the Go oracle must too, or a
gpt-oss-style reading could be verified for a server that cannot even parse it)."""

from __future__ import annotations

from typing import Any

import pytest

from deploy_to_ollama.chat_template.tool_typescript import (
    has_typescript_function,
    typescript_type,
)

#: Parameter schemas covering each branch of Ollama's api.ToolProperty.ToTypeScriptType.
PROPS: dict[str, dict[str, Any]] = {
    "s": {"type": "string", "description": "d"},
    "i": {"type": "integer"},
    "n": {"type": "number"},
    "b": {"type": "boolean"},
    "a": {"type": "array", "items": {"type": "string"}},
    "o": {"type": "object", "properties": {"x": {"type": "string"}}},
    "z": {"type": "null"},
    "u": {"type": "uuid"},
    "e": {"type": "string", "enum": ["c", "f"]},
    "sn": {"type": ["string", "null"]},
    "one": {"type": ["integer"]},
    "any": {"anyOf": [{"type": "string"}, {"type": ["number", "null"]}, {}]},
    "none": {"description": "no type"},
}

#: What Ollama's ToTypeScriptType returns for PROPS (read off ollama/ollama api/types.go).
OLLAMA_WORDS = {
    "s": "string",
    "i": "number",
    "n": "number",
    "b": "boolean",
    "a": "any[]",
    "o": "Record<string, any>",
    "z": "null",
    "u": "any",
    "e": "string",
    "sn": "string | null",
    "one": "number",
    "any": "string | number | null | any",
    "none": "any",
}

TEMPLATE = (
    "{{ range .Tools }}{{ range $k, $v := .Function.Parameters.Properties }}"
    "{{ $k }}={{ toTypeScriptType $v }};{{ end }}{{ end }}"
    "{{ range .Messages }}{{ .Content }}{{ end }}"
)


def _case(**flags: Any) -> dict[str, Any]:
    tool = {
        "type": "function",
        "function": {
            "name": "f",
            "description": "d",
            "parameters": {"type": "object", "required": ["s"], "properties": PROPS},
        },
    }
    messages = [{"role": "user", "content": "hi"}]
    return {"kind": "ollama", "template": TEMPLATE, "messages": messages, "tools": [tool], **flags}


def _words(output: str) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in output.removesuffix("hi").split(";") if item]
    return {k: v for k, v in pairs}


def test_python_rule_gives_ollamas_words() -> None:
    assert {k: typescript_type(v) for k, v in PROPS.items()} == OLLAMA_WORDS


def test_python_rule_is_not_the_jinja_rule() -> None:
    # gpt-oss's Jinja prints string[] and "c" | "f": Ollama's word differs, so a reading that
    # used toTypeScriptType for these parameters must not verify.
    assert typescript_type(PROPS["a"]) != "string[]"
    assert typescript_type(PROPS["e"]) != '"c" | "f"'


def test_go_prints_the_words_the_rule_predicts(go_oracle: Any) -> None:
    newest, older, oldest = go_oracle.run(
        [_case(), _case(server="0.11.2"), _case(no_date_funcs=True)]
    )
    assert not newest.failed, newest.error or newest.parse_error
    assert _words(newest.output) == {k: typescript_type(v) for k, v in PROPS.items()}
    # v0.11.0-v0.11.2 and anything before v0.11.0 have no toTypeScriptType.
    for refused in (older, oldest):
        assert refused.parse_error and "toTypeScriptType" in refused.parse_error


def test_without_the_function_only_it_is_missing(go_oracle: Any) -> None:
    """v0.11.0-v0.11.2 keep currentDate: dropping toTypeScriptType drops nothing else."""
    case = _case(server="0.11.2", today="2030-01-02")
    case["template"] = "{{ currentDate }}{{ range .Messages }}{{ .Content }}{{ end }}"
    (result,) = go_oracle.run([case])
    assert not result.failed, result.error or result.parse_error
    assert result.output == "2030-01-02hi"


@pytest.mark.parametrize(
    ("version", "has"),
    [("0.9.3", False), ("0.11.0", False), ("0.11.2", False), ("0.11.3", True), ("0.30.0", True)],
)
def test_which_servers_have_the_function(version: str, has: bool) -> None:
    assert has_typescript_function(version) is has
