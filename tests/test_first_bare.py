"""A user message at the start of the conversation opens bare, later ones with a wrapper
(``first_bare``, ``TemplateShape.later_user_prefix``): Smaug's Llama 2 Jinja prints
``bos + '[INST] '`` only for a user message at index 2 or later. Read off a system message in
the middle of a conversation, proven in real Go on every claimed probe; a Jinja that wraps every
user message but the first one (whatever its index) gets no such reading and stays unproven."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy_to_ollama.chat_template import TemplateSource, translate_template
from deploy_to_ollama.chat_template.first_bare import bare_first_variant
from deploy_to_ollama.chat_template.shape import _Renderer, infer_shape
from deploy_to_ollama.chat_template.system_variants import MID
from support.go_claims import go_mismatches

#: Smaug's turns: the opening from index 2 on.
SMAUG = (
    "{%- for idx in range(0, messages|length) -%}{%- if messages[idx]['role'] == 'user' -%}"
    "{%- if idx > 1 -%}{{- bos_token + '[INST] ' + messages[idx]['content'] + ' [/INST]' -}}"
    "{%- else -%}{{- messages[idx]['content'] + ' [/INST]' -}}{%- endif -%}"
    "{% elif messages[idx]['role'] == 'system' %}"
    "{{- '[INST] <<SYS>>\\n' + messages[idx]['content'] + '\\n<</SYS>>\\n\\n' -}}"
    "{%- elif messages[idx]['role'] == 'assistant' -%}"
    "{{- ' ' + messages[idx]['content'] + ' ' + eos_token -}}{% endif %}{% endfor %}"
)
#: The opening on every user message but the first, wherever it stands.
FIRST_ONLY = "{% set ns = namespace(seen=false) %}" + SMAUG.replace(
    "{%- if idx > 1 -%}", "{%- if ns.seen -%}"
).replace("{%- endif -%}{% elif", "{%- endif -%}{% set ns.seen = true %}{% elif")


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def _variant(template: str) -> Any:
    source = _source(template)
    render = _Renderer(source)
    mid = render(MID, gen=False)
    assert mid is not None
    return bare_first_variant(render, infer_shape(source), mid)


def test_the_reading_is_observed_from_transformers() -> None:
    variant = _variant(SMAUG)
    assert variant is not None
    assert (variant.assistant_suffix, variant.later_user_prefix) == (" </s>", "<s>[INST] ")


def test_a_first_user_rule_gets_no_reading() -> None:
    assert _variant(FIRST_ONLY) is None


def test_mid_conversation_system_verifies_in_real_go(go_oracle: Any) -> None:
    source = _source(SMAUG)
    result = translate_template(source)
    assert result.verified
    claims = [p for p in result.report.probes if p.status == "match"]
    assert {"mid_system", "two_system_messages"} <= {p.probe for p in claims}
    assert go_mismatches(go_oracle, source, result, claims) == []


def test_the_near_miss_stays_unproven() -> None:
    result = translate_template(_source(FIRST_ONLY))
    assert not result.verified
    assert "mid_system" in {p.probe for p in result.report.probes if p.status == "differs"}
