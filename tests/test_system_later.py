"""A leading system message dropped and later ones printed where they stand (``system_later``):
ChatQA takes ``messages[0]`` off when it is a system message and labels every other message
that is not a user one ``Assistant:``. Proven in real Go on every claimed probe, the two
mid-conversation system probes included; a template that prints the leading system message
after the conversation instead stays unproven."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy_to_ollama.chat_template import TemplateSource, translate_template
from deploy_to_ollama.chat_template.shape import infer_shape
from support.go_claims import go_mismatches

#: ChatQA's turns: the leading system message dropped, the rest labelled by role.
CHATQA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set loop_messages = messages %}{% endif %}System: Be helpful.\n\n"
    "{% for m in loop_messages %}{% if m['role'] == 'user' %}User: {{ m['content'].strip() }}\n\n"
    "{% else %}Assistant: {{ m['content'].strip() }}\n\n{% endif %}"
    "{% if loop.last and m['role'] == 'user' %}Assistant:{% endif %}{% endfor %}"
)
#: The leading system message printed after the conversation, not dropped.
AT_END = CHATQA + (
    "{% if messages[0]['role'] == 'system' %}Note: {{ messages[0]['content'] }}{% endif %}"
)
MID = {"mid_system", "two_system_messages"}


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def test_the_shape_shows_a_dropped_lead_and_a_later_wrapper() -> None:
    shape = infer_shape(_source(CHATQA))
    assert shape.system_mode == "drop" and shape.head_system is None
    assert shape.mid_system == ("\n\nAssistant: ", "")


def test_later_system_messages_verify_in_real_go(go_oracle: Any) -> None:
    source = _source(CHATQA)
    result = translate_template(source)
    assert result.verified
    claims = [p for p in result.report.probes if p.status == "match"]
    assert {p.probe for p in claims} >= MID
    mid = next(p for p in claims if p.probe == "mid_system")
    assert "Assistant: From now on answer in French.\n\nUser:" in (mid.expected or "")
    assert go_mismatches(go_oracle, source, result, claims) == []


def test_a_leading_system_message_printed_elsewhere_stays_unproven() -> None:
    result = translate_template(_source(AT_END))
    assert not result.verified
    assert "system_user" in {p.probe for p in result.report.probes if p.status == "differs"}
