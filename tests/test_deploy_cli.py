"""``register`` and ``check`` commands against the real test server, through the CLI entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy_to_ollama.modelfile import Modelfile, parse_modelfile, render_modelfile
from support.cli import run_cli as _cli
from support.ollama_server import TINY_OLLAMA_TEMPLATE, OllamaServer, free_port


@pytest.fixture
def modelfile_path(tmp_path: Path, tiny_gguf: Path) -> Path:
    (tmp_path / "tiny.gguf").symlink_to(tiny_gguf)
    path = tmp_path / "Modelfile"
    path.write_text(
        render_modelfile(
            Modelfile(
                from_="./tiny.gguf",
                template=TINY_OLLAMA_TEMPLATE,
                parameters=(("stop", "<|im_end|>"), ("num_thread", "1")),
            )
        )
    )
    return path


def test_register_with_closed_port_exits_4_with_a_hint(
    modelfile_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    host = f"127.0.0.1:{free_port()}"
    code, out, err = _cli(
        ["register", str(modelfile_path), "--name", "x", "--host", host, "--json"], capsys
    )
    assert code == 4
    payload = json.loads(out)
    assert payload["ok"] is False and payload["exit_code"] == 4
    assert "ollama serve" in payload["hint"]
    assert "Error: cannot reach the Ollama server" in err
    assert "Hint: start it with `ollama serve`" in err


def test_register_reads_the_host_from_ollama_host(
    modelfile_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{port}")
    code, _, err = _cli(["register", str(modelfile_path), "--name", "x"], capsys)
    assert code == 4
    assert f"127.0.0.1:{port}" in err


def test_register_refuses_an_invalid_name(
    modelfile_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _cli(["register", str(modelfile_path), "--name", "bad name!"], capsys)
    assert code == 1
    assert "invalid model name 'bad name!'" in err


def test_register_missing_modelfile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(["register", str(tmp_path / "nope"), "--name", "x"], capsys)
    assert code == 1
    assert "no Modelfile at" in err


@pytest.mark.ollama
def test_register_then_check_an_existing_model(
    ollama_server: OllamaServer,
    modelfile_path: Path,
    tiny_tokenizer_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    host = ollama_server.host
    code, out, _ = _cli(
        ["register", str(modelfile_path), "--name", "cli-tiny", "--host", host, "--json"], capsys
    )
    assert code == 0, out
    assert json.loads(out)["name"] == "cli-tiny:latest"

    code, out, err = _cli(
        ["register", str(modelfile_path), "--name", "cli-tiny", "--host", host], capsys
    )
    assert code == 1
    assert "already exists" in err and "--force" in err

    # The random tiny model runs into the token cap: the check reports it and exits 3.
    code, out, err = _cli(["check", "cli-tiny", "--host", host, "--num-predict", "4"], capsys)
    assert code == 3, err
    assert "render check: not run (no --source" in err
    assert "FAILED" in err


@pytest.mark.ollama
def test_check_with_source_compares_the_rendering(
    ollama_server: OllamaServer,
    modelfile_path: Path,
    tiny_tokenizer_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    host = ollama_server.host
    code, out, _ = _cli(
        ["register", str(modelfile_path), "--name", "cli-src", "--host", host, "--force"], capsys
    )
    assert code == 0, out
    code, out, err = _cli(
        [
            "check",
            "cli-src",
            "--source",
            str(tiny_tokenizer_dir),
            "--host",
            host,
            "--num-predict",
            "4",
            "--json",
        ],
        capsys,
    )
    assert code == 3, err
    report = json.loads(out)
    assert report["render_method"] == "go_renderer" and report["render_verified"] is True
    assert report["generation"]["done_reason"] == "length"
    gen = report["generation"]
    assert gen["prompt_eval_count"] == gen["expected_prompt_tokens"]


@pytest.mark.ollama
def test_check_unknown_model_exits_1(
    ollama_server: OllamaServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 10: a missing model is bad input (exit 1), not a failed verification (exit 3).
    code, _, err = _cli(["check", "nope-model", "--host", ollama_server.host], capsys)
    assert code == 1, err
    assert "no model 'nope-model'" in err and "ollama list" in err


def test_deploy_checks_name_source_then_server_before_any_work(
    tmp_path: Path, tiny_gguf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    closed = f"127.0.0.1:{free_port()}"
    (tmp_path / "empty").mkdir()
    code, _, err = _cli([str(tmp_path / "empty"), "--name", "bad name", "--host", closed], capsys)
    assert code == 1 and "invalid model name" in err
    # The source is checked before the server is asked (issue: flags, source, toolchain, server).
    code, _, err = _cli([str(tmp_path / "empty"), "--name", "x", "--host", closed], capsys)
    assert code == 1 and "neither adapter_config.json nor config.json" in err
    code, _, err = _cli([str(tiny_gguf), "--name", "x", "--host", closed], capsys)
    assert code == 4 and "ollama serve" in err


@pytest.mark.ollama
def test_deploy_refuses_a_source_that_is_no_model(
    ollama_server: OllamaServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    host = ollama_server.host
    code, out, err = _cli(
        [str(tmp_path / "empty"), "--name", "x", "--host", host, "--json"], capsys
    )
    assert code == 1
    assert "neither adapter_config.json nor config.json" in json.loads(out)["error"]
    code, _, err = _cli([str(tmp_path / "notes.txt"), "--name", "x", "--host", host], capsys)
    assert code == 1 and "not a .gguf" in err
    code, _, err = _cli([str(tmp_path / "missing"), "--name", "x", "--host", host], capsys)
    assert code == 1 and "does not exist" in err
    assert not list((tmp_path / "empty").iterdir()), "nothing written"


@pytest.mark.ollama
def test_deploy_a_gguf_source_then_rerun_reuses_the_registration(
    ollama_server: OllamaServer, tiny_gguf: Path, tmp_path: Path
) -> None:
    import deploy_to_ollama

    kwargs = {
        "name": "gguf-src",
        "host": ollama_server.host,
        "keep": tmp_path / "keep",
        "parameters": (("num_thread", "1"),),
        "num_predict": 4,
        "keep_failed": True,  # the check fails (random weights); keep it to test the reuse
    }
    report = deploy_to_ollama.deploy(tiny_gguf, **kwargs)  # type: ignore[attr-defined]
    stages = dict(report.stages)
    assert stages == {
        "resolve": "done",
        "export": "skipped",
        "template": "done",
        "modelfile": "done",
        "register": "done",
        "check": "done",
    }
    assert report.template_verified  # translated from the GGUF's tokenizer.chat_template
    written = parse_modelfile((tmp_path / "keep" / "Modelfile").read_text())
    assert written.from_ == str(tiny_gguf)
    assert written.parameter_values("stop") == ["<|im_end|>"]
    assert written.parameter_values("num_thread") == ["1"]
    assert report.round_trip is not None
    # Issue 11: no tokenizer beside a GGUF, so its embedded chat template is the reference.
    assert report.round_trip.render_method == "go_renderer"
    assert report.round_trip.render_verified and "tiny.gguf" in str(report.round_trip.reference)
    assert not report.passed  # random weights: the answer hits the 4-token cap

    again = deploy_to_ollama.deploy(tiny_gguf, **kwargs)  # type: ignore[attr-defined]
    assert dict(again.stages)["template"] == "reused"
    assert dict(again.stages)["register"] == "reused"
