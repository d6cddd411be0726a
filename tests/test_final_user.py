"""A user turn that ends the conversation opening otherwise, with the system text in it
(mistral.rs's Mistral Small 3): read off transformers' renders, printed by the TEMPLATE for a
user message that ends the conversation, verified in real Go; references never see the
inference's view; near-misses stay unproven."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.chat_template import TemplateSource, translate_template
from deploy_to_ollama.chat_template.final_user import (
    FinalUser,
    final_user_view,
    read_final_user,
)
from deploy_to_ollama.chat_template.verify import reference_renders
from support.go_claims import go_mismatches
from support.shared import CHAT_TEMPLATES_DIR, require_shared

#: The system text before the conversation and again in a final user turn, whose wrapper
#: differs; a default system prompt without a system message.
FINAL = (
    "{%- if messages[0]['role'] == 'system' %}{%- set sys = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}{%- else %}{%- set sys = 'Be brief.' %}"
    "{%- set loop_messages = messages %}{%- endif %}"
    "{{- '<<SYS>>' + sys + '<</SYS>>' }}{{- bos_token }}"
    "{%- for message in loop_messages %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if loop.last %}{{- '[FINAL]' + sys + '\\n\\n' + message['content'] + '[/FINAL]' }}"
    "{%- else %}{{- '[INST]' + message['content'] + '[/INST]' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}{{- message['content'] + eos_token }}"
    "{%- else %}{{- raise_exception('Only user and assistant roles are supported!') }}"
    "{%- endif %}{%- endfor %}"
)
#: Near-miss: the final wrapper also counts the turns before it, which no opening holds.
COUNTED = FINAL.replace(
    "'[FINAL]' + sys", "'[FINAL' + (loop.index | string) + ']' + sys"
)  # fmt: skip
#: Every user turn alike: nothing to read.
PLAIN = (
    "{%- if messages[0]['role'] == 'system' %}{%- set sys = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}{%- else %}{%- set sys = 'Be brief.' %}"
    "{%- set loop_messages = messages %}{%- endif %}"
    "{{- '<<SYS>>' + sys + '<</SYS>>' }}{{- bos_token }}"
    "{%- for message in loop_messages %}"
    "{%- if message['role'] == 'user' %}{{- '[INST]' + message['content'] + '[/INST]' }}"
    "{%- else %}{{- message['content'] + eos_token }}{%- endif %}{%- endfor %}"
)


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def test_the_final_opening_is_read_off_transformers() -> None:
    found = read_final_user(_source(FINAL))
    assert found == FinalUser("INST]", "FINAL]", "\n\n", "Be brief.", carries_system=True)
    assert found.opening(None) == "FINAL]Be brief.\n\n"
    assert found.opening("Hi") == "FINAL]Hi\n\n"
    assert read_final_user(_source(PLAIN)) is None


def test_references_are_transformers_own_inside_the_view() -> None:
    source = _source(FINAL)
    plain = reference_renders(source)
    found = read_final_user(source)
    assert found is not None
    with final_user_view(found):
        viewed = reference_renders(source)
    assert {k: str(v) for k, v in viewed.items()} == {k: str(v) for k, v in plain.items()}
    assert "[FINAL]" in str(plain["single_user"])


def test_a_final_user_turn_verifies_in_real_go(go_oracle: Any) -> None:
    source = _source(FINAL)
    result = translate_template(source)
    assert result.verified
    assert result.shape is not None and result.shape.final_user is not None
    matched = {p.probe for p in result.report.probes if p.status == "match"}
    # A final user turn, one that a prefilled assistant message follows, a system message.
    assert {"single_user", "prefill_assistant", "system_multi_turn", "empty_system"} <= matched
    assert go_mismatches(go_oracle, source, result) == []


def test_a_final_opening_holding_other_text_stays_unproven() -> None:
    result = translate_template(_source(COUNTED))
    assert not result.verified
    assert any(p.status == "differs" for p in result.report.probes)


def test_mistral_small_3_of_mistral_rs_verifies_with_its_tools(go_oracle: Any) -> None:
    # Its default system prompt prints today's date, so the TEMPLATE prints it itself
    # (currentDate), and its tool definitions go before the last user turn.
    path = require_shared(CHAT_TEMPLATES_DIR) / "mistral__mistral.rs-mistral_small_tool_call.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    source = TemplateSource(
        template=record["jinja"], origin=path, kind="jinja", bos_token="<s>", eos_token="</s>"
    )
    result = translate_template(source)
    assert result.verified and result.report.tools_verified
    assert result.system is None and "currentDate" in result.template
    matched = {p.probe for p in result.report.probes if p.status == "match"}
    assert {"single_user", "tool_call_and_result", "prefill_after_system"} <= matched
    assert go_mismatches(go_oracle, source, result) == []


@pytest.mark.parametrize("template", [PLAIN])
def test_a_template_without_a_final_opening_translates_as_before(template: str) -> None:
    result = translate_template(_source(template))
    assert result.verified
    assert result.shape is not None and result.shape.final_user is None
