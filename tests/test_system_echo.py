"""System messages printed twice (``system_echo``): Pivot-MoE's alpaca Jinja opens with the
last system message, then prints every message where it stands, system ones included. Proven in
real Go on every claimed probe, both mid-conversation system probes included; a Jinja that opens
with the first system message instead stays unproven."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy_to_ollama.chat_template import TemplateSource, translate_template
from deploy_to_ollama.chat_template.shape import infer_shape
from deploy_to_ollama.chat_template.system_echo import echo_variants
from support.go_claims import go_mismatches

#: Pivot-MoE's turns.
PIVOT = (
    "{{ (messages|selectattr('role', 'equalto', 'system')|list|last).content|trim "
    "if (messages|selectattr('role', 'equalto', 'system')|list) else '' }}"
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content']|trim }}"
    "{% elif m['role'] == 'user' %}### Instruction: {{ m['content']|trim }}"
    "{% elif m['role'] == 'assistant' %}### Response: {{ m['content']|trim }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt and messages[-1]['role'] != 'assistant' %}"
    "### Response:{% endif %}"
)
#: The first system message opens the prompt, not the last.
FIRST = PIVOT.replace("|list|last).content", "|list|first).content")


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def test_the_echo_is_read_from_the_first_shape() -> None:
    variants = echo_variants(infer_shape(_source(PIVOT)))
    assert [v.system_mode for v in variants] == ["hoist_last", "hoist"]
    assert variants[0].system_echo == ("", "")


def test_echoed_system_messages_verify_in_real_go(go_oracle: Any) -> None:
    source = _source(PIVOT)
    result = translate_template(source)
    assert result.verified
    claims = [p for p in result.report.probes if p.status == "match"]
    assert {p.probe for p in claims} >= {"mid_system", "two_system_messages", "system_user"}
    assert go_mismatches(go_oracle, source, result, claims) == []


def test_the_first_system_message_hoisted_stays_unproven() -> None:
    result = translate_template(_source(FIRST))
    assert not result.verified
    assert "two_system_messages" in {p.probe for p in result.report.probes if p.status == "differs"}
