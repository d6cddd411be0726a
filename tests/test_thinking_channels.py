"""Reasoning blocks written as channels (Gemma 4: ``<|channel>thought\\n...<channel|>``).

Gemma 4's Jinja switches thinking on with ``<|think|>`` in the system turn and prints no
reasoning of any turn; with thinking off (its default) the generation prompt ends with an
empty ``<|channel>thought\\n<channel|>`` block. Ollama can only separate the model's reasoning
when the TEMPLATE shows it the tags (``.Thinking`` between them inside the messages loop,
ollama/ollama ``thinking/template.go``), so the tags are read off that empty block. Each
claim's TEMPLATE goes through real Go: its rendering (tests/test_corpus.py) and the tags
Ollama infers from it (the oracle's ``capabilities``, here).
"""

from __future__ import annotations

import json
from pathlib import Path

from deploy_to_ollama.chat_template import TemplateSource, load_probes, translate_template
from deploy_to_ollama.chat_template.switched import DEFAULT_OFF, DEFAULT_OFF_NOT_JOINED
from support.go_oracle import GoOracle

# Gemma 4's shape, cut down: <|think|> opens the system turn with thinking on; thinking off
# (the default) closes the generation prompt with an empty thought channel.
CHANNEL_JINJA = (
    "{{ bos_token }}{% set think = enable_thinking is defined and enable_thinking %}"
    "{% if think or messages[0].role == 'system' %}<|turn>system\n{% if think %}<|think|>"
    "{% endif %}{% if messages[0].role == 'system' %}{{ messages[0].content }}{% endif %}"
    "<turn|>\n{% endif %}"
    "{% for m in messages %}{% if m.role != 'system' %}"
    "<|turn>{{ 'model' if m.role == 'assistant' else m.role }}\n{{ m.content }}<turn|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|turn>model\n"
    "{% if not think %}<|channel>thought\n<channel|>{% endif %}{% endif %}"
)
# The closing bar on the wrong side: no block the model could be parsed with.
UNPAIRED_JINJA = CHANNEL_JINJA.replace("\n<channel|>", "\n<other|>")


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def _thinking_reasons(result: object) -> set[str]:
    ids = {p.id for p in load_probes() if p.needs_thinking}
    report = result.report  # type: ignore[attr-defined]
    return {p.reason for p in report.probes if p.probe in ids}


def test_a_channel_block_gives_ollama_its_tags_on_0_9_3(go_oracle: GoOracle) -> None:
    result = translate_template(_source(CHANNEL_JINJA), server_version="0.9.3")
    assert result.verified and result.report.thinking_verified
    assert result.report.thinking_holds_for == ("0.9.0-0.12.3",)
    probes = {p.probe: p for p in result.report.probes}
    off = probes["think_off"].actual or ""
    assert off.endswith("<|turn>model\n<|channel>thought\n<channel|>")
    assert "<|think|>" in (probes["think_on"].actual or "")
    [go] = go_oracle.run([{"kind": "capabilities", "template": result.template, "data": None}])
    assert not go.failed, go
    caps = json.loads(go.output)
    assert "thinking" in (caps["capabilities"] or [])
    # What Gemma 4 writes before its reasoning, and after it.
    assert (caps["open"], caps["close"]) == ("<|channel>thought", "<channel|>")


def test_a_channel_block_stays_refused_where_an_unset_think_is_on() -> None:
    result = translate_template(_source(CHANNEL_JINJA))
    assert result.verified and not result.report.thinking_verified
    assert _thinking_reasons(result) == {DEFAULT_OFF}


def test_an_unpaired_block_names_no_tags() -> None:
    result = translate_template(_source(UNPAIRED_JINJA), server_version="0.9.3")
    assert result.verified and not result.report.thinking_verified
    assert _thinking_reasons(result) == {DEFAULT_OFF_NOT_JOINED.format(version="0.9.3")}
