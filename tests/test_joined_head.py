"""A lead-in stripped together with the first user message (``TemplateShape.head_joined``):
Llama 2 variants (Vigogne, mistral.rs' default) build ``'<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n'
+ content`` and strip the whole, so a blank first message loses the lead-in's trailing
``\\n\\n``; a template that strips the content alone keeps it, and the TEMPLATE must too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.chat_template import TemplateSource, load_probes, translate_template
from deploy_to_ollama.chat_template.shape import infer_shape

_LOOP = (
    "{% for m in loop_messages %}{% if loop.index0 == 0 and system != false %}{% set c = BLOCK %}"
    "{% else %}{% set c = m.content %}{% endif %}"
    "{% if m.role == 'user' %}{{ '[INST] ' + STRIPPED + ' [/INST]' }}"
    "{% elif m.role == 'assistant' %}{{ ' ' + m.content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)
_HEAD = (
    "{% if messages[0].role == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system = messages[0].content %}{% else %}{% set loop_messages = messages %}"
    "{% set system = 'Be kind.' %}{% endif %}"
)
#: The system block joined to the first message, then the whole stripped (Vigogne).
JOINED = _HEAD + _LOOP.replace(
    "BLOCK", "'<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' + m.content"
).replace("STRIPPED", "c.strip()")
#: The message stripped alone, after the system block.
APART = _HEAD + _LOOP.replace("BLOCK", "m.content").replace(
    "STRIPPED",
    "('<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' if loop.index0 == 0 else '') + c.strip()",
)
PROBE = "whitespace_only_turns"


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


@pytest.mark.parametrize(("template", "joined"), [(JOINED, True), (APART, False)])
def test_the_reading_is_observed_from_transformers(template: str, joined: bool) -> None:
    assert infer_shape(_source(template)).head_joined is joined


@pytest.mark.parametrize(
    ("template", "opening"),
    [(JOINED, "[INST] <<SYS>>\nBe kind.\n<</SYS>> [/INST]"),
     (APART, "[INST] <<SYS>>\nBe kind.\n<</SYS>>\n\n [/INST]")],
)  # fmt: skip
def test_blank_first_message_verifies_in_real_go(
    template: str, opening: str, go_oracle: Any
) -> None:
    from support.go_oracle import to_ollama_api_messages

    result = translate_template(_source(template))
    assert result.verified
    checked = next(p for p in result.report.probes if p.probe == PROBE)
    assert checked.status == "match"
    assert (checked.expected or "").startswith(opening)
    probe = next(p for p in load_probes() if p.id == PROBE)
    cases = [
        {
            "kind": "ollama",
            "template": result.template,
            "messages": to_ollama_api_messages(messages),
            "system": result.system or "",
        }
        for messages in (list(probe.messages), [{"role": "user", "content": "Hi."}])
    ]
    blank, plain = go_oracle.run(cases)
    assert not blank.failed and not plain.failed, (blank.error, plain.error)
    assert blank.output.removeprefix("<s>").startswith(opening)
    # A message with text keeps the lead-in's whitespace in both readings.
    assert "<</SYS>>\n\nHi. [/INST]" in plain.output
