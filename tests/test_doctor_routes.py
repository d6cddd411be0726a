"""Doctor's template-route diagnoses (issue 13 item 6): ``template_overridden``,
``native_render_mismatch`` (real llama-server against transformers), ``library_template_attached``
(the real Ollama 0.9.3 attaching its library template), and ``--fix`` to the proven route.
Rules of Ollama 0.30+ come from ``ollama_route`` (no such server runs here)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from deploy_to_ollama.doctor import examine, plan_fix
from deploy_to_ollama.doctor.routes import library_template_name
from deploy_to_ollama.modelfile import Modelfile, render_modelfile
from deploy_to_ollama.registrar import register_model
from support.ollama_server import (
    TINY_CHAT_TEMPLATE,
    TINY_OLLAMA_TEMPLATE,
    OllamaServer,
    write_tiny_gguf,
)
from support.routes import LOST_TOOLS, OWN_FORMAT, toolchain_env

#: Tools by Ollama's substring rule (so 0.30+ prefers the Jinja over a tool-less TEMPLATE),
#: and ``enable_thinking``, which llama.cpp defines and transformers does not: it differs.
NATIVE_DIFFERS_TOOLS = (
    OWN_FORMAT + "{% if false %}{{ tools }}{% endif %}"
    "{% if enable_thinking is defined %}<think>\n{% endif %}"
)


def _target(tmp_path: Path, jinja: str, template: str | None = TINY_OLLAMA_TEMPLATE) -> Path:
    """A Modelfile FROM a tiny GGUF embedding ``jinja``, with ``template`` as its TEMPLATE."""
    write_tiny_gguf(tmp_path / "m.gguf", chat_template=jinja)
    path = tmp_path / "Modelfile"
    modelfile = Modelfile(from_="./m.gguf", template=template, parameters=(("stop", "<|im_end|>"),))
    path.write_text(render_modelfile(modelfile), encoding="utf-8")
    return path


@pytest.fixture
def with_llama_server(llama_server_binary: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The doctor finds the shared toolchain's llama-server through the environment."""
    for key, value in toolchain_env().items():
        monkeypatch.setenv(key, value)


def test_a_template_current_ollama_drops_is_overridden_and_the_fix_goes_native(
    tmp_path: Path, with_llama_server: None
) -> None:
    report = examine(str(_target(tmp_path, LOST_TOOLS)))
    codes = [d.code for d in report.diagnoses]
    assert "template_overridden" in codes
    assert {"capabilities_lost", "tools_missing"} & set(codes)  # the loss, said once
    assert "native_render_mismatch" not in codes  # llama.cpp renders this Jinja like transformers
    overridden = next(d for d in report.diagnoses if d.code == "template_overridden")
    assert "more capabilities" in overridden.evidence[0] and overridden.fixable
    reference = report.choice.reference
    assert reference is not None
    plan = plan_fix(report.target, reference, report.diagnoses)
    assert plan.modelfile.template is None and plan.modelfile.system is None
    assert plan.changes[0].startswith("route native")


def test_the_native_render_mismatch_shows_the_first_difference(
    tmp_path: Path, with_llama_server: None
) -> None:
    report = examine(str(_target(tmp_path, NATIVE_DIFFERS_TOOLS)))
    found = {d.code: d for d in report.diagnoses}
    assert "template_overridden" in found
    mismatch = found["native_render_mismatch"]
    assert mismatch.severity == "error"
    probe = mismatch.probes[0]
    assert probe.probe == "single_user" and probe.actual.endswith("<think>\n")
    assert probe.first_difference == len(probe.expected)
    assert mismatch.evidence[0].endswith("vs llama.cpp 'im_start|>assistant\\n<think>\\n'")
    # Neither route is proven natively here: --fix stays on the go route (its TEMPLATE).
    reference = report.choice.reference
    assert reference is not None
    assert plan_fix(report.target, reference, report.diagnoses).modelfile.template


def test_a_template_at_parity_gets_none_of_the_route_diagnoses(
    tmp_path: Path, with_llama_server: None
) -> None:
    codes = {d.code for d in examine(str(_target(tmp_path, TINY_CHAT_TEMPLATE))).diagnoses}
    route_codes = {"template_overridden", "native_render_mismatch", "library_template_attached"}
    assert not codes & route_codes


@pytest.mark.ollama
def test_the_library_template_create_attaches_is_named(
    ollama_server: OllamaServer, tmp_path: Path
) -> None:
    """Real Ollama 0.9.3: a Modelfile without TEMPLATE gets the library's chatml."""
    gguf = write_tiny_gguf(tmp_path / "chatml.gguf")
    bare = Modelfile(from_=str(gguf), parameters=(("num_thread", "1"),))
    register_model("lib-attached", bare, base_dir=tmp_path, host=ollama_server.host)
    ours = Modelfile(from_=str(gguf), template=TINY_OLLAMA_TEMPLATE)
    register_model("lib-ours", ours, base_dir=tmp_path, host=ollama_server.host)
    attached = examine("lib-attached", host=ollama_server.host)
    found = {d.code: d for d in attached.diagnoses}
    assert "library_template_attached" in found
    assert "'chatml'" in found["library_template_attached"].title
    own = examine("lib-ours", host=ollama_server.host)
    assert "library_template_attached" not in {d.code for d in own.diagnoses}


def test_the_packaged_library_digests_are_the_corpus_library() -> None:
    """``doctor/library_templates.json`` holds names and sha256 only; they must match the
    Go templates the corpus pairs with Ollama's template/index.json."""
    from test_ollama_route import _library

    for entry in _library():
        digest = hashlib.sha256(entry.template.encode()).hexdigest()
        assert library_template_name(entry.template) is not None, (entry.name, digest)
    assert library_template_name(TINY_OLLAMA_TEMPLATE) is None


@pytest.mark.ollama
def test_a_renderer_a_newer_ollama_reports_overrides_the_template(
    ollama_server: OllamaServer, tmp_path: Path
) -> None:
    """Stand-in (``support/newer_ollama.py``): 0.33.0 whose /api/show prints the RENDERER and
    PARSER lines a model inherited from a FROM model; 0.9.3 has no such commands."""
    from support.newer_ollama import host_of, newer_ollama

    gguf = write_tiny_gguf(tmp_path / "chatml.gguf")
    ours = Modelfile(from_=str(gguf), template=TINY_OLLAMA_TEMPLATE)
    register_model("renderer-model", ours, base_dir=tmp_path, host=ollama_server.host)
    extra = "RENDERER qwen3-coder\nPARSER qwen3-coder\n"
    with newer_ollama(ollama_server.host, show_extra=extra) as proxy:
        report = examine("renderer-model", host=host_of(proxy))
    found = {d.code: d for d in report.diagnoses}
    assert "RENDERER qwen3-coder, PARSER qwen3-coder" in found["template_overridden"].title
    with newer_ollama(ollama_server.host) as proxy:
        plain = examine("renderer-model", host=host_of(proxy))
    assert "template_overridden" not in {d.code for d in plain.diagnoses}


@pytest.mark.ollama
def test_fix_picks_the_route_the_models_server_can_serve(
    ollama_server: OllamaServer, tmp_path: Path, with_llama_server: None
) -> None:
    """Real 0.9.3: only the go route exists, so --fix keeps a TEMPLATE. Through the stand-in
    reporting 0.33.0 (``support/newer_ollama.py``) the same model is fixed to the native route."""
    from support.newer_ollama import host_of, newer_ollama

    gguf = write_tiny_gguf(tmp_path / "lost.gguf", chat_template=LOST_TOOLS)
    ours = Modelfile(from_=str(gguf), template=TINY_OLLAMA_TEMPLATE)
    register_model("fix-route", ours, base_dir=tmp_path, host=ollama_server.host)
    old = examine("fix-route", host=ollama_server.host)
    assert "template_overridden" in {d.code for d in old.diagnoses}
    assert old.choice.reference is not None
    kept = plan_fix(old.target, old.choice.reference, old.diagnoses)
    assert kept.modelfile.template and not kept.changes[0].startswith("route native")
    with newer_ollama(ollama_server.host) as proxy:
        new = examine("fix-route", host=host_of(proxy))
        assert new.choice.reference is not None
        native = plan_fix(new.target, new.choice.reference, new.diagnoses)
    assert native.modelfile.template is None and native.changes[0].startswith("route native")


def test_no_template_is_not_warned_on_a_model_deployed_natively(tmp_path: Path) -> None:
    """The native route's Modelfile has no TEMPLATE on purpose: with the route recorded in the
    deploy-report.json beside it, doctor does not call that a missing template."""
    import json

    path = _target(tmp_path, OWN_FORMAT, template=None)
    assert "no_template" in {d.code for d in examine(str(path)).diagnoses}  # route unknown
    report = {"template_route": {"template_route": "native", "server_version": "0.33.0"}}
    (tmp_path / "deploy-report.json").write_text(json.dumps(report), encoding="utf-8")
    native = examine(str(path))
    assert native.target.route == "native" and native.target.server_version == "0.33.0"
    target_json = native.to_dict()["target"]
    assert (target_json["route"], target_json["server_version"]) == ("native", "0.33.0")
    assert "no_template" not in {d.code for d in native.diagnoses}
    report["template_route"]["template_route"] = "go"
    (tmp_path / "deploy-report.json").write_text(json.dumps(report), encoding="utf-8")
    assert "no_template" in {d.code for d in examine(str(path)).diagnoses}


@pytest.mark.ollama
@pytest.mark.slow
def test_an_ollama_model_served_natively_needs_no_template_and_the_version_is_read(
    ollama_server: OllamaServer, tmp_path: Path
) -> None:
    """Real Ollama 0.9.3, and the stand-in reporting 0.33.0 in front of it
    (``support/newer_ollama.py``): the same model without TEMPLATE is raw text on 0.9.3 and
    served natively (its Jinja) on 0.33."""
    from support.newer_ollama import host_of, newer_ollama

    gguf = write_tiny_gguf(tmp_path / "own.gguf", chat_template=OWN_FORMAT)  # no library match
    bare = Modelfile(from_=str(gguf), parameters=(("num_thread", "1"),))
    register_model("native-bare", bare, base_dir=tmp_path, host=ollama_server.host)
    old = examine("native-bare", host=ollama_server.host)
    assert old.target.server_version == "0.9.3" and old.target.route is None
    assert "no_template" in {d.code for d in old.diagnoses}
    with newer_ollama(ollama_server.host) as proxy:
        new = examine("native-bare", host=host_of(proxy))
    assert new.target.server_version == "0.33.0" and new.target.route == "native"
    assert "no_template" not in {d.code for d in new.diagnoses}
