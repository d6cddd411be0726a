"""Inside the converter worker: write the final quantized GGUF in one pass, tensor by tensor.

The usual route is converter → 16-bit GGUF on disk → ``llama-quantize`` → quantized GGUF. Here
the converter's writer is re-planned before it writes: every tensor gets the type llama-quantize
would give it (llama.cpp's own rules, through ``quantizer.QuantLibrary``), tensors are put in
llama.cpp's order, and each one is quantized by ggml's kernels on a thread pool while the next
one is being merged. The 16-bit values each tensor is quantized from are exactly those the
16-bit GGUF would hold, so the file is byte for byte what the two-step route writes.

This module imports the toolchain's vendored ``gguf`` package: it runs only in the worker.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .quantizer import ModelShape, QuantLibrary, TensorSpec, llama_cpp_order

logger = logging.getLogger(__name__)

#: The toolchain's vendored gguf-py: newer than the PyPI ``gguf`` mypy sees, hence ``Any``.
gguf: Any = importlib.import_module("gguf")
GGUFValue: Any = gguf.gguf_writer.GGUFValue
TensorInfo: Any = gguf.gguf_writer.TensorInfo

#: float32 values per block handed to the quantizer threads (4 MiB; llama-quantize uses 16K-value
#: chunks, we hand bigger ones because each call also costs a Python round trip).
_BLOCK_VALUES = 1 << 20
#: Finished tensors waiting for the writer: one, so merging runs one tensor ahead of writing.
_QUEUE_DEPTH = 1


class SourceChunks(list[Callable[[], Any]]):
    """Row-chunk loaders of a tensor the converter passes through unchanged.

    ``exact_in`` names the GGML type the values are already exactly representable in (the merged
    tensor's own dtype), so rounding them to that type again can be skipped.
    """

    exact_in: Any = None


@dataclass(frozen=True, slots=True)
class QuantPlan:
    """What to quantize to: llama.cpp's file type and the per-role overrides."""

    ftype: int
    output_type: int | None = None
    token_embedding_type: int | None = None
    threads: int = 0


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


def plan_quantized_write(writer: Any, plan: QuantPlan, library: QuantLibrary) -> dict[str, int]:
    """Re-plan ``writer`` so ``write_tensors_to_file`` writes the quantized GGUF.

    Returns the number of tensors per final GGML type name, for the report.
    """
    if len(writer.tensors) != 1:
        raise ValueError("split GGUF output cannot be quantized in-process")
    tensors: dict[str, Any] = writer.tensors[0]
    order = llama_cpp_order(list(tensors))
    specs = [
        TensorSpec(
            name, tuple(int(d) for d in reversed(tensors[name].shape)), int(tensors[name].dtype)
        )
        for name in order
    ]
    types = library.plan(
        model_shape(writer),
        specs,
        plan.ftype,
        output_type=plan.output_type,
        token_embedding_type=plan.token_embedding_type,
    )
    pipeline = _Pipeline(library, plan.threads or os.cpu_count() or 1)
    replanned: dict[str, Any] = {}
    counts: dict[str, int] = {}
    for spec, new_type in zip(specs, types, strict=True):
        info = tensors[spec.name]
        job, nbytes = _job(info, spec, new_type, library, pipeline)
        qtype = gguf.GGMLQuantizationType(new_type)
        counts[qtype.name] = counts.get(qtype.name, 0) + 1
        replanned[spec.name] = TensorInfo(
            shape=info.shape, dtype=qtype, nbytes=nbytes, tensor=_Piped(pipeline, spec.name, nbytes)
        )
        pipeline.add(spec.name, job)
    writer.tensors[0] = replanned
    # llama-quantize sets these two last (gguf_set_val_* removes a key and appends it).
    kv = writer.kv_data[0]
    for key, value in (
        (gguf.Keys.General.QUANTIZATION_VERSION, gguf.GGML_QUANT_VERSION),
        (gguf.Keys.General.FILE_TYPE, plan.ftype),
    ):
        kv.pop(key, None)
        kv[key] = GGUFValue(value, gguf.GGUFValueType.UINT32)
    pipeline.start()
    return counts


def _job(
    info: Any, spec: TensorSpec, new_type: int, library: QuantLibrary, pipeline: _Pipeline
) -> tuple[Callable[[], np.ndarray], int]:
    """The function producing a tensor's final bytes, and their count."""
    if new_type == spec.ggml_type:
        return (lambda: _materialize(info.tensor)), int(info.nbytes)
    n_per_row = spec.ne[0]
    nrows = int(np.prod(spec.ne[1:])) if len(spec.ne) > 1 else 1
    nbytes = nrows * library.row_size(new_type, n_per_row)

    def quantize() -> np.ndarray:
        blocks = _f32_blocks(info.tensor, gguf.GGMLQuantizationType(spec.ggml_type), n_per_row)
        return pipeline.quantize(new_type, blocks, nrows, n_per_row, nbytes)

    return quantize, nbytes


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


def _f32_blocks(tensor: Any, stored: Any, n_per_row: int) -> Iterator[np.ndarray]:
    """The tensor as float32 rows, in blocks: the values its 16-bit GGUF would hold, exactly."""
    if isinstance(tensor, gguf.LazyChunkedTensor):
        chunks = tensor._chunks
        exact = getattr(chunks, "exact_in", None) == stored
        for load in chunks:
            rows = np.asarray(load(), dtype=np.float32).reshape(-1, n_per_row)
            if not exact and stored != gguf.GGMLQuantizationType.F32:
                rows = gguf.quants.dequantize(gguf.quants.quantize(rows, stored), stored)
            yield from _split_rows(np.ascontiguousarray(rows, dtype=np.float32), n_per_row)
        return
    raw = _materialize(tensor)
    row_bytes = _row_nbytes(stored, n_per_row)
    rows_per_block = max(1, _BLOCK_VALUES // n_per_row)
    nrows = raw.nbytes // row_bytes
    for first in range(0, nrows, rows_per_block):
        part = raw[first * row_bytes : min(nrows, first + rows_per_block) * row_bytes]
        values = gguf.quants.dequantize(part.reshape(-1, row_bytes), stored)
        yield np.ascontiguousarray(values, dtype=np.float32).reshape(-1, n_per_row)


def _row_nbytes(stored: Any, n_per_row: int) -> int:
    block, type_size = gguf.GGML_QUANT_SIZES[stored]
    return int(n_per_row // block * type_size)


def _split_rows(rows: np.ndarray, n_per_row: int) -> Iterator[np.ndarray]:
    step = max(1, _BLOCK_VALUES // n_per_row)
    for first in range(0, rows.shape[0], step):
        yield rows[first : first + step]


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
        return trim
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _load_malloc_trim()


def _release_free_memory() -> None:
    """Give freed heap pages back to the OS between tensors.

    Why: glibc keeps freed blocks below its mmap threshold (which grows to 32 MiB) in the heap,
    and the heap of a thread that merged one tensor rarely fits the next one's sizes, so without
    a trim the resident size creeps up by tens of MB per layer.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class _Piped:
    """Stands in for a tensor in the converter's writer; its bytes come from the pipeline."""

    def __init__(self, pipeline: _Pipeline, name: str, nbytes: int) -> None:
        self._pipeline = pipeline
        self.name = name
        self.nbytes = nbytes

    def tofile(self, fout: Any) -> None:
        data = self._pipeline.take(self.name)
        if data.nbytes != self.nbytes:
            raise ValueError(f"{self.name}: produced {data.nbytes} bytes, planned {self.nbytes}")
        data.tofile(fout)


class _Pipeline:
    """Produces tensors in write order on a background thread, one ahead of the writer.

    The producer merges and converts a tensor (torch and numpy release the GIL in their loops)
    while quantizer threads (ctypes releases it too) work on the tensor before, so the merge,
    the quantization and the disk writes overlap on every core.
    """

    def __init__(self, library: QuantLibrary, threads: int) -> None:
        self._library = library
        self._threads = max(1, threads)
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="dto-quantize")
        self._jobs: deque[tuple[str, Callable[[], np.ndarray]]] = deque()
        self._last = ""
        self._done: queue.Queue[tuple[str, np.ndarray | BaseException]] = queue.Queue(_QUEUE_DEPTH)
        self._producer = threading.Thread(target=self._produce, name="dto-merge", daemon=True)
        self._stopping = threading.Event()

    def add(self, name: str, job: Callable[[], np.ndarray]) -> None:
        self._jobs.append((name, job))
        self._last = name

    def start(self) -> None:
        self._producer.start()

    def _produce(self) -> None:
        while self._jobs and not self._stopping.is_set():
            # Popped, not iterated: a finished job's closure (and the lazy tensors it evaluated,
            # which cache their values) must be freed before the next one runs.
            name, job = self._jobs.popleft()
            try:
                result: np.ndarray | BaseException = job()
            except BaseException as err:  # handed to the writer thread, which raises it
                result = err
            del job
            _release_free_memory()
            self._done.put((name, result))
            if isinstance(result, BaseException):
                return

    def take(self, name: str) -> np.ndarray:
        """The next finished tensor, which must be ``name`` (the writer's order is ours)."""
        got, result = self._done.get()
        if isinstance(result, BaseException):
            self.close()
            raise result
        if got != name:
            raise ValueError(f"pipeline produced {got}, the writer wants {name}")
        if got == self._last:
            self.close()
        return result

    def quantize(
        self, ggml_type: int, blocks: Iterator[np.ndarray], nrows: int, n_per_row: int, nbytes: int
    ) -> np.ndarray:
        """Quantize float32 row blocks into one buffer, ``threads`` blocks at a time."""
        out = np.empty(nbytes, dtype=np.uint8)
        row_bytes = nbytes // nrows
        pending: deque[Future[None]] = deque()
        row = 0
        for rows in blocks:
            count = rows.shape[0]
            target = out[row * row_bytes : (row + count) * row_bytes]
            pending.append(self._pool.submit(self._library.quantize_rows, ggml_type, rows, target))
            row += count
            while len(pending) > 2 * self._threads:
                pending.popleft().result()
        for future in pending:
            future.result()
        if row != nrows:
            raise ValueError(f"quantized {row} rows of {nrows}")
        return out

    def close(self) -> None:
        self._stopping.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
