"""``export``: adapter → streamed merge → GGUF, adapter mode, CLI contract, faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deploy_to_ollama.cli import app
from deploy_to_ollama.errors import OutputExistsError, UsageError
from support.llama_cpp import gguf_fields, gguf_greedy, hf_greedy, peft_merged


def _export(*args: str) -> Any:
    return CliRunner().invoke(app, ["export", *args])


def test_unknown_quant_fails_before_work(tiny_llama: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _export(str(tiny_llama.adapter_dir), "--out", str(out), "--quant", "q4_k_m,q9")
    assert isinstance(result.exception, UsageError)
    assert "q9" in str(result.exception)
    assert "q4_k_m" in (result.exception.hint or "")
    assert not out.exists()


def test_list_quants_for_a_model(tiny_llama: Any) -> None:
    from deploy_to_ollama.gguf.quants import count_parameters

    result = _export(str(tiny_llama.adapter_dir), "--list-quants", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    n = count_parameters(tiny_llama.base_dir)
    assert payload["parameters"] == n
    sizes = {row["quant"]: row["estimated_bytes"] for row in payload["quants"]}
    assert sizes["f16"] == 2 * n
    assert sizes["q2_k"] < sizes["q4_k_m"] < sizes["q8_0"] < sizes["f16"]
    assert payload["aliases"]["quantized"] == "q4_k_m"


@pytest.mark.slow
def test_streamed_adapter_export_equals_peft_merge(
    llama_cpp_toolchain: Any, tiny_llama: Any, tmp_path: Path, record_property: Any
) -> None:
    from deploy_to_ollama.gguf.export import export_gguf

    result = export_gguf(
        tiny_llama.adapter_dir,
        out_dir=tmp_path / "out",
        quant="f16",
        name="tiny",
        toolchain=llama_cpp_toolchain,
    )
    ours = result.path
    assert ours.name == "tiny.F16.gguf"
    # Streamed: the converter never waited on more than a couple of merged tensors at once.
    record_property("max_buffered_tensors", result.max_buffered_tensors)
    assert result.max_buffered_tensors <= 2
    assert not list((tmp_path / "out").glob("*.safetensors"))
    merged = peft_merged(tiny_llama.base_dir, tiny_llama.adapter_dir, tmp_path / "peft")
    reference = export_gguf(
        merged, out_dir=tmp_path / "ref", quant="f16", name="tiny", toolchain=llama_cpp_toolchain
    )
    ours_fields = gguf_fields(ours, llama_cpp_toolchain)
    ref_fields = gguf_fields(reference.path, llama_cpp_toolchain)
    assert ours_fields["_tensor_types"] == ref_fields["_tensor_types"]
    assert ours.read_bytes() == reference.path.read_bytes()
    from transformers import AutoTokenizer

    prompt = AutoTokenizer.from_pretrained(merged)("hello world the answer")["input_ids"]
    assert gguf_greedy(ours, prompt)[0] == hf_greedy(merged, prompt)[0]


@pytest.mark.slow
def test_cli_export_k_quants_json_modelfile_and_force(
    llama_cpp_toolchain: Any, llama256: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DTO_LLAMA_CPP_DIR", str(llama_cpp_toolchain.root))
    out = tmp_path / "out"
    args = [str(llama256.adapter_dir), "--out", str(out), "--quant", "Q8_0,q4_k_m"]
    result = _export(*args, "--name", "mini", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    files = {f["quant"]: f for f in payload["files"]}
    assert set(files) == {"q8_0", "q4_k_m"}
    for f in files.values():
        assert Path(f["path"]).stat().st_size == f["bytes"]
    assert files["q4_k_m"]["bytes"] < files["q8_0"]["bytes"]
    # The mixture llama.cpp's rules chose, as quantized in-process.
    assert set(files["q4_k_m"]["tensor_types"]) == {"Q4_K", "Q6_K", "F32"}
    # Where its time went; q8_0 comes straight from the converter, with no breakdown.
    assert files["q4_k_m"]["timings"]["quantize"] > 0 and files["q8_0"]["timings"] is None
    assert sorted(p.name for p in out.glob("*.gguf")) == ["mini.Q4_K_M.gguf", "mini.Q8_0.gguf"]
    from deploy_to_ollama.modelfile import parse_modelfile

    modelfile = parse_modelfile((out / "Modelfile").read_text())
    assert modelfile.from_ == "./mini.Q8_0.gguf"
    assert payload["template"] == "verified"
    assert modelfile.template and ".Messages" in modelfile.template
    assert "<|eot_id|>" in modelfile.parameter_values("stop")
    assert gguf_fields(out / "mini.Q4_K_M.gguf", llama_cpp_toolchain)["general.name"] == "mini"
    same = _export(*args, "--name", "mini", "--json")  # identical inputs: reused (resume)
    assert same.exit_code == 0 and json.loads(same.stdout)["reused"] is True, same.output
    again = _export(*args[:3], "--quant", "q8_0", "--name", "mini")  # other options
    assert isinstance(again.exception, OutputExistsError)
    assert "--force" in (again.exception.hint or "")
    assert _export(*args, "--name", "mini", "--force").exit_code == 0


@pytest.mark.slow
def test_adapter_mode_writes_base_and_lora(
    llama_cpp_toolchain: Any, tiny_llama: Any, tmp_path: Path
) -> None:
    from deploy_to_ollama.gguf.export import export_gguf

    result = export_gguf(
        tiny_llama.adapter_dir,
        out_dir=tmp_path,
        quant="f16",
        mode="adapter",
        name="t",
        toolchain=llama_cpp_toolchain,
    )
    roles = {f.role: f for f in result.files}
    assert roles["base"].path.name == "t-base.F16.gguf"
    lora = gguf_fields(roles["adapter"].path, llama_cpp_toolchain)
    assert lora["general.type"] == "adapter"
    assert lora["adapter.type"] == "lora"


@pytest.mark.slow
def test_adapter_mode_refuses_full_embedding_weights(
    llama_cpp_toolchain: Any, tiny_llama_dir: Path, tmp_path: Path
) -> None:
    from deploy_to_ollama.gguf.export import export_gguf

    with pytest.raises(UsageError, match="full weights") as info:
        export_gguf(
            tiny_llama_dir / "modules_to_save",
            out_dir=tmp_path,
            quant="f16",
            mode="adapter",
            toolchain=llama_cpp_toolchain,
        )
    assert "--mode merged" in (info.value.hint or "")
    assert not list(tmp_path.glob("*.gguf"))


def _blocking_toolchain(real_root: Path, where: Path, started: Path) -> Path:
    """A toolchain whose ``llama-quantize`` marks that it started, then blocks until killed.

    The export is then interrupted at a known point (converter output written, quantization
    under way) instead of at whatever moment a poll happens to catch.
    """
    where.mkdir()
    for entry in real_root.iterdir():
        if entry.name != "llama-quantize":
            (where / entry.name).symlink_to(entry)
    script = where / "llama-quantize"
    script.write_text(f"#!/bin/sh\ntouch '{started}'\nexec sleep 600\n", encoding="utf-8")
    script.chmod(0o755)
    return where


def _export_command(adapter_dir: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "deploy_to_ollama", "export", str(adapter_dir),
        "--out", str(out), "--quant", "q4_k_m", "--name", "m", "--backend", "llama.cpp",
    ]  # fmt: skip


def _interrupt_when_started(
    command: list[str], env: dict[str, str], started: Path, sig: signal.Signals, out: Path
) -> None:
    """Run the export until ``started`` appears, send ``sig``; it must fail and leave no GGUF."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert started.exists(), f"quantization never started: {proc.communicate()[1][-2000:]!r}"
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert not list(out.glob("*.gguf")), "an interrupted export left a GGUF under a final name"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_interrupted_export_leaves_no_final_file_and_rerun_succeeds(
    sig: signal.Signals, llama_cpp_toolchain: Any, llama256: Any, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    started = tmp_path / "quantize-started"
    blocking = _blocking_toolchain(llama_cpp_toolchain.root, tmp_path / "toolchain", started)
    command = _export_command(llama256.adapter_dir, out)
    # The two-step route, where llama-quantize runs as its own process we can hold still.
    env = {**os.environ, "DTO_LLAMA_CPP_DIR": str(blocking), "DTO_QUANTIZER": "llama-quantize"}
    _interrupt_when_started(command, env, started, sig, out)
    env["DTO_LLAMA_CPP_DIR"] = str(llama_cpp_toolchain.root)
    del env["DTO_QUANTIZER"]  # the rerun takes the default, in-process route
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr
    assert (out / "m.Q4_K_M.gguf").stat().st_size > 0


def _processes_with_env(entry: str) -> list[int]:
    """PIDs of live processes whose environment holds ``entry`` (our export's children)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if entry.encode() in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def _blocking_kernel_toolchain(real_root: Path, where: Path, started: Path) -> Path:
    """A toolchain whose Q4_K kernel marks that it started, then blocks: the in-process route
    is then interrupted mid-quantization, at a known point."""
    import shutil as _shutil

    from deploy_to_ollama.gguf.toolchain import KERNEL_LIBRARY

    compiler = _shutil.which("cc") or _shutil.which("gcc")
    if compiler is None:
        pytest.fail("a C compiler is needed to build the blocking kernel")
    where.mkdir()
    for entry in real_root.iterdir():
        if entry.name != KERNEL_LIBRARY:
            (where / entry.name).symlink_to(entry)
    source = where.parent / "blocking_kernel.c"
    source.write_text(
        "#include <stdio.h>\n#include <stdint.h>\n#include <stddef.h>\n#include <unistd.h>\n"
        "int dto_kquants_supported(void) { return 1; }\n"
        "size_t dto_quantize_q4_k(const float *s, void *d, int64_t n) {\n"
        f'  FILE *f = fopen("{started}", "w"); if (f) fclose(f);\n'
        "  for (;;) pause();\n  return 0;\n}\n"
        "size_t dto_quantize_q5_k(const float *s, void *d, int64_t n) { return 0; }\n",
        encoding="utf-8",
    )
    command = [compiler, "-shared", "-fPIC", "-o", str(where / KERNEL_LIBRARY), str(source)]
    subprocess.run(command, check=True)
    return where


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_interrupted_in_process_quantization_leaves_no_final_file(
    sig: signal.Signals, llama_cpp_toolchain: Any, llama256: Any, tmp_path: Path
) -> None:
    """The default route: a signal to the CLI mid-quantization stops the worker too, promptly,
    and leaves nothing under the final name."""
    out = tmp_path / "out"
    started = tmp_path / "kernel-started"
    blocking = _blocking_kernel_toolchain(llama_cpp_toolchain.root, tmp_path / "tc", started)
    env = {**os.environ, "DTO_LLAMA_CPP_DIR": str(blocking)}
    env.pop("DTO_QUANTIZER", None)
    _interrupt_when_started(_export_command(llama256.adapter_dir, out), env, started, sig, out)
    # SIGKILL: the worker dies of the parent-death signal, asynchronously; give it 10 s.
    marker = f"DTO_LLAMA_CPP_DIR={blocking}"
    deadline = time.monotonic() + 10
    while _processes_with_env(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _processes_with_env(marker), "the conversion worker outlived the export"


@pytest.mark.slow
def test_save_merged_writes_hf_model_and_gguf_from_it(
    llama_cpp_toolchain: Any, tiny_llama: Any, tmp_path: Path
) -> None:
    from deploy_to_ollama.gguf.export import export_gguf

    merged = tmp_path / "merged"
    result = export_gguf(
        tiny_llama.adapter_dir,
        out_dir=tmp_path / "out",
        quant="f16",
        save_merged=merged,
        name="tiny",
        toolchain=llama_cpp_toolchain,
    )
    assert result.merged_dir == merged
    assert (merged / "config.json").is_file()
    assert list(merged.glob("*.safetensors"))
    streamed = export_gguf(
        tiny_llama.adapter_dir,
        out_dir=tmp_path / "streamed",
        quant="f16",
        name="tiny",
        toolchain=llama_cpp_toolchain,
    )
    assert result.path.read_bytes() == streamed.path.read_bytes()
