"""The export routes besides adapter mode (``adapter.py``): an adapter or merged model streamed
through the converter (merge + convert + quantize), and a GGUF input requantized."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InputError, OutputExistsError
from ..progress import ProgressReporter
from ..resume import pid_tag
from .imatrix import Imatrix, resolve_imatrix
from .llama_cpp import quantize_gguf, special_token_ids, stage_model_dir
from .quants import QuantType
from .request import ExportRequest, ExportResult
from .steps import GgufFile, convert_and_quantize, converter_step, gguf_file, gguf_filename
from .toolchain import Toolchain


def export_merged(
    request: ExportRequest,
    resolved: Any,
    quants: list[QuantType],
    stem: str,
    toolchain: Toolchain,
    reporter: ProgressReporter,
    on_file: Callable[[GgufFile], None] | None = None,
) -> ExportResult:
    tokenizer_dir = _tokenizer_dir(resolved)
    chat_template = resolved.chat_template  # the one reader's choice: adapter, then base
    merged_dir: Path | None = None
    used: list[Imatrix] = []
    prefix = f".dto-export-{pid_tag()}-"  # a dead run's leftover is recognised by its PID
    with tempfile.TemporaryDirectory(prefix=prefix, dir=request.out_dir) as work_str:
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
            request.out_dir,
            quants,
            stem,
            model_dir,
            work,
            convert,
            toolchain,
            reporter,
            quantizer=request.quantizer,
            on_file=on_file,
            imatrix=request.imatrix,
            used_imatrix=used,
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
        imatrix=used[0] if used else None,
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


def requantize(
    request: ExportRequest,
    resolved: Any,
    quants: list[QuantType],
    stem: str,
    toolchain: Toolchain,
    reporter: ProgressReporter,
    on_file: Callable[[GgufFile], None] | None = None,
) -> ExportResult:
    """A GGUF input: quantize it to each requested type (llama-quantize --allow-requantize)."""
    source = Path(resolved.path)
    files: list[GgufFile] = []
    weights = None
    if request.imatrix is not None:
        reporter.start("imatrix", "imatrix", total=None)
        weights = resolve_imatrix(request.imatrix, toolchain, source, request.out_dir, stem)
        reporter.done("imatrix", f"imatrix: {weights.path.name}, {weights.entries} entries")
    for quant in quants:
        target = request.out_dir / gguf_filename(stem, quant.name)
        if target.resolve() == source.resolve():
            raise InputError(f"{source} would overwrite itself", hint="choose another --out")
        requant = dataclasses.replace(
            quant, quantize_args=("--allow-requantize", *quant.quantize_args)
        )
        reporter.start(f"quantize-{quant.name}", f"quantize → {quant.name}", total=None)
        quantize_gguf(toolchain, source, target, requant, imatrix=weights.path if weights else None)
        reporter.done(f"quantize-{quant.name}")
        files.append(gguf_file(target, quant.name))
        if on_file is not None:
            on_file(files[-1])
    return ExportResult(
        files=tuple(files), name=stem, input_kind="gguf", chat_template=None, imatrix=weights
    )


__all__ = ["export_merged", "requantize"]
