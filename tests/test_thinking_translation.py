"""Thinking in the TEMPLATE: reasoning of assistant turns and the enable_thinking switch.

The Jinja side renders with transformers (``enable_thinking`` as a template variable), the
Ollama side with our port given the request's ``think``; claims are re-rendered by Go.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy_to_ollama.chat_template import TemplateSource, load_probes, translate_template
from deploy_to_ollama.chat_template.go_template import parse_template
from deploy_to_ollama.chat_template.ollama_prompt import infer_thinking_tags, template_thinks
from deploy_to_ollama.chat_template.prompt_diff import strip_bos
from deploy_to_ollama.chat_template.verify import NO_THINKING, json_equivalent

# Qwen3-style: reasoning kept only after the last user message; enable_thinking=false closes
# an empty think block after the generation prompt.
QWEN3_LIKE = (
    "{% set ns = namespace(last=-1) %}{% for m in messages %}{% if m.role == 'user' %}"
    "{% set ns.last = loop.index0 %}{% endif %}{% endfor %}"
    "{% for m in messages %}{% if m.role == 'assistant' %}<|im_start|>assistant\n"
    "{% if m.reasoning_content and loop.index0 > ns.last %}<think>\n{{ m.reasoning_content }}"
    "\n</think>\n\n{% endif %}{{ m.content }}{% if not loop.last %}<|im_end|>\n{% endif %}"
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n"
    "{% endif %}{% endif %}"
)
PLAIN = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def _thinking(result: Any) -> dict[str, Any]:
    ids = {p.id for p in load_probes() if p.needs_thinking and not p.needs_tools}
    return {p.probe: p for p in result.report.probes if p.probe in ids}


def test_reasoning_and_the_switch_are_translated() -> None:
    result = translate_template(_source(QWEN3_LIKE))
    probes = _thinking(result)
    assert result.verified and result.report.thinking_verified
    assert {p.status for p in probes.values()} == {"match"}
    # Ollama infers the tags from the text around .Thinking inside the messages loop.
    assert template_thinks(result.template)
    assert infer_thinking_tags(parse_template(result.template)) == ("<think>", "</think>")
    off = probes["think_off"].actual or ""
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert not (probes["think_on"].actual or "").endswith("</think>\n\n")
    earlier = probes["earlier_reasoning"].actual or ""
    assert "17 * 3 = 51." not in earlier  # dropped before the last user message, as the Jinja
    assert "<think>\n10 is even, 11 is prime.\n</think>\n\n11" in (
        probes["reasoning_prefill"].actual or ""
    )


def test_thinking_probes_never_count_without_the_capability() -> None:
    result = translate_template(_source(PLAIN))
    assert not template_thinks(result.template)
    probes = _thinking(result)
    assert probes and {p.status for p in probes.values()} == {"skipped"}
    assert {p.reason for p in probes.values()} == {NO_THINKING}
    assert not result.report.thinking_verified


def test_go_renders_the_thinking_probes_as_claimed(go_oracle: Any) -> None:
    _assert_go_renders_the_claims(go_oracle, _source(QWEN3_LIKE), "<s>")


def _assert_go_renders_the_claims(go_oracle: Any, source: TemplateSource, bos: str) -> None:
    from support.go_oracle import to_ollama_api_messages

    result = translate_template(source)
    probes = {p.id: p for p in load_probes()}
    claims = [p for p in result.report.probes if p.status == "match"]
    cases = [
        {
            "kind": "ollama",
            "template": result.template,
            "messages": to_ollama_api_messages(list(probes[c.probe].messages)),
            "system": result.system or "",
            "think": probes[c.probe].think,
            "tools": list(probes[c.probe].tools) or None,
        }
        for c in claims
    ]
    assert any(probes[c.probe].needs_thinking for c in claims)
    for claim, go in zip(claims, go_oracle.run(cases), strict=True):
        assert not go.failed, (claim.probe, go.error)
        assert go.output == claim.actual, claim.probe
        exp, act = strip_bos(claim.expected or "", go.output, bos)
        assert exp == act or json_equivalent(source, probes[claim.probe], exp, act), claim.probe


def test_reasoning_of_the_last_message_only_is_translated() -> None:
    """A ``loop.last`` template (the taught thinking fixture's) prints reasoning only for the
    final message: a tool loop's earlier reasoned step loses it, unlike Qwen3's "after the
    last user message", and the TEMPLATE must say so."""
    from support.taught_tools import THINK_JINJA

    source = TemplateSource(
        template=THINK_JINJA, origin=Path("t.jinja"), kind="jinja", eos_token="<|im_end|>"
    )
    result = translate_template(source)
    assert result.verified and result.report.thinking_verified
    assert infer_thinking_tags(parse_template(result.template)) == ("<think>", "</think>")
    probes = {p.probe: p for p in result.report.probes}
    loop = probes["reasoning_tool_loop"]
    assert loop.status == "match"
    assert "I need the weather tool." not in (loop.actual or "")
    assert "<think>\n10 is even, 11 is prime.\n</think>\n\n11" in (
        probes["reasoning_prefill"].actual or ""
    )
    off = probes["think_off"].actual or ""
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_go_renders_the_last_message_reasoning_as_claimed(go_oracle: Any) -> None:
    from support.taught_tools import THINK_JINJA

    source = TemplateSource(
        template=THINK_JINJA, origin=Path("t.jinja"), kind="jinja", eos_token="<|im_end|>"
    )
    _assert_go_renders_the_claims(go_oracle, source, "")
