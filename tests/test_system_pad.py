"""Text printed once per system message before the system lead-in (``system_pad``): DeepSeek
V2.5 collects the system prompt in a loop whose body keeps its indentation. Observed from
transformers, proven in real Go on every claimed probe (two system messages: two pads); an
indentation printed once per message of any role gets no such reading and stays unproven."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy_to_ollama.chat_template import TemplateSource, translate_template
from deploy_to_ollama.chat_template.shape import infer_shape
from deploy_to_ollama.chat_template.system_pad import observe_system_pad
from support.go_claims import go_mismatches

#: DeepSeek V2.5's system collection: the last system message, four spaces per system message.
PADDED = (
    "{% set ns = namespace(sys='') %}{%- for m in messages %}{%- if m['role'] == 'system' %}"
    "    {% set ns.sys = m['content'] %}{%- endif %}{%- endfor %}{{ bos_token }}{{ ns.sys }}"
    "{%- for m in messages %}{%- if m['role'] == 'user' %}{{ '<U>' + m['content'] }}"
    "{%- elif m['role'] == 'assistant' %}{{ '<A>' + m['content'] + eos_token }}{%- endif %}"
    "{%- endfor %}{% if add_generation_prompt %}{{ '<A>' }}{% endif %}"
)
#: The indentation printed once per message, whatever its role.
EVERY = PADDED.replace(
    "{%- if m['role'] == 'system' %}    {% set ns.sys",
    "    {% if m['role'] == 'system' %}{% set ns.sys",
)
TWO = "two_system_messages"


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def test_the_pad_is_observed_from_transformers() -> None:
    source = _source(PADDED)
    assert observe_system_pad(source, infer_shape(source)) == "    "


def test_a_pad_per_message_gets_no_reading() -> None:
    source = _source(EVERY)
    assert observe_system_pad(source, infer_shape(source)) is None


def test_two_system_messages_verify_in_real_go(go_oracle: Any) -> None:
    source = _source(PADDED)
    result = translate_template(source)
    assert result.verified
    claims = [p for p in result.report.probes if p.status == "match"]
    two = next(p for p in claims if p.probe == TWO)
    assert (two.expected or "").startswith("        <s>  Answer in German")
    assert go_mismatches(go_oracle, source, result, claims) == []


def test_the_near_miss_stays_unproven() -> None:
    assert not translate_template(_source(EVERY)).verified
