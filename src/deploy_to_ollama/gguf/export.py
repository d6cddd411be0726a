"""Export stage: adapter, merged model or GGUF → GGUF file(s) (merge → convert → quantize).

Flags are checked and disk space estimated before any heavy work; every file is written under a
temp name and renamed into place, so an interrupted export leaves nothing under a final name.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .._fs import check_disk_space, check_writable_dir
from ..errors import InputError, OutputExistsError, UsageError
from ..progress import NullProgress, ProgressReporter
from ..resume import content_key, pid_tag, remove_stale_temps, stable_hash
from ..settings import Settings
from ._stamp import ExportStamp
from .llama_cpp import (
    quantize_gguf,
    read_chat_template,
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
    quantizer: str = "auto"
    """``Settings.quantizer``: ``llama-quantize`` forces the two-step route."""
    content_key: str | None = None
    """The input's content key when the caller computed it (``resume.content_key``)."""
    disk_reserve_bytes: int = 0
    """Free space to leave on the output's filesystem (``Settings.disk_reserve_bytes``)."""


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
    resumed: tuple[Path, ...] = ()
    """Files an interrupted run of the same export had finished, kept rather than remade."""

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
    settings: Settings | None = None,
    content_key: str | None = None,
    resolved: Any = None,
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
        cache_dir: our cache dir (default: ``settings.cache_dir``).
        llama_cpp_dir: a llama.cpp to use instead of the provisioned one.
        toolchain: an already located toolchain (wins over the two above).
        progress: per-stage reporter (merge, convert, quantize).
        settings: the configuration read at the entry point (``Settings.from_env()`` when
            a direct caller gives none).
        content_key: the input's content key, when the caller already computed it.
        resolved: the ``ResolvedInput`` of ``source``, when the caller already resolved it.

    Returns:
        The written files and conversion facts.

    Raises:
        UsageError: bad flags (unknown quant, adapter mode for a merged model...).
        OutputExistsError: an output exists and ``force`` is off.
        DiskSpaceError: not enough space for the estimated output.
        ConversionError: llama.cpp refused or failed.
    """
    settings = settings or Settings.from_env()
    request = ExportRequest(
        source=Path(source),
        out_dir=Path(out_dir),
        quants=tuple(quant.split(",")) if isinstance(quant, str) else tuple(quant),
        base=base,
        mode=mode,
        save_merged=save_merged,
        name=name,
        force=force,
        quantizer=settings.quantizer,
        content_key=content_key,
        disk_reserve_bytes=settings.disk_reserve_bytes,
    )
    return run_export(
        request,
        toolchain or (lambda: _toolchain(settings, cache_dir, llama_cpp_dir, progress)),
        progress=progress,
        resolved=resolved,
        toolchain_id=str(llama_cpp_dir or settings.llama_cpp_dir or "provisioned"),
    )


def _toolchain(
    settings: Settings,
    cache_dir: Path | None,
    llama_cpp_dir: Path | None,
    progress: ProgressReporter | None,
) -> Toolchain:
    from .toolchain import provision_toolchain

    return provision_toolchain(
        cache_dir or settings.cache_dir,
        llama_cpp_dir=llama_cpp_dir or settings.llama_cpp_dir,
        progress=progress,
    ).toolchain


def run_export(
    request: ExportRequest,
    toolchain: Toolchain | Callable[[], Toolchain],
    *,
    progress: ProgressReporter | None = None,
    resolved: Any = None,
    toolchain_id: str | None = None,
) -> ExportResult:
    """Run an ``ExportRequest`` (see ``export_gguf``).

    ``toolchain`` may be a function that provisions it: it is then called only once the input
    and the outputs have been checked, so a bad input fails in a second, not after a build;
    ``toolchain_id`` then names it in the resume key (a located toolchain is named by its root).
    An interrupted run of the same export is continued: the GGUFs it finished are kept.
    """
    from ..inputs import resolve_input

    reporter = progress or NullProgress()
    parse_quant_list(list(request.quants))  # names first: fail before any disk access
    check_writable_dir(request.out_dir, what="--out")
    if resolved is None:
        resolved = resolve_input(request.source, base=request.base)
    quants = _quants(request, resolved)
    stem = request.name or _default_stem(request.source)
    if request.mode == "adapter" and resolved.kind != "adapter":
        raise UsageError(
            f"--mode adapter needs a LoRA adapter, got a {resolved.kind} input",
            hint="drop --mode adapter",
        )
    planned = plan_files(request, quants, stem)
    remove_stale_temps(request.out_dir)
    located = toolchain if isinstance(toolchain, Toolchain) else None
    tool_id = str(located.root) if located is not None else (toolchain_id or "provisioned")
    stamp = ExportStamp.open(
        request.out_dir, stem, _fingerprint(request, resolved, quants, stem, tool_id)
    )
    done: set[Path] = set()
    if not request.force:
        kept = _reuse(request, stamp, planned)
        if kept is not None:
            return kept
        if request.mode == "merged":  # adapter mode writes base + LoRA as one unit
            done = stamp.finished(planned)
    todo = [q for q, path in zip(quants, planned, strict=False) if path not in done]
    _check_outputs([p for p in planned if p not in done], force=request.force)
    if request.save_merged is not None:
        _check_outputs([request.save_merged], force=request.force)
    _check_space(request, resolved, todo)
    request.out_dir.mkdir(parents=True, exist_ok=True)
    located = toolchain if isinstance(toolchain, Toolchain) else toolchain()
    if done:
        logger.info("continuing the export: %s already done", ", ".join(p.name for p in done))
    result = _produce(request, resolved, todo, stem, located, reporter, stamp)
    if done:
        result = _with_resumed(result, quants, planned, done)
    stamp.record_result([f.path for f in result.files], _stamped(result))
    return result


def _quants(request: ExportRequest, resolved: Any) -> list[QuantType]:
    if resolved.kind == "gguf":
        return parse_quant_list(list(request.quants))
    weights_dir = Path(resolved.base_dir if resolved.kind == "adapter" else resolved.path)
    return parse_quant_list(list(request.quants), model_dtype=model_dtype(weights_dir))


def _check_space(request: ExportRequest, resolved: Any, quants: Sequence[QuantType]) -> None:
    """Estimated outputs plus intermediates (and the user's reserve) must fit before we start."""
    if not quants and request.save_merged is None:
        return
    weights_dir = Path(resolved.base_dir if resolved.kind == "adapter" else resolved.path)
    n_params = count_parameters(weights_dir) if resolved.kind != "gguf" else 0
    if resolved.kind == "gguf":
        needed = len(quants) * Path(resolved.path).stat().st_size
    else:
        needed = sum(q.estimate_bytes(n_params) for q in quants) + 2 * n_params
    check_disk_space(request.out_dir, int(needed * DISK_MARGIN) + request.disk_reserve_bytes)


def _produce(
    request: ExportRequest,
    resolved: Any,
    quants: list[QuantType],
    stem: str,
    toolchain: Toolchain,
    reporter: ProgressReporter,
    stamp: ExportStamp,
) -> ExportResult:
    def on_file(file: GgufFile) -> None:
        stamp.record_file(file.path)

    if resolved.kind == "gguf":
        return _requantize(request, resolved, quants, stem, toolchain, reporter, on_file)
    if request.mode == "adapter":
        from .adapter import export_adapter

        return export_adapter(request, resolved, quants, stem, toolchain, reporter)
    return _export_merged(request, resolved, quants, stem, toolchain, reporter, on_file)


def _with_resumed(
    result: ExportResult, quants: Sequence[QuantType], planned: Sequence[Path], done: set[Path]
) -> ExportResult:
    """The new files plus the ones the interrupted run finished, in the requested order."""
    made = {f.path: f for f in result.files}
    files = [
        made.get(path) or gguf_file(path, quant.name)
        for quant, path in zip(quants, planned, strict=False)
    ]
    return dataclasses.replace(result, files=tuple(files), resumed=tuple(sorted(done)))


def _fingerprint(
    request: ExportRequest,
    resolved: Any,
    quants: Sequence[QuantType],
    stem: str,
    toolchain_id: str,
) -> str:
    """The input's content key plus the options and versions that shape the output bytes."""
    from .toolchain import LLAMA_CPP_COMMIT

    key = request.content_key or content_key(
        Path(resolved.path),
        Path(resolved.base_dir) if resolved.kind == "adapter" else None,
        exclude=request.out_dir,
    )
    options = {
        "quants": [q.name for q in quants],
        "mode": request.mode,
        "name": request.name or stem,
        "save_merged": str(request.save_merged) if request.save_merged else None,
        "llama_cpp": LLAMA_CPP_COMMIT,
        "toolchain": toolchain_id,
    }
    return stable_hash(key, options)


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
    request: ExportRequest, stamp: ExportStamp, planned: Sequence[Path]
) -> ExportResult | None:
    """The earlier export of identical inputs, when its stamp and outputs are intact."""
    stamped = stamp.result(planned)
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


def _default_stem(source: Path) -> str:
    name = source.resolve().name if source.is_dir() else source.stem
    return name or "model"


def _export_merged(
    request: ExportRequest,
    resolved: Any,
    quants: list[QuantType],
    stem: str,
    toolchain: Toolchain,
    reporter: ProgressReporter,
    on_file: Callable[[GgufFile], None] | None = None,
) -> ExportResult:
    tokenizer_dir = _tokenizer_dir(resolved)
    chat_template = read_chat_template(tokenizer_dir)
    merged_dir: Path | None = None
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
    on_file: Callable[[GgufFile], None] | None = None,
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
        if on_file is not None:
            on_file(files[-1])
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
