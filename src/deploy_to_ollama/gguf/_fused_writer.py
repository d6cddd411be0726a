"""Inside the converter worker: write the final quantized GGUF in one pass, tensor by tensor.

The usual route is converter → 16-bit GGUF on disk → ``llama-quantize`` → quantized GGUF. Here
the converter's writer is re-planned before it writes: every tensor gets the type llama-quantize
would give it (llama.cpp's own rules, through ``quantizer.QuantLibrary``), tensors are put in
llama.cpp's order, and each one is quantized by ggml's kernels on a thread pool, block of rows
by block, while the next is being merged; each block is written as soon as it is quantized, so
memory holds a few blocks, not a tensor (a 3B model's 394M-value embedding would otherwise cost
its whole quantized size, 323 MB in Q6_K). The 16-bit values each tensor is quantized from are
exactly those the 16-bit GGUF would hold, so the file is byte for byte what the two-step route
writes.

Several quant types in one run: one writer per output file (``clone_writer``), each with its own
type plan; every tensor is read, merged and converted once, quantized once per distinct type,
and each block's bytes go into every file before the next block is taken (``write_quantized``).

This module imports the toolchain's vendored ``gguf`` package: it runs only in the worker.
"""

from __future__ import annotations

import copy
import importlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._quant_pipeline import DeferredBlock, Piece, Pipeline, release_free_memory
from .quantizer import ModelShape, QuantLibrary, StageTimes, TensorSpec, llama_cpp_order

logger = logging.getLogger(__name__)

#: The toolchain's vendored gguf-py: newer than the PyPI ``gguf`` mypy sees, hence ``Any``.
gguf: Any = importlib.import_module("gguf")
GGUFValue: Any = gguf.gguf_writer.GGUFValue
TensorInfo: Any = gguf.gguf_writer.TensorInfo

#: float32 values per block handed to the quantizer threads (1 MiB; llama-quantize uses 16K-value
#: chunks, we hand bigger ones because each call also costs a Python round trip). Measured at 1B
#: on two busy cores: 4 MiB blocks peaked ~35 MB higher than 1 MiB at the same speed.
_BLOCK_VALUES = 1 << 18


class SourceChunks(list[Callable[[], Any]]):
    """Row-chunk loaders of a tensor the converter passes through unchanged.

    ``exact_in`` names the GGML type the values are already exactly representable in (the merged
    tensor's own dtype), so rounding them to that type again can be skipped. ``prepare``, when
    set, makes the loaders safe to call from any thread in any order (it does the tensor's
    one-off work, such as a LoRA product): the quantizer threads then load and merge the chunks
    themselves, in parallel, instead of the one producer thread.
    """

    exact_in: Any = None
    prepare: Callable[[], None] | None = None


@dataclass(frozen=True, slots=True)
class QuantPlan:
    """What to quantize to: llama.cpp's file type and the per-role overrides."""

    ftype: int
    output_type: int | None = None
    token_embedding_type: int | None = None
    threads: int = 0
    label: str = ""
    """The output's quant name (``q4_k_m``), used to name its stages in the timings."""


def model_shape(writer: Any) -> ModelShape:
    """The hyper-parameters llama.cpp's type rules need, read from the KV data written so far."""
    kv = writer.kv_data[0]
    arch = str(kv[gguf.Keys.General.ARCHITECTURE].value)

    def value(key: str, default: int = 0) -> int:
        item = kv.get(key.format(arch=arch))
        if item is None:
            return default
        raw = item.value
        if isinstance(raw, list | tuple):
            raw = max(raw) if raw else default
        return int(raw)

    n_embd = value(gguf.Keys.LLM.EMBEDDING_LENGTH)
    n_head = value(gguf.Keys.Attention.HEAD_COUNT)
    return ModelShape(
        architecture=arch,
        n_embd=n_embd,
        n_ff=value(gguf.Keys.LLM.FEED_FORWARD_LENGTH),
        n_layer=value(gguf.Keys.LLM.BLOCK_COUNT),
        n_head=n_head,
        n_head_kv=value(gguf.Keys.Attention.HEAD_COUNT_KV, n_head),
        n_expert=value(gguf.Keys.LLM.EXPERT_COUNT),
        n_embd_head_k=value(gguf.Keys.Attention.KEY_LENGTH),
        n_embd_head_v=value(gguf.Keys.Attention.VALUE_LENGTH),
    )


def clone_writer(writer: Any) -> Any:
    """A second writer for another output file of the same converter run, not opened yet.

    Same metadata and tensor list (before any quantization plan), its own copies of both, so
    each output's plan can rewrite them without touching the others.
    """
    clone = copy.copy(writer)
    clone.fout = None
    clone.path = None
    clone.temp_file = None
    clone.state = gguf.gguf_writer.WriterState.NO_FILE
    clone.kv_data = [dict(kv) for kv in writer.kv_data]
    clone.tensors = [dict(shard) for shard in writer.tensors]
    return clone


def plan_quantized_writes(
    writers: Sequence[Any], plans: Sequence[QuantPlan], library: QuantLibrary, times: StageTimes
) -> tuple[Pipeline, list[dict[str, int]]]:
    """Re-plan each writer (one per output file) to its quantized GGUF, fed by one pipeline.

    The writers hold the same tensors (``clone_writer``); every tensor is produced once and
    quantized to each type the writers' plans ask for (once per distinct type). Write them with
    ``write_quantized``. Returns the pipeline and, per writer, tensors per final GGML type name.
    """
    if any(len(writer.tensors) != 1 for writer in writers):
        raise ValueError("split GGUF output cannot be quantized in-process")
    tensors: dict[str, Any] = writers[0].tensors[0]
    order = llama_cpp_order(list(tensors))
    specs = [
        TensorSpec(
            name, tuple(int(d) for d in reversed(tensors[name].shape)), int(tensors[name].dtype)
        )
        for name in order
    ]
    shape = model_shape(writers[0])
    type_plans = [
        library.plan(
            shape,
            specs,
            plan.ftype,
            output_type=plan.output_type,
            token_embedding_type=plan.token_embedding_type,
        )
        for plan in plans
    ]
    pipeline = Pipeline(library, plans[0].threads or os.cpu_count() or 1, times)
    replanned: list[dict[str, Any]] = [{} for _ in plans]
    counts: list[dict[str, int]] = [{} for _ in plans]
    for index, spec in enumerate(specs):
        info = tensors[spec.name]
        targets = [types[index] for types in type_plans]
        job, sizes = _job(info, spec, targets, [p.label for p in plans], library, pipeline)
        for out, new_type, nbytes in zip(range(len(plans)), targets, sizes, strict=True):
            qtype = gguf.GGMLQuantizationType(new_type)
            counts[out][qtype.name] = counts[out].get(qtype.name, 0) + 1
            replanned[out][spec.name] = TensorInfo(shape=info.shape, dtype=qtype, nbytes=nbytes)
        pipeline.add(spec.name, job)
    for writer, plan, planned in zip(writers, plans, replanned, strict=True):
        writer.tensors[0] = planned
        # llama-quantize sets these two last (gguf_set_val_* removes a key and appends it).
        kv = writer.kv_data[0]
        for key, value in (
            (gguf.Keys.General.QUANTIZATION_VERSION, gguf.GGML_QUANT_VERSION),
            (gguf.Keys.General.FILE_TYPE, plan.ftype),
        ):
            kv.pop(key, None)
            kv[key] = GGUFValue(value, gguf.GGUFValueType.UINT32)
    return pipeline, counts


def write_quantized(
    writers: Sequence[Any],
    paths: Sequence[Any],
    labels: Sequence[str],
    pipeline: Pipeline,
    on_tensor: Callable[[int, int], None],
) -> None:
    """Write every planned writer's file, tensor by tensor, side by side.

    Each piece of a tensor (a block of rows) goes into every file as soon as it is quantized,
    and a finished tensor is padded to the alignment (what the writer's own
    ``write_tensors_to_file`` writes), so neither a whole quantized tensor nor an output waiting
    for another file to catch up is ever held in memory.
    """
    times = pipeline.times
    for writer, path in zip(writers, paths, strict=True):
        writer.write_header_to_file(path=path)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        writer.write_padding(writer.fout[0], writer.fout[0].tell())
    _drop_written_metadata(writers)
    names = list(writers[0].tensors[0])
    pipeline.start()
    try:
        for index, name in enumerate(names, start=1):
            written = [0] * len(writers)
            for piece in pipeline.take(name):
                for out, part in enumerate(piece):
                    data = part.result() if isinstance(part, Future) else part
                    if data is not None:
                        with times.timed(f"write {labels[out]}"):
                            written[out] += _write_piece(writers[out], name, data)
            for writer, label, nbytes in zip(writers, labels, written, strict=True):
                with times.timed(f"write {label}"):
                    _end_tensor(writer, name, nbytes)
            on_tensor(index, len(names))
    finally:
        pipeline.close()
        for writer in writers:
            writer.close()


def _drop_written_metadata(writers: Sequence[Any]) -> None:
    """Free the KV data once every file has it: nothing reads it after the header.

    Why: it holds the vocabulary as Python objects (tokens, merges, scores, token types:
    tens of MB for a 128K vocabulary, a few for 32K), the one part of the worker's memory
    beside the tensors that grows with the model, and it would stay resident while every
    tensor is merged and quantized.
    """
    for writer in writers:
        writer.kv_data = [{} for _ in writer.kv_data]
    release_free_memory()


def _write_piece(writer: Any, name: str, data: np.ndarray) -> int:
    """Append one piece of tensor ``name`` to the writer's file; return the bytes written."""
    fout = writer.fout[0]
    start = fout.tell()
    data.tofile(fout)
    # a short write here would only surface as a corrupt file at load time
    if fout.tell() - start != data.nbytes:
        written = fout.tell() - start
        raise ValueError(f"tensor {name!r} wrote {written} bytes, expected {data.nbytes}")
    return int(data.nbytes)


def _end_tensor(writer: Any, name: str, nbytes: int) -> None:
    """Check that ``name`` got its planned bytes, then pad to the alignment."""
    info = writer.tensors[0][name]
    if nbytes != info.nbytes:
        raise ValueError(f"{name}: produced {nbytes} bytes, planned {info.nbytes}")
    writer.write_padding(writer.fout[0], info.nbytes)
    writer.state = gguf.gguf_writer.WriterState.WEIGHTS


def _job(
    info: Any,
    spec: TensorSpec,
    targets: Sequence[int],
    labels: Sequence[str],
    library: QuantLibrary,
    pipeline: Pipeline,
) -> tuple[Callable[[], Iterator[Piece]], list[int]]:
    """The function producing a tensor's final bytes for each output, piece by piece; sizes.

    Outputs that want the same type share one result: the quantizer is deterministic, so the
    bytes are the ones a single-type export computes. Timings: ``quantize <quant>`` per file, and
    its split by GGML type, ``quantize:<TYPE> <quant>`` (``quantize:Q6_K q4_k_m``: the output
    tensor and half the attn_v/ffn_down of a q4_k_m), to see which kernel the time goes to.
    """
    n_per_row = spec.ne[0]
    nrows = int(np.prod(spec.ne[1:])) if len(spec.ne) > 1 else 1
    kept = spec.ggml_type in targets
    sizes = {
        t: int(info.nbytes) if t == spec.ggml_type else nrows * library.row_size(t, n_per_row)
        for t in targets
    }
    quantized = sorted(t for t in sizes if t != spec.ggml_type)
    stored = gguf.GGMLQuantizationType(spec.ggml_type)
    stages = {t: _quantize_stages(t, labels, targets) for t in quantized}
    times = pipeline.times

    def produce() -> Iterator[Piece]:
        raw: np.ndarray | None = None
        if kept or not isinstance(info.tensor, gguf.LazyChunkedTensor):
            with times.timed("source"):
                raw = _materialize(info.tensor)
            # The converter's lazy graph keeps every step's value (merged, permuted, float32,
            # rounded: 5x the tensor's 16-bit size); only the bytes are needed from here on.
            info.tensor = None
        if kept:
            yield [raw if t == spec.ggml_type else None for t in targets]
        if quantized:
            deferred = _deferred_blocks(info.tensor, stored, n_per_row, nrows, raw, pipeline)
            blocks = deferred or _f32_blocks(info.tensor, stored, n_per_row, raw)
            for made in pipeline.quantize(quantized, blocks, nrows, n_per_row, sizes, stages):
                yield [made.get(t) for t in targets]

    return produce, [sizes[t] for t in targets]


def _quantize_stages(ggml_type: int, labels: Sequence[str], targets: Sequence[int]) -> list[str]:
    """The stages a block quantized to ``ggml_type`` counts for: each output that wants it."""
    name = gguf.GGMLQuantizationType(ggml_type).name
    return [
        stage
        for label, target in zip(labels, targets, strict=True)
        if target == ggml_type
        for stage in (f"quantize {label}", f"quantize:{name} {label}")
    ]


def _materialize(tensor: Any) -> np.ndarray:
    """The bytes the converter would write for ``tensor`` (lazy, chunked or eager)."""
    if isinstance(tensor, gguf.LazyChunkedTensor):
        parts = []
        for load in tensor._chunks:
            chunk = load()
            if tensor._qtype is not None:
                chunk = gguf.quants.quantize(chunk, tensor._qtype)
            parts.append(np.ascontiguousarray(chunk).view(np.uint8).reshape(-1))
        return np.concatenate(parts) if parts else np.empty(0, np.uint8)
    if isinstance(tensor, gguf.LazyBase):
        tensor = type(tensor).to_eager(tensor)
    return np.ascontiguousarray(tensor).view(np.uint8).reshape(-1)


def _f32_blocks(
    tensor: Any, stored: Any, n_per_row: int, raw: np.ndarray | None = None
) -> Iterator[np.ndarray | DeferredBlock]:
    """The tensor as float32 rows, in blocks: the values its 16-bit GGUF would hold, exactly.

    ``raw``: the tensor's bytes in ``stored`` when already made (decoded instead of re-merged).
    """
    if raw is None and isinstance(tensor, gguf.LazyChunkedTensor):
        chunks = tensor._chunks
        exact = getattr(chunks, "exact_in", None) == stored
        for load in chunks:
            rows = np.asarray(load(), dtype=np.float32).reshape(-1, n_per_row)
            if not exact and stored != gguf.GGMLQuantizationType.F32:
                rows = gguf.quants.dequantize(gguf.quants.quantize(rows, stored), stored)
            yield from _split_rows(np.ascontiguousarray(rows, dtype=np.float32), n_per_row)
        return
    if raw is None:
        raw = _materialize(tensor)
    row_bytes = _row_nbytes(stored, n_per_row)
    rows_per_block = max(1, _BLOCK_VALUES // n_per_row)
    nrows = raw.nbytes // row_bytes
    for first in range(0, nrows, rows_per_block):
        part = raw[first * row_bytes : min(nrows, first + rows_per_block) * row_bytes]
        values = gguf.quants.dequantize(part.reshape(-1, row_bytes), stored)
        yield np.ascontiguousarray(values, dtype=np.float32).reshape(-1, n_per_row)


def _deferred_blocks(
    tensor: Any,
    stored: Any,
    n_per_row: int,
    nrows: int,
    raw: np.ndarray | None,
    pipeline: Pipeline,
) -> Iterator[np.ndarray | DeferredBlock] | None:
    """The tensor's blocks as loaders for the quantizer threads; None where that cannot be.

    Only for chunks already in their exact 16-bit values, each chunk exactly one block, with a
    ``prepare``. The blocks of the tensors before are finished first: a source may reuse their
    buffers (the merge's LoRA product) once this tensor is prepared.
    """
    if raw is not None or not isinstance(tensor, gguf.LazyChunkedTensor):
        return None
    chunks = tensor._chunks
    prepare = getattr(chunks, "prepare", None)
    if prepare is None or getattr(chunks, "exact_in", None) != stored:
        return None
    step = max(1, _BLOCK_VALUES // n_per_row)
    if len(chunks) != -(-nrows // step):
        return None
    pipeline.drain()
    with pipeline.times.timed("source"):
        prepare()
    return (
        DeferredBlock(load, min(step, nrows - index * step)) for index, load in enumerate(chunks)
    )


def _row_nbytes(stored: Any, n_per_row: int) -> int:
    block, type_size = gguf.GGML_QUANT_SIZES[stored]
    return int(n_per_row // block * type_size)


def _split_rows(rows: np.ndarray, n_per_row: int) -> Iterator[np.ndarray]:
    step = max(1, _BLOCK_VALUES // n_per_row)
    for first in range(0, rows.shape[0], step):
        yield rows[first : first + step]
