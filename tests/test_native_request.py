"""The native proof renders what Ollama 0.30+ really sends llama-server (``native_request``):
no earlier reasoning, tool-call arguments as Go's JSON text in request order, tools as
``api.Tool`` marshals them, ``think`` only as ``enable_thinking``. A Jinja that prints earlier
reasoning is therefore not proven on the native path (llama.cpp never sees it), one that drops
it is; the real llama-server of the shared toolchain renders both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy_to_ollama.chat_template.native import (
    NativeReport,
    native_cases,
    request_body,
    verify_native,
)
from deploy_to_ollama.chat_template.native_request import native_body
from deploy_to_ollama.chat_template.source import TemplateSource

#: Prints every assistant turn's reasoning: Ollama's native path cannot carry it.
PRINTS_REASONING = (
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role == 'assistant' and "
    "m.reasoning_content %}<think>{{ m.reasoning_content }}</think>{% endif %}{{ m.content }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
#: The same without reasoning: nothing is lost on the way.
DROPS_REASONING = PRINTS_REASONING.replace("m.reasoning_content %}", "false %}")


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def test_the_body_is_what_ollama_sends() -> None:
    messages = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "reasoning_content": "look it up",
         "tool_calls": [{"id": "c1", "type": "function", "function": {
             "name": "get", "arguments": {"z": "<b>&", "a": {"y": 1, "x": [2.5, True]}}}}]},
        {"role": "tool", "tool_call_id": "c1", "name": "get", "content": "sunny"},
    ]  # fmt: skip
    tools = [{"function": {"description": "Get it.", "name": "get", "parameters": {
        "properties": {"z": {"format": "uri", "description": "d", "type": ["string", "null"]}},
        "required": ["z"], "type": "object", "additionalProperties": False}},
        "type": "function"}]  # fmt: skip
    body = native_body(messages, tools, think=None)
    assert "chat_template_kwargs" not in body  # think unset: nothing is sent
    assistant = body["messages"][1]
    assert "reasoning_content" not in assistant and "thinking" not in assistant
    assert assistant["content"] == ""
    call = assistant["tool_calls"][0]
    # Request order at the top, Go's sorted maps inside, HTML-safe escapes, compact.
    assert call["function"]["arguments"] == (
        '{"z":"\\u003cb\\u003e\\u0026","a":{"x":[2.5,true],"y":1}}'
    )
    assert (call["id"], call["index"], call["type"]) == ("c1", 0, "function")
    assert body["messages"][2] == {
        "role": "tool", "tool_call_id": "c1", "name": "get", "content": "sunny"
    }  # fmt: skip
    # api.Tool's field order; schema fields Ollama does not keep are gone.
    assert json.dumps(body["tools"]) == json.dumps([{"type": "function", "function": {
        "name": "get", "description": "Get it.", "parameters": {
            "type": "object", "required": ["z"], "properties": {
                "z": {"type": ["string", "null"], "description": "d"}}}}}])  # fmt: skip


def test_think_goes_as_enable_thinking_whatever_switch_the_jinja_reads() -> None:
    template = DROPS_REASONING + "{% if reasoning is defined and not reasoning %}.{% endif %}"
    cases = native_cases(template, switch="reasoning")
    off = next(c for c in cases if c.id == "think_false")
    assert dict(off.kwargs) == {"reasoning": False}  # what transformers is given
    assert request_body(off)["chat_template_kwargs"] == {"enable_thinking": False}


@pytest.mark.slow
def test_earlier_reasoning_is_not_proven_where_the_jinja_prints_it(
    llama_server_binary: Path,
) -> None:
    report = verify_native(_source(PRINTS_REASONING), llama_server_binary)
    assert isinstance(report, NativeReport) and not report.verified
    earlier = next(p for p in report.probes if p.probe == "earlier_reasoning")
    assert earlier.status == "differs"
    assert earlier.expected is not None and "<think>" in earlier.expected
    assert earlier.actual is not None and "<think>" not in earlier.actual


@pytest.mark.slow
def test_a_jinja_that_drops_reasoning_is_proven(llama_server_binary: Path) -> None:
    report = verify_native(_source(DROPS_REASONING), llama_server_binary)
    assert isinstance(report, NativeReport)
    differs = [p.probe for p in report.probes if p.status == "differs"]
    assert "earlier_reasoning" not in differs
    assert any(p.probe == "earlier_reasoning" and p.status == "match" for p in report.probes)


@pytest.mark.slow
def test_a_conversation_ollama_cannot_send_is_skipped_with_the_reason(
    llama_server_binary: Path,
) -> None:
    from deploy_to_ollama.chat_template.probes import Probe

    parts = Probe(
        id="parts", description="content as a list of parts",
        messages=({"role": "user", "content": [{"type": "text", "text": "hi"}]},),
    )  # fmt: skip
    plain = Probe(id="plain", description="", messages=({"role": "user", "content": "hi"},))
    report = verify_native(_source(DROPS_REASONING), llama_server_binary, probes=[parts, plain])
    assert isinstance(report, NativeReport)
    skipped = next(p for p in report.probes if p.probe == "parts")
    assert skipped.status == "skipped"
    assert skipped.reason is not None and "Ollama's API cannot carry" in skipped.reason
    assert next(p for p in report.probes if p.probe == "plain").status == "match"
