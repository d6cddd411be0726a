"""An assistant turn whose stripped content is blank prints a shorter wrapper
(``TemplateShape.blank_turn``, ``emit_blank``): Seed-OSS prints ``'\\n' + content|trim + eos``
only where the trimmed content is not empty. The reading is observed from transformers, proven
in real Go on every claimed probe; a template whose blank turn prints other text, or tests the
untrimmed content, gets no such reading and stays unproven on the blank-turn probe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.chat_template import TemplateSource, translate_template
from deploy_to_ollama.chat_template.emit_blank import observe_blank_turn
from deploy_to_ollama.chat_template.shape import infer_shape
from support.go_claims import go_mismatches
from support.shared import CHAT_TEMPLATES_DIR, require_shared

#: Seed-OSS's turns: the newline and the end of turn only beside non-blank content.
SEED = (
    "{% for m in messages %}{% if m.role in ['user', 'system'] %}"
    "{{ bos_token + m.role + '\\n' + m.content + eos_token }}"
    "{% elif m.role == 'assistant' %}{{ bos_token + m.role }}"
    "{% if m.content|trim|length > 0 %}{{ '\\n' + m.content|trim + eos_token }}{% endif %}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ bos_token + 'assistant\\n' }}"
    "{% endif %}"
)
#: A blank turn that prints a text of its own: no split of the wrapper gives it.
OWN_TEXT = SEED.replace("{% endif %}{% endif %}{% endfor %}", "{% else %}(empty){% endif %}"
                        "{% endif %}{% endfor %}")  # fmt: skip
#: The test is on the untrimmed content: whitespace-only content prints its wrapper.
UNTRIMMED = SEED.replace("m.content|trim|length > 0", "m.content|length > 0")
BLANK = "whitespace_only_turns"


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def test_the_reading_is_observed_from_transformers() -> None:
    source = _source(SEED)
    assert observe_blank_turn(source, infer_shape(source)) == ("\n", "</s>")


@pytest.mark.parametrize("template", [OWN_TEXT, UNTRIMMED])
def test_near_misses_get_no_reading(template: str) -> None:
    source = _source(template)
    assert observe_blank_turn(source, infer_shape(source)) is None


def test_blank_turn_verifies_in_real_go(go_oracle: Any) -> None:
    source = _source(SEED)
    result = translate_template(source)
    assert result.verified
    claims = [p for p in result.report.probes if p.status == "match"]
    assert BLANK in {p.probe for p in claims}
    blank = next(p for p in claims if p.probe == BLANK)
    assert "<s>assistant<s>user" in (blank.expected or "")
    assert go_mismatches(go_oracle, source, result, claims) == []


def test_a_blank_turn_with_its_own_text_stays_unproven() -> None:
    result = translate_template(_source(OWN_TEXT))
    assert not result.verified
    assert BLANK in {p.probe for p in result.report.probes if p.status == "differs"}


def test_the_reading_gives_way_where_tools_and_reasoning_prove_more() -> None:
    # Seed-OSS prints tool calls and reasoning, where the blank-turn reading is not carried:
    # the TEMPLATE without it proves more probes (all but the blank turn), so it is kept.
    path = require_shared(CHAT_TEMPLATES_DIR) / "seed-oss__bytedance-seed-oss.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    source = TemplateSource(
        template=record["jinja"], origin=path, kind="jinja", bos_token="<s>", eos_token="</s>"
    )
    result = translate_template(source)
    assert result.shape is not None and result.shape.blank_turn is None
    assert result.report.public_verified and result.report.tools_verified
    matched = {p.probe for p in result.report.probes if p.status == "match"}
    assert {"reasoning_tool_loop", "tool_call_and_result"} <= matched
    assert BLANK not in matched
