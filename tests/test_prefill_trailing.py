"""A prefilled final assistant message keeps its trailing whitespace where transformers keeps it
(``TemplateShape.prefill_trailing``): Llama 2's `` {{ content.strip() }} </s>`` gives the
continue tag its space back, so ``{"x": `` stays ``{"x": ``; a template with nothing after the
stripped content loses it, and the TEMPLATE must then print none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.chat_template import TemplateSource, load_probes, translate_template
from deploy_to_ollama.chat_template.shape import infer_shape
from support.go_claims import go_case

#: Llama 2's turns: the stripped assistant content followed by `` </s>``.
SPACED = (
    "{% for m in messages %}{% if m.role == 'user' %}[INST] {{ m.content.strip() }} [/INST]"
    "{% elif m.role == 'assistant' %} {{ m.content.strip() }} {{ eos_token }}{% endif %}"
    "{% endfor %}"
)
#: The same with ``</s>`` right after the stripped content: transformers strips the tail too.
TIGHT = SPACED.replace(
    "{{ m.content.strip() }} {{ eos_token }}", "{{ m.content.strip() }}{{ eos_token }}"
)
PREFILL = "prefill_after_system"


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


@pytest.mark.parametrize(("template", "kept"), [(SPACED, True), (TIGHT, False)])
def test_the_reading_is_observed_from_transformers(template: str, kept: bool) -> None:
    shape = infer_shape(_source(template))
    assert shape.trim("assistant") == ("ws", "ws")
    assert shape.prefill_trailing is kept


@pytest.mark.parametrize(("template", "tail"), [(SPACED, '{"x": '), (TIGHT, '{"x":')])
def test_prefill_probe_verifies_in_real_go(template: str, tail: str, go_oracle: Any) -> None:

    result = translate_template(_source(template))
    assert result.verified
    checked = next(p for p in result.report.probes if p.probe == PREFILL)
    assert checked.status == "match"
    assert (checked.expected or "").endswith(tail)
    probe = next(p for p in load_probes() if p.id == PREFILL)
    (go,) = go_oracle.run([go_case(result, probe)])
    assert not go.failed, (go.error, go.parse_error)
    assert go.output.endswith(tail) and not go.output.endswith(tail + " ")
