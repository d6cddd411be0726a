"""Export stage: adapter, merged model or GGUF → GGUF file(s) (merge → convert → quantize).

Flags are checked and disk space estimated before any heavy work; every file is written under a
temp name and renamed into place, so an interrupted export leaves nothing under a final name.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._fs import check_disk_space, check_writable_dir, raise_for_os_error
from ..errors import ConversionError, DiskSpaceError, OutputExistsError, UsageError
from ..progress import NullProgress, ProgressReporter
from ..resume import content_key, remove_stale_temps, stable_hash
from ..settings import Settings
from ._stamp import ExportStamp
from .imatrix import ImatrixChoice, find_llama_tool
from .quants import QuantType, check_imatrix_needs, count_parameters, parse_quant_list
from .request import ExportRequest, ExportResult, Mode
from .routes import export_merged, requantize
from .steps import GgufFile, gguf_file, gguf_filename, in_process_quantization, model_dtype
from .toolchain import Toolchain

logger = logging.getLogger(__name__)

#: Headroom on top of the estimated output (temp intermediates, metadata).
DISK_MARGIN = 1.15


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
    content_key: str | Callable[[], str | None] | None = None,
    resolved: Any = None,
    imatrix: ImatrixChoice | None = None,
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
        content_key: the input's content key, when the caller already computed it, or the
            call that waits for it: asked for only when an earlier stamp is checked or the
            first file is recorded, so a first export's worker starts while it is hashed.
        resolved: the ``ResolvedInput`` of ``source``, when the caller already resolved it.
        imatrix: quantize with an importance matrix (``imatrix.parse_imatrix_option``); the
            IQ types need one.

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
        imatrix=imatrix,
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
    # names first: fail before any disk access
    check_imatrix_needs(parse_quant_list(list(request.quants)), has_imatrix=bool(request.imatrix))
    if request.imatrix is not None and request.mode == "adapter":
        raise UsageError(
            "--imatrix works with --mode merged only",
            hint="drop --imatrix, or export with --mode merged",
        )
    check_writable_dir(request.out_dir, what="--out")
    if resolved is None:
        # Config and tensors against config and base, before the toolchain (the callers that
        # write a Modelfile, ``pipeline`` and ``exporting``, check the chat template first).
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
        request.out_dir,
        stem,
        functools.partial(_fingerprint, request, resolved, quants, stem, tool_id),
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
    # The toolchain before the output folder: a missing toolchain leaves nothing behind.
    located = toolchain if isinstance(toolchain, Toolchain) else toolchain()
    if request.imatrix is not None and request.imatrix.auto and todo:
        find_llama_tool(located, "llama-imatrix")  # missing: exit 4 now, not after converting
    request.out_dir.mkdir(parents=True, exist_ok=True)
    if done:
        logger.info("continuing the export: %s already done", ", ".join(p.name for p in done))
    try:
        result = _produce(request, resolved, todo, stem, located, reporter, stamp)
    except ConversionError as err:
        if "No space left on device" in f"{err.message}\n{err.stderr_tail}":
            raise DiskSpaceError(
                f"no space left on the disk of {request.out_dir} while converting",
                hint="free some space and rerun: finished GGUFs are kept, nothing half-written is",
            ) from err
        raise
    except OSError as err:
        raise_for_os_error(err, request.out_dir, what="--out")
        raise
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
        return requantize(request, resolved, quants, stem, toolchain, reporter, on_file)
    if request.mode == "adapter":
        from .adapter import export_adapter

        return export_adapter(request, resolved, quants, stem, toolchain, reporter)
    return export_merged(request, resolved, quants, stem, toolchain, reporter, on_file)


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

    key = request.content_key() if callable(request.content_key) else request.content_key
    key = key or content_key(
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
    if request.imatrix is not None:  # absent otherwise: earlier stamps stay valid
        options["imatrix"] = request.imatrix.fingerprint()
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
