"""Quant types: every name we and Unsloth accept, how each is produced, and what it costs.

Sizes come from llama.cpp's own table (tools/quantize/quantize.cpp, sizes at Llama-3-8B), turned
into bits per weight so ``--list-quants`` can estimate the file size of any model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import UsageError

#: Parameters of Llama-3-8B, the model llama.cpp's size table was measured on.
_LLAMA3_8B_PARAMS = 8.03e9
_GIB = 1024**3

Producer = Literal["convert", "quantize"]


@dataclass(frozen=True, slots=True)
class QuantType:
    """One GGUF quantization level."""

    name: str
    """Lower-case name as Unsloth and our CLI spell it (``q4_k_m``)."""
    producer: Producer
    """``convert``: written directly by convert_hf_to_gguf.py; ``quantize``: by llama-quantize."""
    bits_per_weight: float
    use: str
    """What the level is for, in a few words (shown by ``--list-quants``)."""
    quantize_args: tuple[str, ...] = ()
    """Extra llama-quantize flags (Unsloth's ``q2_k_l`` keeps embeddings/output at q8_0)."""
    llama_type: str = ""
    """The type llama-quantize takes when it differs from ``name.upper()``."""
    needs_imatrix: bool = False
    """Offered only with an importance matrix (``--imatrix``): the IQ types are designed
    around one, and llama-quantize refuses the lowest of them without it."""

    @property
    def llama_name(self) -> str:
        """The type name llama-quantize takes (``Q4_K_M``)."""
        return self.llama_type or self.name.upper()

    def estimate_bytes(self, n_params: int) -> int:
        """Estimated GGUF size for a model with ``n_params`` weights (metadata excluded)."""
        return int(n_params * self.bits_per_weight / 8)


def _bpw(gib_at_8b: float) -> float:
    return round(gib_at_8b * _GIB * 8 / _LLAMA3_8B_PARAMS, 2)


QUANT_TYPES: Mapping[str, QuantType] = {
    q.name: q
    for q in (
        QuantType("f32", "convert", 32.0, "full 32-bit floats: reference only, 2x the f16 size"),
        QuantType("f16", "convert", 16.0, "lossless for fp16 models; the base for every quant"),
        QuantType("bf16", "convert", 16.0, "lossless for bf16 models (most fine-tunes)"),
        QuantType("q8_0", "convert", _bpw(7.96), "≈ original quality, half of f16"),
        QuantType("q6_k", "quantize", _bpw(6.14), "near-lossless, smaller than q8_0"),
        QuantType("q5_k_m", "quantize", _bpw(5.33), "good default: very small quality loss"),
        QuantType("q5_k_s", "quantize", _bpw(5.21), "a little smaller than q5_k_m"),
        QuantType("q5_1", "quantize", _bpw(5.65), "legacy 5-bit; prefer q5_k_m"),
        QuantType("q5_0", "quantize", _bpw(5.21), "legacy 5-bit; prefer q5_k_s"),
        QuantType("q4_k_m", "quantize", _bpw(4.58), "best size/quality balance (Ollama's default)"),
        QuantType("q4_k_s", "quantize", _bpw(4.37), "a little smaller than q4_k_m"),
        QuantType("q4_1", "quantize", _bpw(4.78), "legacy 4-bit; prefer q4_k_m"),
        QuantType("q4_0", "quantize", _bpw(4.34), "legacy 4-bit; fastest on some CPUs/ARM"),
        QuantType("q3_k_l", "quantize", _bpw(4.03), "when memory is tight; noticeable loss"),
        QuantType("q3_k_m", "quantize", _bpw(3.74), "when memory is tight; noticeable loss"),
        QuantType("q3_k_s", "quantize", _bpw(3.41), "very tight memory; clear loss"),
        QuantType("q2_k", "quantize", _bpw(2.96), "lossy: last resort for tiny memory"),
        QuantType(
            "q2_k_l",
            "quantize",
            _bpw(2.96) + 0.3,
            "q2_k with q8_0 embeddings/output (Unsloth): lossy but less so",
            ("--output-tensor-type", "q8_0", "--token-embedding-type", "q8_0"),
            "Q2_K",
        ),
        # The IQ types (bits per weight as tools/quantize/quantize.cpp lists them).
        QuantType(
            "iq4_nl", "quantize", 4.5, "4-bit non-linear; with an imatrix", needs_imatrix=True
        ),
        QuantType(
            "iq4_xs",
            "quantize",
            4.25,
            "smaller than q4_k_m, a bit more loss; with an imatrix",
            needs_imatrix=True,
        ),
        QuantType("iq3_m", "quantize", 3.66, "3-bit mix; with an imatrix", needs_imatrix=True),
        QuantType("iq3_s", "quantize", 3.44, "3-bit; with an imatrix", needs_imatrix=True),
        QuantType("iq3_xs", "quantize", 3.3, "3-bit; with an imatrix", needs_imatrix=True),
        QuantType(
            "iq3_xxs", "quantize", 3.06, "3-bit, tight memory; with an imatrix", needs_imatrix=True
        ),
        QuantType(
            "iq2_m", "quantize", 2.7, "2-bit mix: lossy; with an imatrix", needs_imatrix=True
        ),
        QuantType("iq2_s", "quantize", 2.5, "2-bit: lossy; with an imatrix", needs_imatrix=True),
        QuantType("iq2_xs", "quantize", 2.31, "2-bit: lossy; with an imatrix", needs_imatrix=True),
        QuantType(
            "iq2_xxs", "quantize", 2.06, "2-bit: very lossy; with an imatrix", needs_imatrix=True
        ),
        QuantType(
            "iq1_m",
            "quantize",
            1.75,
            "1-bit: for huge models only; with an imatrix",
            needs_imatrix=True,
        ),
        QuantType(
            "iq1_s",
            "quantize",
            1.56,
            "1-bit: for huge models only; with an imatrix",
            needs_imatrix=True,
        ),
    )
}

#: The one alias table of ``--quant`` (both backends read it): Unsloth's aliases (unsloth/save.py
#: ``save_to_gguf``) and llama-quantize's short k-quant names. ``not_quantized`` means the model's
#: own 16-bit dtype, resolved once the dtype is known (see ``resolve_quant``).
QUANT_ALIASES: Mapping[str, str | None] = {
    "not_quantized": None,
    "fast_quantized": "q8_0",
    "quantized": "q4_k_m",
    # llama-quantize's own short aliases.
    "q3_k": "q3_k_m",
    "q4_k": "q4_k_m",
    "q5_k": "q5_k_m",
}


def valid_quant_names() -> list[str]:
    """Every name ``--quant`` accepts, for error messages and help."""
    return [*QUANT_TYPES, *QUANT_ALIASES]


def resolve_quant(name: str, *, model_dtype: str = "bf16") -> QuantType:
    """Map a user-given quant name (any case, Unsloth aliases too) to its ``QuantType``.

    >>> resolve_quant("Q4_K_M").name
    'q4_k_m'
    >>> resolve_quant("quantized").name, resolve_quant("fast_quantized").name
    ('q4_k_m', 'q8_0')
    >>> resolve_quant("not_quantized", model_dtype="float16").name
    'f16'

    Raises:
        UsageError: the name is unknown (the message lists the valid ones).
    """
    key = name.strip().lower()
    if key in QUANT_ALIASES:
        target = QUANT_ALIASES[key]
        if target is None:
            target = "f16" if model_dtype in ("float16", "f16") else "bf16"
        key = target
    quant = QUANT_TYPES.get(key)
    if quant is None:
        raise UsageError(
            f"unknown quant type {name!r}",
            hint=f"use one of: {', '.join(valid_quant_names())}",
        )
    return quant


def parse_quant_list(value: str | Iterable[str], *, model_dtype: str = "bf16") -> list[QuantType]:
    """Parse ``q4_k_m,q8_0`` (or a list) into distinct quant types, in the given order.

    >>> [q.name for q in parse_quant_list("Q8_0, q4_k_m,quantized")]
    ['q8_0', 'q4_k_m']
    """
    names = value.split(",") if isinstance(value, str) else list(value)
    result: list[QuantType] = []
    for raw in names:
        if not raw.strip():
            continue
        quant = resolve_quant(raw, model_dtype=model_dtype)
        if quant not in result:
            result.append(quant)
    if not result:
        raise UsageError("no quant type given", hint="pass e.g. --quant q4_k_m")
    return result


def check_imatrix_needs(quants: Iterable[QuantType], *, has_imatrix: bool) -> None:
    """Refuse the IQ types when no importance matrix is given (before any heavy work).

    >>> check_imatrix_needs([resolve_quant("iq4_xs")], has_imatrix=True)
    >>> check_imatrix_needs([resolve_quant("q4_k_m"), resolve_quant("iq4_xs")], has_imatrix=False)
    Traceback (most recent call last):
    ...
    deploy_to_ollama.errors.UsageError: iq4_xs needs an importance matrix

    Raises:
        UsageError: an IQ type without ``--imatrix`` (the hint says how to get one).
    """
    if has_imatrix:
        return
    needing = [q.name for q in quants if q.needs_imatrix]
    if needing:
        raise UsageError(
            f"{', '.join(needing)} needs an importance matrix",
            hint="add --imatrix auto (computed on --calibration-data, else a packaged text) "
            "or --imatrix FILE (.dat or .gguf from llama-imatrix)",
        )


def count_parameters(model_dir: Path) -> int:
    """Count the weights of an HF model dir from safetensors headers, without loading tensors."""
    from ..safetensors_io import count_elements, safetensors_shapes

    return count_elements(safetensors_shapes(model_dir))
