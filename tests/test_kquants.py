"""Our AVX2 Q4_K/Q5_K kernels write exactly the bytes of ggml's quantizer, on all kinds of weights.

The oracle is ``ggml_quantize_chunk`` of the pinned llama.cpp (the function llama-quantize
calls), through the same ``QuantLibrary``, with the kernel switched off.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from deploy_to_ollama.gguf.quantizer import GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, QuantLibrary

_RNG = np.random.default_rng(20261127)


def _cases() -> dict[str, np.ndarray]:
    normal = _RNG.standard_normal((64, 1024))
    mask = _RNG.uniform(size=(64, 1024))
    return {
        "llm-weights": normal * 0.02,
        "unit-normal": normal,
        "positive-only": _RNG.uniform(0.0, 1.0, (32, 1024)),
        "negative-only": _RNG.uniform(-1.0, 0.0, (32, 1024)),
        "zeros": np.zeros((4, 1024)),
        "constant": np.full((4, 1024), 0.37),
        "constant-negative": np.full((4, 1024), -0.37),
        "fp16-subnormal-scales": normal * 1e-7,
        "outliers": np.where(mask < 0.01, 50.0, normal * 0.01),
        "level-grid": _RNG.integers(0, 16, (32, 1024)) / 15.0 - 0.5,
        "mostly-zero": np.where(mask < 0.9, 0.0, normal),
        "large": normal * 1e4,
        "bf16-rounded": _bf16(normal * 0.05),
    }


def _bf16(values: np.ndarray) -> np.ndarray:
    bits = values.astype(np.float32).view(np.uint32) & np.uint32(0xFFFF0000)
    return bits.view(np.float32)


def _libraries(toolchain: Any) -> tuple[QuantLibrary, QuantLibrary]:
    if toolchain.quant_library is None or toolchain.kernel_library is None:
        pytest.fail("the provisioned toolchain lacks the quantizer library or the Q4_K kernel")
    fast = QuantLibrary(toolchain.quant_library, toolchain.kernel_library)
    if not fast.has_kernel:
        pytest.skip("this CPU has no AVX2/F16C: the kernel is not used here")
    return fast, QuantLibrary(toolchain.quant_library)


def _quantize(library: QuantLibrary, ggml_type: int, rows: np.ndarray) -> bytes:
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    out = np.empty(rows.shape[0] * library.row_size(ggml_type, rows.shape[1]), np.uint8)
    library.quantize_rows(ggml_type, rows, out)
    return out.tobytes()


KINDS = {"q4_K": GGML_TYPE_Q4_K, "q5_K": GGML_TYPE_Q5_K}


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("case", sorted(_cases()))
def test_kernel_equals_ggml(case: str, kind: str, llama_cpp_toolchain: Any) -> None:
    fast, reference = _libraries(llama_cpp_toolchain)
    rows = _cases()[case]
    assert _quantize(fast, KINDS[kind], rows) == _quantize(reference, KINDS[kind], rows)


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_kernel_equals_ggml_on_random_scales(kind: str, llama_cpp_toolchain: Any) -> None:
    """Many small tensors with per-block scales drawn over ten orders of magnitude."""
    fast, reference = _libraries(llama_cpp_toolchain)
    for seed in range(40):
        rng = np.random.default_rng(seed)
        blocks = rng.standard_normal((8, 2048)) * 10.0 ** rng.uniform(-6, 4, (8, 1))
        blocks += rng.uniform(-1, 1, (8, 1)) * np.abs(blocks).max() * rng.uniform()
        got = _quantize(fast, KINDS[kind], blocks)
        assert got == _quantize(reference, KINDS[kind], blocks), f"seed {seed}"
