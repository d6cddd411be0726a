"""In-process quantization writes, byte for byte, what convert → llama-quantize writes.

The oracle is the real ``llama-quantize`` of the pinned toolchain, run on the 16-bit GGUF our
converter writes (``DTO_QUANTIZER=llama-quantize`` selects that route). Identity covers the type
llama.cpp picks for every tensor, the tensor order, the metadata and every quantized byte.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.gguf.export import export_gguf, in_process_quantization
from deploy_to_ollama.gguf.quantizer import ModelShape, QuantLibrary, TensorSpec
from support.llama_cpp import gguf_fields, gguf_greedy, hf_greedy, peft_merged


def _both_routes(
    source: Path, quant: str, toolchain: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Path]:
    assert in_process_quantization(toolchain)
    fused = export_gguf(source, out_dir=tmp_path / "fused", quant=quant, toolchain=toolchain)
    monkeypatch.setenv("DTO_QUANTIZER", "llama-quantize")
    assert not in_process_quantization(toolchain)
    two_step = export_gguf(source, out_dir=tmp_path / "two", quant=quant, toolchain=toolchain)
    monkeypatch.delenv("DTO_QUANTIZER")
    return fused.path, two_step.path


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["q4_k_m", "q5_k_m", "q3_k_m", "q6_k", "q4_0", "q2_k_l"])
def test_fused_quantization_equals_llama_quantize(
    quant: str,
    llama_cpp_toolchain: Any,
    llama256: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fused, two_step = _both_routes(
        llama256.adapter_dir, quant, llama_cpp_toolchain, tmp_path, monkeypatch
    )
    assert fused.read_bytes() == two_step.read_bytes()
    types = gguf_fields(fused, llama_cpp_toolchain)["_tensor_types"]
    assert isinstance(types, dict) and len(set(types.values())) > 1  # a real mixture was planned


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["tiny_qwen2", "tiny_gpt2"])
def test_fused_fallback_types_match_on_rows_k_quants_cannot_hold(
    fixture: str,
    llama_cpp_toolchain: Any,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hidden size 64 is no multiple of 256: llama.cpp falls back per tensor; so must we."""
    lora = request.getfixturevalue(fixture)
    fused, two_step = _both_routes(
        lora.adapter_dir, "q4_k_m", llama_cpp_toolchain, tmp_path, monkeypatch
    )
    assert fused.read_bytes() == two_step.read_bytes()
    # And llama.cpp loads it and agrees with transformers on the merged model's next token
    # (GPT-2 exports once failed: transformers 5 saves n_positions, the converter reads n_ctx).
    from transformers import AutoTokenizer

    merged = peft_merged(lora.base_dir, lora.adapter_dir, tmp_path / "peft")
    prompt = AutoTokenizer.from_pretrained(merged)("hello world the answer")["input_ids"]
    f16 = export_gguf(lora.adapter_dir, out_dir=tmp_path / "f16", quant="f16",
                      toolchain=llama_cpp_toolchain)  # fmt: skip
    assert gguf_greedy(f16.path, prompt)[0][0] == hf_greedy(merged, prompt)[0][0]
    assert gguf_greedy(fused, prompt, steps=1)[0]


@pytest.mark.slow
def test_merged_model_dir_streams_and_matches(
    llama_cpp_toolchain: Any, llama256: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    merged = export_gguf(
        llama256.adapter_dir,
        out_dir=tmp_path / "m",
        quant="bf16",
        save_merged=tmp_path / "merged",
        toolchain=llama_cpp_toolchain,
    )
    assert merged.merged_dir is not None
    fused, two_step = _both_routes(
        merged.merged_dir, "q4_k_m", llama_cpp_toolchain, tmp_path, monkeypatch
    )
    assert fused.read_bytes() == two_step.read_bytes()


def _library(toolchain: Any) -> QuantLibrary:
    path = toolchain.quant_library
    assert path is not None, "the provisioned toolchain has no quantizer library"
    return QuantLibrary(path)


@pytest.mark.slow
def test_type_plan_follows_llama_cpp_rules(llama_cpp_toolchain: Any) -> None:
    """Q4_K_M: 6-bit output and half the attn_v/ffn_down layers, 4-bit elsewhere, norms kept."""
    library = _library(llama_cpp_toolchain)
    shape = ModelShape("llama", n_embd=256, n_ff=512, n_layer=8, n_head=8, n_head_kv=8)
    f32, bf16, q4_k, q6_k = 0, 30, 12, 14
    specs = [TensorSpec("output.weight", (256, 1000), bf16)]
    specs.append(TensorSpec("token_embd.weight", (256, 1000), bf16))
    for layer in range(8):
        specs += [
            TensorSpec(f"blk.{layer}.attn_norm.weight", (256,), f32),
            TensorSpec(f"blk.{layer}.attn_v.weight", (256, 256), bf16),
            TensorSpec(f"blk.{layer}.ffn_down.weight", (512, 256), bf16),
            TensorSpec(f"blk.{layer}.ffn_up.weight", (256, 512), bf16),
        ]
    q4_k_m = 15
    types = dict(zip((s.name for s in specs), library.plan(shape, specs, q4_k_m), strict=True))
    assert types["output.weight"] == q6_k
    assert types["token_embd.weight"] == q4_k
    assert all(types[f"blk.{i}.attn_norm.weight"] == f32 for i in range(8))
    assert all(types[f"blk.{i}.ffn_up.weight"] == q4_k for i in range(8))
    more_bits = [i for i in range(8) if types[f"blk.{i}.attn_v.weight"] == q6_k]
    # llama.cpp's use_more_bits(i, n): i < n/8, i >= 7n/8, or (i - n/8) % 3 == 2.
    assert more_bits == [0, 3, 6, 7]
    assert [i for i in range(8) if types[f"blk.{i}.ffn_down.weight"] == q6_k] == more_bits


@pytest.mark.slow
def test_quantizer_rejects_nan_weights(llama_cpp_toolchain: Any) -> None:
    import numpy as np

    from deploy_to_ollama.errors import ConversionError

    library = _library(llama_cpp_toolchain)
    rows = np.ones((2, 256), dtype=np.float32)
    out = np.empty(2 * library.row_size(8, 256), dtype=np.uint8)  # q8_0
    library.quantize_rows(8, rows, out)
    rows[1, 7] = np.inf
    with pytest.raises(ConversionError, match="NaN or inf"):
        library.quantize_rows(8, rows, out)


@pytest.mark.slow
def test_adapter_mode_base_is_quantized_in_process_identically(
    llama_cpp_toolchain: Any, llama256: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--mode adapter: the base GGUF comes from the converter's own reader, not our merge."""

    def export(out: str) -> dict[str, bytes]:
        result = export_gguf(
            llama256.adapter_dir,
            out_dir=tmp_path / out,
            quant="q4_k_m",
            mode="adapter",
            toolchain=llama_cpp_toolchain,
        )
        return {f.role: f.path.read_bytes() for f in result.files}

    fused = export("fused")
    monkeypatch.setenv("DTO_QUANTIZER", "llama-quantize")
    assert export("two") == fused


class _Recorder:
    """A ProgressReporter that remembers what each stage was told."""

    def __init__(self) -> None:
        self.events: dict[str, list[float]] = {}

    def start(self, key: str, description: str, total: float | None = None) -> None:
        self.events[key] = []

    def advance(self, key: str, amount: float = 1, *, completed: float | None = None) -> None:
        self.events[key].append(completed if completed is not None else amount)

    def done(self, key: str, message: str | None = None) -> None:
        self.events[key].append(-1)


@pytest.mark.slow
def test_export_reports_progress_tensor_by_tensor(
    llama_cpp_toolchain: Any, llama256: Any, tmp_path: Path
) -> None:
    recorder = _Recorder()
    export_gguf(
        llama256.adapter_dir,
        out_dir=tmp_path,
        quant="q4_k_m",
        toolchain=llama_cpp_toolchain,
        progress=recorder,
    )
    steps = recorder.events["convert-q4_k_m"]
    assert steps[-1] == -1  # done
    percents = steps[:-1]
    assert len(percents) > 10 and percents == sorted(percents) and percents[-1] == 100


@pytest.mark.slow
def test_a_broken_quantizer_library_falls_back_to_llama_quantize(
    llama_cpp_toolchain: Any, llama256: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """If the in-process route itself breaks, the export still succeeds, the classic way."""
    from deploy_to_ollama.gguf.toolchain import QUANT_LIBRARY, Toolchain

    broken = tmp_path / "toolchain"
    broken.mkdir()
    for entry in Path(llama_cpp_toolchain.root).iterdir():
        if entry.name != QUANT_LIBRARY:
            (broken / entry.name).symlink_to(entry)
    (broken / QUANT_LIBRARY).write_bytes(b"not a shared library")
    toolchain = Toolchain(broken)
    assert in_process_quantization(toolchain)
    result = export_gguf(llama256.adapter_dir, out_dir=tmp_path / "out", quant="q4_k_m",
                         toolchain=toolchain)  # fmt: skip
    assert "quantizing with llama-quantize instead" in caplog.text
    reference = export_gguf(llama256.adapter_dir, out_dir=tmp_path / "ref", quant="q4_k_m",
                            toolchain=llama_cpp_toolchain)  # fmt: skip
    assert result.path.read_bytes() == reference.path.read_bytes()


@pytest.mark.slow
def test_nan_weights_fail_once_without_a_second_try(
    llama_cpp_toolchain: Any, llama256: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Bad weights are the model's problem: one clear error, no retry with llama-quantize."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from deploy_to_ollama.errors import ConversionError

    base = tmp_path / "base"
    shutil.copytree(llama256.base_dir, base)
    weights = load_file(str(base / "model.safetensors"))
    name = next(n for n in weights if n.endswith("mlp.up_proj.weight"))
    weights[name][0, 0] = torch.inf
    save_file(weights, str(base / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ConversionError, match="NaN or inf") as info:
        export_gguf(base, out_dir=tmp_path / "out", quant="q4_k_m", toolchain=llama_cpp_toolchain)
    assert not info.value.in_process_quantization
    assert "llama-quantize instead" not in caplog.text
    assert not list((tmp_path / "out").glob("*.gguf"))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_fused_matches_for_fp32_and_fp16_models(
    dtype: str,
    llama_cpp_toolchain: Any,
    llama256: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Non-bf16 models pass through an f16 intermediate: the rounding to it must match too."""
    import json
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    model = tmp_path / dtype
    shutil.copytree(llama256.base_dir, model)
    weights = load_file(str(model / "model.safetensors"))
    converted = {name: t.to(getattr(torch, dtype)) * 1.7 for name, t in weights.items()}
    save_file(converted, str(model / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((model / "config.json").read_text())
    config["torch_dtype"] = dtype
    (model / "config.json").write_text(json.dumps(config))
    fused, two_step = _both_routes(model, "q4_k_m", llama_cpp_toolchain, tmp_path, monkeypatch)
    assert fused.read_bytes() == two_step.read_bytes()


@pytest.mark.slow
def test_several_quants_in_one_pass_equal_each_exported_alone(
    llama_cpp_toolchain: Any, llama256: Any, tmp_path: Path
) -> None:
    """One converter run writes every K-quant; each file is the single-type export's bytes."""
    quants = ["q4_k_m", "q5_k_m", "q3_k_m", "q2_k_l"]
    recorder = _Recorder()
    together = export_gguf(llama256.adapter_dir, out_dir=tmp_path / "one", quant=quants,
                           toolchain=llama_cpp_toolchain, progress=recorder)  # fmt: skip
    assert list(recorder.events) == ["convert-" + "+".join(quants)]  # one converter run
    assert [f.quant for f in together.files] == quants
    for file in together.files:
        alone = export_gguf(llama256.adapter_dir, out_dir=tmp_path / file.quant,
                            quant=file.quant, toolchain=llama_cpp_toolchain)  # fmt: skip
        assert file.path.read_bytes() == alone.path.read_bytes(), file.quant
        assert file.tensor_types == alone.files[0].tensor_types
        timings = file.timings
        # Stages are rounded to the millisecond: writing a tiny model can take less than that.
        assert timings is not None and timings["quantize"] > 0 and timings["write"] >= 0
        assert {"wall", "read", "merge", "convert"} <= set(timings)
        # quantize split by the GGML types the file holds, e.g. q4_k_m's Q6_K output tensor
        split = {k.split(":", 1)[1]: v for k, v in timings.items() if k.startswith("quantize:")}
        assert set(split) <= set(file.tensor_types or {}), (split, file.tensor_types)
        assert sum(split.values()) == pytest.approx(timings["quantize"], abs=0.01)
        if file.quant == "q4_k_m":
            assert {"Q4_K", "Q6_K"} <= set(split)
    # The shared stages are the run's: the same numbers on every file it wrote.
    assert len({(f.timings or {})["wall"] for f in together.files}) == 1
    assert not list((tmp_path / "one").glob(".*partial"))


@pytest.mark.slow
def test_a_broken_quantizer_library_falls_back_for_every_quant_of_the_pass(
    llama_cpp_toolchain: Any, llama256: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from deploy_to_ollama.gguf.toolchain import QUANT_LIBRARY, Toolchain

    broken = tmp_path / "toolchain"
    broken.mkdir()
    for entry in Path(llama_cpp_toolchain.root).iterdir():
        if entry.name != QUANT_LIBRARY:
            (broken / entry.name).symlink_to(entry)
    (broken / QUANT_LIBRARY).write_bytes(b"not a shared library")
    quants = ["q5_k_m", "q4_k_m"]
    result = export_gguf(llama256.adapter_dir, out_dir=tmp_path / "out", quant=quants,
                         toolchain=Toolchain(broken))  # fmt: skip
    assert "quantizing with llama-quantize instead" in caplog.text
    assert all(f.timings is None for f in result.files)  # llama-quantize made them
    reference = export_gguf(llama256.adapter_dir, out_dir=tmp_path / "ref", quant=quants,
                            toolchain=llama_cpp_toolchain)  # fmt: skip
    assert [f.path.read_bytes() for f in result.files] == [
        f.path.read_bytes() for f in reference.files
    ]


@pytest.mark.slow
def test_interrupting_a_several_quant_pass_leaves_no_final_file(
    llama_cpp_toolchain: Any, llama256: Any, tmp_path: Path
) -> None:
    """Both temp files hold their first tensor (Q6_K output) when the Q4_K kernel blocks on the
    token embeddings: SIGINT must leave neither file, under its final name or its temp name."""
    import os
    import signal

    from test_export import _blocking_kernel_toolchain, _export_command, _interrupt_when_started

    out = tmp_path / "out"
    started = tmp_path / "kernel-started"
    blocking = _blocking_kernel_toolchain(llama_cpp_toolchain.root, tmp_path / "tc", started)
    env = {**os.environ, "DTO_LLAMA_CPP_DIR": str(blocking)}
    env.pop("DTO_QUANTIZER", None)
    command = _export_command(llama256.adapter_dir, out)
    command[command.index("q4_k_m")] = "q5_k_m,q4_k_m"
    _interrupt_when_started(command, env, started, signal.SIGINT, out)
    assert not list(out.glob("*.partial")) and not list(out.glob(".*.partial"))
