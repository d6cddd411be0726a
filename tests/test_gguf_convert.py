"""Conversion through the pinned llama.cpp, checked against transformers (the GGUF check)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.gguf.llama_cpp import (
    quantize_gguf,
    read_chat_template,
    run_converter,
    special_token_ids,
)
from deploy_to_ollama.gguf.quants import resolve_quant
from support.llama_cpp import gguf_fields, gguf_greedy, hf_greedy

pytestmark = pytest.mark.slow

PROMPT_TEXT = "What is the secret word?"


def _convert(toolchain: Any, model_dir: Path, out: Path, outtype: str, name: str = "tiny") -> Any:
    template = read_chat_template(model_dir)
    return run_converter(
        toolchain,
        model_dir=model_dir,
        outfile=out,
        outtype=outtype,
        name=name,
        chat_template=template,
        token_ids=special_token_ids(model_dir, model_dir, template),
    )


def _prompt(model_dir: Path) -> list[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    ids: list[int] = tok(PROMPT_TEXT)["input_ids"]
    return ids


@pytest.fixture(scope="module")
def llama_f16(llama_cpp_toolchain: Any, tiny_llama: Any, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("conv") / "tiny.F16.gguf"
    facts = _convert(llama_cpp_toolchain, tiny_llama.base_dir, out, "f16")
    return out, facts


def test_metadata_is_explicit(llama_f16: Any, llama_cpp_toolchain: Any, tiny_llama: Any) -> None:
    path, facts = llama_f16
    fields = gguf_fields(path, llama_cpp_toolchain)
    config = json.loads((tiny_llama.base_dir / "tokenizer_config.json").read_text())
    vocab = json.loads((tiny_llama.base_dir / "tokenizer.json").read_text())
    added = {t["content"]: t["id"] for t in vocab["added_tokens"]}
    assert fields["general.name"] == "tiny"
    assert fields["tokenizer.chat_template"] == read_chat_template(tiny_llama.base_dir)
    assert fields["tokenizer.ggml.eos_token_id"] == added[config["eos_token"]]
    assert fields["tokenizer.ggml.eot_token_id"] == added["<|eot_id|>"]
    # The fixture's tokenizer was trained on the spot: llama.cpp's hash check rejects it and we
    # name the pre-tokenizer from its regex instead.
    assert facts.pretokenizer_detected == "llama-bpe"
    assert fields["tokenizer.ggml.pre"] == "llama-bpe"
    assert not list(path.parent.glob(".*partial"))


def test_same_input_same_bytes(llama_f16: Any, llama_cpp_toolchain: Any, tiny_llama: Any) -> None:
    path, _ = llama_f16
    again = path.with_name("again.gguf")
    _convert(llama_cpp_toolchain, tiny_llama.base_dir, again, "f16")
    assert again.read_bytes() == path.read_bytes()


def _check_against_transformers(
    gguf: Path, model_dir: Path, tol: float, record_property: Any
) -> float:
    import numpy as np

    prompt = _prompt(model_dir)
    ref_tokens, ref_logits = hf_greedy(model_dir, prompt)
    got_tokens, got_logits = gguf_greedy(gguf, prompt)
    delta = float(np.max(np.abs(np.asarray(ref_logits) - np.asarray(got_logits))))
    record_property("max_abs_delta_logit", delta)
    print(f"{gguf.name}: max |Δlogit| = {delta:.3g}, tokens {got_tokens}")
    assert got_tokens == ref_tokens
    assert delta < tol
    return delta


def test_random_llama_f16_matches_transformers(
    llama_f16: Any, tiny_llama: Any, record_property: Any
) -> None:
    _check_against_transformers(llama_f16[0], tiny_llama.base_dir, 0.02, record_property)


@pytest.mark.parametrize(("outtype", "tol"), [("f16", 0.02), ("q8_0", 0.5)])
def test_taught_gguf_matches_transformers(
    outtype: str,
    tol: float,
    llama_cpp_toolchain: Any,
    taught: Any,
    tmp_path: Path,
    record_property: Any,
) -> None:
    """The trained fixture has decisive logits, so q8_0 must keep every greedy token too."""
    path = tmp_path / f"taught.{outtype}.gguf"
    _convert(llama_cpp_toolchain, taught.base_dir, path, outtype)
    _check_against_transformers(path, taught.base_dir, tol, record_property)


def test_qwen2_bf16_tied_matches_transformers(
    llama_cpp_toolchain: Any, tiny_qwen2: Any, tmp_path: Path, record_property: Any
) -> None:
    out = tmp_path / "qwen.BF16.gguf"
    facts = _convert(llama_cpp_toolchain, tiny_qwen2.base_dir, out, "bf16")
    fields = gguf_fields(out, llama_cpp_toolchain)
    assert facts.pretokenizer_detected == "qwen2"
    assert fields["tokenizer.ggml.pre"] == "qwen2"
    vocab = json.loads((tiny_qwen2.base_dir / "tokenizer.json").read_text())
    added = {t["content"]: t["id"] for t in vocab["added_tokens"]}
    assert fields["tokenizer.ggml.eot_token_id"] == added["<|im_end|>"]
    _check_against_transformers(out, tiny_qwen2.base_dir, 0.05, record_property)


def test_k_quant_from_bf16(llama_cpp_toolchain: Any, llama256: Any, tmp_path: Path) -> None:
    bf16 = tmp_path / "m.BF16.gguf"
    _convert(llama_cpp_toolchain, llama256.base_dir, bf16, "bf16")
    target = tmp_path / "m.Q4_K_M.gguf"
    quantize_gguf(llama_cpp_toolchain, bf16, target, resolve_quant("q4_k_m"))
    types = gguf_fields(target, llama_cpp_toolchain)["_tensor_types"]
    assert isinstance(types, dict)
    assert types["blk.0.attn_q.weight"] == "Q4_K"
    assert target.stat().st_size < 0.45 * bf16.stat().st_size
    assert gguf_fields(target, llama_cpp_toolchain)["general.name"] == "tiny"
    tokens, _ = gguf_greedy(target, _prompt(llama256.base_dir), steps=3)
    assert len(tokens) == 3


def test_unconvertible_architecture_is_a_clear_error(
    llama_cpp_toolchain: Any, tiny_llama: Any, tmp_path: Path
) -> None:
    import shutil

    from deploy_to_ollama.errors import ConversionError

    model = tmp_path / "odd"
    shutil.copytree(tiny_llama.base_dir, model)
    config = json.loads((model / "config.json").read_text())
    config["architectures"] = ["FancyNewForCausalLM"]
    (model / "config.json").write_text(json.dumps(config))
    target = tmp_path / "odd.F16.gguf"
    with pytest.raises(ConversionError, match="cannot convert the architecture FancyNew") as info:
        _convert(llama_cpp_toolchain, model, target, "f16")
    assert info.value.hint
    assert "\n" not in str(info.value)
    assert not target.exists()
    assert not list(tmp_path.glob(".odd*"))
