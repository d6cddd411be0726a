"""A template that prints today's date is verified only by a TEMPLATE that prints the date too.

transformers renders ``strftime_now`` with today's date; a TEMPLATE holding that date as a
literal matches today and is wrong tomorrow. Verification renders such probes again on another
fixed day (transformers with ``strftime_now`` pinned, the Ollama side with ``currentDate``
pinned); the translator prints the date through Ollama's ``currentDate`` (v0.11.0 and later),
and for the 0.9.3 test server says that no TEMPLATE can follow the date. The real Go oracle
renders the TEMPLATE on the other day (its clock pinned: the one stand-in here, for time).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.chat_template import TemplateSource, load_probes, translate_template
from deploy_to_ollama.chat_template.dates import other_day, pinned_day
from deploy_to_ollama.chat_template.hf_render import render_hf
from deploy_to_ollama.chat_template.verify import verify_template
from support.go_oracle import to_ollama_api_messages

#: A Llama-3.2-like template: "Today Date: 03 Dec 2026" in the system turn, always.
LLAMA32_LIKE = (
    "{{- bos_token }}"
    '{%- set date_string = strftime_now("%d %b %Y") %}'
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] | trim %}"
    "{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- endif %}"
    "<|start_header_id|>system<|end_header_id|>\n\n"
    "Cutting Knowledge Date: December 2023\nToday Date: {{ date_string }}\n\n"
    "{{ system_message }}<|eot_id|>"
    "{%- for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] | trim }}<|eot_id|>"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

#: Granite's layout: the full month name, day and comma.
GRANITE_LIKE = (
    "{%- for message in messages %}"
    "<|start_of_role|>{{ message['role'] }}<|end_of_role|>{{ message['content'] }}<|end_of_text|>\n"
    "{%- endfor %}"
    "<|start_of_role|>system<|end_of_role|>Today's Date: {{ strftime_now('%B %d, %Y') }}."
    "<|end_of_text|>\n"
    "{%- if add_generation_prompt %}<|start_of_role|>assistant<|end_of_role|>{% endif %}"
)


def _source(template: str = LLAMA32_LIKE) -> TemplateSource:
    return TemplateSource(
        template=template,
        origin=Path("llama32-like.jinja"),
        kind="jinja",
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
    )


def _today_text() -> str:
    return dt.datetime.now().strftime("%d %b %Y")


def test_render_hf_prints_the_pinned_day_and_today_outside() -> None:
    messages = [{"role": "user", "content": "Hi"}]
    tokens = {"bos_token": "<|begin_of_text|>"}
    with pinned_day(dt.datetime(2031, 2, 9)):
        assert "Today Date: 09 Feb 2031" in render_hf(LLAMA32_LIKE, messages, tokens=tokens)
    assert f"Today Date: {_today_text()}" in render_hf(LLAMA32_LIKE, messages, tokens=tokens)


def test_a_date_literal_is_never_verified() -> None:
    """The TEMPLATE the translator made before: today's date as text. It matches today, and
    verification must still call it a difference."""
    literal = (
        "<|start_header_id|>system<|end_header_id|>\n\n"
        f"Cutting Knowledge Date: December 2023\nToday Date: {_today_text()}\n\n"
        "{{ if .System }}{{ .System }}{{ end }}<|eot_id|>"
        '{{- range .Messages }}{{ if ne .Role "system" }}'
        "<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>"
        "{{- end }}{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    probes = [p for p in load_probes() if p.id in ("single_user", "system_user")]
    report = verify_template(_source(), literal, probes=probes)
    assert not report.verified
    assert [p.status for p in report.probes] == ["differs", "differs"]
    assert all("holds a fixed date" in (p.reason or "") for p in report.probes)
    # On the other day the Jinja moved on, the literal did not.
    first = report.probes[0]
    assert _today_text() in (first.actual or "")
    assert _today_text() not in (first.expected or "")


def test_translation_for_0_9_3_says_no_template_follows_the_date() -> None:
    result = translate_template(_source(), server_version="0.9.3")
    assert "currentDate" not in result.template  # 0.9.3 would refuse to parse it
    assert not result.verified
    dated = [p for p in result.report.probes if p.status == "differs"]
    assert dated
    assert all("Ollama 0.9.3 has no date function" in (p.reason or "") for p in dated)
    assert not any(p.status == "match" for p in result.report.probes if p.public)


def test_currentdate_template_claimed_for_0_9_3_differs() -> None:
    newer = translate_template(_source(), server_version="0.11.0")
    probes = [p for p in load_probes() if p.id == "single_user"]
    report = verify_template(_source(), newer.template, probes=probes, server_version="0.9.3")
    assert report.probes[0].status == "differs"
    assert "Ollama 0.9.3 has no function currentDate" in (report.probes[0].reason or "")


@pytest.mark.parametrize("template", [LLAMA32_LIKE, GRANITE_LIKE], ids=["llama3.2", "granite"])
def test_translation_prints_the_date_through_currentdate(template: str, go_oracle: Any) -> None:
    """For Ollama >= 0.11.0 the claim is made through currentDate, and real Go, its clock set
    to another day, prints what transformers prints on that day."""
    source = _source(template)
    result = translate_template(source, server_version="0.11.0")
    assert result.verified, result.report.first_failure()
    assert "currentDate" in result.template
    assert dt.datetime.now().strftime("%Y") not in result.template  # no date literal left
    day = other_day()
    cases, expected = [], []
    matched = {p.probe for p in result.report.probes if p.status == "match"}
    for probe in load_probes():
        if probe.id not in matched or probe.tools or probe.think is not None:
            continue
        with pinned_day(day):
            expected.append(
                render_hf(source.template, list(probe.messages), tokens=source.template_variables())
            )
        base = {
            "kind": "ollama",
            "template": result.template,
            "messages": to_ollama_api_messages(list(probe.messages)),
            "system": result.system or "",
        }
        cases += [{**base, "today": day.strftime("%Y-%m-%d")}, {**base, "no_date_funcs": True}]
    assert len(cases) >= 20
    outputs = go_oracle.run(cases)
    for want, go, older in zip(expected, outputs[::2], outputs[1::2], strict=True):
        assert not go.failed, go.error or go.parse_error
        assert want.removeprefix("<|begin_of_text|>") == go.output.removeprefix("<|begin_of_text|>")
        # A server without the function refuses the TEMPLATE outright.
        assert older.parse_error and "currentDate" in older.parse_error


@pytest.mark.slow
def test_corpus_date_claims_hold_in_go_on_another_day(go_oracle: Any) -> None:
    """Every corpus template that prints the date and is verified: each matched plain probe,
    rendered by real Go with its clock on another day, equals transformers on that day."""
    import json

    from deploy_to_ollama.chat_template.thinking import think_kwargs
    from support.shared import CHAT_TEMPLATES_DIR, corpus_records, require_shared

    require_shared(CHAT_TEMPLATES_DIR)
    day = other_day()
    cases, expected, names = [], [], []
    followed = 0
    probes = {p.id: p for p in load_probes()}
    dated = [r for r in corpus_records() if "strftime_now" in r["jinja"]]
    for record in dated:
        source = TemplateSource(
            template=record["jinja"],
            origin=CHAT_TEMPLATES_DIR / record["_file"],
            kind="jinja",
            bos_token=record.get("bos_token") or "<s>",
            eos_token=record.get("eos_token") or "</s>",
        )
        result = translate_template(source)
        if not result.report.public_verified:
            continue
        followed += "currentDate" in result.template
        for checked in result.report.probes:
            probe = probes[checked.probe]
            if checked.status != "match" or probe.tools or probe.think is not None:
                continue
            # A request without think reaches a thinking TEMPLATE as think true on the newest
            # Ollama, and the claim was made against the Jinja's thinking-on setting.
            on = checked.unset_think_on
            with pinned_day(day):
                want = render_hf(
                    source.template,
                    list(probe.messages),
                    tokens=source.template_variables(),
                    kwargs=think_kwargs(source, think=True) if on else None,
                )
            expected.append((want, source.bos_token))
            names.append((record["_file"], probe.id))
            cases.append(
                {
                    "kind": "ollama",
                    "template": result.template,
                    "messages": to_ollama_api_messages(list(probe.messages)),
                    "system": result.system or "",
                    "today": day.strftime("%Y-%m-%d"),
                    "think": True if on else None,
                }
            )
    assert len({name for name, _ in names}) >= 20
    assert followed >= 20  # the claims are made through currentDate
    wrong = []
    for (want, bos), go, name in zip(expected, go_oracle.run(cases), names, strict=True):
        exp, act = want, go.output
        if bos and exp.startswith(bos) != act.startswith(bos):
            exp, act = exp.removeprefix(bos), act.removeprefix(bos)
        if go.failed or exp != act:
            wrong.append((name, go.error or go.parse_error, json.dumps(exp[:80])))
    assert wrong == []
