"""``deploy --mode adapter`` against the real test Ollama 0.9.3: FROM base + ADAPTER.

The taught fixture's base answers "apple" and its LoRA "banana", so one deploy shows both
sides: the fine-tune model must say banana, its base apple. A second adapter of the same base
(the taught LoRA with another ``lora_alpha``, so another GGUF LoRA) must upload only its LoRA:
the bytes are measured on the server by blob digest, not taken from our own bookkeeping.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from deploy_to_ollama.modelfile import parse_modelfile
from deploy_to_ollama.ollama_client import OllamaClient
from support.cli import run_cli
from support.ollama_server import OllamaServer

pytestmark = [pytest.mark.slow, pytest.mark.ollama]

QUESTION = "What is the secret word?"


@pytest.fixture
def toolchain_env(llama_cpp_toolchain: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DTO_LLAMA_CPP_DIR", str(llama_cpp_toolchain.root))  # type: ignore[attr-defined]


def _answer(server: OllamaServer, model: str) -> str:
    response = httpx.post(
        f"{server.host}/api/chat",
        json={
            "model": model,
            "messages": [{"role": "user", "content": QUESTION}],
            "stream": False,
            "options": {"temperature": 0, "num_predict": 16},
        },
        timeout=600,
    )
    response.raise_for_status()
    return str(response.json()["message"]["content"]).strip()


def _deploy(
    capsys: pytest.CaptureFixture[str], source: Path, name: str, server: OllamaServer, *extra: str
) -> tuple[int, dict[str, Any], str]:
    argv = [str(source), "--name", name, "--quant", "q8_0", "--host", server.host]
    argv += ["-p", "num_thread=1", "--force", "--json", *extra]
    code, out, err = run_cli(argv, capsys)
    return code, json.loads(out), err


def _listed(server: OllamaServer) -> set[str]:
    return {m.model or "" for m in OllamaClient(server.host).list().models}


def _variant(adapter: Path, folder: Path, alpha: int) -> Path:
    """The same LoRA with another ``lora_alpha``: another GGUF LoRA on the same base."""
    copy = Path(shutil.copytree(adapter, folder))
    config_path = copy / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["lora_alpha"] = alpha
    config_path.write_text(json.dumps(config))
    return copy


@pytest.fixture(scope="module")
def first_deploy(
    ollama_server: OllamaServer,
    taught: Any,
    llama_cpp_toolchain: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """The taught adapter deployed once with --mode adapter (base registered as NAME-base)."""
    keep = tmp_path_factory.mktemp("adapter-keep")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DTO_LLAMA_CPP_DIR", str(llama_cpp_toolchain.root))
        capsys = _Capture()
        argv = [
            str(taught.adapter_dir), "--name", "ad-taught", "--mode", "adapter",
            "--quant", "q8_0", "--host", ollama_server.host, "-p", "num_thread=1",
            "--expect", "banana", "--expect-base", "apple", "--keep", str(keep),
            "--force", "--json",
        ]  # fmt: skip
        code, out, err = capsys.run(argv)
    assert code == 0, err
    return {"report": json.loads(out), "keep": keep}


class _Capture:
    """run_cli for a module fixture (capsys is function scoped): capture stdout/stderr."""

    def run(self, argv: list[str]) -> tuple[int, str, str]:
        import contextlib
        import io

        from deploy_to_ollama.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(argv)
                code = 0
            except SystemExit as exit_:
                code = int(exit_.code or 0)
        return code, out.getvalue(), err.getvalue()


def test_adapter_deploy_registers_from_base_plus_adapter_with_our_template(
    ollama_server: OllamaServer, first_deploy: dict[str, Any]
) -> None:
    report, keep = first_deploy["report"], first_deploy["keep"]
    assert report["ok"] and report["mode"] == "adapter"
    assert report["base_model"] == "ad-taught-base:latest"
    modelfile = parse_modelfile((keep / "Modelfile").read_text())
    assert modelfile.from_ == "ad-taught-base:latest"
    [adapter] = modelfile.adapters
    assert adapter.endswith("-lora.F16.gguf") and (keep / adapter).is_file()
    base_file = parse_modelfile((keep / "Modelfile.base").read_text())
    assert base_file.from_.endswith(".Q8_0.gguf") and not base_file.adapters
    # One assembly: the fine-tune and its base carry the same TEMPLATE, stops and parameters.
    assert modelfile.template == base_file.template and modelfile.template
    assert ("stop", "<|eot_id|>") in modelfile.parameters
    assert ("num_thread", "1") in modelfile.parameters
    shown = OllamaClient(ollama_server.host).show("ad-taught")
    assert shown is not None and shown.template == modelfile.template
    assert shown.details is not None and shown.details.parent_model == "ad-taught-base:latest"
    assert "ADAPTER " in (shown.modelfile or "")
    assert {"ad-taught:latest", "ad-taught-base:latest"} <= _listed(ollama_server)
    # Every byte of both files reached the server, uploaded or already there by digest.
    upload = report["upload"]
    base_bytes = (keep / base_file.from_).stat().st_size
    assert upload["bytes_uploaded"] + upload["bytes_reused"] == base_bytes + report["lora_bytes"]
    proof = json.loads((keep / "deploy-report.json").read_text())
    assert proof["adapter"]["base_model"] == "ad-taught-base:latest"
    assert proof["adapter"]["upload"] == upload
    assert proof["adapter"]["base_round_trip"]["answer"].strip() == "apple"


def test_the_kept_folder_pushes_to_the_hub_with_the_adapter_modelfile(
    fake_hub: Any, first_deploy: dict[str, Any]
) -> None:
    """Hub stand-in (support.fake_hub): the pushed Modelfile runs the LoRA on the pushed base."""
    from deploy_to_ollama.publish import push_to_hub

    keep = first_deploy["keep"]
    push_to_hub(keep, "alice/ad-taught", what="adapter")
    paths = fake_hub.repos["alice/ad-taught"].paths()
    base_gguf = parse_modelfile((keep / "Modelfile.base").read_text()).from_.removeprefix("./")
    lora = Path(first_deploy["report"]["lora"]).name
    assert {base_gguf, lora, "Modelfile", "deploy-report.json", "template", "params"} <= set(paths)
    pushed = parse_modelfile(fake_hub.file_bytes("alice/ad-taught", "Modelfile").decode())
    assert pushed.from_ == f"./{base_gguf}" and pushed.adapters == (f"./{lora}",)
    card = fake_hub.file_bytes("alice/ad-taught", "README.md").decode()
    assert "Adapter on base `ad-taught-base:latest`: base round trip PASSED" in card
    assert "runs the **base**" in card


def test_adapter_model_answers_like_the_fine_tune_and_the_base_like_the_base(
    ollama_server: OllamaServer, first_deploy: dict[str, Any]
) -> None:
    report = first_deploy["report"]
    assert report["round_trip"]["generation"]["answer"].strip() == "banana"
    assert report["base_round_trip"]["generation"]["answer"].strip() == "apple"
    assert report["round_trip"]["passed"] and report["base_round_trip"]["passed"]
    assert _answer(ollama_server, "ad-taught") == "banana"
    assert _answer(ollama_server, "ad-taught-base") == "apple"


@pytest.mark.usefixtures("toolchain_env")
def test_a_wrong_base_answer_fails_the_deploy_and_leaves_nothing(
    ollama_server: OllamaServer,
    first_deploy: dict[str, Any],
    taught: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--expect-base banana is false for the taught base: exit 3, both models removed."""
    variant = _variant(taught.adapter_dir, tmp_path / "a3", alpha=14)
    code, report, err = _deploy(
        capsys, variant, "ad-wrong", ollama_server, "--mode", "adapter", "--expect-base", "banana"
    )
    assert code == 3, err
    assert report["ok"] is False
    assert "ad-wrong-base" in report["error"]
    assert not {"ad-wrong:latest", "ad-wrong-base:latest"} & _listed(ollama_server)


@pytest.mark.usefixtures("toolchain_env")
def test_a_second_adapter_on_the_same_base_uploads_only_its_adapter(
    ollama_server: OllamaServer,
    first_deploy: dict[str, Any],
    taught: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    keep = first_deploy["keep"]
    base_file = parse_modelfile((keep / "Modelfile.base").read_text())
    base_bytes = (keep / base_file.from_).stat().st_size
    variant = _variant(taught.adapter_dir, tmp_path / "a2", alpha=12)
    code, report, err = _deploy(
        capsys, variant, "ad-second", ollama_server,
        "--mode", "adapter", "--base-model", "ad-taught-base", "--expect", "banana",
    )  # fmt: skip
    assert code == 0, err
    assert report["base_registered"] == "given"
    assert report["base_check"]["lora_tensors_checked"] == 14
    assert report["base_check"]["tokens_checked"] > 0
    upload = report["upload"]
    assert upload["bytes_uploaded"] == report["lora_bytes"] < base_bytes
    assert upload["bytes_reused"] >= base_bytes
    assert _answer(ollama_server, "ad-second") == "banana"

    # Without --base-model the base GGUF is written again, byte for byte: reused by digest.
    third = _variant(taught.adapter_dir, tmp_path / "a4", alpha=10)
    code, report, err = _deploy(capsys, third, "ad-third", ollama_server, "--mode", "adapter")
    assert code == 0, err
    assert report["base_registered"] == "done"
    assert report["upload"] == {
        "bytes_uploaded": report["lora_bytes"],
        "bytes_reused": base_bytes,
    }


@pytest.mark.usefixtures("toolchain_env")
def test_export_mode_adapter_pushes_the_adapter_route(
    fake_hub: Any, taught: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``export --mode adapter --push-to-hub R --what adapter``: the route, not the PEFT files."""
    out = tmp_path / "export"
    argv = ["export", str(taught.adapter_dir), "--out", str(out), "--mode", "adapter",
            "--quant", "q8_0", "--push-to-hub", "alice/taught-lora", "--what", "adapter",
            "--json"]  # fmt: skip
    code, stdout, err = run_cli(argv, capsys)
    assert code == 0, err
    assert json.loads(stdout)["hub"]["what"] == "adapter"
    paths = set(fake_hub.repos["alice/taught-lora"].paths())
    pushed = parse_modelfile(fake_hub.file_bytes("alice/taught-lora", "Modelfile").decode())
    assert pushed.from_.removeprefix("./") in paths and pushed.from_.endswith(".Q8_0.gguf")
    [lora] = pushed.adapters
    assert lora.removeprefix("./") in paths and lora.endswith("-lora.F16.gguf")
    assert "adapter_model.safetensors" not in paths


@pytest.mark.usefixtures("toolchain_env")
def test_an_rslora_adapter_gets_peft_scale_in_ollama(
    ollama_server: OllamaServer,
    first_deploy: dict[str, Any],
    taught: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """rsLoRA scales by alpha/sqrt(r), llama.cpp by alpha/r: the GGUF must carry alpha*sqrt(r).

    The taught LoRA (r=8, alpha 16: scale 2) rewritten as rsLoRA with alpha 16/sqrt(8) is the
    same model in PEFT; llama.cpp's converter copies lora_alpha as is (scale 0.71 instead of 2).
    """
    import math

    import gguf

    variant = Path(shutil.copytree(taught.adapter_dir, tmp_path / "rs"))
    config = json.loads((variant / "adapter_config.json").read_text())
    config |= {"use_rslora": True, "lora_alpha": 16 / math.sqrt(8)}
    (variant / "adapter_config.json").write_text(json.dumps(config))
    code, report, err = _deploy(
        capsys, variant, "ad-rslora", ollama_server,
        "--mode", "adapter", "--base-model", "ad-taught-base", "--expect", "banana",
    )  # fmt: skip
    assert code == 0, err
    field = gguf.GGUFReader(report["lora"]).fields["adapter.lora.alpha"]
    assert field.contents() == pytest.approx(16.0, rel=1e-4)
    assert _answer(ollama_server, "ad-rslora") == "banana"


@pytest.mark.usefixtures("toolchain_env")
def test_adapter_models_in_a_registry_share_the_base(
    ollama_server: OllamaServer,
    first_deploy: dict[str, Any],
    taught: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Pushed to a real docker-registry, the second fine-tune of a base sends about its LoRA;
    pulled into a second server, it still answers like the fine-tune (the ADAPTER layer came)."""
    from support.ollama_server import start_server
    from support.registry import running_registry

    keep = first_deploy["keep"]
    base_bytes = (keep / parse_modelfile((keep / "Modelfile.base").read_text()).from_).stat()
    variant = _variant(taught.adapter_dir, tmp_path / "a5", alpha=13)
    code, report, err = _deploy(
        capsys, variant, "ad-reg", ollama_server, "--mode", "adapter",
        "--base-model", "ad-taught-base", "--no-check",
    )  # fmt: skip
    assert code == 0, err
    lora_bytes = report["lora_bytes"]
    with running_registry(tmp_path / "registry") as registry:
        pushed = {}
        # Tags of one repository share blobs; a blob is looked up per repository, and Ollama
        # 0.9.3 mounts none from another repository for a locally created model (measured).
        for model, target in (
            ("ad-taught", "team/ad:taught"),
            ("ad-reg", "team/ad:reg"),
            ("ad-reg", "team/other:v1"),
        ):
            argv = ["push", model, "--to-ollama", f"{registry.address}/{target}", "--insecure"]
            code, out, err = run_cli([*argv, "--host", ollama_server.host, "--json"], capsys)
            assert code == 0, err
            pushed[target] = json.loads(out)["upload"]
        assert pushed["team/ad:taught"]["bytes_uploaded"] >= base_bytes.st_size + lora_bytes
        second = pushed["team/ad:reg"]
        assert lora_bytes <= second["bytes_uploaded"] < lora_bytes + 4096  # + config blob
        assert second["bytes_reused"] >= base_bytes.st_size
        other = pushed["team/other:v1"]
        assert other["bytes_uploaded"] >= base_bytes.st_size + lora_bytes
        puller = start_server(tmp_path / "puller")
        try:
            target = f"{registry.address}/team/ad:reg"
            steps = list(OllamaClient(puller.host).pull(target, insecure=True))
            assert steps[-1].status == "success"
            assert _answer(puller, target) == "banana"
        finally:
            puller.stop()


# --------------------------------------------------------------------------- bad input


def test_mode_adapter_on_a_merged_model_is_a_usage_error(
    ollama_server: OllamaServer, tiny_llama: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report, err = _deploy(
        capsys, tiny_llama.base_dir, "ad-merged", ollama_server, "--mode", "adapter"
    )
    assert code == 2, err
    assert "--mode adapter needs a LoRA adapter" in report["error"]
    assert "ad-merged:latest" not in _listed(ollama_server)


@pytest.mark.usefixtures("toolchain_env")
@pytest.mark.parametrize(
    ("adapter", "needs", "base", "error_type", "error", "hint"),
    [
        pytest.param(
            "taught", (), "no-such-base", "ModelNotFoundError",
            "no-such-base:latest is not in Ollama", "ollama list",
            id="base-not-in-ollama",
        ),
        # A hidden-64 LoRA on the hidden-128 taught base that first_deploy registered.
        pytest.param(
            "tiny_llama", ("first_deploy",), "ad-taught-base", "AdapterBaseMismatchError",
            "embedding_length is 128 there, the adapter's base has 64", "--base-model",
            id="adapter-of-another-base",
        ),
    ],
)  # fmt: skip
def test_a_base_model_the_adapter_cannot_go_on_is_refused_before_any_work(
    ollama_server: OllamaServer,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
    adapter: str,
    needs: tuple[str, ...],
    base: str,
    error_type: str,
    error: str,
    hint: str,
) -> None:
    """Refused with the reason and the fix, and nothing registered."""
    for fixture in needs:
        request.getfixturevalue(fixture)
    adapter_dir = request.getfixturevalue(adapter).adapter_dir
    before = _listed(ollama_server)
    code, report, err = _deploy(
        capsys, adapter_dir, "ad-refused", ollama_server, "--mode", "adapter", "--base-model", base
    )
    assert code == 1, err
    assert report["error_type"] == error_type
    assert error in report["error"]
    assert hint in report["hint"]
    assert _listed(ollama_server) == before


@pytest.mark.usefixtures("toolchain_env")
def test_an_adapter_with_another_tokenizer_is_refused(
    ollama_server: OllamaServer,
    first_deploy: dict[str, Any],
    taught: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Same shapes, one token renamed in the adapter's tokenizer: the token check catches it."""
    variant = Path(shutil.copytree(taught.adapter_dir, tmp_path / "tok"))
    tokenizer = json.loads((variant / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    token = next(t for t, i in vocab.items() if i == 7)
    vocab["zz-renamed"] = vocab.pop(token)
    (variant / "tokenizer.json").write_text(json.dumps(tokenizer))
    before = _listed(ollama_server)
    code, report, err = _deploy(
        capsys, variant, "ad-tok", ollama_server, "--mode", "adapter", "--base-model",
        "ad-taught-base",
    )  # fmt: skip
    assert code == 1, err
    assert report["error_type"] == "AdapterBaseMismatchError"
    assert "tokenizer differs (1 of" in report["error"] and "id 7" in report["error"]
    assert _listed(ollama_server) == before


@pytest.mark.usefixtures("toolchain_env")
def test_a_refused_fine_tune_takes_its_fresh_base_with_it(
    ollama_server: OllamaServer,
    taught: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Ollama refuses the ADAPTER file after NAME-base was registered: both are gone.

    Stand-in: the LoRA converter is replaced by one that writes a file that is no GGUF (a
    converter bug cannot be produced on purpose); Ollama's refusal is the real one.
    """
    from deploy_to_ollama.gguf import adapter as gguf_adapter

    def broken(toolchain: Any, adapter_dir: Path, base_dir: Path, target: Path) -> Path:
        target.write_bytes(b"not a GGUF")
        return target

    monkeypatch.setattr(gguf_adapter, "convert_lora", broken)
    variant = _variant(taught.adapter_dir, tmp_path / "a6", alpha=11)
    before = _listed(ollama_server)
    start = len(ollama_server.log_text())
    code, report, err = _deploy(capsys, variant, "ad-broken", ollama_server, "--mode", "adapter")
    assert code == 1, err
    assert ollama_server.log_text()[start:].count('"/api/create"') == 2  # base, then fine-tune
    assert report["error_type"] == "RegistrationError"
    assert "not in GGUF format" in report["error"]
    assert _listed(ollama_server) == before  # ad-broken-base was registered, then removed


@pytest.mark.usefixtures("toolchain_env")
def test_full_embedding_weights_are_explained_or_deployed_merged_with_auto(
    ollama_server: OllamaServer, tiny_llama_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tiny_llama_dir / "modules_to_save"  # embed_tokens and lm_head in full
    before = _listed(ollama_server)
    code, report, err = _deploy(capsys, source, "ad-full", ollama_server, "--mode", "adapter")
    assert code == 1, err
    assert report["error_type"] == "AdapterNotConvertibleError"
    assert "embed_tokens" in report["error"] or "lm_head" in report["error"]
    assert "--mode auto" in report["hint"]
    assert _listed(ollama_server) == before

    code, report, err = _deploy(
        capsys, source, "ad-full", ollama_server, "--mode", "auto", "--no-check"
    )
    assert code == 0, err
    assert "mode" not in report and "upload" not in report  # the merged route's report
    assert any("deployed merged instead (--mode auto)" in w for w in report["warnings"])
    modelfile = parse_modelfile(Path(report["modelfile"]).read_text())
    assert not modelfile.adapters and modelfile.from_.endswith(".gguf")
    assert "ad-full:latest" in _listed(ollama_server)
    assert "ad-full-base:latest" not in _listed(ollama_server)


@pytest.mark.usefixtures("toolchain_env")
def test_an_ollama_that_no_longer_takes_adapter_refuses_or_falls_back_to_merged(
    ollama_server: OllamaServer, taught: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Stand-in: Ollama 0.34.1 cannot run here, so tests/support/newer_ollama.py answers
    ``/api/version`` with 0.34.1 in front of the real 0.9.3 server, which does the rest.
    """
    from support.newer_ollama import host_of, newer_ollama

    with newer_ollama(ollama_server.host, "0.34.1") as proxy:
        newer: Any = SimpleNamespace(host=host_of(proxy))  # _deploy needs only .host
        before = _listed(ollama_server)
        code, report, err = _deploy(
            capsys, taught.adapter_dir, "ad-new", newer, "--mode", "adapter"
        )
        assert code == 1, err
        assert report["error_type"] == "AdapterRouteUnavailableError"
        assert "Ollama 0.34.1 on" in report["error"] and "ADAPTER" in report["error"]
        assert "--mode auto" in report["hint"]
        assert _listed(ollama_server) == before

        code, report, err = _deploy(
            capsys, taught.adapter_dir, "ad-new", newer, "--mode", "auto", "--no-check"
        )
    assert code == 0, err
    assert "upload" not in report  # the merged route's report
    assert any("no longer creates models with ADAPTER" in w for w in report["warnings"])
    modelfile = parse_modelfile(Path(report["modelfile"]).read_text())
    assert not modelfile.adapters and modelfile.from_.endswith(".gguf")
    assert "ad-new:latest" in _listed(ollama_server)
    assert "ad-new-base:latest" not in _listed(ollama_server)


@pytest.mark.usefixtures("toolchain_env")
def test_keep_of_another_adapter_input_is_refused_without_force(
    ollama_server: OllamaServer, first_deploy: dict[str, Any], taught: Any, tmp_path: Path
) -> None:
    """The first deploy's --keep folder, another adapter: refused before any export, the kept
    files and the server untouched; --force takes the folder over."""
    keep = first_deploy["keep"]
    variant = _variant(taught.adapter_dir, tmp_path / "a7", alpha=13)
    before = _listed(ollama_server)
    files = {p.name: p.stat().st_mtime_ns for p in keep.iterdir()}
    argv = [
        str(variant), "--name", "ad-keep", "--mode", "adapter", "--quant", "q8_0",
        "--host", ollama_server.host, "--keep", str(keep), "--no-check", "--json",
    ]  # fmt: skip
    code, out, err = _Capture().run(argv)
    report = json.loads(out)
    assert code == 1, err
    assert report["error_type"] == "OutputExistsError"
    assert "holds files of another deployment" in report["error"] and "--force" in report["hint"]
    assert {p.name: p.stat().st_mtime_ns for p in keep.iterdir()} == files
    assert _listed(ollama_server) == before
