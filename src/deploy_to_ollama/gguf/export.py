"""Export stage: adapter, merged model or GGUF → GGUF file(s) (merge → convert → quantize).

Flags are checked and disk space estimated before any heavy work; every file is written under a
temp name and renamed into place, so an interrupted export leaves nothing under a final name.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .._fs import check_disk_space
from ..errors import InputError, OutputExistsError, UsageError
from ..progress import NullProgress, ProgressReporter
from ._stamp import fingerprint_inputs, read_matching_stamp, write_stamp
from .llama_cpp import (
    quantize_gguf,
    special_token_ids,
    stage_model_dir,
)
from .quants import QuantType, count_parameters, parse_quant_list
from .steps import (
    GgufFile,
    convert_and_quantize,
    converter_step,
    gguf_file,
    gguf_filename,
    in_process_quantization,
    model_dtype,
)
from .toolchain import Toolchain

logger = logging.getLogger(__name__)

Mode = Literal["merged", "adapter"]
#: Headroom on top of the estimated output (temp intermediates, metadata).
DISK_MARGIN = 1.15


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """Everything ``export_gguf`` needs, validated by the CLI or the pipeline."""

    source: Path
    out_dir: Path
    quants: tuple[str, ...] = ("q4_k_m",)
    base: Path | None = None
    mode: Mode = "merged"
    save_merged: Path | None = None
    name: str | None = None
    force: bool = False


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What the export wrote and learned."""

    files: tuple[GgufFile, ...]
    name: str
    input_kind: str
    chat_template: str | None
    merged_dir: Path | None = None
    pretokenizer_detected: str | None = None
    max_buffered_tensors: int = 0
    base_dir: Path | None = None
    """The base model an adapter was merged into (None for merged or GGUF inputs)."""
    notes: tuple[str, ...] = field(default=())
    reused: bool = False
    """True when an identical earlier export (same input bytes and options) was kept."""

    @property
    def path(self) -> Path:
        """The first model GGUF (the one to put after ``FROM``)."""
        return next(f.path for f in self.files if f.role in ("model", "base"))


def _check_outputs(targets: Sequence[Path], *, force: bool) -> None:
    existing = [path for path in targets if path.exists()]
    if existing and not force:
        raise OutputExistsError(
            f"{existing[0]} already exists",
            hint="pass --force to replace it, or choose another --out",
        )


def plan_files(request: ExportRequest, quants: Sequence[QuantType], stem: str) -> list[Path]:
    """The final paths an export will write (for the --force check before any work)."""
    out = request.out_dir
    if request.mode == "adapter":
        return [out / gguf_filename(f"{stem}-base", q.name) for q in quants] + [
            out / f"{stem}-lora.F16.gguf"
        ]
    return [out / gguf_filename(stem, q.name) for q in quants]


def export_gguf(
    source: Path,
    *,
    out_dir: Path,
    quant: str | Sequence[str] = "q4_k_m",
    base: Path | None = None,
    mode: Mode = "merged",
    save_merged: Path | None = None,
    name: str | None = None,
    force: bool = False,
    cache_dir: Path | None = None,
    llama_cpp_dir: Path | None = None,
    toolchain: Toolchain | None = None,
    progress: ProgressReporter | None = None,
) -> ExportResult:
    """Export ``source`` (adapter dir, merged model dir or GGUF) to GGUF file(s) in ``out_dir``.

    The toolchain is provisioned on first use when none is given (see ``deploy-to-ollama setup``).

    Args:
        source: the fine-tune to export.
        out_dir: where the GGUF files go.
        quant: one quant name, ``"q4_k_m,q8_0"``, or a list (Unsloth aliases allowed).
        base: the base model dir, overriding ``base_model_name_or_path``.
        mode: ``merged`` (one GGUF per quant) or ``adapter`` (base GGUF + GGUF LoRA).
        save_merged: also write the merged HF model there (the GGUF is then converted from it).
        name: ``general.name`` and the file stem (default: the source dir name).
        force: replace existing outputs.
        cache_dir: our cache dir (default: ``Settings.from_env().cache_dir``).
        llama_cpp_dir: a llama.cpp to use instead of the provisioned one.
        toolchain: an already located toolchain (wins over the two above).
        progress: per-stage reporter (merge, convert, quantize).

    Returns:
        The written files and conversion facts.

    Raises:
        UsageError: bad flags (unknown quant, adapter mode for a merged model...).
        OutputExistsError: an output exists and ``force`` is off.
        DiskSpaceError: not enough space for the estimated output.
        ConversionError: llama.cpp refused or failed.
    """
    request = ExportRequest(
        source=Path(source),
        out_dir=Path(out_dir),
        quants=tuple(quant.split(",")) if isinstance(quant, str) else tuple(quant),
        base=base,
        mode=mode,
        save_merged=save_merged,
        name=name,
        force=force,
    )
    if toolchain is None:
        from ..inputs import check_source

        # The source is checked (config, tensors, chat template) before the toolchain is built.
        parse_quant_list(list(request.quants))
        check_source(request.source, base=request.base)
        toolchain = _toolchain(cache_dir, llama_cpp_dir, progress)
    return run_export(request, toolchain, progress=progress)


def _toolchain(
    cache_dir: Path | None, llama_cpp_dir: Path | None, progress: ProgressReporter | None
) -> Toolchain:
    from ..settings import Settings
    from .toolchain import provision_toolchain

    settings = Settings.from_env()
    return provision_toolchain(
        cache_dir or settings.cache_dir,
        llama_cpp_dir=llama_cpp_dir or settings.llama_cpp_dir,
        progress=progress,
    ).toolchain


def run_export(
    request: ExportRequest, toolchain: Toolchain, *, progress: ProgressReporter | None = None
) -> ExportResult:
    """Run an ``ExportRequest`` with a located toolchain (see ``export_gguf``)."""
    from ..inputs import resolve_input

    reporter = progress or NullProgress()
    parse_quant_list(list(request.quants))  # names first: fail before any disk access
    resolved: Any = resolve_input(request.source, base=request.base)
    weights_dir = Path(resolved.base_dir if resolved.kind == "adapter" else resolved.path)
    if resolved.kind == "gguf":
        quants = parse_quant_list(list(request.quants))
    else:
        quants = parse_quant_list(list(request.quants), model_dtype=model_dtype(weights_dir))
    stem = request.name or _default_stem(request.source, resolved)
    if request.mode == "adapter" and resolved.kind != "adapter":
        raise UsageError(
            f"--mode adapter needs a LoRA adapter, got a {resolved.kind} input",
            hint="drop --mode adapter",
        )
    planned = plan_files(request, quants, stem)
    fingerprint = _fingerprint(request, resolved, quants, stem, toolchain)
    if not request.force and all(p.exists() for p in planned):
        kept = _reuse(request, stem, fingerprint, planned)
        if kept is not None:
            return kept
    _check_outputs(planned, force=request.force)
    if request.save_merged is not None:
        _check_outputs([request.save_merged], force=request.force)
    n_params = count_parameters(weights_dir) if resolved.kind != "gguf" else 0
    needed = sum(q.estimate_bytes(n_params) for q in quants) + 2 * n_params
    check_disk_space(request.out_dir, int(needed * DISK_MARGIN))
    request.out_dir.mkdir(parents=True, exist_ok=True)

    if resolved.kind == "gguf":
        result = _requantize(request, resolved, quants, stem, toolchain, reporter)
    elif request.mode == "adapter":
        from .adapter import export_adapter

        result = export_adapter(request, resolved, quants, stem, toolchain, reporter)
    else:
        result = _export_merged(request, resolved, quants, stem, toolchain, reporter)
    write_stamp(
        request.out_dir, stem, fingerprint, [f.path for f in result.files], _stamped(result)
    )
    return result


def _fingerprint(
    request: ExportRequest,
    resolved: Any,
    quants: Sequence[QuantType],
    stem: str,
    toolchain: Toolchain,
) -> str:
    """Content hash of every input plus the options and versions that shape the output bytes."""
    from .. import __version__
    from .toolchain import LLAMA_CPP_COMMIT

    roots = [Path(resolved.path)]
    if resolved.kind == "adapter":
        roots.append(Path(resolved.base_dir))
    if resolved.kind != "gguf":
        roots.append(_tokenizer_dir(resolved))
    options = {
        "quants": [q.name for q in quants],
        "mode": request.mode,
        "name": request.name or stem,
        "save_merged": str(request.save_merged) if request.save_merged else None,
        "deploy_to_ollama": __version__,
        "llama_cpp": LLAMA_CPP_COMMIT,
        "toolchain": str(toolchain.root),
    }
    return fingerprint_inputs(roots, options, exclude=request.out_dir)


def _stamped(result: ExportResult) -> dict[str, Any]:
    return {
        "files": [{"name": f.path.name, "quant": f.quant, "role": f.role} for f in result.files],
        "name": result.name,
        "input_kind": result.input_kind,
        "chat_template": result.chat_template,
        "merged_dir": str(result.merged_dir) if result.merged_dir else None,
        "pretokenizer_detected": result.pretokenizer_detected,
        "max_buffered_tensors": result.max_buffered_tensors,
        "base_dir": str(result.base_dir) if result.base_dir else None,
    }


def _reuse(
    request: ExportRequest, stem: str, fingerprint: str, planned: Sequence[Path]
) -> ExportResult | None:
    """The earlier export of identical inputs, when its stamp and outputs are intact."""
    stamped = read_matching_stamp(request.out_dir, stem, fingerprint, planned)
    if stamped is None:
        return None
    merged = stamped.get("merged_dir")
    if request.save_merged is not None and not (merged and Path(merged).is_dir()):
        return None
    logger.info("reusing the export in %s: same inputs and options", request.out_dir)
    base_dir = stamped.get("base_dir")
    return ExportResult(
        files=tuple(
            gguf_file(request.out_dir / f["name"], f["quant"], f["role"]) for f in stamped["files"]
        ),
        name=stamped["name"],
        input_kind=stamped["input_kind"],
        chat_template=stamped.get("chat_template"),
        merged_dir=Path(merged) if merged else None,
        pretokenizer_detected=stamped.get("pretokenizer_detected"),
        max_buffered_tensors=int(stamped.get("max_buffered_tensors") or 0),
        base_dir=Path(base_dir) if base_dir else None,
        reused=True,
    )


def _default_stem(source: Path, resolved: Any) -> str:
    name = source.resolve().name if source.is_dir() else source.stem
    return name or "model"


def _export_merged(
    request: ExportRequest,
    resolved: Any,
    quants: list[QuantType],
    stem: str,
    toolchain: Toolchain,
    reporter: ProgressReporter,
) -> ExportResult:
    tokenizer_dir = _tokenizer_dir(resolved)
    chat_template = resolved.chat_template  # the one reader's choice: adapter, then base
    merged_dir: Path | None = None
    with tempfile.TemporaryDirectory(prefix=".dto-export-", dir=request.out_dir) as work_str:
        work = Path(work_str)
        if resolved.kind == "adapter" and request.save_merged is not None:
            merged_dir = _save_merged(request, resolved, reporter)
            model_dir = merge_input = merged_dir
        elif resolved.kind == "adapter":
            model_dir = _stage_adapter(resolved, work / "model")
            merge_input = Path(resolved.path)
        else:
            # A merged model streams through the same reader: row chunks, no memory map.
            model_dir = merge_input = Path(resolved.path)
        token_ids = special_token_ids(model_dir, tokenizer_dir, chat_template)
        name = request.name or stem

        convert = converter_step(
            toolchain,
            reporter,
            model_dir=model_dir,
            name=name,
            chat_template=chat_template,
            token_ids=token_ids,
            label="merge + convert" if resolved.kind == "adapter" else "convert",
            merge_input=merge_input,
            merge_base=request.base if resolved.kind == "adapter" and not merged_dir else None,
        )

        files, facts = convert_and_quantize(
            request.out_dir, quants, stem, model_dir, work, convert, toolchain, reporter
        )
    return ExportResult(
        files=tuple(files),
        name=name,
        input_kind=str(resolved.kind),
        chat_template=chat_template,
        merged_dir=merged_dir,
        base_dir=Path(resolved.base_dir) if resolved.kind == "adapter" else None,
        pretokenizer_detected=facts.pretokenizer_detected if facts else None,
        max_buffered_tensors=facts.max_buffered_tensors if facts else 0,
    )


def _stage_adapter(resolved: Any, dest: Path) -> Path:
    """Config + tokenizer dir for streaming an adapter merge (vocab resized if the adapter did)."""
    from ..merge import merged_config

    return stage_model_dir(
        Path(resolved.base_dir), _tokenizer_dir(resolved), dest, config=merged_config(resolved)
    )


def _tokenizer_dir(resolved: Any) -> Path:
    """Where the tokenizer lives: the adapter's own if it has one, else the base / model dir."""
    if resolved.tokenizer_dir is not None:
        return Path(resolved.tokenizer_dir)
    return Path(resolved.base_dir if resolved.kind == "adapter" else resolved.path)


def _save_merged(request: ExportRequest, resolved: Any, reporter: ProgressReporter) -> Path:
    from ..merge import save_merged

    assert request.save_merged is not None
    target = request.save_merged
    if target.exists():
        if not request.force:
            raise OutputExistsError(f"{target} already exists", hint="pass --force to replace it")
        shutil.rmtree(target)
    reporter.start("merge", "merge → safetensors", total=None)
    save_merged(resolved, target)
    reporter.done("merge", f"merged model saved in {target}")
    return target


def _requantize(
    request: ExportRequest,
    resolved: Any,
    quants: list[QuantType],
    stem: str,
    toolchain: Toolchain,
    reporter: ProgressReporter,
) -> ExportResult:
    """A GGUF input: quantize it to each requested type (llama-quantize --allow-requantize)."""
    source = Path(resolved.path)
    files: list[GgufFile] = []
    for quant in quants:
        target = request.out_dir / gguf_filename(stem, quant.name)
        if target.resolve() == source.resolve():
            raise InputError(f"{source} would overwrite itself", hint="choose another --out")
        requant = dataclasses.replace(
            quant, quantize_args=("--allow-requantize", *quant.quantize_args)
        )
        reporter.start(f"quantize-{quant.name}", f"quantize → {quant.name}", total=None)
        quantize_gguf(toolchain, source, target, requant)
        reporter.done(f"quantize-{quant.name}")
        files.append(gguf_file(target, quant.name))
    return ExportResult(files=tuple(files), name=stem, input_kind="gguf", chat_template=None)


__all__ = [
    "ExportRequest",
    "ExportResult",
    "GgufFile",
    "export_gguf",
    "gguf_filename",
    "in_process_quantization",
    "plan_files",
    "run_export",
]
