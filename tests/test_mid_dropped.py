"""A system message after the first message that prints its wrapper without its content
(``TemplateShape.mid_dropped``): axolotl's alpaca prints a system message only when it is
``loop.first``, and the blank line after every message, so a later one leaves a blank line
only; a template that prints every system message keeps its text, and the TEMPLATE must too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.chat_template import TemplateSource, load_probes, translate_template
from deploy_to_ollama.chat_template.shape import infer_shape
from support.go_claims import go_case

_ALPACA = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' FIRST %}{{ message['content'] }}"
    "{% elif message['role'] == 'user' %}{{ '### Instruction:\\n' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '### Response:\\n' + message['content'] + eos_token }}{% endif %}"
    "{% if not loop.last %}{{ '\\n\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '\\n\\n### Response:\\n' }}{% endif %}"
)
DROPPED = _ALPACA.replace("FIRST", "and loop.first")
KEPT = _ALPACA.replace("FIRST", "")
PROBES = ("mid_system", "two_system_messages")


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


@pytest.mark.parametrize(("template", "dropped"), [(DROPPED, True), (KEPT, False)])
def test_the_reading_is_observed_from_transformers(template: str, dropped: bool) -> None:
    assert infer_shape(_source(template)).mid_dropped is dropped


@pytest.mark.parametrize(("template", "printed"), [(DROPPED, False), (KEPT, True)])
def test_later_system_messages_verify_in_real_go(
    template: str, printed: bool, go_oracle: Any
) -> None:

    result = translate_template(_source(template))
    assert result.verified
    probes = {p.id: p for p in load_probes()}
    checked = [p for p in result.report.probes if p.probe in PROBES]
    assert [p.status for p in checked] == ["match", "match"]
    cases = [go_case(result, probes[p.probe]) for p in checked]
    for check, go in zip(checked, go_oracle.run(cases), strict=True):
        assert not go.failed, (go.error, go.parse_error)
        assert go.output == check.actual
        assert (
            "From now on answer in French." in go.output or "Answer in German" in go.output
        ) is printed
