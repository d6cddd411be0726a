"""Quant names (ours and Unsloth's), aliases, size estimates and the pre-tokenizer table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy_to_ollama.errors import ConversionError, UsageError
from deploy_to_ollama.gguf.pretokenizer import detect_pretokenizer
from deploy_to_ollama.gguf.quants import (
    QUANT_TYPES,
    count_parameters,
    parse_quant_list,
    resolve_quant,
    valid_quant_names,
)

ISSUE_QUANTS = [
    "f32",
    "f16",
    "bf16",
    "q8_0",
    "q2_k",
    "q3_k_s",
    "q3_k_m",
    "q3_k_l",
    "q4_0",
    "q4_1",
    "q4_k_s",
    "q4_k_m",
    "q5_0",
    "q5_1",
    "q5_k_s",
    "q5_k_m",
    "q6_k",
]


@pytest.mark.parametrize("name", ISSUE_QUANTS)
def test_every_issue_quant_resolves_case_insensitively(name: str) -> None:
    assert resolve_quant(name.upper()).name == name
    assert resolve_quant(f" {name} ").name == name


def test_converter_and_quantizer_split() -> None:
    direct = {q.name for q in QUANT_TYPES.values() if q.producer == "convert"}
    assert direct == {"f32", "f16", "bf16", "q8_0"}


@pytest.mark.parametrize(
    ("alias", "dtype", "expected"),
    [
        ("not_quantized", "bfloat16", "bf16"),
        ("Not_Quantized", "float16", "f16"),
        ("fast_quantized", "float32", "q8_0"),
        ("QUANTIZED", "bfloat16", "q4_k_m"),
        ("q4_k", "bfloat16", "q4_k_m"),
    ],
)
def test_unsloth_aliases(alias: str, dtype: str, expected: str) -> None:
    assert resolve_quant(alias, model_dtype=dtype).name == expected


def test_unknown_quant_lists_the_valid_ones() -> None:
    with pytest.raises(UsageError) as info:
        resolve_quant("q4_k_xl")
    assert "q4_k_xl" in str(info.value)
    assert info.value.hint is not None
    for name in ("q4_k_m", "not_quantized", "q8_0"):
        assert name in info.value.hint


def test_quant_list_deduplicates_and_keeps_order() -> None:
    assert [q.name for q in parse_quant_list("Q8_0, q4_k_m,quantized,,")] == ["q8_0", "q4_k_m"]
    with pytest.raises(UsageError):
        parse_quant_list(" , ")


def test_q2_k_l_passes_unsloth_flags_to_llama_quantize() -> None:
    q = resolve_quant("q2_k_l")
    assert q.llama_name == "Q2_K"
    assert "--token-embedding-type" in q.quantize_args
    assert resolve_quant("q3_k_l").llama_name == "Q3_K_L"


def test_size_estimates_are_ordered() -> None:
    sizes = [resolve_quant(n).estimate_bytes(1_000_000_000) for n in ("f16", "q8_0", "q4_k_m")]
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[0] == 2_000_000_000
    assert 0.45 < sizes[2] / sizes[1] < 0.65
    assert len(valid_quant_names()) == len(set(valid_quant_names()))


def test_count_parameters_reads_headers_only(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(3, 4), "b": torch.zeros(5)}, tmp_path / "model-1.safetensors")
    save_file({"c": torch.zeros(2, 2, 2)}, tmp_path / "model-2.safetensors")
    assert count_parameters(tmp_path) == 12 + 5 + 8


def _tokenizer_json(path: Path, pre: object, model_type: str = "BPE") -> Path:
    path.write_text(json.dumps({"model": {"type": model_type}, "pre_tokenizer": pre}))
    return path


def _split(regex: str) -> dict[str, object]:
    return {
        "type": "Sequence",
        "pretokenizers": [
            {
                "type": "Split",
                "pattern": {"Regex": regex},
                "behavior": "Isolated",
                "invert": False,
            },
            {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False},
        ],
    }


def test_pretokenizer_from_fixture_tokenizers(tiny_llama: object, tiny_qwen2: object) -> None:
    llama = Path(tiny_llama.base_dir) / "tokenizer.json"  # type: ignore[attr-defined]
    qwen = Path(tiny_qwen2.base_dir) / "tokenizer.json"  # type: ignore[attr-defined]
    assert detect_pretokenizer(llama) == "llama-bpe"
    assert detect_pretokenizer(qwen) == "qwen2"


def test_pretokenizer_gpt2_and_refusals(tmp_path: Path) -> None:
    gpt2 = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
    assert detect_pretokenizer(_tokenizer_json(tmp_path / "g.json", gpt2)) == "gpt-2"
    odd = _split(r"\p{L}+|\s+")
    with pytest.raises(ConversionError, match="unrecognized BPE pre-tokenizer"):
        detect_pretokenizer(_tokenizer_json(tmp_path / "o.json", odd))
    with pytest.raises(ConversionError, match="not byte-level BPE"):
        detect_pretokenizer(_tokenizer_json(tmp_path / "u.json", gpt2, model_type="Unigram"))
    with pytest.raises(ConversionError):
        detect_pretokenizer(tmp_path / "missing.json")
