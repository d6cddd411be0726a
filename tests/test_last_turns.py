"""A prompt built from the last turns only (``last_turns``): ShieldGemma frames the last user
message, or the last assistant message and the one before it, around the system message. Read
off sentinel renders where an earlier exchange changes nothing, proven in real Go on every
claimed probe; a frame that also shows the first user message gets no such reading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy_to_ollama.chat_template import TemplateSource, translate_template
from deploy_to_ollama.chat_template.last_turns import frame_pieces
from support.go_claims import go_mismatches

#: ShieldGemma's frames (the system message is the principle; without one the Jinja raises).
SHIELD = (
    "{%- if messages[0].role == 'system' %}{%- set guideline = messages[0].content %}"
    "{%- set messages = messages[1:] %}{%- endif %}{{- bos_token }}"
    "{%- if messages[-1].role == 'user' %}{{- 'Check the question.\\nQ: ' + messages[-1].content }}"
    "{{- '\\nPrinciple: ' + guideline + '\\n\\n' }}{%- else %}"
    "{{- 'Check the response.\\nQ: ' + messages[-2].content + '\\nR: ' + messages[-1].content }}"
    "{{- '\\nPrinciple: ' + guideline + '\\n\\n' }}{%- endif %}"
)
#: The first user message shows too: an earlier exchange changes the prompt.
FIRST_TOO = SHIELD.replace(
    "'\\nPrinciple: '", "'\\nFirst: ' + messages[0].content + '\\nPrinciple: '"
)


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def test_the_frames_verify_in_real_go(go_oracle: Any) -> None:
    source = _source(SHIELD)
    assert frame_pieces(source) is not None
    result = translate_template(source)
    assert result.verified
    claims = [p for p in result.report.probes if p.status == "match"]
    assert {"system_multi_turn", "prefill_after_system"} <= {p.probe for p in claims}
    turn = next(p for p in claims if p.probe == "system_multi_turn")
    assert "What is 12 times 12?" not in (turn.expected or "")
    assert go_mismatches(go_oracle, source, result, claims) == []


def test_a_frame_that_shows_an_earlier_turn_gets_no_reading() -> None:
    source = _source(FIRST_TOO)
    assert frame_pieces(source) is None
    assert not translate_template(source).verified
