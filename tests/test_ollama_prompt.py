"""render_ollama_prompt against Ollama's own expected renderings and its prompt-building rules."""

from __future__ import annotations

from typing import Any

import pytest

from deploy_to_ollama.chat_template.ollama_prompt import render_ollama_prompt
from deploy_to_ollama.errors import InputError, TemplateSyntaxError
from support.shared import CHAT_TEMPLATES_DIR, corpus_records, require_shared

CHATML = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end -}}"
    "<|im_start|>assistant\n"
)
LEGACY = "{{ if .System }}S:{{ .System }}\n{{ end }}U:{{ .Prompt }}\nA:{{ .Response }}\n"


def _render_examples() -> list[tuple[str, str, dict[str, Any]]]:
    cases = []
    for record in corpus_records():
        for example in record.get("ollama_render_examples") or []:
            cases.append((record["_file"], record["ollama_template"], example))
        for alt in record.get("alternate_ollama_pairings") or []:
            for example in alt.get("ollama_render_examples") or []:
                cases.append((record["_file"] + ":" + alt["from"], alt["ollama_template"], example))
    return cases


def test_reproduces_every_ollama_render_example() -> None:
    require_shared(CHAT_TEMPLATES_DIR)
    cases = _render_examples()
    failures = [
        name
        for name, template, example in cases
        if render_ollama_prompt(template, example["messages"]) != example["expected_go_output"]
    ]
    assert cases, "the corpus carries ollama_render_examples"
    assert not failures, f"{len(failures)}/{len(cases)} Ollama renderings differ: {failures[:5]}"
    print(f"ollama_render_examples reproduced: {len(cases)}/{len(cases)}")


def test_consecutive_same_role_messages_are_merged_but_tool_messages_are_not() -> None:
    messages = [
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
        {"role": "tool", "content": "r1", "name": "f"},
        {"role": "tool", "content": "r2", "name": "g"},
    ]
    template = "{{ range .Messages }}[{{ .Role }}|{{ .Content }}|{{ .ToolName }}]{{ end }}"
    assert render_ollama_prompt(template, messages) == "[user|a\n\nb|][tool|r1|f][tool|r2|g]"


def test_system_joins_all_system_messages_and_modelfile_system_is_prepended() -> None:
    template = "{{ .System }}|{{ range .Messages }}{{ .Role }},{{ end }}"
    messages = [{"role": "user", "content": "hi"}, {"role": "system", "content": "late"}]
    assert (
        render_ollama_prompt(template, messages, system="SYS") == "SYS\n\nlate|system,user,system,"
    )
    leading = [{"role": "system", "content": "own"}, {"role": "user", "content": "hi"}]
    assert render_ollama_prompt(template, leading, system="SYS") == "own|system,user,"


def test_messages_template_gets_no_prompt_and_empty_response() -> None:
    template = "{{ range .Messages }}{{ .Content }}{{ end }}|{{ .Prompt }}|{{ .Response }}|"
    assert render_ollama_prompt(template, [{"role": "user", "content": "x"}]) == "x|<no value>||"


def test_legacy_template_walks_turns_and_cuts_last_turn_after_response() -> None:
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]
    expected = "S:sys\nU:q1\nA:a1\nU:q2\nA:"
    assert render_ollama_prompt(LEGACY, messages) == expected


def test_response_is_appended_when_template_names_neither_messages_nor_response() -> None:
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "partial"}]
    assert render_ollama_prompt("<{{ .Prompt }}>", messages) == "<q>partial"


def test_tool_calls_and_tools_print_like_ollama() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather <now>",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "city": {"type": "string"},
                        "days": {"type": ["integer", "null"]},
                    },
                    "required": ["city"],
                },
            },
        }
    ]
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "w?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"z": 1, "city": "Paris"}},
                }
            ],
        },
    ]
    template = (
        "{{ .Tools }}|{{ range .Messages }}{{ range .ToolCalls }}{{ .Function.Name }}"
        "{{ .Function.Arguments }}{{ json .Function.Arguments }}{{ end }}{{ end }}|"
        "{{ range .Tools }}{{ range $k, $v := .Function.Parameters.Properties }}"
        "{{ $k }}:{{ $v.Type }}:{{ toTypeScriptType $v }};{{ end }}{{ end }}"
    )
    expected = (
        '[{"type":"function","function":{"name":"get_weather",'
        '"description":"Weather \\u003cnow\\u003e",'
        '"parameters":{"type":"object","required":["city"],"properties":{"city":{"type":"string"},'
        '"days":{"type":["integer","null"]}}}}}]|get_weather{"city":"Paris","z":1}{"city":"Paris","z":1}|'
        "city:string:string;days:[integer null]:number | null;"
    )
    assert render_ollama_prompt(template, messages, tools=tools) == expected


def test_no_tools_prints_null_and_is_false() -> None:
    template = "{{ .Tools }}{{ if .Tools }}yes{{ else }}no{{ end }}{{ range .Messages }}{{ end }}"
    assert render_ollama_prompt(template, [{"role": "user", "content": "x"}]) == "nullno"
    # Without .Messages the legacy path runs and .Tools is not part of the data at all.
    assert render_ollama_prompt("{{ .Tools }}", [{"role": "user", "content": "x"}]) == "<no value>"


@pytest.mark.parametrize(
    ("think", "expected"),
    [(None, "false,,false"), (True, "true,medium,true"), (False, "false,,true")],
)
def test_think_flags(think: bool | None, expected: str) -> None:
    template = "{{ .Think }},{{ .ThinkLevel }},{{ .IsThinkSet }}{{ range .Messages }}{{ end }}"
    assert (
        render_ollama_prompt(template, [{"role": "user", "content": "x"}], think=think) == expected
    )


def test_thinking_template_defaults_think_on_like_ollama() -> None:
    template = (
        "{{ range .Messages }}{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}"
        "{{ .Content }}{{ end }}{{ .Think }}"
    )
    messages = [{"role": "assistant", "content": "x", "reasoning_content": "hm"}]
    assert render_ollama_prompt(template, messages) == "<think>hm</think>xtrue"


def test_template_call_without_pipeline_is_rejected_like_ollama() -> None:
    with pytest.raises(TemplateSyntaxError):
        render_ollama_prompt(
            '{{ define "a" }}x{{ end }}{{ template "a" }}', [{"role": "user", "content": "x"}]
        )


def test_non_string_content_is_an_input_error() -> None:
    with pytest.raises(InputError):
        render_ollama_prompt(CHATML, [{"role": "user", "content": [{"type": "text", "text": "x"}]}])


def test_chatml_renders() -> None:
    messages = [{"role": "user", "content": "hi"}]
    assert (
        render_ollama_prompt(CHATML, messages)
        == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
