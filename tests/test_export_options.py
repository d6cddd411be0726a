"""``export`` options: Unsloth-only flags, ``--push-to-hub`` and resuming an identical export.

Unsloth itself needs CUDA (its GPU path is tested on the device in test_unsloth_backend.py);
here the CPU side is checked: flag validation before any work and how flags map onto
``export_with_unsloth``. Hub pushes go to ``support.fake_hub``, a local stand-in for the Hub.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deploy_to_ollama.cli import app
from deploy_to_ollama.cli.export import (
    UnslothRequest,
    UnslothSummary,
    _write_modelfile,
    unsloth_call_kwargs,
)
from deploy_to_ollama.errors import (
    DependencyMissingError,
    HubError,
    OutputExistsError,
    UsageError,
)
from deploy_to_ollama.gguf.export import GgufFile, export_gguf
from deploy_to_ollama.modelfile import parse_modelfile


def _export(*args: str) -> Any:
    return CliRunner().invoke(app, ["export", *args])


# ------------------------------------------------------------------ Unsloth-only flags (CPU)


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--load-in-4bit", "--load-in-8bit"], "exclude each other"),
        (["--backend", "llama.cpp", "--load-in-4bit"], "--load-in-4bit need the unsloth"),
        (["--backend", "llama.cpp", "--load-in-8bit"], "--load-in-8bit need the unsloth"),
        (["--backend", "llama.cpp", "--save-merged-4bit", "m4"], "--save-merged-4bit need"),
        (["--save-merged", "m", "--save-merged-4bit", "m4"], "exclude each other"),
        (["--what", "adapter"], "need --push-to-hub"),
        (["--private"], "need --push-to-hub"),
        (["--push-to-hub", "alice/x", "--what", "merged"], "--save-merged"),
        (["--push-to-hub", "alice/x", "--what", "tarball"], "tarball"),
        (["--push-to-hub", "not a repo"], "invalid Hub repository id"),
    ],
)
def test_bad_flag_combinations_fail_before_work(
    tmp_path: Path, flags: list[str], needle: str
) -> None:
    source = tmp_path / "lora"
    source.mkdir()
    (source / "adapter_config.json").write_text("{}")
    out = tmp_path / "out"
    result = _export(str(source), "--out", str(out), *flags)
    assert isinstance(result.exception, UsageError), result.output
    assert needle in str(result.exception)
    assert result.exception.hint
    assert "\n" not in str(result.exception)
    assert not out.exists()
    assert "unsloth" not in sys.modules


def test_unsloth_flags_with_auto_backend_on_a_cpu_machine(tmp_path: Path) -> None:
    from deploy_to_ollama.gguf.unsloth import unsloth_availability

    if unsloth_availability().available:
        pytest.skip("this machine can run Unsloth: auto picks it")
    result = _export(str(tmp_path), "--out", str(tmp_path / "o"), "--load-in-4bit")
    assert isinstance(result.exception, UsageError)
    assert "--load-in-4bit need the unsloth backend" in str(result.exception)


def test_adapter_push_needs_an_adapter_source(tmp_path: Path) -> None:
    result = _export(
        str(tmp_path), "--out", str(tmp_path / "o"), "--push-to-hub", "alice/x", "--what", "adapter"
    )
    assert isinstance(result.exception, UsageError)
    assert "adapter_config.json" in str(result.exception)


def test_flags_map_onto_export_with_unsloth() -> None:
    import inspect

    from deploy_to_ollama.gguf.unsloth import export_with_unsloth

    four = UnslothRequest(
        Path("lora"), Path("out"), ("q8_0", "q4_k_m"), save_merged=Path("m4"),
        merged_method="merged_4bit_forced", load_in_4bit=True, force=True,
    )  # fmt: skip
    kwargs = unsloth_call_kwargs(four)
    assert kwargs == {
        "quants": ["q8_0", "q4_k_m"],
        "load_in_4bit": True,
        "load_in_8bit": False,
        "save_merged": Path("m4"),
        "merged_method": "merged_4bit_forced",
        "force": True,
    }
    # Every key is a real keyword of G's backend (a rename there would break the CLI).
    params = inspect.signature(export_with_unsloth).parameters
    assert set(kwargs) <= set(params)
    assert params["merged_method"].annotation in (
        "MergedMethod",
        params["merged_method"].annotation,
    )
    eight = unsloth_call_kwargs(UnslothRequest(Path("l"), Path("o"), ("f16",), load_in_8bit=True))
    assert (eight["load_in_8bit"], eight["load_in_4bit"], eight["merged_method"]) == (
        True, False, "merged_16bit",
    )  # fmt: skip


def test_cli_reaches_unsloth_with_name_and_bnb_flags(
    llama_cpp_toolchain: Any, tiny_llama: Any, tmp_path: Path
) -> None:
    """Validation passes (--name is allowed now); on a CPU machine the backend then says why not."""
    from deploy_to_ollama.gguf.unsloth import unsloth_availability

    if unsloth_availability().available:
        pytest.skip("Unsloth can run here: the GPU test covers this path")
    import shutil

    adapter = tmp_path / "lora"
    shutil.copytree(tiny_llama.adapter_dir, adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "task_type": "CAUSAL_LM"}))
    out = tmp_path / "out"
    result = _export(
        str(adapter), "--out", str(out), "--backend", "unsloth",
        "--load-in-8bit", "--save-merged-4bit", str(tmp_path / "m4"), "--name", "bot",
        "--llama-cpp", str(llama_cpp_toolchain.root),
    )  # fmt: skip
    assert isinstance(result.exception, DependencyMissingError), result.output
    assert result.exception.exit_code == 4
    assert "--backend llama.cpp" in (result.exception.hint or "")
    assert not (tmp_path / "m4").exists()
    assert not list(out.glob("*.gguf")) if out.exists() else True
    assert "unsloth" not in sys.modules


def test_unsloth_modelfile_template_comes_from_the_source(tiny_llama: Any, tmp_path: Path) -> None:
    """Unsloth's GGUF lacks {{ bos_token }}: the Modelfile uses the source tokenizer's template."""
    from deploy_to_ollama.chat_template import load_template_source, translate_template

    out = tmp_path / "out"
    out.mkdir()
    gguf = out / "base.Q8_0.gguf"
    gguf.write_bytes(b"GGUF")  # only its name goes into FROM
    summary = UnslothSummary(
        files=(GgufFile(path=gguf, quant="q8_0", size_bytes=4),), name="bot", merged_dir=None
    )
    modelfile, status = _write_modelfile(summary, tiny_llama.adapter_dir, out, force=False)
    expected = translate_template(load_template_source(tiny_llama.adapter_dir))
    text = modelfile.read_text()
    # The header comment comes first (the same Modelfile deploy writes); then FROM.
    assert parse_modelfile(text).from_ == "./base.Q8_0.gguf"
    assert text.lstrip("#").lstrip().startswith("Written by deploy-to-ollama")
    assert str(expected.template) in text
    assert status == ("verified" if expected.verified else "unverified")
    for stop in expected.stop:
        assert json.dumps(stop) in text or stop in text


def test_export_template_route_native_writes_the_modelfile_deploy_would_register(
    tiny_llama: Any, tmp_path: Path
) -> None:
    """``export --template-route native``: the Modelfile of the native route (no TEMPLATE or
    SYSTEM), assembled where deploy assembles it (``routing.route_modelfile``); auto is go."""
    from deploy_to_ollama.exporting import modelfile_for, translate_for_export
    from deploy_to_ollama.routing import route_modelfile

    gguf = tmp_path / "base.Q8_0.gguf"
    gguf.write_bytes(b"GGUF")  # only its name goes into FROM
    summary = UnslothSummary(
        files=(GgufFile(path=gguf, quant="q8_0", size_bytes=4),), name="bot", merged_dir=None
    )
    translation = translate_for_export(tiny_llama.adapter_dir, None)
    extra = (("num_ctx", "512"),)
    texts = {
        route: modelfile_for(summary, tiny_llama.adapter_dir, translation, extra=extra,
                             route=route)
        for route in ("auto", "go", "native")
    }  # fmt: skip
    go, native = parse_modelfile(texts["go"]), parse_modelfile(texts["native"])
    assert texts["auto"] == texts["go"] and go.template
    assert native.template is None and native.system is None
    assert native.from_ == go.from_ == "./base.Q8_0.gguf"
    assert native.parameters == go.parameters and ("num_ctx", "512") in native.parameters
    assert native == route_modelfile("native", go)
    # The CLI refuses an unknown route before any work.
    result = _export(str(tiny_llama.adapter_dir), "--out", str(tmp_path / "o"),
                     "--template-route", "jinja")  # fmt: skip
    assert isinstance(result.exception, UsageError), result.output
    assert "--template-route" in str(result.exception) and result.exception.exit_code == 2
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ --push-to-hub


def test_push_without_token_fails_before_the_export(
    fake_hub: Any, tiny_llama: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_TOKEN")
    out = tmp_path / "out"
    result = _export(str(tiny_llama.adapter_dir), "--out", str(out), "--push-to-hub", "alice/x")
    assert isinstance(result.exception, HubError)
    assert "HF_TOKEN" in (result.exception.hint or "")
    assert not out.exists()


@pytest.mark.slow
def test_export_pushes_gguf_and_adapter(
    fake_hub: Any, llama_cpp_toolchain: Any, tiny_llama: Any, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    common = ["--quant", "f16", "--name", "tiny", "--llama-cpp", str(llama_cpp_toolchain.root)]
    result = _export(
        str(tiny_llama.adapter_dir), "--out", str(out), *common,
        "--push-to-hub", "alice/tiny-GGUF", "--private", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["hub"]["repo_id"] == "alice/tiny-GGUF"
    repo = fake_hub.repos["alice/tiny-GGUF"]
    assert repo.private
    for name in ("tiny.F16.gguf", "Modelfile"):
        assert fake_hub.file_bytes("alice/tiny-GGUF", name) == (out / name).read_bytes()
    card = fake_hub.file_bytes("alice/tiny-GGUF", "README.md").decode()
    assert "ollama run hf.co/alice/tiny-GGUF" in card

    # --what adapter uploads the SOURCE adapter; the existing export is reused (same inputs).
    again = _export(
        str(tiny_llama.adapter_dir), "--out", str(out), *common,
        "--push-to-hub", "alice/tiny-lora", "--what", "adapter", "--json",
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["reused"] is True
    adapter = tiny_llama.adapter_dir / "adapter_model.safetensors"
    assert fake_hub.file_bytes("alice/tiny-lora", adapter.name) == adapter.read_bytes()


@pytest.mark.slow
def test_push_refused_by_the_hub_is_a_hub_error(
    fake_hub: Any, llama_cpp_toolchain: Any, tiny_llama: Any, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = _export(
        str(tiny_llama.adapter_dir), "--out", str(out), "--quant", "f16",
        "--llama-cpp", str(llama_cpp_toolchain.root), "--push-to-hub", "bob/shared",
    )  # fmt: skip
    assert isinstance(result.exception, HubError), result.output
    assert result.exception.exit_code == 1
    assert list(out.glob("*.F16.gguf"))  # the export itself stands


# ------------------------------------------------------------------ resume


@pytest.mark.slow
def test_identical_rerun_reuses_the_export_and_changed_input_needs_force(
    llama_cpp_toolchain: Any, tiny_llama: Any, tmp_path: Path
) -> None:
    import shutil

    adapter = tmp_path / "lora"
    shutil.copytree(tiny_llama.adapter_dir, adapter)
    out = tmp_path / "out"
    kwargs: dict[str, Any] = {
        "out_dir": out, "quant": "f16", "name": "tiny", "base": tiny_llama.base_dir,
        "toolchain": llama_cpp_toolchain,
    }  # fmt: skip
    first = export_gguf(adapter, **kwargs)
    assert not first.reused
    mtime = first.path.stat().st_mtime_ns
    second = export_gguf(adapter, **kwargs)
    assert second.reused
    assert second.files == first.files
    assert second.chat_template == first.chat_template
    assert first.path.stat().st_mtime_ns == mtime  # not rewritten

    # Another quant or a changed adapter is not the same export.
    with pytest.raises(OutputExistsError):
        export_gguf(adapter, **{**kwargs, "name": "tiny", "quant": "f16,q8_0"})
    weights = adapter / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(OutputExistsError):
        export_gguf(adapter, **kwargs)
    redone = export_gguf(adapter, **kwargs, force=True)
    assert not redone.reused
    assert export_gguf(adapter, **kwargs).reused

    # A tampered output is not reused either.
    with redone.path.open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(OutputExistsError):
        export_gguf(adapter, **kwargs)
