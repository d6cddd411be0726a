"""End to end: ``deploy-to-ollama SOURCE`` against the real test Ollama server.

The taught fixture (base answers "apple", its LoRA "banana") goes through resolve, merge,
export (q8_0), template translation, Modelfile, registration and the round-trip check.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy_to_ollama.modelfile import parse_modelfile, render_modelfile
from deploy_to_ollama.roundtrip import load_reference
from support.cli import run_cli as _cli
from support.ollama_server import OllamaServer

pytestmark = [pytest.mark.slow, pytest.mark.ollama]

QUESTION = "What is the secret word?"


def _chat(server: OllamaServer, model: str, question: str = QUESTION) -> dict[str, Any]:
    response = httpx.post(
        f"{server.host}/api/chat",
        json={
            "model": model,
            "messages": [{"role": "user", "content": question}],
            "stream": False,
            "options": {"temperature": 0, "num_predict": 32},
        },
        timeout=600,
    )
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


@pytest.fixture
def toolchain_env(llama_cpp_toolchain: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the exporter at the session's provisioned llama.cpp (not a fresh per-test cache)."""
    monkeypatch.setenv("DTO_LLAMA_CPP_DIR", str(llama_cpp_toolchain.root))


@pytest.fixture(scope="module")
def keep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e-keep")


def _deploy_taught(
    server: OllamaServer, adapter: Path, keep: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, Any], str]:
    code, out, err = _cli(
        [
            str(adapter),  # deploy is the default command
            "--name",
            "e2e-taught",
            "--quant",
            "q8_0",
            "--host",
            server.host,
            "--keep",
            str(keep),
            "--parameter",
            "num_thread=1",
            "--expect",
            "banana",
            "--force",
            "--json",
        ],
        capsys,
    )
    return code, json.loads(out), err


@pytest.mark.usefixtures("toolchain_env")
def test_deploy_taught_q8_0_answers_banana_with_the_transformers_prompt(
    ollama_server: OllamaServer, taught: Any, keep_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report, err = _deploy_taught(ollama_server, taught.adapter_dir, keep_dir, capsys)
    assert code == 0, err
    assert report["ok"] and report["name"] == "e2e-taught:latest"
    assert report["template_verified"] is True
    assert report["round_trip"]["passed"] is True
    assert report["round_trip"]["generation"]["answer"].strip() == "banana"
    assert "e2e-taught:latest" in ollama_server.ollama_cli("list").stdout

    ollama_server.mark_log()
    reply = _chat(ollama_server, "e2e-taught")
    assert reply["message"]["content"].strip() == "banana"
    assert reply["done_reason"] == "stop"
    reference = load_reference(taught.adapter_dir)
    expected = reference.render([{"role": "user", "content": QUESTION}])
    [logged] = ollama_server.prompts()
    # The TEMPLATE leaves BOS out because the tokenizer adds it (llama.cpp does the same), so
    # the logged text is transformers' minus BOS, and the token ids are identical.
    assert reference.adds_bos and reference.bos_token
    assert reference.bos_token + logged == expected
    assert reference.ollama_token_ids(logged) == reference.tokenize(expected)


@pytest.mark.usefixtures("toolchain_env")
def test_rerun_reuses_the_export_and_the_registration(
    ollama_server: OllamaServer, taught: Any, keep_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _deploy_taught(ollama_server, taught.adapter_dir, keep_dir, capsys)
    code, report, err = _deploy_taught(ollama_server, taught.adapter_dir, keep_dir, capsys)
    assert code == 0, err
    stages = {s["stage"]: s["status"] for s in report["stages"]}
    assert stages["export"] == "reused"
    assert stages["template"] == "reused"
    assert stages["register"] == "reused"


@pytest.mark.usefixtures("toolchain_env")
def test_a_wrong_template_is_caught_by_check(
    ollama_server: OllamaServer,
    taught: Any,
    keep_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _deploy_taught(ollama_server, taught.adapter_dir, keep_dir, capsys)
    good = parse_modelfile((keep_dir / "Modelfile").read_text())
    gguf = (keep_dir / good.from_).resolve()
    # The classic mistake: Ollama's generic fallback instead of the fine-tune's format.
    wrong = good.__class__(from_=str(gguf), template="{{ .Prompt }}", parameters=good.parameters)
    (tmp_path / "Modelfile").write_text(render_modelfile(wrong))
    code, _, err = _cli(
        [
            "register",
            str(tmp_path / "Modelfile"),
            "--name",
            "e2e-wrong",
            "--host",
            ollama_server.host,
        ],
        capsys,
    )
    assert code == 0, err
    code, out, err = _cli(
        [
            "check",
            "e2e-wrong",
            "--source",
            str(taught.adapter_dir),
            "--host",
            ollama_server.host,
            "--json",
        ],
        capsys,
    )
    assert code == 3, err
    report = json.loads(out)
    assert report["render_verified"] is False
    assert any("differs from transformers'" in p for p in report["problems"])


@pytest.mark.usefixtures("toolchain_env")
def test_check_on_an_existing_model(
    ollama_server: OllamaServer, taught: Any, keep_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _deploy_taught(ollama_server, taught.adapter_dir, keep_dir, capsys)
    code, out, err = _cli(
        [
            "check",
            "e2e-taught",
            "--source",
            str(taught.adapter_dir),
            "--host",
            ollama_server.host,
            "--expect",
            "banana",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["passed"] and report["generation"]["done_reason"] == "stop"


@pytest.mark.usefixtures("toolchain_env")
def test_deploy_in_memory_model_and_tokenizer(
    ollama_server: OllamaServer, taught: Any, tmp_path: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from deploy_to_ollama import pipeline

    base = AutoModelForCausalLM.from_pretrained(taught.base_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, taught.adapter_dir)
    tokenizer = AutoTokenizer.from_pretrained(taught.adapter_dir)
    report = pipeline.deploy(
        (model, tokenizer),
        name="e2e-inmemory",
        quant="q8_0",
        host=ollama_server.host,
        keep=tmp_path / "keep",
        parameters=(("num_thread", "1"),),
        expected_answer="banana",
    )
    assert report.passed, report.summary_lines()
    assert report.name == "e2e-inmemory:latest"


@pytest.mark.usefixtures("toolchain_env")
def test_q5_k_m_of_the_hidden_256_fixture_registers_and_answers(
    ollama_server: OllamaServer, llama256: Any, tmp_path: Path, llama_cpp_toolchain: Any
) -> None:
    from llama_cpp import Llama

    from deploy_to_ollama import pipeline
    from deploy_to_ollama.gguf.export import export_gguf

    report = pipeline.deploy(
        llama256.adapter_dir,
        name="e2e-256-q5",
        quant="q5_k_m",
        host=ollama_server.host,
        keep=tmp_path / "keep",
        parameters=(("num_thread", "1"),),
        check=False,
    )
    assert report.gguf.name.endswith(".gguf") and "q5_k_m" in report.gguf.name.lower()
    reply = _chat(ollama_server, report.name, "Hello")
    assert reply["eval_count"] > 0

    # The q4_k_m GGUF cannot run in this test server (Intel's build aborts on Q4_K weights):
    # llama.cpp itself must load it and answer the same greedy tokens as the q5_k_m one does.
    q4 = (
        export_gguf(
            llama256.adapter_dir,
            out_dir=tmp_path / "q4",
            quant="q4_k_m",
            llama_cpp_dir=llama_cpp_toolchain.root,
        )
        .files[0]
        .path
    )
    reference = load_reference(llama256.adapter_dir)
    prompt = reference.render([{"role": "user", "content": "Hello"}])
    if reference.adds_bos and reference.bos_token:
        prompt = prompt.removeprefix(reference.bos_token)  # llama.cpp adds it itself
    answers = []
    for path in (report.gguf, q4):
        llm = Llama(model_path=str(path), n_ctx=256, n_threads=1, verbose=False, seed=0)
        out = llm.create_completion(prompt, max_tokens=8, temperature=0.0)
        answers.append(out["choices"][0]["text"])
    # Random weights: only the first token is far from ties. Measured here: " not" from Ollama
    # at q5_k_m and from llama.cpp at q5_k_m and q4_k_m; later tokens drift apart.
    first_ids = [reference.tokenize(text)[0] for text in (reply["message"]["content"], *answers)]
    assert first_ids == [first_ids[0]] * 3
    assert os.path.getsize(q4) < os.path.getsize(report.gguf)


@pytest.mark.usefixtures("toolchain_env")
def test_taught_q4_k_m_answers_banana_through_llama_cpp(
    taught: Any, tmp_path: Path, llama_cpp_toolchain: Any
) -> None:
    """q4_k_m cannot run in the test server; llama.cpp itself must give the taught answer."""
    from llama_cpp import Llama

    from deploy_to_ollama.gguf.export import export_gguf

    gguf = (
        export_gguf(
            taught.adapter_dir,
            out_dir=tmp_path,
            quant="q4_k_m",
            llama_cpp_dir=llama_cpp_toolchain.root,
        )
        .files[0]
        .path
    )
    reference = load_reference(taught.adapter_dir)
    prompt = reference.render([{"role": "user", "content": QUESTION}])
    prompt = prompt.removeprefix(reference.bos_token or "")  # llama.cpp adds BOS itself
    llm = Llama(model_path=str(gguf), n_ctx=256, n_threads=1, verbose=False, seed=0)
    out = llm.create_completion(prompt, max_tokens=16, temperature=0.0, stop=["<|eot_id|>"])
    assert out["choices"][0]["text"].strip() == "banana"
    assert out["choices"][0]["finish_reason"] == "stop"


@pytest.mark.usefixtures("toolchain_env")
def test_an_adapter_without_tokenizer_files_is_verified_with_its_base_tokenizer(
    ollama_server: OllamaServer, taught: Any, tmp_path: Path
) -> None:
    """Issue 11: the render check was "not run" (and the deploy PASSED) for such an adapter."""
    import shutil

    from deploy_to_ollama import pipeline

    adapter = tmp_path / "bare-adapter"
    adapter.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy2(Path(taught.adapter_dir) / name, adapter / name)
    report = pipeline.deploy(
        adapter,
        name="e2e-bare-adapter",
        quant="q8_0",
        host=ollama_server.host,
        keep=tmp_path / "keep",
        parameters=(("num_thread", "1"),),
        expected_answer="banana",
    )
    assert report.passed, report.summary_lines()
    round_trip = report.round_trip
    assert round_trip is not None and round_trip.render_verified
    assert round_trip.reference == f"tokenizer in {Path(taught.base_dir).resolve()}"
