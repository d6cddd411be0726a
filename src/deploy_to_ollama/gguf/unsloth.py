"""Unsloth backend of the exporter: adapter or model dir → GGUF files, through Unsloth on a GPU.

Drives ``FastLanguageModel.from_pretrained`` + ``save_pretrained_gguf`` against *our* provisioned
llama.cpp, set up so that Unsloth never clones, builds or downloads anything.

What must hold before Unsloth loads a model (availability, the staged llama.cpp dir, the
offline environment) is in ``unsloth_env``; this module knows the load flags and the save path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import ConversionError, InputError, OutputExistsError, UsageError
from ..progress import NullProgress, ProgressReporter
from .quants import QUANT_ALIASES
from .unsloth_env import (
    LLAMA_CPP_REQUIRED,
    UnslothAvailability,
    check_llama_cpp_dir,
    configure_unsloth_environment,
    import_fast_language_model,
    require_unsloth,
    stage_llama_cpp_dir,
    staged_llama_cpp_dir,
    unsloth_availability,
    unsloth_environment,
)

#: This module's API, and what callers import from here of ``unsloth_env``.
__all__ = [
    "LLAMA_CPP_REQUIRED", "UNSLOTH_QUANTS", "MergedMethod", "UnslothAvailability", "UnslothExport",
    "UnslothGguf", "check_adapter_task_type", "check_llama_cpp_dir",
    "configure_unsloth_environment", "export_with_unsloth", "load_kwargs",
    "match_unsloth_outputs", "require_unsloth", "resolve_unsloth_quants", "stage_llama_cpp_dir",
    "staged_llama_cpp_dir", "unsloth_availability", "unsloth_environment",
]  # fmt: skip

logger = logging.getLogger(__name__)

#: Quant types Unsloth's ``save_to_gguf`` accepts without an importance matrix
#: (unsloth/save.py ``ALLOWED_QUANTS``, 2026.10.9), minus the names ``QUANT_ALIASES`` resolves
#: first (Unsloth's three aliases and llama-quantize's ``q4_k``/``q5_k``).
UNSLOTH_QUANTS: frozenset[str] = frozenset(
    {
        "f32", "bf16", "f16", "q8_0", "q4_k_m", "q5_k_m", "q2_k", "q2_k_l", "q3_k_l",
        "q3_k_m", "q3_k_s", "q4_0", "q4_1", "q4_k_s", "q5_0", "q5_1", "q5_k_s", "q6_k",
        "q3_k_xs",
    }
)  # fmt: skip

MergedMethod = Literal["merged_16bit", "merged_4bit_forced"]


@dataclass(frozen=True, slots=True)
class UnslothGguf:
    """One GGUF written by the Unsloth backend."""

    path: Path
    quant: str
    """Lower-case quant type as llama.cpp names it (``q4_k_m``, ``bf16``)."""
    size_bytes: int


@dataclass(frozen=True, slots=True)
class UnslothExport:
    """What ``export_with_unsloth`` produced."""

    ggufs: tuple[UnslothGguf, ...]
    """The requested quants, in request order (duplicates removed)."""
    merged_dir: Path | None
    seconds: float


def resolve_unsloth_quants(names: Sequence[str]) -> tuple[str | None, ...]:
    """Normalise quant names for Unsloth: case-insensitive, aliases resolved, duplicates dropped.

    Aliases come from ``quants.QUANT_ALIASES``, the table the llama.cpp backend reads too.
    ``None`` in the result stands for ``not_quantized`` (the model's own 16-bit dtype).

    >>> resolve_unsloth_quants(["Q4_K_M", "quantized", "fast_quantized", "q4_k"])
    ('q4_k_m', 'q8_0')

    Raises:
        UsageError: a name is unknown to Unsloth, or the list is empty.
    """
    if not names:
        raise UsageError("no quant type given", hint="pass --quant, e.g. --quant q4_k_m")
    resolved: list[str | None] = []
    for raw in names:
        name = raw.strip().lower()
        if name in QUANT_ALIASES:  # the one alias table, shared with the llama.cpp backend
            value = QUANT_ALIASES[name]
        elif name in UNSLOTH_QUANTS:
            value = name
        else:
            valid = ", ".join(sorted(UNSLOTH_QUANTS | QUANT_ALIASES.keys()))
            raise UsageError(
                f"unknown quant type for the unsloth backend: {raw!r}",
                hint=f"choose one of: {valid}",
            )
        if value not in resolved:
            resolved.append(value)
    return tuple(resolved)


def check_adapter_task_type(source: Path) -> None:
    """Refuse a LoRA whose ``task_type`` is not ``CAUSAL_LM``.

    Unsloth's loader patches only ``PeftModelForCausalLM``; a plain-peft adapter saved without
    ``task_type`` loads as a bare ``PeftModel`` and dies with "needs to call .get_peft_model".

    Raises:
        InputError: the adapter config names another (or no) task type.
    """
    config_path = source / "adapter_config.json"
    if not config_path.is_file():
        return  # a merged model dir, not an adapter
    try:
        task_type = json.loads(config_path.read_text(encoding="utf-8")).get("task_type")
    except (OSError, ValueError, AttributeError) as err:
        raise InputError(
            f"{config_path} is not readable JSON: {err}", hint="re-save the adapter with peft"
        ) from err
    if task_type != "CAUSAL_LM":
        raise InputError(
            f"the unsloth backend needs a CAUSAL_LM adapter; {config_path} has "
            f"task_type={task_type!r}",
            hint='use --backend llama.cpp, or set "task_type": "CAUSAL_LM" in adapter_config.json',
        )


def load_kwargs(*, load_in_4bit: bool, load_in_8bit: bool, max_seq_length: int) -> dict[str, Any]:
    """Arguments for ``FastLanguageModel.from_pretrained``.

    Unsloth defaults to ``load_in_4bit=True``; we load 16-bit unless asked, so the GGUF is
    made from the exact weights.

    >>> load_kwargs(load_in_4bit=False, load_in_8bit=False, max_seq_length=256)["load_in_16bit"]
    True

    Raises:
        UsageError: both 4-bit and 8-bit were asked for.
    """
    if load_in_4bit and load_in_8bit:
        raise UsageError(
            "--load-in-4bit and --load-in-8bit exclude each other", hint="pass only one of them"
        )
    return {
        "max_seq_length": max_seq_length,
        "dtype": None,
        "load_in_4bit": load_in_4bit,
        "load_in_8bit": load_in_8bit,
        "load_in_16bit": not (load_in_4bit or load_in_8bit),
        "full_finetuning": False,
    }


def match_unsloth_outputs(
    gguf_files: Sequence[str | Path], quants: Sequence[str | None], model_dtype: str
) -> tuple[tuple[Path, str], ...]:
    """Map Unsloth's ``<base>.<QUANT>.gguf`` outputs back to the requested quants.

    ``model_dtype`` (``bf16``/``f16``) stands in for ``not_quantized``.

    >>> match_unsloth_outputs(["/o/m.BF16.gguf", "/o/m.Q4_K_M.gguf"], ["q4_k_m", None], "bf16")
    ((PosixPath('/o/m.Q4_K_M.gguf'), 'q4_k_m'), (PosixPath('/o/m.BF16.gguf'), 'bf16'))

    Raises:
        ConversionError: a requested quant has no output file.
    """
    by_suffix = {Path(p).name.rsplit(".", 2)[-2].lower(): Path(p) for p in gguf_files}
    matched: list[tuple[Path, str]] = []
    for quant in quants:
        name = quant or model_dtype
        if name not in by_suffix:
            raise ConversionError(
                f"unsloth wrote no {name.upper()} GGUF (it wrote {sorted(by_suffix)})",
                hint="rerun with --backend llama.cpp, or DTO_DEBUG=1 for Unsloth's log",
            )
        matched.append((by_suffix[name], name))
    return tuple(matched)


@contextlib.contextmanager
def _workdir(out_dir: Path) -> Iterator[Path]:
    """A scratch dir inside ``out_dir`` (same filesystem, so results move with os.replace)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".unsloth-", dir=out_dir))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _model_dtype(model: Any) -> str:
    import torch

    dtype = getattr(model, "dtype", None)
    bf16_ok = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return "bf16" if dtype == torch.bfloat16 and bf16_ok else "f16"


def _final_names(quants: Sequence[tuple[Path, str]], out_dir: Path, *, force: bool) -> list[Path]:
    targets = [out_dir / src.name for src, _ in quants]
    existing = [t for t in targets if t.exists()]
    if existing and not force:
        raise OutputExistsError(
            f"{existing[0]} already exists", hint="pass --force to overwrite it"
        )
    return targets


def export_with_unsloth(
    source: Path,
    out_dir: Path,
    *,
    quants: Sequence[str],
    llama_cpp_dir: Path,
    cache_dir: Path,
    load_in_4bit: bool = False,
    load_in_8bit: bool = False,
    max_seq_length: int = 2048,
    save_merged: Path | None = None,
    merged_method: MergedMethod = "merged_16bit",
    force: bool = False,
    progress: ProgressReporter | None = None,
) -> UnslothExport:
    """Export a LoRA adapter dir or HF model dir to GGUF through Unsloth.

    Unsloth merges on the GPU and runs llama.cpp's converter and quantizer; we point it at a
    private copy of our toolchain first so it works offline, then move its outputs
    (``<base>.<QUANT>.gguf``) into ``out_dir`` atomically: an interrupted export leaves
    nothing under a final name.

    Args:
        source: adapter dir (``adapter_config.json``) or merged model dir.
        out_dir: where the GGUFs land, named ``<base>.<QUANT>.gguf`` as Unsloth names them.
        quants: quant types or Unsloth aliases, case-insensitive.
        llama_cpp_dir: our provisioned llama.cpp (see ``LLAMA_CPP_REQUIRED``).
        cache_dir: for Unsloth's converter cache and compiled kernels.
        load_in_4bit: load through bitsandbytes 4-bit (GPUs short of memory).
        load_in_8bit: load through bitsandbytes 8-bit.
        max_seq_length: passed to ``from_pretrained``.
        save_merged: also write the merged HF model here (``save_pretrained_merged``).
        merged_method: ``merged_16bit`` or ``merged_4bit_forced``.
        force: overwrite existing GGUFs / merged dir.
        progress: stage reporter.

    Returns:
        The GGUFs written, in request order.

    Raises:
        UsageError: bad quant name or flag combination (checked before any heavy work).
        InputError: the adapter is not a CAUSAL_LM LoRA.
        DependencyMissingError: no CUDA, unsloth missing, or an incomplete llama.cpp.
        OutputExistsError: an output exists and ``force`` is off.
        ConversionError: Unsloth failed to load, merge, convert or quantize.
    """
    progress = progress or NullProgress()
    wanted = resolve_unsloth_quants(quants)
    kwargs = load_kwargs(
        load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit, max_seq_length=max_seq_length
    )
    if save_merged is not None and save_merged.exists() and not force:
        raise OutputExistsError(f"{save_merged} already exists", hint="pass --force to overwrite")
    require_unsloth()
    check_llama_cpp_dir(llama_cpp_dir)
    check_adapter_task_type(source)
    started = time.monotonic()
    with _workdir(out_dir) as work:
        staged = stage_llama_cpp_dir(llama_cpp_dir, cache_dir)
        configure_unsloth_environment(staged, cache_dir)
        fast_lm = import_fast_language_model()
        progress.start("load", f"unsloth: loading {source.name}")
        try:
            model, tokenizer = fast_lm.from_pretrained(str(source), **kwargs)
        except Exception as err:
            raise ConversionError(
                f"unsloth could not load {source}: {err}",
                hint="check that the base model is available offline, or use --backend llama.cpp",
            ) from err
        progress.done("load")
        merged_dir = None
        if save_merged is not None and merged_method == "merged_16bit":
            merged_dir = _save_merged(model, tokenizer, save_merged, work, merged_method, progress)
        outputs = _save_gguf(model, tokenizer, work, wanted, progress)
        if save_merged is not None and merged_method == "merged_4bit_forced":
            # After: merged_4bit_forced merges the LoRA into the loaded 4-bit layers in place, so
            # a GGUF made after it carries the LoRA twice (measured on an H200: greedy tokens
            # unrelated to the nf4 model's); merged_16bit leaves the model as it was.
            merged_dir = _save_merged(model, tokenizer, save_merged, work, merged_method, progress)
        targets = _final_names(outputs, out_dir, force=force)
        ggufs = []
        for (src, quant), target in zip(outputs, targets, strict=True):
            os.replace(src, target)
            ggufs.append(UnslothGguf(path=target, quant=quant, size_bytes=target.stat().st_size))
    return UnslothExport(
        ggufs=tuple(ggufs), merged_dir=merged_dir, seconds=time.monotonic() - started
    )


def _save_merged(
    model: Any,
    tokenizer: Any,
    target: Path,
    work: Path,
    method: MergedMethod,
    progress: ProgressReporter,
) -> Path:
    """Write the merged model into ``work`` first, then swap it into ``target``."""
    progress.start("merge", f"unsloth: saving merged model ({method})")
    tmp = work / "merged-out"
    try:
        model.save_pretrained_merged(str(tmp), tokenizer, save_method=method)
    except Exception as err:
        raise ConversionError(
            f"unsloth save_pretrained_merged({method}) failed: {err}",
            hint="merged_4bit_forced needs bitsandbytes; or drop --save-merged",
        ) from err
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, target)
    progress.done("merge")
    return target


def _save_gguf(
    model: Any,
    tokenizer: Any,
    work: Path,
    wanted: Sequence[str | None],
    progress: ProgressReporter,
) -> tuple[tuple[Path, str], ...]:
    """Run ``save_pretrained_gguf`` and return (file, quant) for each requested quant."""
    methods = [q if q is not None else "not_quantized" for q in wanted]
    progress.start("gguf", f"unsloth: converting to {', '.join(methods)}")
    try:
        result = model.save_pretrained_gguf(
            str(work / "model"), tokenizer, quantization_method=methods
        )
    except Exception as err:
        raise ConversionError(
            f"unsloth save_pretrained_gguf failed: {err}",
            hint="rerun with --backend llama.cpp, or UNSLOTH_ENABLE_LOGGING=1 for its log",
        ) from err
    files = result.get("gguf_files", []) if isinstance(result, dict) else []
    if not files:  # older unsloth returned nothing: fall back to its naming scheme
        files = sorted(str(p) for p in (work / "model_gguf").glob("*.gguf"))
    matched = match_unsloth_outputs(files, wanted, _model_dtype(model))
    progress.done("gguf")
    return matched
