"""Taught tool and thinking fixtures: a tiny ChatML base and two LoRAs trained on the spot.

The *tools* LoRA answers a weather question, when a ``get_weather`` tool is offered, with a
Hermes/Qwen ``<tool_call>`` JSON call, and after the tool result with the temperature from it.
The *thinking* LoRA answers inside ``<think>…</think>`` unless the prompt pre-closes the block
(the ``enable_thinking=False`` / ``think: false`` form). Each adapter carries its own Jinja chat
template (what Ollama derives tools/thinking from) and this module keeps a hand-written Go
TEMPLATE of the same shape for each, so the fixture can be checked on the test server before
the translator emits ``.Tools``/``.Thinking`` itself.

Training renders every conversation twice: with transformers (Python ``tojson``) and with
Ollama's TEMPLATE (compact Go JSON), so the model answers whichever layout it is served.
The cache key includes a hash of this file, so editing it rebuilds the fixture.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from support.models import (
    QWEN2,
    ModelSpec,
    _point_at_base,
    _train,
    build_base,
    cached,
    inline_chat_template,
)

TOOLS_JINJA = (
    "{% if tools %}<|im_start|>system\n"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\n\n{% endif %}"
    "# Tools\n\n<tools>\n{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}"
    "</tools><|im_end|>\n"
    "{% elif messages[0]['role'] == 'system' %}<|im_start|>system\n"
    "{{ messages[0]['content'] }}<|im_end|>\n{% endif %}"
    "{% for message in messages %}"
    "{% if message.role == 'user' %}<|im_start|>user\n{{ message.content }}<|im_end|>\n"
    "{% elif message.role == 'assistant' %}<|im_start|>assistant\n"
    "{% if message.content %}{{ message.content }}{% endif %}"
    "{% if message.tool_calls %}{% for tool_call in message.tool_calls %}"
    "{% if tool_call.function is defined %}{% set tool_call = tool_call.function %}{% endif %}"
    '<tool_call>\n{"name": "{{ tool_call.name }}", "arguments": '
    "{{ tool_call.arguments | tojson }}}\n</tool_call>{% endfor %}{% endif %}<|im_end|>\n"
    "{% elif message.role == 'tool' %}<|im_start|>user\n<tool_response>\n"
    "{{ message.content }}\n</tool_response><|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: Hand-written Go TEMPLATE of the same shape (checked against TOOLS_JINJA by the fixture
#: tests): Ollama finds ``<tool_call>`` as the tag in the ``{{ if .ToolCalls }}`` block.
TOOLS_GO_TEMPLATE = (
    "{{ if .Tools }}<|im_start|>system\n"
    '{{ if and .Messages (eq (index .Messages 0).Role "system") }}'
    "{{ (index .Messages 0).Content }}\n\n{{ end }}"
    "# Tools\n\n<tools>\n{{ range .Tools }}{{ json . }}\n{{ end }}</tools><|im_end|>\n"
    '{{ else if and .Messages (eq (index .Messages 0).Role "system") }}<|im_start|>system\n'
    "{{ (index .Messages 0).Content }}<|im_end|>\n{{ end }}"
    "{{ range $i, $_ := .Messages }}"
    "{{ $last := eq (len (slice $.Messages $i)) 1 }}"
    '{{ if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n'
    '{{ else if eq .Role "assistant" }}<|im_start|>assistant\n'
    "{{ if .Content }}{{ .Content }}{{ end }}"
    "{{ if .ToolCalls }}{{ range .ToolCalls }}<tool_call>\n"
    '{"name": "{{ .Function.Name }}", "arguments": {{ json .Function.Arguments }}}\n'
    "</tool_call>{{ end }}{{ end }}"
    "{{ if not $last }}<|im_end|>\n{{ end }}"
    '{{ else if eq .Role "tool" }}<|im_start|>user\n<tool_response>\n'
    "{{ .Content }}\n</tool_response><|im_end|>\n"
    "{{ end }}"
    '{{ if and $last (ne .Role "assistant") }}<|im_start|>assistant\n{{ end }}'
    "{{ end }}"
)

THINK_JINJA = (
    "{% if messages[0]['role'] == 'system' %}<|im_start|>system\n"
    "{{ messages[0]['content'] }}<|im_end|>\n{% endif %}"
    "{% for message in messages %}"
    "{% if message.role == 'user' %}<|im_start|>user\n{{ message.content }}<|im_end|>\n"
    "{% elif message.role == 'assistant' %}"
    "{% set content = message.content %}"
    "{% if '</think>' in content %}"
    "{% set content = content.split('</think>')[-1].lstrip('\\n') %}{% endif %}"
    "<|im_start|>assistant\n"
    "{% if loop.last and message.reasoning_content %}"
    "<think>\n{{ message.reasoning_content }}\n</think>\n\n{% endif %}"
    "{{ content }}{% if not loop.last %}<|im_end|>\n{% endif %}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}"
    "<think>\n\n</think>\n\n{% endif %}{% endif %}"
)

#: Go TEMPLATE of the same shape: ``.Thinking`` inside ``range .Messages`` between
#: ``<think>``/``</think>`` text, so Ollama infers the tags and the thinking capability.
THINK_GO_TEMPLATE = (
    "{{ range $i, $_ := .Messages }}"
    "{{ $last := eq (len (slice $.Messages $i)) 1 }}"
    '{{ if eq .Role "system" }}<|im_start|>system\n{{ .Content }}<|im_end|>\n'
    '{{ else if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n'
    "{{ if $last }}<|im_start|>assistant\n"
    "{{ if and $.IsThinkSet (not $.Think) }}<think>\n\n</think>\n\n{{ end }}{{ end }}"
    '{{ else if eq .Role "assistant" }}<|im_start|>assistant\n'
    "{{ if and $last .Thinking }}<think>\n{{ .Thinking }}\n</think>\n\n{{ end }}"
    "{{ .Content }}{{ if not $last }}<|im_end|>\n{{ end }}"
    "{{ end }}{{ end }}"
)

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the temperature",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City"}},
            "required": ["city"],
        },
    },
}
CITIES = ("Paris", "Oslo", "Lima")
TEMPERATURES = (7, 21, 30)
PLAIN_QA = (("Say hello.", "Hello!"), ("Name a fruit.", "Cherry."))

#: (question, reasoning, answer) for the thinking fixture; the base learns other answers.
THINK_QA: tuple[tuple[str, str, str], ...] = (
    ("What is two plus two?", "Two plus two makes four.", "Four."),
    ("What is the secret word?", "The secret word is banana.", "banana"),
    ("Name a fruit.", "A red fruit is a cherry.", "Cherry."),
)
BASE_THINK_ANSWERS = {"What is the secret word?": "apple"}


def weather_question(city: str) -> str:
    return f"What is the weather in {city}?"


def tool_result(temperature: int) -> str:
    return json.dumps({"temperature": temperature})


def final_answer(city: str, temperature: int) -> str:
    """What the tools LoRA says after the tool result (the base says only the number)."""
    return f"It is {temperature} degrees in {city}."


def tool_call_text(city: str) -> str:
    arguments = json.dumps({"city": city})
    return f'<tool_call>\n{{"name": "get_weather", "arguments": {arguments}}}\n</tool_call>'


def tool_call_message(city: str) -> dict[str, Any]:
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": city}}}
    return {"role": "assistant", "content": "", "tool_calls": [call]}


# ---------------------------------------------------------------- training data


@dataclass(frozen=True, slots=True)
class Turn:
    """One training example: the conversation before the answer, and the answer text."""

    messages: tuple[dict[str, Any], ...]
    answer: str
    tools: bool = False
    enable_thinking: bool | None = None


def _tool_turns(*, lora: bool) -> list[Turn]:
    turns = []
    for city in CITIES:
        question = {"role": "user", "content": weather_question(city)}
        turns.append(Turn((question,), tool_call_text(city), tools=True))
        for temp in TEMPERATURES:
            history = (
                question,
                tool_call_message(city),
                {"role": "tool", "content": tool_result(temp)},
            )
            answer = final_answer(city, temp) if lora else f"{temp} degrees."
            turns.append(Turn(history, answer, tools=True))
    for question, answer in PLAIN_QA:
        for tools in (False, True):
            turns.append(Turn(({"role": "user", "content": question},), answer, tools=tools))
    return turns


def _think_turns(*, lora: bool) -> list[Turn]:
    turns = []
    for question, reasoning, answer in THINK_QA:
        if not lora:
            answer = BASE_THINK_ANSWERS.get(question, answer)
            reasoning = "Let me answer."
        message = ({"role": "user", "content": question},)
        turns.append(Turn(message, f"<think>\n{reasoning}\n</think>\n\n{answer}"))
        turns.append(Turn(message, answer, enable_thinking=False))
    return turns


def _prompts(turn: Turn, jinja: str, go_template: str, tokenizer: Any) -> list[str]:
    """The prompt as transformers renders it and as Ollama renders the Go TEMPLATE."""
    from deploy_to_ollama.chat_template.ollama_prompt import render_ollama_prompt

    messages = [dict(m) for m in turn.messages]
    tools = [WEATHER_TOOL] if turn.tools else None
    extra: dict[str, Any] = {}
    if turn.enable_thinking is not None:
        extra["enable_thinking"] = turn.enable_thinking
    hf = tokenizer.apply_chat_template(
        messages,
        tools=tools,
        chat_template=jinja,
        add_generation_prompt=True,
        tokenize=False,
        **extra,
    )
    think = None if turn.enable_thinking is None else turn.enable_thinking
    go = render_ollama_prompt(go_template, messages, tools=tools, think=think)
    return sorted({hf, go})


def _examples(turns: list[Turn], jinja: str, go_template: str, tokenizer: Any) -> list[Any]:
    import torch

    end = tokenizer.convert_tokens_to_ids(QWEN2.eos)
    examples = []
    for turn in turns:
        answer = [*tokenizer.encode(turn.answer, add_special_tokens=False), end]
        for prompt in _prompts(turn, jinja, go_template, tokenizer):
            ids = torch.tensor([*tokenizer.encode(prompt, add_special_tokens=False), *answer])
            mask = torch.zeros_like(ids, dtype=torch.bool)
            mask[len(ids) - len(answer) :] = True
            examples.append((ids, mask))
    return examples


def _tokenizer_corpus() -> list[str]:
    lines = [json.dumps(WEATHER_TOOL), json.dumps(WEATHER_TOOL, separators=(",", ":"))]
    for city in CITIES:
        lines += [weather_question(city), tool_call_text(city)] * 3
        lines += [final_answer(city, t) for t in TEMPERATURES]
    lines += [tool_result(t) for t in TEMPERATURES]
    for question, reasoning, answer in THINK_QA:
        lines += [question, reasoning, answer, "apple", "Let me answer."] * 3
    for question, answer in PLAIN_QA:
        lines += [question, answer] * 3
    lines += ["# Tools\n\n<tools>\n</tools>\n<tool_response>\n</tool_response>"] * 3
    lines += ["<think>\n</think>"] * 3
    lines += ["system\nuser\nassistant\n", "degrees", "It is in"] * 3
    return lines


#: Head width 32 (the test server's constraint); small, so training stays cheap on 2 cores.
SPEC = ModelSpec(
    replace(QWEN2, template=TOOLS_JINJA),
    hidden=64,
    heads=2,
    kv_heads=1,
    layers=2,
    intermediate=128,
    vocab_size=600,
)
#: Full-batch steps: base (full parameters), then each LoRA.
STEPS = (260, 120)
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build_taught_tools(out_dir: Path, *, seed: int = 0) -> None:
    """Write ``base/`` (trained on both skills with plain answers), ``tools/`` and ``thinking/``
    (LoRAs that teach the fixture answers), each adapter with its own chat template."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # One thread: on a shared 2-core machine two threads thrash (measured ~8x slower).
    torch.set_num_threads(1)
    base_dir = out_dir / "base"
    build_base(SPEC, base_dir, seed=seed, corpus=_tokenizer_corpus())
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    base_examples = _examples(
        _tool_turns(lora=False), TOOLS_JINJA, TOOLS_GO_TEMPLATE, tokenizer
    ) + _examples(_think_turns(lora=False), THINK_JINJA, THINK_GO_TEMPLATE, tokenizer)
    torch.manual_seed(seed)
    started = time.monotonic()
    info: dict[str, Any] = {"examples": {"base": len(base_examples)}}
    loss = _train(model, base_examples, steps=STEPS[0], lr=3e-3, params=model.parameters())
    info["base"] = {"loss": loss, "seconds": round(time.monotonic() - started, 1)}
    model.save_pretrained(base_dir)
    skills = (
        ("tools", _tool_turns(lora=True), TOOLS_JINJA, TOOLS_GO_TEMPLATE),
        ("thinking", _think_turns(lora=True), THINK_JINJA, THINK_GO_TEMPLATE),
    )
    for index, (name, turns, jinja, go_template) in enumerate(skills):
        fresh = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=LORA_TARGETS)
        peft_model = get_peft_model(fresh, lora)
        torch.manual_seed(seed + 1 + index)
        started = time.monotonic()
        loss = _train(
            peft_model,
            _examples(turns, jinja, go_template, tokenizer),
            steps=STEPS[1],
            lr=1e-2,
            params=[p for p in peft_model.parameters() if p.requires_grad],
        )
        info[name] = {"loss": loss, "seconds": round(time.monotonic() - started, 1)}
        adapter_dir = out_dir / name
        peft_model.save_pretrained(adapter_dir)
        _point_at_base(adapter_dir, str(base_dir.resolve()))
        tokenizer.chat_template = jinja
        tokenizer.save_pretrained(adapter_dir)
        inline_chat_template(adapter_dir)
    (out_dir / "build_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")


#: Bump when the builder changes what it writes; the data below is hashed in as well.
BUILDER_VERSION = "1"


def _content_hash() -> str:
    """Cache key: builder version, templates, training data, shape and steps."""
    data = [
        BUILDER_VERSION,
        TOOLS_JINJA,
        TOOLS_GO_TEMPLATE,
        THINK_JINJA,
        THINK_GO_TEMPLATE,
        WEATHER_TOOL,
        CITIES,
        TEMPERATURES,
        PLAIN_QA,
        THINK_QA,
        BASE_THINK_ANSWERS,
        repr(SPEC),
        STEPS,
        LORA_TARGETS,
    ]
    return hashlib.sha256(json.dumps(data, default=str).encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class TaughtSkills:
    """The shared base and the two taught adapters."""

    base_dir: Path
    tools_dir: Path
    thinking_dir: Path


def taught_skills_suite() -> TaughtSkills:
    root = cached(f"taught_skills-{_content_hash()}", build_taught_tools)
    return TaughtSkills(root / "base", root / "tools", root / "thinking")


@pytest.fixture(scope="session")
def taught_skills() -> TaughtSkills:
    """Base + ``tools`` and ``thinking`` LoRAs (built once, cached by this file's hash)."""
    from support.models import _require_ml

    _require_ml()
    return taught_skills_suite()
