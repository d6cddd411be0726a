"""System messages collected before the first turn, each trimmed, with the template's own
separator (``TemplateShape.hoist_sep``, ``system_each``): Nemotron-Mini prints
``'\\n' + content.strip()`` per system message, which Ollama's ``.System`` (raw contents joined
with a blank line) cannot say even where the separator is a blank line too; a template that
prints each system message where it stands collects nothing and has no separator to read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.chat_template import TemplateSource, load_probes, translate_template
from deploy_to_ollama.chat_template.shape import infer_shape
from deploy_to_ollama.chat_template.system_variants import system_variants
from support.go_claims import go_case

_NEMOTRON = (
    "{{ '<extra_id_0>System' }}{% for m in messages %}{% if m.role == 'system' %}"
    "{{ SEP + m.content.strip() }}{% endif %}{% endfor %}{{ '\\n\\n' }}"
    "{% for m in messages %}{% if m.role == 'user' %}"
    "{{ '<extra_id_1>User\\n' + m.content.strip() + '\\n' }}{% elif m.role == 'assistant' %}"
    "{{ '<extra_id_1>Assistant\\n' + m.content.strip() + '\\n' }}{% endif %}{% endfor %}"
    "{{ '<extra_id_1>Assistant\\n' }}"
)
EACH = _NEMOTRON.replace("SEP", "'\\n'")
#: Joined with a blank line, as Ollama's .System is, but each one stripped (which it is not).
BLANK = "{% set ns = namespace(n=0) %}" + _NEMOTRON.replace(
    "SEP + m.content.strip() }}",
    "('\\n' if ns.n == 0 else '\\n\\n') + m.content.strip() }}{% set ns.n = ns.n + 1 %}",
)
#: Each system message printed where it stands: nothing is collected, no separator to read.
IN_PLACE = (
    "{% for m in messages %}{{ '<|' + m.role + '|>' + m.content.strip() + '<|end|>' }}"
    "{% endfor %}{{ '<|assistant|>' }}"
)
PROBE = "two_system_messages"


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


@pytest.mark.parametrize(("template", "sep"), [(EACH, "\n"), (BLANK, "\n\n"), (IN_PLACE, None)])
def test_the_separator_is_observed_from_transformers(template: str, sep: str | None) -> None:
    source = _source(template)
    seps = {v.hoist_sep for v in system_variants(source, infer_shape(source))}
    assert (sep in seps) if sep is not None else seps <= {None}


@pytest.mark.parametrize(
    ("template", "joined"),
    [(EACH, "You are a concise assistant.\nAnswer in German from now on.\n\n"),
     (BLANK, "You are a concise assistant.\n\nAnswer in German from now on.\n\n")],
)  # fmt: skip
def test_two_system_messages_verify_in_real_go(template: str, joined: str, go_oracle: Any) -> None:

    result = translate_template(_source(template))
    assert result.verified
    checked = next(p for p in result.report.probes if p.probe == PROBE)
    assert checked.status == "match" and joined in (checked.expected or "")
    probe = next(p for p in load_probes() if p.id == PROBE)
    (go,) = go_oracle.run([go_case(result, probe)])
    assert not go.failed, (go.error, go.parse_error)
    assert go.output == checked.actual and joined in go.output
