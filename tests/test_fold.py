"""Content the Jinja rewrites before printing it (``emit_fold``): Falcon's instruct template
folds ``\\r\\n`` and then a blank line into one newline. Read off sentinel contents and checked
against Python's replace on a text that exercises the chain, proven in real Go on every claimed
probe; the same rewrites in the other order read differently and stay unproven."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy_to_ollama.chat_template import TemplateSource, translate_template
from deploy_to_ollama.chat_template.emit_fold import observe_folds
from support.go_claims import go_mismatches

#: Falcon's turns: each content folded, then trimmed.
FALCON = (
    "{% for m in messages %}{% set c = m['content'].replace('\\r\\n', '\\n')"
    ".replace('\\n\\n', '\\n') %}{{ '\\n\\n' + m['role'] | capitalize + ': ' + c | trim }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '\\n\\nAssistant:' }}{% endif %}"
)
#: The two rewrites in the other order.
REVERSED = FALCON.replace(
    ".replace('\\r\\n', '\\n').replace('\\n\\n', '\\n')",
    ".replace('\\n\\n', '\\n').replace('\\r\\n', '\\n')",
)
FOLDED = {"whitespace_edges", "long_content", "code_markdown"}


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def test_the_folds_are_observed_from_transformers() -> None:
    chain = (("\r\n", "\n"), ("\n\n", "\n"))
    assert observe_folds(_source(FALCON)) == (("user", chain), ("assistant", chain))


def test_folded_contents_verify_in_real_go(go_oracle: Any) -> None:
    source = _source(FALCON)
    result = translate_template(source)
    assert result.verified
    claims = [p for p in result.report.probes if p.status == "match"]
    assert {p.probe for p in claims} >= FOLDED
    code = next(p for p in claims if p.probe == "code_markdown")
    assert "fail?\n```python" in (code.expected or "")
    assert go_mismatches(go_oracle, source, result, claims) == []


def test_the_other_order_stays_unproven() -> None:
    source = _source(REVERSED)
    assert observe_folds(source) == ()
    assert not translate_template(source).verified
