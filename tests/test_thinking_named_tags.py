"""Thinking tags a Jinja names in its prompt (Granite 3.3, Phi-4-reasoning), not around reasoning.

Ollama 0.30+ gives such a Jinja the thinking capability (``<think>`` and ``</think>`` in it), so
a TEMPLATE without ``.Thinking`` loses to the native route. The pair is read off what the Jinja
renders (the text its switch adds, or the prompt every request gets), declared in a branch that
prints nothing, and every claim is re-rendered in real Go; a pair other than Ollama's own, or
one the rendering never names, stays unclaimed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.chat_template import TemplateSource, translate_template
from deploy_to_ollama.chat_template.ollama_prompt import template_thinks
from deploy_to_ollama.chat_template.think_tags import list_block_tags, named_tags
from support.go_claims import go_mismatches
from support.go_oracle import GoOracle

# Granite 3.3's shape: `thinking` (default off) adds a system line that names the tags.
WORDED = (
    "<|system|>You are Granite."
    "{% if thinking %} Write your thoughts between <think></think> and write your response "
    "between <response></response>.{% endif %}<|end|>\n"
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
# Phi-4-reasoning's shape: no switch, a fixed system prompt that asks for the format.
FIXED = (
    "<|im_start|>system<|im_sep|>Structure your reply as: <think> {Thought section} </think> "
    "{Solution section}.<|im_end|>"
    "{% for m in messages %}<|im_start|>{{ m.role }}<|im_sep|>{{ m.content }}<|im_end|>"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant<|im_sep|>{% endif %}"
)


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


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


def _claimed_in_go(
    go_oracle: GoOracle, source: TemplateSource, tags: tuple[str, str] = ("<think>", "</think>")
) -> Any:
    """The translation, with every claim re-rendered in Go and the tags Ollama infers."""
    result = translate_template(source)
    assert result.verified and result.report.thinking_verified
    assert go_mismatches(go_oracle, source, result) == []
    [caps] = go_oracle.run([{"kind": "capabilities", "template": result.template, "data": None}])
    found = json.loads(caps.output)
    assert "thinking" in (found["capabilities"] or [])
    assert (found["open"], found["close"]) == tags
    return result


def test_a_switch_that_names_the_pair_in_words_gets_the_tags(go_oracle: GoOracle) -> None:
    source = _source(WORDED)
    assert named_tags(source, "thinking") == ("<think>", "</think>")
    result = _claimed_in_go(go_oracle, source)
    assert result.report.thinking_default_off  # its default is off: the warning says so
    probes = {p.probe: p for p in result.report.probes}
    assert "<think></think>" in (probes["think_on"].actual or "")
    assert "<think></think>" not in (probes["think_off"].actual or "")


def test_a_fixed_prompt_that_names_the_pair_gets_the_tags(go_oracle: GoOracle) -> None:
    result = _claimed_in_go(go_oracle, _source(FIXED))
    probes = {p.probe: p for p in result.report.probes}
    assert probes["think_on"].actual == probes["think_off"].actual  # no switch: same prompt


@pytest.mark.parametrize(
    ("template", "why"),
    [
        (WORDED.replace("think>", "thought>"), "a pair Ollama does not read the Jinja by"),
        (FIXED.replace("think>", "THINK]").replace("<", "[").replace("[|", "<|"), "not a tag"),
        (
            "{# <think></think> #}" + WORDED.replace("<think></think>", "the thought tags"),
            "Ollama's pair only in a comment, never rendered",
        ),
        (
            FIXED.replace("</think> {Solution", "{Solution"),
            "only the opening is named",
        ),
    ],
    ids=["other_pair", "brackets", "comment_only", "unclosed"],
)
def test_a_pair_not_named_as_ollamas_stays_unclaimed(template: str, why: str) -> None:
    result = translate_template(_source(template))
    assert not result.report.thinking_verified, why
    assert not template_thinks(result.template), why


NAMED = (
    "granite__ibm-granite-granite-3.3-2b-instruct.json",
    "granite__ollama-library-granite3.3-2b.json",
    "phi4__ollama-library-phi4-reasoning-14b.json",
    "phi4__axolotl-phi_4.json",
)


@pytest.mark.parametrize("name", NAMED)
def test_corpus_templates_that_name_the_pair_are_claimed_in_go(
    go_oracle: GoOracle, name: str
) -> None:
    _claimed_in_go(go_oracle, _corpus(name))


def test_granite_3_2s_quoted_wording_names_no_tag() -> None:
    # "Write your thoughts after 'Here is my thought process:'": no pair, no guess.
    source = _corpus("granite__ollama-library-granite3.2-8b.json")
    assert named_tags(source, "thinking") is None
    result = translate_template(source)
    assert not result.report.thinking_verified and not template_thinks(result.template)


MINISTRAL = "mistral__mistralai-ministral-3-14b-reasoning-2512.json"
# Content blocks: a thinking block printed between special tokens, else the text as it is.
BLOCKS = (
    "{% for m in messages %}[{{ m.role }}]{% if m.content is string %}{{ m.content }}"
    "{% else %}{% for b in m.content %}{% if b.type == 'thinking' %}[THINK]{{ b.thinking }}"
    "[/THINK]{% else %}{{ b.text }}{% endif %}{% endfor %}{% endif %}[/{{ m.role }}]"
    "{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"
)


def test_tags_read_off_a_thinking_content_block(go_oracle: GoOracle) -> None:
    # Ministral 3 reasoning prints reasoning only from a {"type": "thinking"} block.
    source = _corpus(MINISTRAL)
    assert list_block_tags(source) == ("[THINK]", "[/THINK]")
    result = _claimed_in_go(go_oracle, source, ("[THINK]", "[/THINK]"))
    assert result.report.tools_verified
    assert list_block_tags(_source(BLOCKS)) == ("[THINK]", "[/THINK]")


@pytest.mark.parametrize(
    "template",
    [
        BLOCKS.replace("[THINK]{{ b.thinking }}[/THINK]", "{{ b.thinking }}\n"),
        BLOCKS.replace("{% if m.content is string %}{{ m.content }}{% else %}", "{{ m.content }}")
        .replace("{% endfor %}{% endif %}[/", "{% endfor %}[/")
        .replace("{% for b in m.content %}", "{% for b in [] %}"),
    ],
    ids=["no_markers", "printed_as_text"],
)
def test_blocks_that_show_no_tags_stay_unclaimed(template: str) -> None:
    source = _source(template)
    assert list_block_tags(source) is None
    assert not template_thinks(translate_template(source).template)
