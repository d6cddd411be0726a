"""Thinking claims per Ollama generation (ollama/ollama history, read in the mirror).

``.Think`` / ``.IsThinkSet`` reached TEMPLATEs in v0.9.0 (5f57b0ef4) and a request without
``think`` arrived as think false; v0.12.4 (90d429f5a) sends it as think true to a thinking
TEMPLATE. A Jinja whose default is thinking off is therefore provable before 0.12.4 only, and
the report must say so. The Ollama side is our Python renderer here, checked against Go in
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
    DEFAULT_OFF,
    DEFAULT_OFF_NOT_JOINED,
    OFF_BY_DEFAULT,
)
from deploy_to_ollama.chat_template.think_generations import (
    GENERATIONS,
    thinking_json,
    thinking_note,
)
from deploy_to_ollama.chat_template.verify import verify_template
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


def test_a_default_off_jinja_is_proven_for_0_9_3_and_says_it_stops_at_0_12_3() -> None:
    source = _source(DEFAULT_OFF_JINJA)
    result = translate_template(source, server_version="0.9.3")
    assert result.verified and result.report.thinking_verified
    assert template_thinks(result.template) and OFF_BY_DEFAULT in result.template
    assert result.report.thinking_holds_for == (OLD,)
    note = thinking_note(result.report.thinking_holds_for) or ""
    assert "thinks by default" in note and "v0.12.4" in note
    assert thinking_json(result.report) == {"verified": True, "holds_for": [OLD], "note": note}
    # The claim is false on a newer server: there a request without think renders the on
    # state, while the Jinja's default (what the fine-tune saw) is off.
    newer = verify_template(source, result.template, system=result.system, server_version="0.12.4")
    plain = {p.probe: p for p in newer.probes}["single_user"]
    assert plain.status == "differs"
    assert (plain.expected or "").endswith("</think>") and (plain.actual or "").endswith("<think>")


@pytest.mark.parametrize("version", [None, "0.12.4"])
def test_a_default_off_jinja_keeps_the_refusal_on_newer_servers(version: str | None) -> None:
    result = translate_template(_source(DEFAULT_OFF_JINJA), server_version=version)
    assert result.verified and not result.report.thinking_verified
    assert not template_thinks(result.template)
    assert _thinking_reasons(result) == {DEFAULT_OFF}
    assert result.report.thinking_holds_for == ()
    assert thinking_json(result.report) == {"verified": False, "holds_for": [], "note": None}


def test_a_third_default_is_told_apart_by_is_think_set_before_0_12_4() -> None:
    source = _source(THREE_SETTINGS_JINJA)
    result = translate_template(source, server_version="0.9.3")
    assert result.verified and result.report.thinking_verified
    assert "if not $.IsThinkSet" in result.template and template_thinks(result.template)
    assert result.report.thinking_holds_for == (OLD,)
    probes = {p.probe: p for p in result.report.probes}
    assert (probes["single_user"].actual or "").endswith("<|assistant|>")  # neither tag
    assert (probes["think_on"].actual or "").endswith("<think>")
    assert (probes["think_off"].actual or "").endswith("</think>")
    newest = translate_template(source)
    assert not newest.report.thinking_verified and _thinking_reasons(newest) == {DEFAULT_OFF}


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


@pytest.mark.parametrize(("version", "proven"), [("0.9.3", True), (None, False)])
def test_doctor_fix_translates_for_the_serving_ollama(version: str | None, proven: bool) -> None:
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
    # On 0.9.3 the fixed TEMPLATE switches thinking; for the newest it has none to switch.
    assert (OFF_BY_DEFAULT in template) is proven
    assert template_thinks(template) is proven


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
    assert old.thinking_holds_for == (OLD,) and "thinks by default" in (old.thinking_note or "")
    new = translate_stage(folder, None)
    assert new.thinking_holds_for == () and new.thinking_note is None
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
    assert report.to_dict()["thinking_holds_for"] == [OLD]
    assert f"thinking verified for Ollama {OLD}" in report.summary_lines()
    data = report_data(report)
    assert data["thinking_holds_for"] == [OLD]
    assert f"- Thinking verified for Ollama {OLD}" in summary_markdown(data)
    assert "thinking" in data["capabilities"]


@pytest.mark.ollama
@pytest.mark.slow
def test_deploy_on_the_real_0_9_3_server_proves_thinking_and_says_where_it_holds(
    ollama_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real Ollama 0.9.3: the deployed TEMPLATE gets the thinking capability, and the
    report's --json says the claim holds for 0.9.0-0.12.3 only, with the upgrade warning."""
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
    assert doc["template_verified"] is True and doc["thinking_holds_for"] == [OLD]
    assert any("thinks by default" in w for w in doc["warnings"])
    shown = OllamaClient(ollama_server.host).require("think-off")
    assert "thinking" in list(shown.capabilities or [])  # what Ollama itself derives
    saved = json.loads((tmp_path / "k" / "deploy-report.json").read_text(encoding="utf-8"))
    assert saved["thinking_holds_for"] == [OLD]


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
    assert result.report.thinking_holds_for == (OLD,)
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


@pytest.mark.parametrize(
    ("version", "holds_for"), [("0.9.3", [OLD]), ("0.12.4", [])], ids=["0.9.3", "0.12.4"]
)
def test_template_json_says_where_thinking_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], version: str, holds_for: list[str]
) -> None:
    import json

    from support.cli import run_cli

    path = tmp_path / "chat_template.jinja"
    path.write_text(DEFAULT_OFF_JINJA, encoding="utf-8")
    code, out, _ = run_cli(["template", str(path), "--ollama-version", version, "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["ollama_version"] == version
    assert doc["thinking"]["holds_for"] == holds_for
    assert doc["thinking"]["verified"] is bool(holds_for)
    assert (doc["thinking"]["note"] is not None) is bool(holds_for)
