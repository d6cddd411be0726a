"""The merged model as the converter's tensor source, inside the conversion worker.

Why: llama.cpp's converter reads a model's tensors from its safetensors files; for an adapter
export the worker (``_convert_worker``) hands it the merged tensors instead, merged by
``merge.MergedTensors`` when the converter (or the quantizer threads) reach them, so merged
weights never go to disk. This module is that source: lazy tensors for the converter's index,
whole tensors checked against the promised shapes, and 2-D tensors streamed in row chunks; the
time spent reading files and merging is counted in the worker's ``StageTimes``.

Nothing here may import ``_convert_worker``: it runs as ``__main__``, and a second copy of it
would have its own ``WorkerError`` class.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from deploy_to_ollama.gguf.quantizer import StageTimes

#: Values per row chunk of a streamed tensor (1 MiB of float32; ``_fused_writer``'s block).
CHUNK_VALUES = 1 << 18


class WorkerError(Exception):
    """A failure the parent turns into a ``ConversionError`` with this hint.

    Defined here, beside the merged tensors whose mismatches raise it most, because this module
    must not import the worker (see above); the worker raises it too.
    """

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


class MergedSource:
    """The merged model by name (``merge.MergedTensors``), counting what is alive at once."""

    def __init__(self, spec: dict[str, Any], times: StageTimes) -> None:
        from deploy_to_ollama.inputs import resolve_input
        from deploy_to_ollama.merge import MergedTensors

        base = Path(spec["base"]) if spec.get("base") else None
        self.resolved = resolve_input(Path(spec["input"]), base=base)
        self._merged = MergedTensors(self.resolved)
        self._times = times
        self.requested: set[str] = set()
        self._alive = 0
        self.max_alive = 0
        self._reads = threading.local()
        self._time_reads()

    def _time_reads(self) -> None:
        """Count the merge's file reads as the "read" stage (the rest of a merge is "merge")."""
        reader = getattr(self._merged, "_read", None)
        if reader is None:
            return

        def timed_read(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return reader(*args, **kwargs)
            finally:
                seconds = time.perf_counter() - started
                self._times.add("read", seconds)
                self._reads.seconds = self._thread_reads() + seconds

        self._merged._read = timed_read  # type: ignore[method-assign]

    def _thread_reads(self) -> float:
        """Read seconds of this thread so far (the merge's own time is its time minus these)."""
        return float(getattr(self._reads, "seconds", 0.0))

    @contextlib.contextmanager
    def _timed_merge(self) -> Iterator[None]:
        """Count the block's time as "merge", less the reads inside it (counted as "read")."""
        reads = self._thread_reads()
        with self._times.timed("merge"):
            yield
        self._times.add("merge", reads - self._thread_reads())

    def names(self) -> list[str]:
        return self._merged.names()

    def load(self, name: str, shape: tuple[int, ...]) -> Any:
        """One merged tensor, checked against the shape the converter was promised.

        Before a whole tensor is merged, the row readers' LoRA product buffer is dropped (freed
        once the quantizer threads finish their rows of it): next to the converter's own copies
        of a whole tensor (permuted, float32, rounded) it made the peak of memory.
        """
        self._merged.release_buffers()
        with self._timed_merge():
            tensor = self._merged[name]
        if tuple(tensor.shape) != shape:
            raise WorkerError(
                f"merged tensor {name} has shape {tuple(tensor.shape)}, expected {shape}",
                "the adapter does not fit this base model; check --base",
            )
        self.requested.add(name)
        self._alive += 1
        self.max_alive = max(self.max_alive, self._alive)
        weakref.finalize(tensor, self._released)
        return tensor

    def _released(self) -> None:
        self._alive -= 1

    def row_chunks(self, name: str, shape: tuple[int, ...], dtype: Any) -> Any:
        """A 2-D tensor as float32 row chunks, loaded when the writer reaches it.

        Why: the converter turns a whole tensor into float32 and then into its output type, so a
        32000x2048 embedding briefly costs over 1 GB; chunks of ~4 MiB cost a few. Unchanged
        tensors are read row by row and LoRA-merged ones add the base rows to their fp32 delta
        row by row (``MergedTensors.row_reader``); other merged tensors are loaded whole.
        """
        import torch

        from deploy_to_ollama.gguf._fused_writer import SourceChunks, gguf

        rows_per_chunk = max(1, CHUNK_VALUES // max(1, shape[1]))
        held: dict[str, Callable[[int, int], Any]] = {}

        def reader() -> Callable[[int, int], Any]:
            with self._timed_merge():  # the fp32 LoRA product, when there is one
                found = self._merged.row_reader(name)
            if found is not None:
                self.requested.add(name)
                return found
            tensor = self.load(name, shape)  # times its own read and merge
            return lambda first, count: tensor[first : first + count]

        def prepare() -> None:
            if "rows" not in held:
                held["rows"] = reader()

        def chunk(first: int) -> Any:
            prepare()  # done already when the quantizer threads load the chunks
            with self._timed_merge():
                rows = held["rows"](first, rows_per_chunk)
            if tuple(rows.shape[1:]) != shape[1:]:
                raise WorkerError(
                    f"merged tensor {name} has rows of shape {tuple(rows.shape[1:])},"
                    f" expected {shape[1:]}",
                    "the adapter does not fit this base model; check --base",
                )
            return rows.to(torch.float32).numpy()

        # The reader (and a whole merged tensor, where one is loaded) lives as long as the
        # writer's job for this tensor, which the pipeline drops when the tensor is written.
        chunks = SourceChunks(
            functools.partial(chunk, first) for first in range(0, shape[0], rows_per_chunk)
        )
        chunks.prepare = prepare
        chunks.exact_in = {
            torch.bfloat16: gguf.GGMLQuantizationType.BF16,
            torch.float16: gguf.GGMLQuantizationType.F16,
            torch.float32: gguf.GGMLQuantizationType.F32,
        }.get(dtype)
        return gguf.LazyChunkedTensor(chunks, shape, np.float32)

    def close(self) -> None:
        self._merged.close()


def merged_index(
    source: MergedSource, conversion: Any, filter_tensors: Callable[..., Any]
) -> dict[str, Callable[[], Any]]:
    """Index the merged model's tensors as lazy tensors that merge when they are evaluated."""
    import torch

    from deploy_to_ollama.merge import merged_tensor_specs

    lazy_cls = conversion.LazyTorchTensor
    index: dict[str, Callable[[], Any]] = {}
    for name, (shape, dtype_name) in merged_tensor_specs(source.resolved).items():
        dtype = getattr(torch, dtype_name)

        def load(_: object, name: str = name, shape: tuple[int, ...] = shape) -> Any:
            return source.load(name, shape).contiguous()

        def gen(
            shape: tuple[int, ...] = shape,
            dtype: Any = dtype,
            load: Callable[..., Any] = load,
            name: str = name,
        ) -> Any:
            # Defaults bind this iteration's values: the converter calls gen() after the loop.
            meta = lazy_cls.meta_with_dtype_and_shape(dtype, shape)
            tensor = lazy_cls(meta=meta, args=(None,), func=load)
            tensor.dto_source = (name, shape, dtype)
            return tensor

        if item := filter_tensors((name, gen)):
            index[item[0]] = item[1]
    return index
