"""Reasoning stripped from earlier turns where the generation prompt opens no block
(``think_stripped``): a DeepSeek R1-like Jinja drops an assistant's content up to
``</think>`` and ends its prompt with the assistant opening only. The TEMPLATE declares the
tags (``.Thinking`` in a branch that prints nothing) and its thinking probes verify, re-rendered
in real Go; a Jinja that keeps the text before the tag, or names the tag without stripping
at it, gets no thinking claim."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.chat_template import TemplateSource, translate_template
from deploy_to_ollama.chat_template.ollama_prompt import template_thinks
from deploy_to_ollama.chat_template.think_stripped import stripped_tags
from support.go_claims import go_mismatches

_R1_LIKE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<|User|>' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}{% set content = message['content'] %}"
    "{% if '</think>' in content %}{% set content = STRIP %}{% endif %}"
    "{{ '<|Assistant|>' + content + '<|end|>' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|Assistant|>' }}{% endif %}"
)
STRIPPED = _R1_LIKE.replace("STRIP", "content.split('</think>')[-1]")
KEPT = _R1_LIKE.replace("STRIP", "content.split('</think>')[0]")
NAMED_ONLY = _R1_LIKE.replace("STRIP", "content")
#: LFM2.5-like: only turns before the last assistant turn lose their reasoning.
EARLIER_ONLY = (
    "{% set ns = namespace(last=-1) %}{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}{% set ns.last = loop.index0 %}{% endif %}{% endfor %}"
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' }}{% set c = m['content'] %}"
    "{% if m['role'] == 'assistant' and loop.index0 != ns.last and '</think>' in c %}"
    "{% set c = c.split('</think>')[-1] | trim %}{% endif %}{{ c + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
THINKING = ("think_on", "think_off", "earlier_reasoning", "reasoning_prefill")


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


@pytest.mark.parametrize(
    ("template", "tags"),
    [
        (STRIPPED, ("<think>", "</think>")),
        (EARLIER_ONLY, ("<think>", "</think>")),
        (KEPT, None),
        (NAMED_ONLY, None),
    ],
)
def test_the_tags_are_observed_from_transformers(
    template: str, tags: tuple[str, str] | None
) -> None:
    assert stripped_tags(_source(template)) == tags


@pytest.mark.parametrize("template", [STRIPPED, EARLIER_ONLY])
def test_stripped_reasoning_verifies_thinking_in_real_go(template: str, go_oracle: Any) -> None:
    result = translate_template(_source(template))
    assert result.verified
    assert template_thinks(result.template)
    assert result.report.thinking_verified
    checked = [p for p in result.report.probes if p.probe in THINKING]
    assert [p.status for p in checked] == ["match"] * len(THINKING)
    assert "<think>{{ .Thinking }}</think>" in result.template
    assert go_mismatches(go_oracle, _source(template), result, checked) == []


@pytest.mark.parametrize("template", [KEPT, NAMED_ONLY])
def test_no_thinking_claim_without_stripping(template: str) -> None:
    result = translate_template(_source(template))
    assert not template_thinks(result.template)
    assert not result.report.thinking_verified
    checked = [p for p in result.report.probes if p.probe in THINKING]
    assert checked
    assert all(p.status == "skipped" for p in checked)
