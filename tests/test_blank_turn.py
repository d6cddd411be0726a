"""An assistant turn whose stripped content is blank prints a shorter wrapper
(``TemplateShape.blank_turn``, ``emit_blank``): Seed-OSS prints ``'\\n' + content|trim + eos``
only where the trimmed content is not empty. The reading is observed from transformers, proven
in real Go on every claimed probe; a template whose blank turn prints other text, or tests the
untrimmed content, gets no such reading and stays unproven on the blank-turn probe."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.chat_template import TemplateSource, translate_template
from deploy_to_ollama.chat_template.emit_blank import observe_blank_turn, rotated_opening
from deploy_to_ollama.chat_template.shape import ThinkShape, infer_shape
from support.go_claims import go_mismatches
from support.shared import CHAT_TEMPLATES_DIR, require_shared

#: Seed-OSS's turns: the newline and the end of turn only beside non-blank content.
SEED = (
    "{% for m in messages %}{% if m.role in ['user', 'system'] %}"
    "{{ bos_token + m.role + '\\n' + m.content + eos_token }}"
    "{% elif m.role == 'assistant' %}{{ bos_token + m.role }}"
    "{% if m.content|trim|length > 0 %}{{ '\\n' + m.content|trim + eos_token }}{% endif %}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ bos_token + 'assistant\\n' }}"
    "{% endif %}"
)
#: A blank turn that prints a text of its own: no split of the wrapper gives it.
OWN_TEXT = SEED.replace("{% endif %}{% endif %}{% endfor %}", "{% else %}(empty){% endif %}"
                        "{% endif %}{% endfor %}")  # fmt: skip
#: The test is on the untrimmed content: whitespace-only content prints its wrapper.
UNTRIMMED = SEED.replace("m.content|trim|length > 0", "m.content|length > 0")
BLANK = "whitespace_only_turns"


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def test_the_reading_is_observed_from_transformers() -> None:
    source = _source(SEED)
    assert observe_blank_turn(source, infer_shape(source)) == ("\n", "</s>")


@pytest.mark.parametrize("template", [OWN_TEXT, UNTRIMMED])
def test_near_misses_get_no_reading(template: str) -> None:
    source = _source(template)
    assert observe_blank_turn(source, infer_shape(source)) is None


def test_blank_turn_verifies_in_real_go(go_oracle: Any) -> None:
    source = _source(SEED)
    result = translate_template(source)
    assert result.verified
    claims = [p for p in result.report.probes if p.status == "match"]
    assert BLANK in {p.probe for p in claims}
    blank = next(p for p in claims if p.probe == BLANK)
    assert "<s>assistant<s>user" in (blank.expected or "")
    assert go_mismatches(go_oracle, source, result, claims) == []


def test_a_blank_turn_with_its_own_text_stays_unproven() -> None:
    result = translate_template(_source(OWN_TEXT))
    assert not result.verified
    assert BLANK in {p.probe for p in result.report.probes if p.status == "differs"}


#: Seed-OSS's assistant turns whole: reasoning after the role, then content, then calls; the
#: end of turn beside content or calls only.
SEED_FULL = (
    "{% for m in messages %}{% if m.role in ['user', 'system'] %}"
    "{{ bos_token + m.role + '\\n' + m.content + eos_token }}"
    "{% elif m.role == 'assistant' %}{{ bos_token + m.role }}"
    "{% if m.reasoning_content is string and m.reasoning_content|trim|length > 0 %}"
    "{{ '\\n<think>' + m.reasoning_content|trim + '</think>' }}{% endif %}"
    "{% if m.content|trim|length > 0 %}{{ '\\n' + m.content|trim }}{% endif %}"
    "{% for c in m.tool_calls or [] %}{{ '\\n<call>' + c.function.name + ' ' "
    "+ c.function.arguments|tojson + '</call>' }}{% endfor %}"
    "{% if m.content|trim|length > 0 or m.tool_calls %}{{ eos_token }}{% endif %}"
    "{% elif m.role == 'tool' %}{{ bos_token + 'tool\\n' + m.content + eos_token }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ bos_token + 'assistant\\n' }}"
    "{% endif %}"
)
CARRIED = {BLANK, "reasoning_tool_loop", "tool_call_and_result", "earlier_reasoning"}


def test_the_reading_is_carried_into_reasoning_and_tool_calls(go_oracle: Any) -> None:
    """The lead moves to the start of the reasoning block and prints before a turn's calls
    whatever its content; a turn without calls prints it and the end of turn only beside
    content that is not blank."""
    source = _source(SEED_FULL)
    result = translate_template(source)
    assert result.verified
    assert result.shape is not None and result.shape.blank_turn == ("\n", "</s>")
    claims = [p for p in result.report.probes if p.status == "match"]
    assert {p.probe for p in claims} >= CARRIED
    assert go_mismatches(go_oracle, source, result, claims) == []


def test_a_reasoning_block_not_ending_with_the_lead_is_not_rotated() -> None:
    shape = replace(infer_shape(_source(SEED)), blank_turn=("\n", "</s>"))
    ending = ThinkShape(before="<think>", after="</think>\n", earlier=True, off="")
    rotated = rotated_opening(replace(shape, think=ending))
    assert rotated is not None and rotated[0].think is not None
    assert (rotated[0].think.before, rotated[0].think.after) == ("\n<think>", "</think>")
    not_ending = replace(ending, after="</think>")
    assert rotated_opening(replace(shape, think=not_ending)) is None


@pytest.mark.parametrize(
    "name", ["seed-oss__bytedance-seed-oss.json", "glm__glm-4.6.json"]
)  # fmt: skip
def test_seed_oss_and_glm_4_6_verify_with_the_reading(name: str) -> None:
    # Both print tool calls and reasoning: before the reading was carried there, the TEMPLATE
    # without it proved more probes, and the blank turn stayed unproven.
    path = require_shared(CHAT_TEMPLATES_DIR) / name
    record = json.loads(path.read_text(encoding="utf-8"))
    source = TemplateSource(
        template=record["jinja"], origin=path, kind="jinja", bos_token="<s>", eos_token="</s>"
    )
    result = translate_template(source)
    assert result.shape is not None and result.shape.blank_turn is not None
    assert result.verified and result.report.tools_verified
    matched = {p.probe for p in result.report.probes if p.status == "match"}
    assert {"reasoning_tool_loop", "tool_call_and_result", BLANK} <= matched
