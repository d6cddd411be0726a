"""Reasoning blocks written as channels (Gemma 4: ``<|channel>thought\\n...<channel|>``).

Gemma 4's Jinja switches thinking on with ``<|think|>`` in the system turn and prints no
reasoning of any turn; with thinking off (its default) the generation prompt ends with an
empty ``<|channel>thought\\n<channel|>`` block. Ollama can only separate the model's reasoning
when the TEMPLATE shows it the tags (``.Thinking`` between them inside the messages loop,
ollama/ollama ``thinking/template.go``), so the tags are read off that empty block. Each
claim's TEMPLATE goes through real Go: its rendering (tests/test_corpus.py) and the tags
Ollama infers from it (the oracle's ``capabilities``, here).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.chat_template import TemplateSource, load_probes, translate_template
from deploy_to_ollama.chat_template.call_reasoning import (
    CallReasoning,
    earlier_loops_hold,
    prints_call_reasoning,
    read_call_reasoning,
    with_call_reasoning,
)
from deploy_to_ollama.chat_template.ollama_prompt import template_thinks
from deploy_to_ollama.chat_template.switched import (
    DEFAULT_OFF_NOT_JOINED,
    NO_TAGS,
    block_tags,
    fixed,
)
from support.go_oracle import GoOracle

# Gemma 4's shape, cut down: <|think|> opens the system turn with thinking on; thinking off
# (the default) closes the generation prompt with an empty thought channel.
CHANNEL_JINJA = (
    "{{ bos_token }}{% set think = enable_thinking is defined and enable_thinking %}"
    "{% if think or messages[0].role == 'system' %}<|turn>system\n{% if think %}<|think|>"
    "{% endif %}{% if messages[0].role == 'system' %}{{ messages[0].content }}{% endif %}"
    "<turn|>\n{% endif %}"
    "{% for m in messages %}{% if m.role != 'system' %}"
    "<|turn>{{ 'model' if m.role == 'assistant' else m.role }}\n{{ m.content }}<turn|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|turn>model\n"
    "{% if not think %}<|channel>thought\n<channel|>{% endif %}{% endif %}"
)
# The closing bar on the wrong side: no block the model could be parsed with.
UNPAIRED_JINJA = CHANNEL_JINJA.replace("\n<channel|>", "\n<other|>")


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def _thinking_ids() -> set[str]:
    return {p.id for p in load_probes() if p.needs_thinking}


def _thinking_reasons(result: object) -> set[str]:
    ids = _thinking_ids()
    report = result.report  # type: ignore[attr-defined]
    return {p.reason for p in report.probes if p.probe in ids}


def test_a_channel_block_gives_ollama_its_tags_on_0_9_3(go_oracle: GoOracle) -> None:
    result = translate_template(_source(CHANNEL_JINJA), server_version="0.9.3")
    assert result.verified and result.report.thinking_verified
    assert result.report.thinking_holds_for == ("0.9.0-0.12.3", ">=0.12.4")
    probes = {p.probe: p for p in result.report.probes}
    off = probes["think_off"].actual or ""
    assert off.endswith("<|turn>model\n<|channel>thought\n<channel|>")
    assert "<|think|>" in (probes["think_on"].actual or "")
    [go] = go_oracle.run([{"kind": "capabilities", "template": result.template, "data": None}])
    assert not go.failed, go
    caps = json.loads(go.output)
    assert "thinking" in (caps["capabilities"] or [])
    # What Gemma 4 writes before its reasoning, and after it.
    assert (caps["open"], caps["close"]) == ("<|channel>thought", "<channel|>")


def test_a_channel_block_is_joined_where_an_unset_think_is_on() -> None:
    # From v0.12.4 a request without think is think true: the Jinja's thinking-on setting.
    result = translate_template(_source(CHANNEL_JINJA))
    assert result.verified and result.report.thinking_verified
    assert result.report.thinking_default_off
    single = {p.probe: p for p in result.report.probes}["single_user"]
    assert single.unset_think_on and "<|think|>" in (single.expected or "")
    assert "<|think|>" in (single.actual or "")


def test_an_unpaired_block_names_no_tags() -> None:
    result = translate_template(_source(UNPAIRED_JINJA), server_version="0.9.3")
    assert result.verified and not result.report.thinking_verified
    assert not template_thinks(result.template)
    assert _thinking_reasons(result) == {NO_TAGS.format(version="0.9.3")}


# Cogito (v1 preview): thinking on only adds a system line; no turn prints reasoning, and the
# model's tags appear nowhere in the Jinja.
SYSTEM_LINE_JINJA = (
    "{% if enable_thinking is defined and enable_thinking %}<|im_start|>system\n"
    "Enable deep thinking subroutine.<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_a_switch_that_only_adds_a_system_line_says_no_tags_are_named() -> None:
    result = translate_template(_source(SYSTEM_LINE_JINJA), server_version="0.9.3")
    assert result.verified and not result.report.thinking_verified
    assert not template_thinks(result.template)
    assert _thinking_reasons(result) == {NO_TAGS.format(version="0.9.3")}


def test_a_block_that_does_not_join_keeps_its_own_reason() -> None:
    # The off prompt shows a channel block, so the tags are named: the reason is the join.
    upper = "{% if enable_thinking is defined and enable_thinking %}{{ messages[0].content|upper }}"
    result = translate_template(
        _source(upper + "{% endif %}" + CHANNEL_JINJA), server_version="0.9.3"
    )
    assert not result.report.thinking_verified
    assert _thinking_reasons(result) == {DEFAULT_OFF_NOT_JOINED.format(version="0.9.3")}


def test_a_system_line_that_names_tags_in_words_is_not_said_to_name_none() -> None:
    # Granite 3.3: "Write your thoughts between <think></think>": Ollama's own pair, named by
    # what thinking on adds, is declared (think_tags.py) and thinking verifies on 0.9.3 too.
    named = SYSTEM_LINE_JINJA.replace(
        "Enable deep thinking subroutine.", "Write your thoughts between <think></think>."
    )
    result = translate_template(_source(named), server_version="0.9.3")
    assert result.report.thinking_verified and template_thinks(result.template)
    # Another pair is named, but which is the reasoning would be a guess: the join fails.
    other = named.replace("think>", "thought>")
    result = translate_template(_source(other), server_version="0.9.3")
    assert not result.report.thinking_verified
    assert _thinking_reasons(result) == {DEFAULT_OFF_NOT_JOINED.format(version="0.9.3")}


R7B = "command-r__cohereforai-c4ai-command-r7b-12-2024-tool_use.json"
#: Command R7B's reading: the pair it prints around an empty reasoning too, in every turn.
R7B_READING = CallReasoning(
    before="<|START_THINKING|>", after="<|END_THINKING|>", earlier=True, filled=True
)


def test_reasoning_printed_in_tool_loops_in_any_form_is_seen() -> None:
    # Command R7B prints <|START_THINKING|>R<|END_THINKING|> in tool-calling turns, and the
    # empty pair without reasoning: the reasoning fills the pair (a filled reading).
    r7b = _corpus(R7B)
    assert prints_call_reasoning(r7b) and read_call_reasoning(r7b) == R7B_READING
    assert not prints_call_reasoning(_corpus("chatml__ollama-library-cogito-14b.json"))


def test_a_filled_pair_carries_tool_loop_reasoning_and_its_tags(go_oracle: GoOracle) -> None:
    """Command R7B (default thinking off): its TEMPLATE prints the pair with .Thinking between
    in place of its own empty pair, Go infers the tags from it and reads the calls' tag after
    it, and thinking verifies on the newest Ollama (unset think compared as think true)."""
    result = translate_template(_corpus(R7B))
    report = result.report
    assert report.verified and report.tools_verified and report.thinking_verified
    assert report.thinking_default_off and report.thinking_holds_for == ("0.9.0-0.12.3", ">=0.12.4")
    loop = {p.probe: p for p in report.probes}["reasoning_tool_loop"]
    assert (
        loop.status == "match"
        and "<|START_THINKING|>I need the weather tool.<|END_THINKING|>" in (loop.actual or "")
    )
    caps, tag = go_oracle.run(
        [
            {"kind": "capabilities", "template": result.template, "data": None},
            {"kind": "tooltag", "template": result.template},
        ]
    )
    found = json.loads(caps.output)
    assert {"tools", "thinking"} <= set(found["capabilities"] or [])
    assert (found["open"], found["close"]) == ("<|START_THINKING|>", "<|END_THINKING|>")
    assert tag.output.startswith("<|START_ACTION|>[")


def test_a_filled_pair_needs_the_pair_in_the_template_and_in_every_turn() -> None:
    # The claim that must come out false: a TEMPLATE whose calls do not open with the pair
    # gets no reasoning block, and a pair kept only after the last user message has no
    # place for a condition between its tags (Ollama reads the tags around .Thinking).
    template = (
        '{{- range $i, $m := .Messages }}{{- if eq .Role "user" }}U{{ .Content }}'
        '{{- else if eq .Role "assistant" }}{{- if .ToolCalls }}<|START_ACTION|>{{- end }}'
        "{{- end }}{{- end }}"
    )
    assert with_call_reasoning(template, R7B_READING) is None
    paired = template.replace("<|START_ACTION|>", "<|START_THINKING|><|END_THINKING|>")
    filled = with_call_reasoning(paired, R7B_READING) or ""
    assert "<|START_THINKING|>{{ .Thinking }}<|END_THINKING|>" in filled
    assert "<|START_THINKING|><|END_THINKING|>" not in filled
    assert with_call_reasoning(paired, replace(R7B_READING, earlier=False)) is None


@pytest.mark.parametrize(
    "name", ["chatml__ollama-library-cogito-14b.json", "llama3__ollama-library-cogito-3b.json"]
)
def test_cogito_is_not_claimed_and_says_why(name: str) -> None:
    result = translate_template(_corpus(name), server_version="0.9.3")
    assert not result.report.thinking_verified and not template_thinks(result.template)
    reasons = {p.probe: p.reason for p in result.report.probes if p.probe in _thinking_ids()}
    # The tool loop may instead be skipped for its tools (Cogito 3B prints call ids, which
    # Ollama 0.9.3 has not); every other thinking probe gives the no-tags reason.
    tool_loop = reasons.pop("reasoning_tool_loop", None)
    assert set(reasons.values()) == {NO_TAGS.format(version="0.9.3")}
    assert tool_loop == NO_TAGS.format(version="0.9.3") or "0.9.3" in (tool_loop or "")


# Gemma 4 31B keeps reasoning only in tool-calling turns after the last user message; the
# edge models' Jinja prints no empty block with thinking off, so the tool loop is where the
# tags show.
INTERLEAVED = ("gemma4__google-gemma-4-31b-it.json", "gemma4__unsloth-studio-gemma-4-edge.json")


def _corpus(name: str) -> TemplateSource:
    from support.shared import CHAT_TEMPLATES_DIR, require_shared

    record = json.loads(require_shared(CHAT_TEMPLATES_DIR / name).read_text())
    return TemplateSource(
        template=record["jinja"],
        origin=CHAT_TEMPLATES_DIR / name,
        kind="jinja",
        bos_token=record.get("bos_token") or "<s>",
        eos_token=record.get("eos_token") or "</s>",
    )


@pytest.mark.parametrize("name", INTERLEAVED)
def test_reasoning_kept_in_tool_loops_is_printed_and_parsed(go_oracle: GoOracle, name: str) -> None:
    source = _corpus(name)
    assert read_call_reasoning(source) == CallReasoning(
        before="<|channel>thought\n", after="\n<channel|>", earlier=False
    )
    result = translate_template(source, server_version="0.9.3")
    assert result.verified and result.report.tools_verified and result.report.thinking_verified
    loop = {p.probe: p for p in result.report.probes}["reasoning_tool_loop"]
    assert loop.status == "match" and "<|channel>thought\nI need the weather tool.\n<channel|>" in (
        loop.actual or ""
    )
    caps, tag = go_oracle.run(
        [
            {"kind": "capabilities", "template": result.template, "data": None},
            {"kind": "tooltag", "template": result.template},
        ]
    )
    found = json.loads(caps.output)
    assert {"tools", "thinking"} <= set(found["capabilities"] or [])
    assert (found["open"], found["close"]) == ("<|channel>thought", "<channel|>")
    assert tag.output == "<|tool_call>call:"  # the calls' own if stays the first on .ToolCalls
    # Newer servers get the same join, the default-off warning and the unset probes compared
    # with the Jinja's thinking-on setting.
    newest = translate_template(source).report
    assert newest.thinking_verified and newest.thinking_default_off
    assert newest.thinking_holds_for == ("0.9.0-0.12.3", ">=0.12.4")


def test_a_wrong_reading_of_earlier_tool_loops_is_caught() -> None:
    source = _corpus(INTERLEAVED[0])
    result = translate_template(source, server_version="0.9.3")
    assert earlier_loops_hold(source, result.template, result.system)
    # Read as if the Jinja kept every tool loop's reasoning: the TEMPLATE then prints the
    # reasoning of a loop before the last user message, which the Jinja drops.
    reading = read_call_reasoning(source)
    assert reading is not None
    on = translate_template(fixed(source, "enable_thinking", value=True), server_version="0.9.3")
    wrong = with_call_reasoning(on.template, replace(reading, earlier=True))
    assert wrong is not None
    assert not earlier_loops_hold(source, wrong, result.system)


def test_a_jinja_without_tool_loop_reasoning_gives_no_reading() -> None:
    assert read_call_reasoning(_source(CHANNEL_JINJA)) is None


@pytest.mark.slow
def test_the_real_0_9_3_server_thinks_with_the_joined_gemma_4_template(
    ollama_server: Any, tmp_path: Path
) -> None:
    """Real Ollama 0.9.3 lists the thinking and tools capabilities it derives from the joined
    Gemma 4 TEMPLATE itself, and renders (its debug log) think unset, true and false as the
    Jinja does: unset is the Jinja's default, thinking off."""
    from deploy_to_ollama.modelfile import Modelfile
    from deploy_to_ollama.ollama_client import OllamaClient
    from deploy_to_ollama.registrar import register_model
    from support.ollama_server import write_tiny_gguf

    source = _corpus(INTERLEAVED[0])
    result = translate_template(source, server_version="0.9.3")
    assert result.report.thinking_holds_for == ("0.9.0-0.12.3", ">=0.12.4")
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    name = "gemma4-loop:latest"
    modelfile = Modelfile(from_=str(gguf), template=result.template)
    register_model(name, modelfile, base_dir=tmp_path, host=ollama_server.host, force=True)
    shown = OllamaClient(ollama_server.host).require(name)
    assert {"thinking", "tools"} <= set(shown.capabilities or [])
    probe = {p.id: p for p in load_probes()}["reasoning_tool_loop"]
    # Tool loops are proven through Go only (tests/test_corpus.py): 0.9.3 has no .ToolName on
    # api.Message, which the TEMPLATE's tool turn reads (another part's claim; see the
    # report). Here: the three settings on a question, with tools offered.
    question = [{"role": "user", "content": "Weather in Oslo?"}]
    _chat_prompts_match(ollama_server, name, source, probe.tools, question)


def _chat_prompts_match(
    ollama_server: Any,
    name: str,
    source: TemplateSource,
    tools: tuple[dict[str, Any], ...],
    messages: list[dict[str, Any]],
) -> None:
    import httpx

    from deploy_to_ollama.chat_template.hf_render import render_hf
    from support.go_oracle import to_ollama_api_messages

    for think in (None, True, False):
        ollama_server.mark_log()
        body: dict[str, Any] = {
            "model": name,
            "messages": to_ollama_api_messages(messages),
            "tools": list(tools),
            "stream": False,
            "options": {"num_predict": 1},
        }
        if think is not None:
            body["think"] = think
        response = httpx.post(f"{ollama_server.host}/api/chat", json=body, timeout=300)
        assert response.status_code == 200, response.text
        prompts = ollama_server.prompts()
        assert prompts, ollama_server.log_tail()
        kwargs = {} if think is None else {"enable_thinking": think}
        expected = render_hf(
            source.template,
            messages,
            tools=list(tools),
            tokens={"bos_token": ""},
            add_generation_prompt=True,
            kwargs=kwargs,
        )
        assert prompts[-1] == expected, think
        off = prompts[-1].endswith("<|turn>model\n<|channel>thought\n<channel|>")
        assert off is (think is not True) and ("<|think|>" in prompts[-1]) is (think is True)


APERTUS = "other__apertus-8b-instruct.json"


def test_tags_read_off_typed_content_blocks(go_oracle: GoOracle) -> None:
    """Apertus prints reasoning only for its own content-block format (a "thoughts" block:
    <|inner_prefix|>R<|inner_suffix|>); OpenAI-format turns lose it. Those are the tags
    its model writes, shown by the Jinja itself: declared in a branch that prints nothing,
    they let Ollama separate the reasoning, and the claim holds in Go."""
    source = _corpus(APERTUS)
    assert block_tags(source, "enable_thinking") == ("<|inner_prefix|>", "<|inner_suffix|>")
    result = translate_template(source)
    report = result.report
    assert report.verified and report.thinking_verified and report.thinking_default_off
    [caps] = go_oracle.run([{"kind": "capabilities", "template": result.template, "data": None}])
    found = json.loads(caps.output)
    assert "thinking" in (found["capabilities"] or [])
    assert (found["open"], found["close"]) == ("<|inner_prefix|>", "<|inner_suffix|>")


def test_content_blocks_printed_as_text_name_no_tags() -> None:
    # A Jinja that prints a turn's content as it is (the dict's repr) shows no tags there:
    # Cogito stays refused, and so does a system-line switch (no tags guessed).
    assert block_tags(_corpus("chatml__ollama-library-cogito-14b.json"), "enable_thinking") is None
    assert block_tags(_source(SYSTEM_LINE_JINJA), "enable_thinking") is None
    typed = SYSTEM_LINE_JINJA.replace(
        "{{ m.content }}",
        "{% if m.content is mapping %}{% for b in m.content.blocks %}"
        "{% if b.type == 'thoughts' %}<|inner_prefix|>{{ b.text }}<|inner_suffix|>"
        "{% else %}{{ b.text }}{% endif %}{% endfor %}{% else %}{{ m.content }}{% endif %}",
    )
    assert block_tags(_source(typed), "enable_thinking") == ("<|inner_prefix|>", "<|inner_suffix|>")
    # A block whose reasoning is not right between two special tokens names none.
    loose = typed.replace("<|inner_prefix|>{{ b.text }}", "<|inner_prefix|>Thoughts: {{ b.text }}")
    assert block_tags(_source(loose), "enable_thinking") is None
