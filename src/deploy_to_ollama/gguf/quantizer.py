"""llama.cpp's quantizer in-process: its per-tensor type choice and ggml's quantization kernels.

Why in-process: ``llama-quantize`` needs the whole 16-bit GGUF on disk before it starts, so an
export writes and re-reads every weight twice and quantizes only after converting. Calling the
same C code from the converter's writer (see ``_fused_writer``) quantizes each tensor as soon as
it is merged, while the next one is being merged, and writes only the final file.

Nothing is re-implemented here: the type of every tensor comes from llama.cpp's
``llama_quant_compute_types`` (the rules llama-quantize applies) and the bytes from
``ggml_quantize_chunk`` (the function llama-quantize calls). The library is linked by ``setup``
from the same build as ``llama-quantize`` (``toolchain.QUANT_LIBRARY``).
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..errors import ConversionError, InvalidWeightsError

_MAX_DIMS = 4
#: ggml's type ids (``enum ggml_type``) of the types our AVX2 kernels compute.
GGML_TYPE_Q3_K = 11
GGML_TYPE_Q4_K = 12
GGML_TYPE_Q5_K = 13
GGML_TYPE_Q6_K = 14


@dataclass(frozen=True, slots=True)
class ModelShape:
    """The hyper-parameters llama.cpp's type rules look at (``llama_quant_model_desc``)."""

    architecture: str
    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_expert: int = 0
    n_embd_head_k: int = 0
    n_embd_head_v: int = 0


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One tensor as llama.cpp sees it: GGUF name, ggml dims (``ne[0]`` = row length), type."""

    name: str
    ne: tuple[int, ...]
    ggml_type: int


class StageTimes:
    """Busy seconds per stage of one converter run (read, merge, quantize per type, write ...).

    Why busy time and not wall time: the stages overlap (the next tensor is merged while this one
    is quantized on other threads), so each stage's seconds are summed over the threads that ran
    it, and together they exceed the run's wall time. Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._seconds[stage] = self._seconds.get(stage, 0.0) + seconds

    def get(self, stage: str) -> float:
        with self._lock:
            return self._seconds.get(stage, 0.0)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the time the block takes to ``stage``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - started)

    def snapshot(self) -> dict[str, float]:
        """Seconds per stage, rounded to milliseconds.

        >>> times = StageTimes()
        >>> times.add("read", 0.25); times.add("read", 0.5)
        >>> times.snapshot()
        {'read': 0.75}
        """
        with self._lock:
            return {stage: round(seconds, 3) for stage, seconds in self._seconds.items()}


class _InitParams(ctypes.Structure):
    _fields_ = (
        ("mem_size", ctypes.c_size_t),
        ("mem_buffer", ctypes.c_void_p),
        ("no_alloc", ctypes.c_bool),
    )


class _ModelDesc(ctypes.Structure):
    _fields_ = (
        ("architecture", ctypes.c_char_p),
        ("n_embd", ctypes.c_uint32),
        ("n_ff", ctypes.c_uint32),
        ("n_layer", ctypes.c_uint32),
        ("n_head", ctypes.c_uint32),
        ("n_head_kv", ctypes.c_uint32),
        ("n_expert", ctypes.c_uint32),
        ("n_embd_head_k", ctypes.c_uint32),
        ("n_embd_head_v", ctypes.c_uint32),
    )


class _QuantizeParams(ctypes.Structure):
    """``llama_model_quantize_params`` of the pinned llama.cpp (include/llama.h)."""

    _fields_ = (
        ("nthread", ctypes.c_int32),
        ("ftype", ctypes.c_int),
        ("output_tensor_type", ctypes.c_int),
        ("token_embedding_type", ctypes.c_int),
        ("allow_requantize", ctypes.c_bool),
        ("quantize_output_tensor", ctypes.c_bool),
        ("only_copy", ctypes.c_bool),
        ("pure", ctypes.c_bool),
        ("keep_split", ctypes.c_bool),
        ("dry_run", ctypes.c_bool),
        ("imatrix", ctypes.c_void_p),
        ("kv_overrides", ctypes.c_void_p),
        ("tt_overrides", ctypes.c_void_p),
        ("prune_layers", ctypes.c_void_p),
        ("max_buf_size", ctypes.c_size_t),
    )


#: llama-ext.h declares its functions without ``extern "C"``: these are their Itanium-mangled
#: names in the pinned llama.cpp (``nm -D libdto-llama.so``).
CXX_SYMBOLS: dict[str, str] = {
    "llama_quant_init": "_Z16llama_quant_initPK11llama_modelPK27llama_model_quantize_params",
    "llama_quant_free": "_Z16llama_quant_freeP19quantize_state_impl",
    "llama_quant_model_from_metadata": (
        "_Z31llama_quant_model_from_metadataPK22llama_quant_model_desc"
    ),
    "llama_quant_tensor_allows_quantization": (
        "_Z38llama_quant_tensor_allows_quantizationPK19quantize_state_implPK11ggml_tensor"
    ),
    "llama_quant_compute_types": (
        "_Z25llama_quant_compute_typesP19quantize_state_impl11llama_ftypePP11ggml_tensorP9ggml_typem"
    ),
}


def _declare(lib: ctypes.CDLL) -> dict[str, Any]:
    """Argument and result types of every function we call (ctypes defaults to int)."""
    c = ctypes
    table: dict[str, tuple[Any, list[Any]]] = {
        "ggml_init": (c.c_void_p, [_InitParams]),
        "ggml_free": (None, [c.c_void_p]),
        "ggml_tensor_overhead": (c.c_size_t, []),
        "ggml_new_tensor": (c.c_void_p, [c.c_void_p, c.c_int, c.c_int, c.POINTER(c.c_int64)]),
        "ggml_set_name": (c.c_void_p, [c.c_void_p, c.c_char_p]),
        "ggml_row_size": (c.c_size_t, [c.c_int, c.c_int64]),
        "ggml_quantize_init": (None, [c.c_int]),
        "ggml_quantize_chunk": (
            c.c_size_t,
            [c.c_int, c.c_void_p, c.c_void_p, c.c_int64, c.c_int64, c.c_int64, c.c_void_p],
        ),
        "ggml_validate_row_data": (c.c_bool, [c.c_int, c.c_void_p, c.c_size_t]),
        "llama_model_quantize_default_params": (_QuantizeParams, []),
        "llama_quant_model_from_metadata": (c.c_void_p, [c.POINTER(_ModelDesc)]),
        "llama_model_free": (None, [c.c_void_p]),
        "llama_quant_init": (c.c_void_p, [c.c_void_p, c.POINTER(_QuantizeParams)]),
        "llama_quant_free": (None, [c.c_void_p]),
        "llama_quant_tensor_allows_quantization": (c.c_bool, [c.c_void_p, c.c_void_p]),
        "llama_quant_compute_types": (
            None,
            [c.c_void_p, c.c_int, c.POINTER(c.c_void_p), c.POINTER(c.c_int), c.c_size_t],
        ),
    }
    functions: dict[str, Any] = {}
    for name, (restype, argtypes) in table.items():
        function = getattr(lib, CXX_SYMBOLS.get(name, name))
        function.restype = restype
        function.argtypes = argtypes
        functions[name] = function
    return functions


class QuantLibrary:
    """The toolchain's ``libdto-llama.so``: type planning and row quantization.

    Quantization calls release the GIL (ctypes does for every foreign call), so several threads
    quantize different rows of a tensor at once, as llama-quantize's worker threads do.
    """

    def __init__(self, path: Path, kernel: Path | None = None) -> None:
        try:
            self._lib = SimpleNamespace(**_declare(ctypes.CDLL(str(path))))
        except (OSError, AttributeError) as err:
            raise ConversionError(
                f"cannot load the quantizer library {path}: {err}",
                hint="rerun `deploy-to-ollama setup --force`",
            ) from err
        self.path = path
        self._kernels = _load_kernels(kernel) if kernel else {}

    @property
    def has_kernel(self) -> bool:
        """True when K-quants go through our AVX2 kernels instead of ggml's scalar code."""
        return bool(self._kernels)

    @property
    def kernel_types(self) -> frozenset[int]:
        """The GGML types our AVX2 kernels compute here (an older kernel may lack Q3_K, Q6_K)."""
        return frozenset(self._kernels)

    def row_size(self, ggml_type: int, n_per_row: int) -> int:
        """Bytes of one quantized row of ``n_per_row`` values."""
        return int(self._lib.ggml_row_size(ggml_type, n_per_row))

    def plan(
        self,
        shape: ModelShape,
        tensors: Sequence[TensorSpec],
        ftype: int,
        *,
        output_type: int | None = None,
        token_embedding_type: int | None = None,
    ) -> list[int]:
        """The ggml type llama-quantize would give each tensor, in the order given.

        The order matters as it does for llama-quantize (layer counters advance per tensor):
        pass tensors in llama.cpp's order (``llama_cpp_order``).
        """
        lib = self._lib
        params = lib.llama_model_quantize_default_params()
        params.ftype = ftype
        if output_type is not None:
            params.output_tensor_type = output_type
        if token_embedding_type is not None:
            params.token_embedding_type = token_embedding_type
        desc = _ModelDesc(
            shape.architecture.encode(),
            shape.n_embd,
            shape.n_ff,
            shape.n_layer,
            shape.n_head,
            shape.n_head_kv,
            shape.n_expert,
            shape.n_embd_head_k or shape.n_embd // max(1, shape.n_head),
            shape.n_embd_head_v or shape.n_embd // max(1, shape.n_head),
        )
        overhead = int(lib.ggml_tensor_overhead())
        pool = _InitParams(mem_size=overhead * (len(tensors) + 8), mem_buffer=None, no_alloc=True)
        ctx = lib.ggml_init(pool)
        model = lib.llama_quant_model_from_metadata(ctypes.byref(desc))
        state = lib.llama_quant_init(model, ctypes.byref(params))
        try:
            handles = [self._new_tensor(ctx, spec) for spec in tensors]
            allowed = [
                i
                for i, h in enumerate(handles)
                if lib.llama_quant_tensor_allows_quantization(state, h)
            ]
            chosen = (ctypes.c_int * max(1, len(allowed)))()
            picked = (ctypes.c_void_p * max(1, len(allowed)))(*(handles[i] for i in allowed))
            lib.llama_quant_compute_types(state, ftype, picked, chosen, len(allowed))
            types = [spec.ggml_type for spec in tensors]
            for slot, index in enumerate(allowed):
                types[index] = int(chosen[slot])
            return types
        finally:
            lib.llama_quant_free(state)
            lib.llama_model_free(model)
            lib.ggml_free(ctx)

    def _new_tensor(self, ctx: int, spec: TensorSpec) -> int:
        if not 1 <= len(spec.ne) <= _MAX_DIMS:
            raise ConversionError(f"tensor {spec.name} has {len(spec.ne)} dims", hint=None)
        dims = (ctypes.c_int64 * len(spec.ne))(*spec.ne)
        handle = int(self._lib.ggml_new_tensor(ctx, spec.ggml_type, len(spec.ne), dims))
        self._lib.ggml_set_name(handle, spec.name.encode())
        return handle

    def quantize_rows(self, ggml_type: int, rows: Any, out: Any) -> None:
        """Quantize the float32 C-contiguous 2-D array ``rows`` into the uint8 array ``out``.

        Raises:
            ConversionError: the result failed ggml's validation (NaN or inf in the weights).
        """
        nrows, n_per_row = rows.shape
        kernel = self._kernels.get(ggml_type)
        if kernel is not None and n_per_row % 256 == 0:
            size = int(kernel(rows.ctypes.data, out.ctypes.data, rows.size))
        else:
            size = int(
                self._lib.ggml_quantize_chunk(
                    ggml_type, rows.ctypes.data, out.ctypes.data, 0, nrows, n_per_row, None
                )
            )
        if size != out.nbytes or not self._lib.ggml_validate_row_data(
            ggml_type, out.ctypes.data, size
        ):
            raise InvalidWeightsError(
                "quantized data failed validation (the weights hold NaN or inf)",
                hint="check the fine-tune for diverged weights",
            )


def _load_kernels(path: Path) -> dict[int, Any]:
    """GGML type → our kernel's quantize function; empty when they cannot run on this CPU."""
    try:
        library = ctypes.CDLL(str(path))
    except OSError:
        return {}
    library.dto_kquants_supported.restype = ctypes.c_int
    if not library.dto_kquants_supported():
        return {}
    kernels: dict[int, Any] = {}
    for ggml_type, name in (
        (GGML_TYPE_Q3_K, "dto_quantize_q3_k"),
        (GGML_TYPE_Q4_K, "dto_quantize_q4_k"),
        (GGML_TYPE_Q5_K, "dto_quantize_q5_k"),
        (GGML_TYPE_Q6_K, "dto_quantize_q6_k"),
    ):
        # A kernel compiled from an older source lacks the newer types: ggml computes those.
        function = getattr(library, name, None)
        if function is None:
            continue
        function.restype = ctypes.c_size_t
        function.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        kernels[ggml_type] = function
    return kernels


def llama_cpp_order(names: Sequence[str]) -> list[str]:
    """Tensor names in the order llama.cpp's loader (and so llama-quantize) writes them.

    Non-layer tensors first, then layer by layer; by name within each (``weight_name_comparer``
    in llama-model-loader.h).

    >>> llama_cpp_order(["blk.10.a", "token_embd.weight", "blk.2.b", "blk.2.a", "output.weight"])
    ['output.weight', 'token_embd.weight', 'blk.2.a', 'blk.2.b', 'blk.10.a']
    """

    def key(name: str) -> tuple[int, str]:
        layer = -1
        if name.startswith("blk."):
            digits = name[4:].split(".", 1)[0]
            if digits.isdigit():
                layer = int(digits)
        return layer, name

    return sorted(names, key=key)
