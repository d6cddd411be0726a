"""A system turn printed where each system message stands, and once with empty content where no
message is a system one (``system_absent``): Apriel 1.5's prompt sits inside its system wrapper.
Proven in real Go on every claimed probe; a Jinja that also prints the empty turn before an
empty system message reads the same on the sentinel renders and stays unproven."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy_to_ollama.chat_template import TemplateSource, translate_template
from deploy_to_ollama.chat_template.shape import infer_shape
from deploy_to_ollama.chat_template.system_absent import empty_default_variant
from support.go_claims import go_mismatches

#: Apriel 1.5's system turns: the prompt inside the wrapper, the empty turn when none is given.
APRIEL = (
    "{{- bos_token -}}{%- if messages|selectattr('role', 'equalto', 'system')|list|length == 0 -%}"
    "{{- '<|system|>\\nThink first.' + '\\n<|end|>\\n' -}}{%- endif -%}"
    "{%- for m in messages -%}{%- if m['role'] == 'user' -%}"
    "{{- '<|user|>\\n' + m['content'] + '\\n<|end|>\\n' -}}"
    "{%- elif m['role'] == 'system' -%}{{- '<|system|>\\nThink first.' + m['content'] + "
    "'\\n<|end|>\\n' -}}{%- elif m['role'] == 'assistant' -%}"
    "{{- '<|assistant|>\\n' + m['content'] + '\\n<|end|>\\n' + eos_token -}}{%- endif -%}"
    "{%- if loop.last and add_generation_prompt and m['role'] != 'assistant' -%}"
    "{{- '<|assistant|>\\n' -}}{%- endif -%}{%- endfor -%}"
)
#: The empty turn also before an empty system message (only non-empty ones count).
NON_EMPTY = APRIEL.replace(
    "selectattr('role', 'equalto', 'system')|list",
    "selectattr('role', 'equalto', 'system')|selectattr('content')|list",
)
MID = {"mid_system", "two_system_messages"}


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def test_system_turns_verify_in_real_go(go_oracle: Any) -> None:
    source = _source(APRIEL)
    result = translate_template(source)
    assert result.verified
    assert result.shape is not None and result.shape.system_mode == "default_block"
    claims = [p for p in result.report.probes if p.status == "match"]
    assert {p.probe for p in claims} >= MID
    mid = next(p for p in claims if p.probe == "mid_system")
    assert (mid.expected or "").startswith("<s><|user|>\nHello.")
    assert go_mismatches(go_oracle, source, result, claims) == []


def test_an_empty_turn_before_an_empty_system_message_stays_unproven() -> None:
    # The renders the reading is taken from agree; the probes tell them apart.
    assert empty_default_variant(infer_shape(_source(NON_EMPTY)), "<s>") is not None
    result = translate_template(_source(NON_EMPTY))
    assert not result.verified
    assert any(p.status == "differs" for p in result.report.probes)
