"""A turn with tool calls whose own opening the plain shape gave to the user suffix.

Command R7B opens an assistant turn with ``<|START_RESPONSE|>`` and a turn with tool calls
with ``<|START_THINKING|>...<|START_ACTION|>``; the plain shape puts ``<|START_RESPONSE|>``
at the end of the user suffix. The tool reading moves that marker to the assistant prefix
(``tool_opening.marker_moved``); every claim is re-rendered by Go.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy_to_ollama.chat_template import TemplateSource, load_probes, translate_template
from deploy_to_ollama.chat_template.shape import infer_shape
from deploy_to_ollama.chat_template.tool_opening import OPENS_UNLIKE
from support.go_claims import go_mismatches

R7B_LIKE = (
    "{%- if tools %}<|SYS|>{% for t in tools %}{{ t | tojson }}\n{% endfor %}<|EOT|>{% endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'user' %}<|SOT|><|USER|>{{ m.content }}<|EOT|>"
    "{%- elif m.role == 'assistant' %}<|SOT|><|BOT|>"
    "{%- if m.tool_calls %}<|THINK|><|ENDTHINK|><|ACTION|>["
    '{%- for c in m.tool_calls %}{"name": "{{ c.function.name }}", '
    '"parameters": {{ c.function.arguments | tojson }}}'
    "{% if not loop.last %},{% endif %}{%- endfor %}]<|ENDACTION|><|EOT|>"
    "{%- else %}<|RESP|>{{ m.content }}<|ENDRESP|><|EOT|>{%- endif %}"
    "{%- elif m.role == 'tool' %}<|SOT|><|SYS|><|RESULT|>{{ m.content }}<|ENDRESULT|><|EOT|>"
    "{%- endif %}{%- endfor %}<|SOT|><|BOT|>"
    "{%- if not enable_thinking %}<|THINK|><|ENDTHINK|>{% endif %}"
)


def _source() -> TemplateSource:
    return TemplateSource(
        template=R7B_LIKE, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def test_the_plain_shape_gives_the_response_opening_to_the_user_suffix() -> None:
    shape = infer_shape(_source())
    assert shape.user_suffix.endswith("<|BOT|><|RESP|>")


def test_the_turn_with_calls_opens_after_the_shared_header(go_oracle: Any) -> None:
    source = _source()
    result = translate_template(source)
    assert result.verified and result.report.tools_verified
    probes = {p.id: p for p in load_probes()}
    checks = [p for p in result.report.probes if p.status == "match" and probes[p.probe].tools]
    assert {"tool_call_and_result", "tool_results_then_answer"} <= {c.probe for c in checks}
    assert go_mismatches(go_oracle, source, result, checks) == []


def test_a_turn_that_opens_with_another_header_stays_unverified() -> None:
    """Moving the marker cannot help where the turn with calls differs before it."""
    other = R7B_LIKE.replace(
        "<|SOT|><|BOT|>{%- if m.tool_calls %}<|THINK|>",
        "{%- if m.tool_calls %}<|SOT|><|CALLER|><|THINK|>",
    ).replace("{%- else %}<|RESP|>", "{%- else %}<|SOT|><|BOT|><|RESP|>")
    assert other != R7B_LIKE
    source = TemplateSource(
        template=other, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )
    result = translate_template(source)
    assert not result.report.tools_verified
    reasons = [p.reason or "" for p in result.report.probes if p.probe == "tool_call_and_result"]
    assert any(OPENS_UNLIKE in reason for reason in reasons)
