"""Reasoning filled into a pair every assistant turn prints, only in the running tool loop.

Kimi K2 Thinking prints ``<think></think>`` in each assistant turn and fills it with
``reasoning_content`` after the last assistant answer (a turn without tool calls) only. The
TEMPLATE fills its own pair with ``.Thinking`` under the same condition; the claims, and the
conversations that tell the loop's end apart, are re-rendered in real Go. A Jinja whose loop
ends elsewhere (the first answer: Kimi without its ``break``) stays unclaimed.
"""

from __future__ import annotations

import json
from dataclasses import replace

from deploy_to_ollama.chat_template import TemplateSource, translate_template
from deploy_to_ollama.chat_template.loop_reasoning import (
    LoopReasoning,
    loop_end_probes,
    loop_reasoning_holds,
    read_loop_reasoning,
    with_loop_reasoning,
)
from deploy_to_ollama.chat_template.ollama_prompt import template_thinks
from deploy_to_ollama.chat_template.verify import reference_renders, verify_template
from support.go_claims import go_mismatches
from support.go_oracle import GoOracle

KIMI = "kimi__moonshotai-kimi-k2-thinking.json"


def _kimi(*, first_answer: bool = False) -> TemplateSource:
    from support.shared import CHAT_TEMPLATES_DIR, require_shared

    record = json.loads(require_shared(CHAT_TEMPLATES_DIR / KIMI).read_text())
    jinja = record["jinja"]
    if first_answer:  # without break, the scan from the end stops at the first answer
        jinja = jinja.replace("{%- break -%}", "")
        assert jinja != record["jinja"]
    return TemplateSource(
        template=jinja,
        origin=CHAT_TEMPLATES_DIR / KIMI,
        kind="jinja",
        bos_token=record.get("bos_token") or "<s>",
        eos_token=record.get("eos_token") or "</s>",
    )


def test_the_pair_and_the_loop_end_are_read_off_renders() -> None:
    assert read_loop_reasoning(_kimi()) == LoopReasoning("<think>", "</think>", "answer")


def test_kimi_k2_thinking_fills_its_pair_and_go_holds(go_oracle: GoOracle) -> None:
    source = _kimi()
    result = translate_template(source)
    report = result.report
    assert report.verified and report.tools_verified and report.thinking_verified
    loop = {p.probe: p for p in report.probes}["reasoning_tool_loop"]
    assert "<think>I need the weather tool.</think>" in (loop.actual or "")
    assert go_mismatches(go_oracle, source, result) == []
    # The conversations that tell the loop's end apart, rendered on both sides and in Go.
    probes = loop_end_probes()
    refs = reference_renders(source, probes)
    ends = verify_template(
        source, result.template, system=result.system, tools=True, references=refs, probes=probes
    )
    assert [p.status for p in ends.probes] == ["match"] * len(probes)
    assert go_mismatches(go_oracle, source, result, ends.probes, extra=probes) == []
    caps, tag = go_oracle.run(
        [
            {"kind": "capabilities", "template": result.template, "data": None},
            {"kind": "tooltag", "template": result.template},
        ]
    )
    found = json.loads(caps.output)
    assert {"tools", "thinking"} <= set(found["capabilities"] or [])
    assert (found["open"], found["close"]) == ("<think>", "</think>")
    assert tag.output == "<|tool_calls_section_begin|><|tool_call_begin|>"


def test_a_loop_that_ends_at_the_first_answer_stays_unclaimed() -> None:
    source = _kimi(first_answer=True)
    # The renders the reading uses cannot tell the two apart; verification does.
    reading = read_loop_reasoning(source)
    assert reading == LoopReasoning("<think>", "</think>", "answer")
    result = translate_template(source)
    assert result.verified and not result.report.thinking_verified
    assert not template_thinks(result.template)
    filled = with_loop_reasoning(result.template, reading)
    assert filled is not None and not loop_reasoning_holds(source, filled, result.system)


def test_a_wrong_loop_end_is_caught() -> None:
    source = _kimi()
    result = translate_template(source)
    reading = read_loop_reasoning(source)
    assert reading is not None
    wrong = with_loop_reasoning(_plain_template(source), replace(reading, end="user"))
    assert wrong is not None and not loop_reasoning_holds(source, wrong, result.system)
    right = with_loop_reasoning(_plain_template(source), reading)
    assert right is not None and loop_reasoning_holds(source, right, result.system)


def _plain_template(source: TemplateSource) -> str:
    """The TEMPLATE without thinking joined in (its assistant turns print the empty pair)."""
    from deploy_to_ollama.chat_template.translate import _translate_plain

    return _translate_plain(source, reference_renders(source)).template
