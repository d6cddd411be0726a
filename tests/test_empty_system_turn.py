"""An empty leading system message printed as its own turn (Command A, Command R7B).

A non-empty first system message goes into the lead-in (Command A's developer preamble); an
empty one is falsy there, so the Jinja's message loop prints it as an ordinary system turn
between the lead-in and the first user turn. Where the inferred lead-in ends with the first
user opening, the TEMPLATE must stop the lead-in before that opening in this case.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy_to_ollama.chat_template import TemplateSource, translate_template
from deploy_to_ollama.chat_template.verify import verify_template
from support.go_claims import go_mismatches

COMMAND_A_LIKE = (
    "{{ bos_token }}{%- if messages and messages[0].role == 'system' %}"
    "{%- set dev = messages[0].content %}{% endif %}"
    "<|SOT|><|SYS|># Preamble\nBe kind."
    "{%- if dev %}\n\n# Developer\n{{ dev }}{%- endif %}<|EOT|>"
    "{%- for m in messages %}"
    "{%- if m.role == 'system' and not (loop.first and dev) %}"
    "<|SOT|><|SYS|>{{ m.content }}<|EOT|>"
    "{%- elif m.role == 'user' %}<|SOT|><|USER|>{{ m.content }}<|EOT|>"
    "{%- elif m.role == 'assistant' %}<|SOT|><|BOT|><|RESP|>{{ m.content }}<|ENDRESP|><|EOT|>"
    "{%- endif %}{%- endfor %}<|SOT|><|BOT|>"
)


def _source() -> TemplateSource:
    return TemplateSource(
        template=COMMAND_A_LIKE,
        origin=Path("t.jinja"),
        kind="jinja",
        bos_token="<s>",
        eos_token="</s>",
    )


def test_an_empty_first_system_prints_as_its_own_turn(go_oracle: Any) -> None:
    source = _source()
    result = translate_template(source)
    assert result.verified
    statuses = {p.probe: p for p in result.report.probes}
    empty = statuses["empty_system"]
    assert empty.status == "match"
    assert "Be kind.<|EOT|><|SOT|><|SYS|><|EOT|><|SOT|><|USER|>" in (empty.actual or "")
    assert statuses["system_user"].status == "match"
    checks = [statuses[name] for name in ("empty_system", "system_user", "single_user")]
    assert go_mismatches(go_oracle, source, result, checks) == []


def test_without_the_user_opening_after_it_the_empty_system_differs() -> None:
    source = _source()
    result = translate_template(source)
    broken = result.template.replace("{{- if $inl0 }}", "{{- if false }}")
    assert broken != result.template
    report = verify_template(source, broken, system=result.system)
    statuses = {p.probe: p.status for p in report.probes}
    assert statuses["empty_system"] == "differs"
    assert statuses["system_user"] == "match"
    assert not report.verified
