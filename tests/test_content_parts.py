"""Templates that print a message's text only from content parts (Idefics3, Llama Guard 3
Vision walk ``message['content']`` as ``[{"type": "text", ...}]``): a notebook passes parts, so
the reference renders parts and the TEMPLATE prints ``.Content`` in that wrapper, verified in
real Go. A template that prints string content, or treats the two alike, renders unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy_to_ollama.chat_template import TemplateSource, render_hf, translate_template
from deploy_to_ollama.chat_template.hf_render import reads_parts_only
from support.go_claims import go_mismatches

#: Idefics3's way: every message's content walked as parts.
PARTS_ONLY = (
    "<|begin_of_text|>{% for message in messages %}{{ message['role'].capitalize() }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
#: Near-miss: parts and strings both print (the usual vision template).
BOTH = (
    "{% for m in messages %}{{ m.role }}: {% if m.content is string %}{{ m.content }}"
    "{% else %}{% for p in m.content %}{{ p.text }}{% endfor %}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def test_the_reading_is_observed_from_transformers() -> None:
    assert reads_parts_only(PARTS_ONLY)
    assert not reads_parts_only(BOTH)
    messages = [{"role": "user", "content": "Describe it."}]
    assert render_hf(PARTS_ONLY, messages) == (
        "<|begin_of_text|>User: Describe it.<end_of_utterance>\nAssistant:"
    )
    assert render_hf(BOTH, messages) == "user: Describe it.assistant: "  # trim_blocks


def test_a_parts_only_template_verifies_in_real_go(go_oracle: Any) -> None:
    source = _source(PARTS_ONLY)
    result = translate_template(source)
    assert result.verified
    claims = [p for p in result.report.probes if p.status == "match"]
    single = next(p for p in claims if p.probe == "single_user")
    assert (single.expected is not None and "Hello" in single.expected) or single.expected
    assert all((p.expected or "").count("<end_of_utterance>") >= 1 for p in claims)
    assert go_mismatches(go_oracle, source, result, claims) == []
