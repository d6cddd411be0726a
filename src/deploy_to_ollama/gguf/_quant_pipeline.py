"""Inside the converter worker: the thread pipeline that quantizes tensors ahead of the writer.

``_fused_writer`` plans the quantized files and writes them; this module runs the work: one
producer thread walks the tensors in write order, quantizer threads (ctypes releases the GIL)
quantize their row blocks, and for sources that allow it load and merge the rows themselves
(``DeferredBlock``); the writer takes each tensor's pieces in order. It also tunes glibc so
the freed blocks go back to the OS. No toolchain import: plain numpy, threads and ctypes.
"""

from __future__ import annotations

import ctypes
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np

from .quantizer import QuantLibrary, StageTimes

#: Pieces (one block of rows, for every output file) on their way to the writer, quantized or
#: being quantized, per quantizer thread. Bounds memory to a few blocks whatever the tensor size.
_PIECES_PER_THREAD = 2

#: One piece of a tensor's bytes for each output file, in file order: bytes made, bytes being
#: quantized, or None (nothing for that file in this piece).
Piece = list["np.ndarray | Future[np.ndarray] | None"]


@dataclass(frozen=True, slots=True)
class DeferredBlock:
    """A block of float32 rows that a quantizer thread loads itself (``SourceChunks.prepare``)."""

    load: Callable[[], Any]
    rows: int


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
        return trim
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _load_malloc_trim()
#: glibc's ``mallopt`` parameter for the size from which blocks are mapped on their own.
_M_MMAP_THRESHOLD = -3
#: Allocations from this size up get pages of their own, returned to the OS when freed.
_MMAP_THRESHOLD_BYTES = 4 << 20


def map_large_allocations() -> None:
    """Have glibc map every allocation of 4 MiB or more on its own (glibc only; else nothing).

    Why: glibc raises its threshold to the largest block freed so far (up to 32 MiB), so the
    whole-tensor copies of a merge (8-16 MB at 1B: merged, permuted, float32) land in the heap
    and stay resident next to the next tensor's; mapped, they are returned as they are freed
    (about 40 MB lower peak at 1B). The row blocks (1 MiB of float32) stay below the threshold,
    so the page faults this costs are few.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return
    mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)


def release_free_memory() -> None:
    """Give freed heap pages back to the OS between tensors.

    Why: glibc keeps freed blocks below its mmap threshold (which grows to 32 MiB) in the heap,
    and the heap of a thread that merged one tensor rarely fits the next one's sizes, so without
    a trim the resident size creeps up by tens of MB per layer.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class Pipeline:
    """Produces tensors in write order on a background thread, ahead of the writer.

    The producer merges and converts a tensor (torch and numpy release the GIL in their loops)
    and hands its row blocks to quantizer threads (ctypes releases it too), going on to the next
    block, and the next tensor, while they work; the writer takes the pieces in order as they
    finish. So the merge, the quantization and the disk writes overlap on every core, and at most
    ``_PIECES_PER_THREAD`` blocks per thread are in memory, whatever the size of the tensor.
    """

    def __init__(self, library: QuantLibrary, threads: int, times: StageTimes) -> None:
        self._library = library
        self._threads = max(1, threads)
        self.times = times
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="dto-quantize")
        self._jobs: deque[tuple[str, Callable[[], Iterator[Piece]]]] = deque()
        self._last = ""
        # Items: (name, piece), (name, None) when the tensor is complete, or (name, error).
        self._done: queue.Queue[tuple[str, Piece | BaseException | None]] = queue.Queue(
            _PIECES_PER_THREAD * self._threads
        )
        self._producer = threading.Thread(target=self._produce, name="dto-merge", daemon=True)
        self._stopping = threading.Event()
        self._submitted: deque[Future[Any]] = deque()

    def add(self, name: str, job: Callable[[], Iterator[Piece]]) -> None:
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
                for piece in job():
                    self._put(name, piece)
                    if self._stopping.is_set():
                        return
            except BaseException as err:  # handed to the writer thread, which raises it
                self._put(name, err)
                return
            del job
            release_free_memory()
            self._put(name, None)

    def _put(self, name: str, item: Piece | BaseException | None) -> None:
        """Queue ``item`` for the writer; give up when the writer has stopped taking."""
        while not self._stopping.is_set():
            try:
                self._done.put((name, item), timeout=0.5)
                return
            except queue.Full:
                continue

    def take(self, name: str) -> Iterator[Piece]:
        """The pieces of the next tensor, which must be ``name`` (the writer's order is ours)."""
        while True:
            got, item = self._done.get()
            if isinstance(item, BaseException):
                self.close()
                raise item
            if got != name:
                self.close()
                raise ValueError(f"pipeline produced {got}, the writer wants {name}")
            if item is None:
                break
            yield item
        if got == self._last:
            self.close()

    def drain(self) -> None:
        """Wait until every block handed to the quantizer threads so far is done (or failed).

        Timed as ``drain``: the producer's wall seconds spent waiting there (the threads work
        meanwhile, but the next tensor's merge cannot start).
        """
        with self.times.timed("drain"):
            wait(self._submitted)
        self._submitted.clear()

    def _submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        while self._submitted and self._submitted[0].done():
            self._submitted.popleft()
        future = self._pool.submit(fn, *args)
        self._submitted.append(future)
        return future

    def quantize(
        self,
        types: Sequence[int],
        blocks: Iterator[np.ndarray | DeferredBlock],
        nrows: int,
        n_per_row: int,
        sizes: Mapping[int, int],
        stages: Mapping[int, Sequence[str]],
    ) -> Iterator[dict[int, Future[np.ndarray]]]:
        """Hand float32 row blocks to the quantizer threads, one future per type and block.

        Each block is produced once and handed to every type; ``stages[type]`` get the
        quantizer-thread seconds of that type. A ``DeferredBlock`` is loaded by the quantizer
        thread that then quantizes it to every type.
        """
        row_bytes = {t: sizes[t] // nrows for t in types}
        row = 0
        while True:
            with self.times.timed("source"):
                rows = next(blocks, None)
            if rows is None:
                break
            if isinstance(rows, DeferredBlock):
                row += rows.rows
                futures: dict[int, Future[np.ndarray]] = {t: Future() for t in types}
                self._submit(self._load_and_quantize, rows, n_per_row, row_bytes, stages, futures)
                yield futures
                continue
            row += rows.shape[0]
            yield {
                t: self._submit(self._quantize_rows, t, rows, row_bytes[t], stages[t])
                for t in types
            }
        if row != nrows:
            raise ValueError(f"quantized {row} rows of {nrows}")

    def _load_and_quantize(
        self,
        block: DeferredBlock,
        n_per_row: int,
        row_bytes: Mapping[int, int],
        stages: Mapping[int, Sequence[str]],
        futures: Mapping[int, Future[np.ndarray]],
    ) -> None:
        """Load one deferred block and quantize it to each type, settling each type's future."""
        try:
            with self.times.timed("source"):
                rows = np.ascontiguousarray(block.load(), dtype=np.float32)
            if rows.shape != (block.rows, n_per_row):
                raise ValueError(f"a block of {rows.shape} rows, expected ({block.rows}, ...)")
            for ggml_type, future in futures.items():
                made = self._quantize_rows(ggml_type, rows, row_bytes[ggml_type], stages[ggml_type])
                future.set_result(made)
        except BaseException as err:
            for future in futures.values():
                if not future.done():
                    future.set_exception(err)

    def _quantize_rows(
        self, ggml_type: int, rows: np.ndarray, row_bytes: int, stages: Sequence[str]
    ) -> np.ndarray:
        """Quantize one block; add the CPU seconds this thread spent on it to ``stages``.

        CPU time, not wall: a quantizer thread does nothing but compute, so on a shared machine
        its wall time would count the other processes' turns on the core as ours.
        """
        started = time.thread_time()
        out = np.empty(rows.shape[0] * row_bytes, dtype=np.uint8)
        self._library.quantize_rows(ggml_type, rows, out)
        seconds = time.thread_time() - started
        for stage in stages:
            self.times.add(stage, seconds)
        return out

    def close(self) -> None:
        self._stopping.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
