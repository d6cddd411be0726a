"""Our AVX2 Q3_K/Q4_K/Q5_K/Q6_K kernels write exactly the bytes of ggml's quantizer, on all kinds of
weights.

The oracle is ``ggml_quantize_chunk`` of the pinned llama.cpp (the function llama-quantize
calls), through the same ``QuantLibrary``, with the kernel switched off. The kernel under test is
compiled from this tree's source (the shared toolchain's copy may come from another checkout).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from deploy_to_ollama.errors import InvalidWeightsError
from deploy_to_ollama.gguf.quantizer import (
    GGML_TYPE_Q3_K,
    GGML_TYPE_Q4_K,
    GGML_TYPE_Q5_K,
    GGML_TYPE_Q6_K,
    QuantLibrary,
)
from deploy_to_ollama.gguf.toolchain_build import KERNEL_LIBRARY, compile_kernel

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
        "zero-sub-blocks": np.where((np.arange(1024) // 16 % 3 == 0)[None, :], 0.0, normal),
        "one-value-per-sub-block": np.where((np.arange(1024) % 16 == 5)[None, :], normal, 0.0),
        "below-group-eps": normal * 1e-16,
        "constant": np.full((4, 1024), 0.37),
        "constant-negative": np.full((4, 1024), -0.37),
        "fp16-subnormal-scales": normal * 1e-7,
        "outliers": np.where(mask < 0.01, 50.0, normal * 0.01),
        "level-grid": _RNG.integers(0, 16, (32, 1024)) / 15.0 - 0.5,
        "mostly-zero": np.where(mask < 0.9, 0.0, normal),
        "large": normal * 1e4,
        "sub-block-scales": normal * np.repeat(10.0 ** _RNG.uniform(-8, 3, (64, 64)), 16, axis=1),
        "bf16-rounded": _bf16(normal * 0.05),
        "denormals": normal * 1e-40,
        "denormal-sub-blocks": np.where((np.arange(1024) // 16 % 2 == 0)[None, :], 1e-40, normal),
        "tiny": normal * 1e-12,
        "huge": normal * 1e15,
        "huge-outliers": np.where(mask < 0.02, 3e14, normal),
        "signed-grid": _RNG.integers(-4, 4, (32, 1024)) * 0.25,
        "alternating-signs": np.abs(normal) * np.where(np.arange(1024) % 2 == 0, 1.0, -1.0),
    }


def _bf16(values: np.ndarray) -> np.ndarray:
    bits = values.astype(np.float32).view(np.uint32) & np.uint32(0xFFFF0000)
    return bits.view(np.float32)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """This tree's kernel source, compiled as ``setup`` compiles it."""
    path = tmp_path_factory.mktemp("kernel") / KERNEL_LIBRARY
    if not compile_kernel(path):
        pytest.fail("the AVX2 kernel did not compile (no C compiler?)")
    return path


def _libraries(toolchain: Any, kernel: Any) -> tuple[QuantLibrary, QuantLibrary]:
    if toolchain.quant_library is None:
        pytest.fail("the provisioned toolchain lacks the quantizer library")
    fast = QuantLibrary(toolchain.quant_library, kernel)
    if not fast.has_kernel:
        pytest.skip("this CPU has no AVX2/F16C: the kernel is not used here")
    assert fast.kernel_types == set(KINDS.values())
    return fast, QuantLibrary(toolchain.quant_library)


def _quantize(library: QuantLibrary, ggml_type: int, rows: np.ndarray) -> tuple[bytes, bool]:
    """The bytes written, and whether ggml's validation accepted them (huge weights overflow
    fp16 scales: then both must write the same bytes and both must be refused)."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    out = np.zeros(rows.shape[0] * library.row_size(ggml_type, rows.shape[1]), np.uint8)
    try:
        library.quantize_rows(ggml_type, rows, out)
    except InvalidWeightsError:
        return out.tobytes(), False
    return out.tobytes(), True


KINDS = {
    "q3_K": GGML_TYPE_Q3_K,
    "q4_K": GGML_TYPE_Q4_K,
    "q5_K": GGML_TYPE_Q5_K,
    "q6_K": GGML_TYPE_Q6_K,
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("case", sorted(_cases()))
def test_kernel_equals_ggml(case: str, kind: str, llama_cpp_toolchain: Any, kernel: Any) -> None:
    fast, reference = _libraries(llama_cpp_toolchain, kernel)
    rows = _cases()[case]
    assert _quantize(fast, KINDS[kind], rows) == _quantize(reference, KINDS[kind], rows)


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_kernel_equals_ggml_on_random_scales(
    kind: str, llama_cpp_toolchain: Any, kernel: Any
) -> None:
    """Many small tensors with per-block scales drawn over ten orders of magnitude."""
    fast, reference = _libraries(llama_cpp_toolchain, kernel)
    for seed in range(40):
        rng = np.random.default_rng(seed)
        blocks = rng.standard_normal((8, 2048)) * 10.0 ** rng.uniform(-6, 4, (8, 1))
        blocks += rng.uniform(-1, 1, (8, 1)) * np.abs(blocks).max() * rng.uniform()
        got = _quantize(fast, KINDS[kind], blocks)
        assert got == _quantize(reference, KINDS[kind], blocks), f"seed {seed}"


def _mixed_sub_blocks(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Rows whose every 16-value sub-block is drawn from a different adversarial kind."""
    shape = (rows, 1024 // 16, 16)
    magnitude = 10.0 ** rng.uniform(-42, 14, (*shape[:2], 1))
    kinds = [
        rng.standard_normal(shape) * magnitude,
        np.zeros(shape),
        np.broadcast_to(rng.standard_normal((*shape[:2], 1)) * magnitude, shape),
        np.where(rng.uniform(size=shape) < 1 / 16, magnitude, 0.0),
        rng.integers(-4, 4, shape) * magnitude,
        -np.abs(rng.standard_normal(shape)) * magnitude,
        rng.standard_normal(shape) * 1e-40,
    ]
    choice = rng.integers(0, len(kinds), (*shape[:2], 1))
    return np.choose(choice, kinds).reshape(rows, 1024)


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_kernel_equals_ggml_on_mixed_sub_blocks(
    kind: str, llama_cpp_toolchain: Any, kernel: Any
) -> None:
    """Sub-blocks of zeros, constants, spikes, grids, negatives and denormals side by side, with
    magnitudes from denormal to overflowing fp16 (a super-block mixes lanes of every kind)."""
    fast, reference = _libraries(llama_cpp_toolchain, kernel)
    for seed in range(20):
        rows = _mixed_sub_blocks(np.random.default_rng(1000 + seed), 64)
        got = _quantize(fast, KINDS[kind], rows)
        assert got == _quantize(reference, KINDS[kind], rows), f"seed {seed}"


@pytest.mark.slow
def test_kernel_without_q6_k_leaves_q6_k_to_ggml(llama_cpp_toolchain: Any, tmp_path: Any) -> None:
    """A kernel compiled from an older source (no Q6_K function) is still used for what it has."""
    import subprocess

    source = tmp_path / "old.c"
    source.write_text(
        "#include <stddef.h>\n#include <stdint.h>\n"
        "int dto_kquants_supported(void) { return 1; }\n"
        "size_t dto_quantize_q4_k(const float *s, void *d, int64_t n) { return 0; }\n"
        "size_t dto_quantize_q5_k(const float *s, void *d, int64_t n) { return 0; }\n",
        encoding="utf-8",
    )
    old = tmp_path / "libold.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", old, source], check=True)
    library = QuantLibrary(llama_cpp_toolchain.quant_library, old)
    assert library.kernel_types == {GGML_TYPE_Q4_K, GGML_TYPE_Q5_K}
    rows = _cases()["llm-weights"]
    reference = QuantLibrary(llama_cpp_toolchain.quant_library)
    assert _quantize(library, GGML_TYPE_Q6_K, rows) == _quantize(reference, GGML_TYPE_Q6_K, rows)
