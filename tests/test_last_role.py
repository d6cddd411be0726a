"""A lead-in that names the last message's role (``TemplateShape.lead_after_assistant``,
``last_role``): Llama Guard 3 checks the ``'Agent'`` messages where the conversation ends with
an assistant one. Observed from transformers, proven in real Go on every claimed probe; a
lead-in that changes with the number of messages instead gets no such reading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy_to_ollama.chat_template import TemplateSource, translate_template
from deploy_to_ollama.chat_template.last_role import observe_lead_after_assistant
from deploy_to_ollama.chat_template.shape import infer_shape
from support.go_claims import go_mismatches

#: Llama Guard 3's way: the count of alternating messages says who spoke last.
GUARD = (
    "{% if messages|length % 2 == 0 %}{% set role = 'Agent' %}{% else %}{% set role = 'User' %}"
    "{% endif %}{{ 'Check the ' + role + ' messages.\\n\\n' }}{% for m in messages %}"
    "{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('alternate') }}"
    "{% endif %}{% if m.role == 'user' %}{% set role = 'User' %}{% else %}{% set role = 'Agent' %}"
    "{% endif %}{{ role + ': ' + m.content.strip() + '\\n\\n' }}{% endfor %}"
    "{{ 'Assess the last ' + role + ' message.' }}"
)
#: The lead-in changes once the conversation is longer than two messages, whoever ends it.
LONGER = GUARD.replace("messages|length % 2 == 0", "messages|length > 2")
PREFILL = "prefill_assistant"


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def test_the_reading_is_observed_from_transformers() -> None:
    source = _source(GUARD)
    shape = infer_shape(source)
    lead = observe_lead_after_assistant(source, shape)
    assert lead == shape.preamble.replace("User", "Agent") != shape.preamble


def test_a_lead_in_that_counts_messages_gets_no_reading() -> None:
    source = _source(LONGER)
    assert observe_lead_after_assistant(source, infer_shape(source)) is None


def test_prefill_verifies_in_real_go(go_oracle: Any) -> None:
    source = _source(GUARD)
    result = translate_template(source)
    assert result.verified
    claims = [p for p in result.report.probes if p.status == "match"]
    prefill = next(p for p in claims if p.probe == PREFILL)
    assert (prefill.expected or "").startswith("Check the Agent messages.")
    assert go_mismatches(go_oracle, source, result, claims) == []


def test_the_near_miss_stays_unproven() -> None:
    result = translate_template(_source(LONGER))
    assert not result.verified
