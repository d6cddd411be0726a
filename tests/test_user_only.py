"""The shape of a template that raises on every assistant turn (``user_only``): GPT4All's R1
distill filters assistant content through ``regex_replace``, which transformers lacks. The
user and system probes are proven in real Go (the rest raise on the Jinja side and skip); a
template that prints the system message after the user message gets no such shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy_to_ollama.chat_template import TemplateSource, translate_template
from deploy_to_ollama.chat_template.user_only import user_only_shape
from support.go_claims import go_mismatches

#: GPT4All's R1 distill: the assistant branch uses a filter transformers does not have.
R1 = (
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}{%- endif %}"
    "{%- for m in messages %}{%- if m['role'] == 'user' %}{{- '<|User|>' + m['content'] }}"
    "{%- endif %}{%- if m['role'] == 'assistant' %}"
    "{{- '<|Assistant|>' + m['content'] | regex_replace('^.*</think>', '') + eos_token }}"
    "{%- endif %}{%- endfor -%}{%- if add_generation_prompt %}{{- '<|Assistant|>' }}{%- endif %}"
)
#: The system message printed after the conversation.
AFTER = (
    R1.replace(
        "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}{%- endif %}", ""
    )
    + "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}{%- endif %}"
)


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def test_user_and_system_probes_verify_in_real_go(go_oracle: Any) -> None:
    source = _source(R1)
    shape = user_only_shape(source)
    assert shape is not None
    assert (shape.user_prefix, shape.generation_prompt) == ("<|User|>", "<|Assistant|>")
    result = translate_template(source)
    assert result.verified
    claims = [p for p in result.report.probes if p.status == "match"]
    assert {"single_user", "system_user", "empty_system"} <= {p.probe for p in claims}
    skipped = {p.probe for p in result.report.probes if p.status == "skipped"}
    assert "multi_turn_no_system" in skipped
    assert go_mismatches(go_oracle, source, result, claims) == []


def test_a_system_message_after_the_conversation_gets_no_shape() -> None:
    source = _source(AFTER)
    assert user_only_shape(source) is None
    assert not translate_template(source).verified
