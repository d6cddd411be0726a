"""Thinking claims per Ollama generation (ollama/ollama history, read in the mirror).

``.Think`` / ``.IsThinkSet`` reached TEMPLATEs in v0.9.0 (5f57b0ef4) and a request without
``think`` arrived as think false; v0.12.4 (90d429f5a) sends it as think true to a thinking
TEMPLATE. A Jinja whose default is thinking off gets one TEMPLATE per setting joined under
``{{ if not $.Think }}``: proven against the Jinja's default where an unset think is false, and
against its thinking-on setting where the server sends it as true, with a warning that says so.
The Ollama side is our Python renderer here, checked against Go in
tests/test_corpus.py; newer servers than 0.9.3 do not run here, so their rule is the one
``ollama_route.prompt_rules`` reads from the release history.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.chat_template import TemplateSource, load_probes, translate_template
from deploy_to_ollama.chat_template.ollama_prompt import render_ollama_prompt, template_thinks
from deploy_to_ollama.chat_template.server_rules import for_server
from deploy_to_ollama.chat_template.switched import (
    DEFAULT_OFF_NOT_JOINED,
    OFF_BY_DEFAULT,
)
from deploy_to_ollama.chat_template.think_generations import (
    DEFAULT_OFF_NOTE,
    GENERATIONS,
    thinking_json,
    thinking_note,
)
from deploy_to_ollama.chat_template.verify import UNSET_ON, verify_template
from deploy_to_ollama.ollama_route import THINK_UNSET_ON, parse_server_version, prompt_rules

OLD, NEW = GENERATIONS[0].label, GENERATIONS[1].label

LAST_QUERY = (
    "{% set ns = namespace(last=-1) %}{% for m in messages %}{% if m.role == 'user' %}"
    "{% set ns.last = loop.index0 %}{% endif %}{% endfor %}"
)
# GLM 4.7's shape: <think>R</think> after the last query, </think> before; the generation
# prompt ends <think> with thinking on and </think> with it off. Default: on.
DEFAULT_ON_JINJA = (
    LAST_QUERY + "{% for m in messages %}{% if m.role == 'assistant' %}<|assistant|>"
    "{% if m.reasoning_content and loop.index0 > ns.last %}<think>{{ m.reasoning_content }}"
    "</think>{% else %}</think>{% endif %}{{ m.content }}"
    "{% else %}<|{{ m.role }}|>{{ m.content }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>"
    "{% if enable_thinking is defined and not enable_thinking %}</think>{% else %}<think>"
    "{% endif %}{% endif %}"
)
# The same with its default off (DeepSeek V3.1, Bielik, EXAONE 4 do this).
DEFAULT_OFF_JINJA = DEFAULT_ON_JINJA.replace(
    "{% if enable_thinking is defined and not enable_thinking %}</think>{% else %}<think>",
    "{% if enable_thinking is defined and enable_thinking %}<think>{% else %}</think>",
)
# Three settings: unset prints neither tag, so think false cannot stand for the default.
THREE_SETTINGS_JINJA = DEFAULT_ON_JINJA.replace(
    "{% if enable_thinking is defined and not enable_thinking %}</think>{% else %}<think>",
    "{% if enable_thinking is not defined %}{% elif enable_thinking %}<think>{% else %}</think>",
)
# Thinking on prints what no TEMPLATE can (the first message upper-cased): the on setting
# alone does not verify, so the pair cannot join.
UNJOINABLE_JINJA = (
    "{% if enable_thinking is defined and enable_thinking %}{{ messages[0].content|upper }}"
    "{% endif %}" + DEFAULT_OFF_JINJA
)
USER = [{"role": "user", "content": "Hi"}]


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def _thinking_reasons(result: Any) -> set[str]:
    ids = {p.id for p in load_probes() if p.needs_thinking}
    return {p.reason for p in result.report.probes if p.probe in ids}


def test_the_release_that_turns_an_unset_think_on_is_0_12_4() -> None:
    assert THINK_UNSET_ON == (0, 12, 4)
    for version, on in (("0.9.3", False), ("0.12.3", False), ("0.12.4", True), ("0.33.0", True)):
        assert prompt_rules(parse_server_version(version)[0]).think_unset_on is on, version


def test_an_unset_think_reaches_the_template_as_false_before_0_12_4() -> None:
    template = (
        "{{ range .Messages }}{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}"
        "{{ .Content }}{{ end }}{{ if .IsThinkSet }}set{{ end }}{{ if .Think }}on{{ else }}off"
        "{{ end }}"
    )
    assert template_thinks(template)
    assert render_ollama_prompt(template, USER).endswith("seton")  # the newest: think true
    with for_server("0.12.4"):
        assert render_ollama_prompt(template, USER).endswith("seton")
    with for_server("0.12.3"):
        assert render_ollama_prompt(template, USER).endswith("Hioff")
    with for_server("0.9.3"):
        assert render_ollama_prompt(template, USER).endswith("Hioff")
        assert render_ollama_prompt(template, USER, think=True).endswith("seton")
        assert render_ollama_prompt(template, USER, think=False).endswith("setoff")


@pytest.mark.parametrize("version", ["0.9.3", None, "0.12.4"])
def test_a_default_off_jinja_is_proven_on_both_generations_with_a_warning(
    version: str | None,
) -> None:
    source = _source(DEFAULT_OFF_JINJA)
    result = translate_template(source, server_version=version)
    assert result.verified and result.report.thinking_verified
    assert template_thinks(result.template) and OFF_BY_DEFAULT in result.template
    assert result.report.thinking_holds_for == (OLD, NEW)
    assert result.report.thinking_default_off
    note = thinking_note(result.report.thinking_holds_for, default_off=True)
    assert note == DEFAULT_OFF_NOTE and "think:false" in note and "thinking off" in note
    assert thinking_json(result.report) == {
        "verified": True, "holds_for": [OLD, NEW], "jinja_default_off": True, "note": note,
    }  # fmt: skip
    # The same TEMPLATE, two references for a request without think: the Jinja's default
    # (off) before v0.12.4, its thinking-on setting from v0.12.4, marked on the probe.
    old = verify_template(source, result.template, system=result.system, server_version="0.9.3")
    new = verify_template(source, result.template, system=result.system, server_version="0.12.4")
    before, after = ({p.probe: p for p in r.probes}["single_user"] for r in (old, new))
    assert before.status == after.status == "match"
    assert (before.expected or "").endswith("</think>") and not before.unset_think_on
    assert (after.expected or "").endswith("<think>") and after.unset_think_on
    assert after.to_json()["note"] == UNSET_ON and before.to_json()["note"] is None


def test_a_template_rendering_the_off_setting_for_an_unset_think_is_not_verified_newest() -> None:
    """The claim that must come out false: a thinking TEMPLATE that prints the Jinja's
    default (off) for a request without think holds where that request is think false, and
    differs from v0.12.4, where the server sends it as think true."""
    source = _source(DEFAULT_OFF_JINJA)
    joined = translate_template(source).template
    always_off = joined.replace(OFF_BY_DEFAULT, "if true")
    assert always_off != joined and template_thinks(always_off)
    newest = verify_template(source, always_off, system=None)
    plain = {p.probe: p for p in newest.probes}["single_user"]
    assert plain.status == "differs" and plain.unset_think_on
    assert (plain.expected or "").endswith("<think>") and (plain.actual or "").endswith("</think>")
    assert not newest.public_verified and not newest.thinking_verified
    old = verify_template(source, always_off, system=None, server_version="0.9.3")
    assert {p.probe: p for p in old.probes}["single_user"].status == "match"


def test_an_unset_think_on_a_template_without_thinking_keeps_the_jinjas_default() -> None:
    """No thinking capability, no rewrite: Ollama turns think on only for a thinking model,
    so the Jinja's default stays the reference and nothing is marked."""
    source = _source(DEFAULT_OFF_JINJA)
    plain = "{{ range .Messages }}<|{{ .Role }}|>{{ .Content }}{{ end }}<|assistant|></think>"
    report = verify_template(source, plain, system=None)
    single = {p.probe: p for p in report.probes}["single_user"]
    assert single.status == "match" and not single.unset_think_on
    assert not any(p.unset_think_on for p in report.probes)


def test_a_third_default_is_told_apart_by_is_think_set_before_0_12_4() -> None:
    source = _source(THREE_SETTINGS_JINJA)
    result = translate_template(source, server_version="0.9.3")
    assert result.verified and result.report.thinking_verified
    assert "if not $.IsThinkSet" in result.template and template_thinks(result.template)
    assert result.report.thinking_holds_for == (OLD, NEW)
    probes = {p.probe: p for p in result.report.probes}
    assert (probes["single_user"].actual or "").endswith("<|assistant|>")  # neither tag
    assert (probes["think_on"].actual or "").endswith("<think>")
    assert (probes["think_off"].actual or "").endswith("</think>")
    # From v0.12.4 .IsThinkSet is true for every request: unset renders the on setting.
    newest = translate_template(source)
    assert newest.report.thinking_verified and newest.report.thinking_default_off
    assert newest.report.thinking_holds_for == (OLD, NEW)
    single = {p.probe: p for p in newest.report.probes}["single_user"]
    assert (single.actual or "").endswith("<think>") and single.unset_think_on


def test_a_default_off_jinja_that_does_not_join_says_so_for_0_9_3() -> None:
    result = translate_template(_source(UNJOINABLE_JINJA), server_version="0.9.3")
    assert result.verified and not result.report.thinking_verified
    assert _thinking_reasons(result) == {DEFAULT_OFF_NOT_JOINED.format(version="0.9.3")}


@pytest.mark.parametrize("version", [None, "0.9.3"])
def test_a_default_on_jinja_holds_on_both_generations(version: str | None) -> None:
    result = translate_template(_source(DEFAULT_ON_JINJA), server_version=version)
    assert result.report.thinking_verified
    assert OFF_BY_DEFAULT not in result.template
    assert result.report.thinking_holds_for == (OLD, NEW)
    assert thinking_note(result.report.thinking_holds_for) is None
    assert not result.report.thinking_default_off and thinking_json(result.report)["note"] is None


@pytest.mark.parametrize("version", ["0.9.3", None])
def test_doctor_fix_translates_for_the_serving_ollama(version: str | None) -> None:
    from deploy_to_ollama.doctor import plan_fix
    from deploy_to_ollama.doctor.reference import ReferenceTemplate
    from deploy_to_ollama.doctor.targets import Target

    target = Target(
        kind="modelfile", label="m", template=None, system=None, parameters=(), gguf=None,
        weights="./m.gguf", server_version=version,
    )  # fmt: skip
    reference = ReferenceTemplate(
        template=DEFAULT_OFF_JINJA, origin="source", location="t.jinja", bos_token="<s>",
        eos_token="</s>", stop_tokens=("</s>",), add_bos=None, source=_source(DEFAULT_OFF_JINJA),
    )  # fmt: skip
    plan = plan_fix(target, reference, [])
    template = plan.modelfile.template or ""
    assert plan.translation_verified
    # The fixed TEMPLATE switches thinking for 0.9.3 and for the newest alike.
    assert OFF_BY_DEFAULT in template and template_thinks(template)


def test_the_deploy_report_says_which_generations_thinking_holds_for(tmp_path: Path) -> None:
    """The template stage carries the claim's scope to the deploy report, its --json, the
    ``deploy-report.json`` and the model card line; an unlimited claim adds no warning."""
    import json

    from deploy_to_ollama.deploy_report import report_data, summary_markdown
    from deploy_to_ollama.modelfile import Modelfile, render_modelfile
    from deploy_to_ollama.reports import DeployReport
    from deploy_to_ollama.stages import translate_stage
    from support.ollama_server import write_tiny_gguf

    folder = tmp_path / "model"
    folder.mkdir()
    config = {"chat_template": DEFAULT_OFF_JINJA, "bos_token": "<s>", "eos_token": "</s>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    old = translate_stage(folder, None, server_version="0.9.3")
    assert old.thinking_holds_for == (OLD, NEW) and old.thinking_note == DEFAULT_OFF_NOTE
    new = translate_stage(folder, None)
    assert new.thinking_holds_for == (OLD, NEW) and new.thinking_note == DEFAULT_OFF_NOTE
    on = tmp_path / "on"
    on.mkdir()
    config["chat_template"] = DEFAULT_ON_JINJA
    (on / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    both = translate_stage(on, None, server_version="0.9.3")
    assert both.thinking_holds_for == (OLD, NEW) and both.thinking_note is None

    gguf = write_tiny_gguf(tmp_path / "m.gguf")
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(render_modelfile(Modelfile(from_="./m.gguf", template=old.template)))
    report = DeployReport(
        name="m:latest", host="http://127.0.0.1:1", quant="q8_0", gguf=gguf,
        gguf_bytes=gguf.stat().st_size, modelfile=modelfile, template_verified=old.verified,
        stages=(), round_trip=None, thinking_holds_for=old.thinking_holds_for,
    )  # fmt: skip
    assert report.to_dict()["thinking_holds_for"] == [OLD, NEW]
    assert f"thinking verified for Ollama {OLD}, {NEW}" in report.summary_lines()
    data = report_data(report)
    assert data["thinking_holds_for"] == [OLD, NEW]
    assert f"- Thinking verified for Ollama {OLD}, {NEW}" in summary_markdown(data)
    assert "thinking" in data["capabilities"]


@pytest.mark.ollama
@pytest.mark.slow
def test_deploy_on_the_real_0_9_3_server_proves_thinking_and_says_where_it_holds(
    ollama_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real Ollama 0.9.3: the deployed TEMPLATE gets the thinking capability, and the
    report's --json says the claim holds on both generations, with the warning that the
    Jinja's default is thinking off while Ollama >= 0.12.4 thinks unless sent think:false."""
    import json

    from deploy_to_ollama.ollama_client import OllamaClient
    from support.cli import run_cli
    from support.ollama_server import write_tiny_gguf

    gguf = write_tiny_gguf(tmp_path / "off.gguf", chat_template=DEFAULT_OFF_JINJA)
    code, out, _ = run_cli(
        ["deploy", str(gguf), "--name", "think-off", "--host", ollama_server.host, "--no-check",
         "--keep", str(tmp_path / "k"), "--method", "api", "--json"],
        capsys,
    )  # fmt: skip
    doc = json.loads(out)
    assert code == 0, doc
    assert doc["server_version"] == "0.9.3" and doc["template_route"] == "go"
    assert doc["template_verified"] is True and doc["thinking_holds_for"] == [OLD, NEW]
    assert DEFAULT_OFF_NOTE in doc["warnings"]
    shown = OllamaClient(ollama_server.host).require("think-off")
    assert "thinking" in list(shown.capabilities or [])  # what Ollama itself derives
    saved = json.loads((tmp_path / "k" / "deploy-report.json").read_text(encoding="utf-8"))
    assert saved["thinking_holds_for"] == [OLD, NEW]


def test_think_levels_only_for_servers_that_have_them() -> None:
    """gpt-oss's reasoning_effort maps onto .ThinkLevel, which arrived in v0.11.0: a TEMPLATE
    for 0.10.1 must not read it, and a claim that does names 0.11.0 as its first release."""
    import json

    from support.shared import CHAT_TEMPLATES_DIR, require_shared

    name = "gpt-oss__openai-gpt-oss-120b.json"
    record = json.loads((require_shared(CHAT_TEMPLATES_DIR) / name).read_text(encoding="utf-8"))
    source = TemplateSource(
        template=record["jinja"], origin=CHAT_TEMPLATES_DIR / name, kind="jinja",
        bos_token=record.get("bos_token") or "<s>", eos_token=record.get("eos_token") or "</s>",
    )  # fmt: skip
    assert "ThinkLevel" not in translate_template(source, server_version="0.10.1").template
    levels = translate_template(source, server_version="0.11.0")
    assert "$.ThinkLevel" in levels.template and levels.report.thinking_verified
    assert levels.report.thinking_holds_for == ("0.11.0-0.12.3", NEW)


@pytest.mark.ollama
@pytest.mark.slow
@pytest.mark.parametrize("jinja", [DEFAULT_OFF_JINJA, THREE_SETTINGS_JINJA], ids=["off", "three"])
def test_the_real_0_9_3_server_renders_the_jinjas_default_and_both_settings(
    ollama_server: Any, tmp_path: Path, jinja: str, request: pytest.FixtureRequest
) -> None:
    """The prompts real Ollama 0.9.3 renders (its debug log) for think unset, true and false
    are the Jinja's own, with the default where the request leaves think unset."""
    import httpx

    from deploy_to_ollama.chat_template.hf_render import render_hf
    from deploy_to_ollama.chat_template.thinking import think_kwargs
    from deploy_to_ollama.modelfile import Modelfile
    from deploy_to_ollama.registrar import register_model
    from support.ollama_server import write_tiny_gguf

    source = _source(jinja)
    result = translate_template(source, server_version="0.9.3")
    assert result.report.thinking_holds_for == (OLD, NEW)
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    name = f"think-default-{request.node.callspec.id}:latest"
    modelfile = Modelfile(from_=str(gguf), template=result.template)
    register_model(name, modelfile, base_dir=tmp_path, host=ollama_server.host, force=True)
    question = [{"role": "user", "content": "How many r's are in strawberry?"}]
    rendered = {}
    for think in (None, True, False):
        ollama_server.mark_log()
        body: dict[str, Any] = {"model": name, "messages": question, "stream": False}
        body["options"] = {"num_predict": 1}
        if think is not None:
            body["think"] = think
        response = httpx.post(f"{ollama_server.host}/api/chat", json=body, timeout=300)
        assert response.status_code == 200, response.text
        prompts = ollama_server.prompts()
        assert prompts, ollama_server.log_tail()
        expected = render_hf(
            jinja, question, add_generation_prompt=True, kwargs=think_kwargs(source, think=think)
        )
        assert prompts[-1] == expected, think
        rendered[think] = prompts[-1]
    assert len(set(rendered.values())) == (2 if jinja == DEFAULT_OFF_JINJA else 3)


@pytest.mark.parametrize("version", ["0.9.3", "0.12.4"])
def test_template_json_says_where_thinking_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], version: str
) -> None:
    import json

    from support.cli import run_cli

    path = tmp_path / "chat_template.jinja"
    path.write_text(DEFAULT_OFF_JINJA, encoding="utf-8")
    code, out, _ = run_cli(["template", str(path), "--ollama-version", version, "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["ollama_version"] == version
    assert doc["thinking"]["holds_for"] == [OLD, NEW]
    assert doc["thinking"]["verified"] is True and doc["thinking"]["jinja_default_off"] is True
    assert doc["thinking"]["note"] == DEFAULT_OFF_NOTE
    single = next(p for p in doc["probes"] if p["probe"] == "single_user")
    assert single["unset_think_on"] is (version == "0.12.4")
    assert (single["note"] == UNSET_ON) is (version == "0.12.4")


@pytest.mark.parametrize("version", [None, "0.9.3"])
def test_the_doctor_compares_an_unset_think_as_the_serving_ollama_sends_it(
    version: str | None,
) -> None:
    """The doctor's prompt and conversation checks use the verifier's rule: the joined
    TEMPLATE of a default-off Jinja raises no error on either generation, and one that
    prints the off setting whatever the request is a mismatch where an unset think is true
    (the claim that must come out false)."""
    from deploy_to_ollama.doctor import diagnose
    from deploy_to_ollama.doctor.reference import ReferenceChoice, ReferenceTemplate
    from deploy_to_ollama.doctor.targets import Target

    source = _source(DEFAULT_OFF_JINJA)
    joined = translate_template(source, server_version=version).template
    reference = ReferenceTemplate(
        template=DEFAULT_OFF_JINJA, origin="source", location="t.jinja", bos_token="<s>",
        eos_token="</s>", stop_tokens=("</s>",), add_bos=None, source=source,
    )  # fmt: skip
    choice = ReferenceChoice(reference=reference, note="test")

    def errors(template: str) -> set[str]:
        target = Target(
            kind="modelfile", label="m", template=template, system=None, parameters=(),
            gguf=None, weights="./m.gguf", server_version=version,
        )  # fmt: skip
        return {d.code for d in diagnose(target, choice) if d.severity == "error"}

    assert errors(joined) == set()
    always_off = errors(joined.replace(OFF_BY_DEFAULT, "if true"))
    assert ("template_mismatch" in always_off) is (version is None)
