"""Unsloth backend of the exporter: adapter or model dir → GGUF files, through Unsloth on a GPU.

Drives ``FastLanguageModel.from_pretrained`` + ``save_pretrained_gguf`` against *our* provisioned
llama.cpp, set up so that Unsloth never clones, builds or downloads anything.

Over 500 lines on purpose: one concept, the one place that knows Unsloth's save path and its
quirks (availability, 4-bit flags, offline llama.cpp staging, save order); a split would spread
those quirks over modules that only make sense together.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import (
    ConversionError,
    DependencyMissingError,
    InputError,
    OutputExistsError,
    UsageError,
)
from ..progress import NullProgress, ProgressReporter
from .quants import QUANT_ALIASES

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

#: What Unsloth needs in its llama.cpp dir (unsloth_zoo/llama_cpp.py ``check_llama_cpp`` and
#: ``_CONVERTER_STAGE_REQUIRED``): a runnable quantizer, the converter and its packages.
LLAMA_CPP_REQUIRED: tuple[str, ...] = (
    "llama-quantize",
    "convert_hf_to_gguf.py",
    "convert_lora_to_gguf.py",
    "gguf-py/gguf/__init__.py",
)
LLAMA_CPP_OPTIONAL: tuple[str, ...] = ("conversion",)

MergedMethod = Literal["merged_16bit", "merged_4bit_forced"]


@dataclass(frozen=True, slots=True)
class UnslothAvailability:
    """Whether ``--backend unsloth`` can run here, and if not, why."""

    available: bool
    reason: str


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


def unsloth_availability() -> UnslothAvailability:
    """Tell whether Unsloth can run, without importing unsloth (its import patches torch).

    Only ``torch`` is imported, and only when installed, to ask ``torch.cuda.is_available()``.
    """
    for module in ("torch", "unsloth", "unsloth_zoo"):
        if importlib.util.find_spec(module) is None:
            return UnslothAvailability(
                available=False, reason=f"python package {module!r} is missing"
            )
    import torch

    if not torch.cuda.is_available():
        return UnslothAvailability(available=False, reason="no CUDA GPU is visible to torch")
    return UnslothAvailability(available=True, reason="unsloth and a CUDA GPU are available")


def require_unsloth() -> None:
    """Refuse the unsloth backend, before any heavy work, where it cannot run.

    Raises:
        DependencyMissingError: unsloth (or unsloth_zoo, torch) is missing, or no CUDA GPU.
    """
    availability = unsloth_availability()
    if not availability.available:
        raise DependencyMissingError(
            f"the unsloth backend cannot run: {availability.reason}",
            hint="use --backend llama.cpp (CPU), or install unsloth on a CUDA machine",
        )


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


def check_llama_cpp_dir(llama_cpp_dir: Path) -> None:
    """Refuse a llama.cpp dir Unsloth would not accept (it would then try to install its own).

    Raises:
        DependencyMissingError: a required file is missing or llama-quantize is not executable.
    """
    missing = [rel for rel in LLAMA_CPP_REQUIRED if not (llama_cpp_dir / rel).exists()]
    if missing:
        raise DependencyMissingError(
            f"llama.cpp at {llama_cpp_dir} lacks {', '.join(missing)}",
            hint="run `deploy-to-ollama setup` or point DTO_LLAMA_CPP_DIR at a built llama.cpp",
        )
    if not os.access(llama_cpp_dir / "llama-quantize", os.X_OK):
        raise DependencyMissingError(
            f"{llama_cpp_dir / 'llama-quantize'} is not executable",
            hint=f"chmod +x {llama_cpp_dir / 'llama-quantize'} or rerun `deploy-to-ollama setup`",
        )


def staged_llama_cpp_dir(toolchain_dir: Path, cache_dir: Path) -> Path:
    """Where ``stage_llama_cpp_dir`` puts the copy of ``toolchain_dir``: stable per toolchain.

    Stable because unsloth_zoo freezes its llama.cpp dir at import, so every export in one
    process must name the same dir.
    """
    digest = hashlib.sha256(str(toolchain_dir.resolve()).encode()).hexdigest()[:12]
    return cache_dir / "unsloth-llama.cpp" / digest


def stage_llama_cpp_dir(toolchain_dir: Path, cache_dir: Path) -> Path:
    """Copy our llama.cpp toolchain into a private, writable dir laid out for Unsloth.

    Unsloth writes a patched ``unsloth_convert_hf_to_gguf.py`` into its llama.cpp dir and
    purges bytecode there, so it gets a copy and the shared toolchain stays pristine. The copy
    is refreshed on every call, so a rebuilt toolchain is picked up.

    Args:
        toolchain_dir: the provisioned llama.cpp (``llama-quantize`` beside the converter).
        cache_dir: cache root; the copy goes to ``staged_llama_cpp_dir(toolchain_dir, cache_dir)``.

    Returns:
        The staged dir.

    Raises:
        DependencyMissingError: the toolchain lacks something Unsloth needs.
    """
    check_llama_cpp_dir(toolchain_dir)
    stage_dir = staged_llama_cpp_dir(toolchain_dir, cache_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    for rel in ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py"):
        shutil.copy2(toolchain_dir / rel, stage_dir / rel)
    # Linked, not copied: a shared-lib build finds its libggml through RUNPATH=$ORIGIN, which
    # follows the link to the real binary.
    quantize = stage_dir / "llama-quantize"
    quantize.unlink(missing_ok=True)
    quantize.symlink_to((toolchain_dir / "llama-quantize").resolve())
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for rel in ("gguf-py", *LLAMA_CPP_OPTIONAL):
        if (toolchain_dir / rel).is_dir():
            shutil.copytree(toolchain_dir / rel, stage_dir / rel, ignore=ignore, dirs_exist_ok=True)
    return stage_dir


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


def unsloth_environment(llama_cpp_dir: Path, cache_dir: Path) -> dict[str, str]:
    """The variables that keep Unsloth offline and on our llama.cpp.

    Names from unsloth_zoo/llama_cpp.py (2026.10.9): ``UNSLOTH_LLAMA_CPP_PATH`` is read once,
    at import, into ``LLAMA_CPP_DEFAULT_DIR``; ``UNSLOTH_LLAMA_CPP_SCRIPTS_DIR`` pins the
    converter and "fails closed rather than hitting the network"; ``UNSLOTH_LLAMA_CPP_OFFLINE``
    forbids converter downloads; ``UNSLOTH_AUTO_INSTALL=0`` forbids pip/apt installs.
    ``UNSLOTH_COMPILE_LOCATION`` keeps its compiled-kernel cache out of the user's cwd.
    """
    root = str(llama_cpp_dir.resolve())
    return {
        "UNSLOTH_LLAMA_CPP_PATH": root,
        "UNSLOTH_LLAMA_CPP_SCRIPTS_DIR": root,
        "UNSLOTH_LLAMA_CPP_OFFLINE": "1",
        "UNSLOTH_AUTO_INSTALL": "0",
        "UNSLOTH_LLAMA_CPP_CONVERTER_CACHE": str(cache_dir / "unsloth-converter"),
        "UNSLOTH_COMPILE_LOCATION": str(cache_dir / "unsloth-compiled"),
    }


def configure_unsloth_environment(
    llama_cpp_dir: Path,
    cache_dir: Path,
    environ: MutableMapping[str, str] | None = None,
    modules: Mapping[str, object] | None = None,
) -> dict[str, str]:
    """Set ``unsloth_environment`` in the process env; must run before unsloth is imported.

    If unsloth_zoo was already imported with another llama.cpp dir, its frozen default would
    win, so that is refused rather than silently using the wrong toolchain.

    Returns:
        The variables that were set.

    Raises:
        DependencyMissingError: unsloth_zoo is already imported with a different llama.cpp dir.
    """
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    wanted = unsloth_environment(llama_cpp_dir, cache_dir)
    zoo = modules.get("unsloth_zoo.llama_cpp")
    frozen = getattr(zoo, "LLAMA_CPP_DEFAULT_DIR", None)
    if frozen is not None and os.path.realpath(str(frozen)) != wanted["UNSLOTH_LLAMA_CPP_PATH"]:
        raise DependencyMissingError(
            f"unsloth was imported before deploy-to-ollama could point it at {llama_cpp_dir}",
            hint="run the export in a fresh process, or set UNSLOTH_LLAMA_CPP_PATH yourself",
        )
    environ.update(wanted)
    return wanted


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


def _import_fast_language_model() -> Any:
    try:
        # unsloth must be imported before transformers/peft to patch them.
        importlib.import_module("unsloth")
        return importlib.import_module("unsloth").FastLanguageModel
    except ImportError as err:
        raise DependencyMissingError(
            f"unsloth failed to import: {err}",
            hint="pip install unsloth unsloth_zoo, or use --backend llama.cpp",
        ) from err


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
        fast_lm = _import_fast_language_model()
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
