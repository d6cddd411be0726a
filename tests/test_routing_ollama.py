"""``deploy --template-route`` and the per-route ``check`` live (issue 13 items 4-5, issue 12
``--strict``): real Ollama 0.9.3 stores and shows every model, real llama-server proves the
native route. Behaviour only Ollama 0.30+ has (its version, its native path's
``_debug_render_only``) comes from the stand-in in ``support/newer_ollama.py``: a proxy in front
of the real 0.9.3 server that reports 0.33.0 and, where given a llama-server, renders the
native prompt with it. Each test that uses it says so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.modelfile import parse_modelfile
from deploy_to_ollama.ollama_client import OllamaClient
from deploy_to_ollama.roundtrip.capability_check import shown_go_template
from deploy_to_ollama.settings import Settings
from support.cli import run_cli
from support.newer_ollama import host_of, newer_ollama
from support.ollama_server import OllamaServer, write_tiny_gguf
from support.routes import LOST_TOOLS, NATIVE_DIFFERS, toolchain_env

pytestmark = [pytest.mark.ollama, pytest.mark.slow]


def _settings() -> Settings:
    return Settings.from_env(toolchain_env())


def _deploy(gguf: Path, name: str, host: str, tmp_path: Path, **kwargs: Any) -> Any:
    from deploy_to_ollama.pipeline import deploy

    return deploy(
        gguf, name=name, host=host, keep=tmp_path / name, check=False, method="api",
        parameters=(("num_thread", "1"),), cache_dir=tmp_path / "cache", settings=_settings(),
        **kwargs,
    )  # fmt: skip


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = run_cli(list(args), capsys)
    return code, json.loads(out) if out.strip() else {}


def test_auto_on_0_9_3_takes_the_go_route_and_states_the_lost_capability(
    ollama_server: OllamaServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gguf = write_tiny_gguf(tmp_path / "lost.gguf", chat_template=LOST_TOOLS)
    code, doc = _cli(
        capsys, "deploy", str(gguf), "--name", "route-lost", "--host", ollama_server.host,
        "--no-check", "--keep", str(tmp_path / "k1"), "--method", "api", "--json",
    )  # fmt: skip
    assert code == 0, doc
    assert doc["template_route"] == "go" and doc["route_proven"] is True
    assert "before 0.30" in doc["route_reason"] and doc["server_version"] == "0.9.3"
    assert doc["capabilities"] == ["completion"] and doc["capabilities_lost"] == ["tools"]
    assert doc["proofs"]["native"] is None  # 0.9.3 has no native path: not checked
    assert any(w.startswith("capabilities_lost") for w in doc["warnings"])
    shown = OllamaClient(ollama_server.host).require("route-lost")
    assert list(shown.capabilities or []) == doc["capabilities"]  # what Ollama really reports
    # --strict: the same deploy exits 3 on the loss.
    code, doc = _cli(
        capsys, "deploy", str(gguf), "--name", "route-lost", "--host", ollama_server.host,
        "--no-check", "--keep", str(tmp_path / "k1"), "--method", "api", "--json", "--strict",
    )  # fmt: skip
    assert code == 3 and doc["error_type"] == "TemplateMismatchError"
    assert "capabilities_lost (--strict)" in doc["error"] and "tools" in doc["error"]


def test_native_is_refused_on_0_9_3_before_any_work(
    ollama_server: OllamaServer, tiny_gguf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, doc = _cli(
        capsys, "deploy", str(tiny_gguf), "--name", "route-refused", "--host", ollama_server.host,
        "--template-route", "native", "--keep", str(tmp_path / "k"), "--json",
    )  # fmt: skip
    assert code == 1 and "needs Ollama 0.30" in doc["error"]
    assert OllamaClient(ollama_server.host).show("route-refused") is None
    assert not (tmp_path / "k" / "Modelfile").exists()


def test_check_fails_on_a_capability_the_jinja_has_and_the_model_lacks(
    ollama_server: OllamaServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from deploy_to_ollama.roundtrip import check_round_trip, reference_from_gguf

    lost = write_tiny_gguf(tmp_path / "lost.gguf", chat_template=LOST_TOOLS)
    _deploy(lost, "check-lost", ollama_server.host, tmp_path)
    plain = write_tiny_gguf(tmp_path / "plain.gguf")
    _deploy(plain, "check-plain", ollama_server.host, tmp_path)
    for name, gguf, fails in (("check-lost", lost, True), ("check-plain", plain, False)):
        reference = reference_from_gguf(gguf)
        report = check_round_trip(
            name, host=ollama_server.host, reference=reference, generate=False
        )
        assert report.render_method == "go_renderer"  # 0.9.3: today's method
        assert report.render_verified
        assert report.capabilities is not None and report.capabilities.route == "go"
        assert (not report.passed) is fails, report.problems
        if fails:
            assert report.problems == [report.capabilities.problem]
            assert "capabilities_lost" in report.problems[0] and "tools" in report.problems[0]
            # deploy without --strict: the same loss is a prominent warning, not a failure.
            lenient = check_round_trip(
                name, host=ollama_server.host, reference=reference, generate=False,
                require_capabilities=False,
            )  # fmt: skip
            assert lenient.passed and lenient.capabilities is not None
            assert lenient.capabilities.problem == report.capabilities.problem
            assert any(line.startswith("  WARNING: capabilities_lost") for line in
                       lenient.summary_lines())  # fmt: skip
    # The CLI: exit 3, the reason in the JSON document (a GGUF is a valid --source).
    code, doc = _cli(
        capsys, "check", "check-lost", "--source", str(lost), "--host", ollama_server.host,
        "--num-predict", "2", "--json",
    )  # fmt: skip
    assert code == 3
    assert any("capabilities_lost" in p for p in doc["problems"])


def test_auto_on_a_newer_server_goes_native_where_ollama_would_replace_the_template(
    ollama_server: OllamaServer, llama_server_binary: Path, tmp_path: Path
) -> None:
    """Stand-in: a proxy reporting 0.33.0 in front of the real 0.9.3 (see the module doc)."""
    gguf = write_tiny_gguf(tmp_path / "lost.gguf", chat_template=LOST_TOOLS)
    with newer_ollama(ollama_server.host) as proxy:
        report = _deploy(gguf, "route-native", host_of(proxy), tmp_path)
        again = _deploy(gguf, "route-native", host_of(proxy), tmp_path)  # a rerun reuses it
    assert dict(again.stages)["register"] == "reused" and again.route.route == "native"
    route = report.route
    assert route.route == "native" and route.proven and report.passed
    assert route.native is not None and route.native.verified and route.native.compared > 3
    assert "tools" in route.capabilities and route.capabilities_lost == ()
    written = parse_modelfile(report.modelfile.read_text(encoding="utf-8"))
    assert written.template is None and written.system is None and not written.extra
    shown = OllamaClient(ollama_server.host).require("route-native")
    # Whatever create attached, the reported route is the one the selection gives it.
    assert route.library_template == (shown_go_template(shown, LOST_TOOLS) is not None)
    doc = report.to_dict()
    assert doc["template_route"] == "native" and "llama.cpp" in doc["route_proof"]


def test_an_unproven_route_is_deployed_says_why_and_exits_3(
    ollama_server: OllamaServer,
    llama_server_binary: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stand-in 0.33.0 (see the module doc). Go is proven on both generations, so auto takes
    it without running llama-server; native asked for is checked and differs: exit 3. A
    ChatML Jinja asked for natively gets the library TEMPLATE from create: exit 3, saying so."""
    own = write_tiny_gguf(tmp_path / "own.gguf", chat_template=NATIVE_DIFFERS)
    chatml = write_tiny_gguf(tmp_path / "chatml.gguf")
    for key, value in toolchain_env().items():  # the CLI reads its settings from the env
        monkeypatch.setenv(key, value)
    with newer_ollama(ollama_server.host) as proxy:
        host = host_of(proxy)
        auto = _deploy(own, "route-auto", host, tmp_path)
        assert auto.route.route == "go" and auto.route.native is None
        assert auto.route.go.proven_on() == ("0.9.x", "0.30+")
        flags = ("--no-check", "--template-route", "native", "--method", "api", "--json")
        forced = [
            _cli(capsys, "deploy", str(gguf), "--name", name, "--host", host, *flags,
                 "--keep", str(tmp_path / name))
            for gguf, name in ((own, "route-own"), (chatml, "route-chatml"))
        ]  # fmt: skip
    (code, doc), (chatml_code, chatml_doc) = forced
    assert code == 3 and doc["error_type"] == "TemplateMismatchError"
    assert doc["template_route"] == "native" and doc["route_proven"] is False
    assert "native: probes single_user" in doc["error"]
    shown = OllamaClient(ollama_server.host).require("route-own")  # deployed anyway
    assert shown.template == "{{ .Prompt }}"  # no template layer: none is near our format
    assert chatml_code == 3 and chatml_doc["route_proven"] is False
    assert chatml_doc["template_route"] == "go"  # the attached template is what 0.30+ renders
    assert "library_template_attached" in chatml_doc["route_reason"]
    assert "library TEMPLATE" in chatml_doc["error"]
    attached = OllamaClient(ollama_server.host).require("route-chatml").template or ""
    assert "<|im_start|>" in attached and ".Messages" in attached  # Ollama's chatml entry


def test_check_on_a_newer_server_reads_the_native_prompt_through_debug_render(
    ollama_server: OllamaServer, llama_server_binary: Path, tmp_path: Path
) -> None:
    """Stand-in 0.33.0 whose ``_debug_render_only`` answers with llama-server's rendering of
    the deployed GGUF (Ollama 0.30+'s native path); /api/show is the real 0.9.3's."""
    from deploy_to_ollama.gguf.llama_server import start_llama_server
    from deploy_to_ollama.roundtrip import check_round_trip, reference_from_gguf

    gguf = write_tiny_gguf(tmp_path / "lost.gguf", chat_template=LOST_TOOLS)
    with newer_ollama(ollama_server.host) as plain:
        assert _deploy(gguf, "check-native", host_of(plain), tmp_path).route.route == "native"
    with (
        start_llama_server(llama_server_binary, gguf, tmp_path / "logs") as renderer,
        newer_ollama(ollama_server.host, renderer=renderer) as proxy,
    ):
        report = check_round_trip(
            "check-native", host=host_of(proxy), reference=reference_from_gguf(gguf),
            generate=False,
        )  # fmt: skip
        assert proxy.debug_renders == len(report.probes) > 0
    assert report.render_method == "debug_render_only" and report.render_verified
    caps = report.capabilities
    assert caps is not None and caps.route == "native" and "tools" in caps.jinja
    # The stand-in's /api/show is 0.9.3's, which lists no tools: the check trusts what the
    # server reports, so it fails on the loss (a real 0.30+ lists the Jinja's tools).
    shown = OllamaClient(ollama_server.host).require("check-native")
    assert caps.reported == tuple(shown.capabilities or ()) and caps.lost == ("tools",)
    assert report.problems == [caps.problem]


def test_an_unreadable_server_version_gets_the_newest_rules_with_a_warning(
    ollama_server: OllamaServer, llama_server_binary: Path, tmp_path: Path
) -> None:
    """Stand-in reporting the version ``banana`` in front of the real 0.9.3."""
    gguf = write_tiny_gguf(tmp_path / "lost.gguf", chat_template=LOST_TOOLS)
    with newer_ollama(ollama_server.host, version="banana") as proxy:
        report = _deploy(gguf, "route-banana", host_of(proxy), tmp_path)
    assert report.route.generation == "0.30+" and report.route.route == "native"
    warnings = [w for w in report.warnings if "banana" in w]
    assert len(warnings) == 1 and "assuming the newest rules" in warnings[0]


def test_auto_replaces_a_library_template_that_leaves_native_unproven_with_ours(
    ollama_server: OllamaServer, llama_server_binary: Path, tmp_path: Path
) -> None:
    """Stand-in 0.33.0 whose template library attaches a TEMPLATE with tools to a model created
    without one (real 0.9.3 stores and shows the models). That TEMPLATE keeps 0.30+ off the
    Jinja, unproven: auto registers the model again with our verified TEMPLATE, beside which
    the Jinja still wins (it shows tools ours lacks): the native route, proven."""
    from support.routes import OWN_FORMAT, TOOLS_AFTER_SYSTEM

    # No real library match; tools printed only after a system message (as LOST_TOOLS): lost.
    jinja = OWN_FORMAT + TOOLS_AFTER_SYSTEM
    library = "{{ if .Tools }}{{ range .Tools }}{{ . }}{{ end }}{{ end }}{{ .Prompt }}"
    gguf = write_tiny_gguf(tmp_path / "own.gguf", chat_template=jinja)
    with newer_ollama(ollama_server.host, library_template=library) as proxy:
        report = _deploy(gguf, "route-fallback", host_of(proxy), tmp_path)
        again = _deploy(gguf, "route-fallback", host_of(proxy), tmp_path)
    # A rerun goes straight to our TEMPLATE: nothing is registered twice.
    assert dict(again.stages)["register"] == "reused" and again.route.proven
    assert again.route.reason == report.route.reason and again.route.route == "native"
    route = report.route
    assert route.route == "native" and route.proven and report.passed
    assert route.requested == "auto" and not route.library_template
    assert "re-registered with our verified TEMPLATE" in route.reason
    assert any("re-registered" in w for w in report.warnings)
    written = parse_modelfile(report.modelfile.read_text(encoding="utf-8"))
    shown = OllamaClient(ollama_server.host).require("route-fallback")
    assert written.template and shown.template == written.template  # ours, on the server
    assert "tools" in route.capabilities and route.capabilities_lost == ()
    # Without the attachment the same deploy stays native with no TEMPLATE at all.
    with newer_ollama(ollama_server.host) as proxy:
        plain = _deploy(gguf, "route-no-fallback", host_of(proxy), tmp_path)
    assert plain.route.route == "native" and plain.route.proven
    assert parse_modelfile(plain.modelfile.read_text(encoding="utf-8")).template is None
