"""Child process that runs llama.cpp's converter with our tensors and our metadata.

Run as ``python -m deploy_to_ollama.gguf._convert_worker SPEC.json``. It imports the vendored
converter (``conversion/`` + ``gguf-py``) of the toolchain and:

* feeds it merged tensors streamed from ``deploy_to_ollama.merge.iter_merged_tensors`` instead of
  reading safetensors, so an adapter export never writes merged weights to disk first;
* names the pre-tokenizer from ``tokenizer.json`` when the converter's hash check rejects it;
* writes ``general.name``, ``tokenizer.chat_template`` and eos/eot ids explicitly.
* with ``quantize`` (and ``more_outputs``), writes quantized GGUFs instead of the converter's
  file, all of them in this one run (``_fused_writer``), and reports per-stage timings.

It is a separate process because the converter mutates ``sys.path`` and global logging, and so
that an interrupted conversion never leaves state behind in the caller. Failures are reported as
JSON in ``SPEC.error.json`` and exit code 2.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from deploy_to_ollama.gguf.quantizer import StageTimes

logger = logging.getLogger("deploy_to_ollama.gguf.convert")

#: Config keys the converter needs → the names newer transformers save them under.
HPARAM_ALIASES: dict[str, tuple[str, ...]] = {"n_ctx": ("n_positions", "max_position_embeddings")}
#: Stdout lines starting with this carry ``DONE TOTAL`` tensors written (other output is ignored).
PROGRESS_PREFIX = "@@dto-progress "
#: Stdout lines starting with this name the stage the worker entered.
STAGE_PREFIX = "@@dto-stage "
_STAGE = {"name": "convert"}
#: Busy seconds per stage of this run (see ``quantizer.StageTimes``).
TIMES = StageTimes()
#: Values per row chunk of a streamed tensor (1 MiB of float32; ``_fused_writer``'s block).
CHUNK_VALUES = 1 << 18


class WorkerError(Exception):
    """A failure the parent turns into a ``ConversionError`` with this hint."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


class _MergedSource:
    """The merged model by name (``merge.MergedTensors``), counting what is alive at once."""

    def __init__(self, spec: dict[str, Any]) -> None:
        from deploy_to_ollama.inputs import resolve_input
        from deploy_to_ollama.merge import MergedTensors

        base = Path(spec["base"]) if spec.get("base") else None
        self.resolved = resolve_input(Path(spec["input"]), base=base)
        self._merged = MergedTensors(self.resolved)
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
                TIMES.add("read", seconds)
                self._reads.seconds = self._thread_reads() + seconds

        self._merged._read = timed_read  # type: ignore[method-assign]

    def _thread_reads(self) -> float:
        """Read seconds of this thread so far (the merge's own time is its time minus these)."""
        return float(getattr(self._reads, "seconds", 0.0))

    @contextlib.contextmanager
    def _timed_merge(self) -> Iterator[None]:
        """Count the block's time as "merge", less the reads inside it (counted as "read")."""
        reads = self._thread_reads()
        with TIMES.timed("merge"):
            yield
        TIMES.add("merge", reads - self._thread_reads())

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


def _import_converter(root: Path) -> Any:
    sys.path.insert(0, str(root / "gguf-py"))
    sys.path.insert(1, str(root))
    import conversion

    return conversion


def _merged_index(
    source: _MergedSource, conversion: Any, filter_tensors: Callable[..., Any]
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


def _model_class(spec: dict[str, Any], conversion: Any) -> type[Any]:
    """Subclass the converter's model class with our tensor source, pre-tokenizer and metadata."""
    model_dir = Path(spec["model_dir"])
    hparams = conversion.ModelBase.load_hparams(model_dir, is_mistral_format=False)
    arch = conversion.get_model_architecture(hparams, conversion.ModelType.TEXT)
    try:
        base_cls: type[Any] = conversion.get_model_class(arch, mmproj=False)
    except NotImplementedError:
        raise WorkerError(
            f"llama.cpp cannot convert the architecture {arch}",
            "only architectures llama.cpp supports can be exported to GGUF",
        ) from None
    state: dict[str, Any] = {}

    class Model(base_cls):  # type: ignore[misc]
        # The converter's __init_subclass__ wants model_arch in each class's own namespace.
        model_arch = base_cls.model_arch

        def index_tensors(self, remote_hf_model_id: str | None = None) -> Any:
            if spec.get("input") is None:
                return super().index_tensors(remote_hf_model_id)
            state["source"] = _MergedSource(spec)
            return _merged_index(state["source"], conversion, self.filter_tensors)

        def get_tensors(self) -> Any:
            for name, tensor in super().get_tensors():
                state["last"] = tensor
                yield name, tensor

        def modify_tensors(self, data_torch: Any, name: str, bid: int | None) -> Any:
            outputs = list(super().modify_tensors(data_torch, name, bid))
            source: _MergedSource | None = state.get("source")
            origin = _passthrough_origin(state.get("last"), data_torch)
            if source is None or origin is None or len(outputs) != 1:
                return outputs
            (new_name, result), (hf_name, shape, dtype) = outputs[0], origin
            if result is not data_torch or len(shape) != 2:
                return outputs
            # Passed through unchanged: stream it in row chunks instead of one float32 copy.
            return [(new_name, source.row_chunks(hf_name, shape, dtype))]

        def get_vocab_base_pre(self, tokenizer: Any) -> str:
            try:
                return str(super().get_vocab_base_pre(tokenizer))
            except NotImplementedError:
                from deploy_to_ollama.gguf.pretokenizer import detect_pretokenizer

                name = detect_pretokenizer(model_dir / "tokenizer.json")
                logger.warning("pre-tokenizer hash unknown; detected %r from tokenizer.json", name)
                state["pretokenizer"] = name
                return name

        def write(self) -> None:
            self.prepare_tensors()
            self.prepare_metadata(vocab_only=False)
            _apply_metadata(self.gguf_writer, spec)
            if spec.get("quantize"):
                state["types"] = _write_quantized(self.gguf_writer, self.fname_out, spec)
                return
            _report_progress(self.gguf_writer)
            self.gguf_writer.write_header_to_file(path=self.fname_out)
            self.gguf_writer.write_kv_data_to_file()
            self.gguf_writer.write_tensors_to_file(progress=False)
            self.gguf_writer.close()

    Model.__name__ = base_cls.__name__
    Model._dto_state = state
    return Model


def _passthrough_origin(last: Any, data_torch: Any) -> tuple[str, tuple[int, ...], Any] | None:
    """(hf name, shape, dtype) of the merged tensor ``data_torch`` holds, unchanged; else None.

    ``last`` is the tensor ``get_tensors`` yielded last. The pinned converter's prepare_tensors
    hands modify_tensors either that tensor or its float32 upcast (for bf16 and other dtypes).
    """
    import torch

    origin = getattr(last, "dto_source", None)
    if origin is None or data_torch is last:
        return origin
    upcast = (
        last.dtype not in (torch.float16, torch.float32)
        and data_torch.dtype == torch.float32
        and tuple(data_torch.shape) == tuple(last.shape)
    )
    return origin if upcast else None


def _write_quantized(writer: Any, outfile: Path, spec: dict[str, Any]) -> list[dict[str, int]]:
    """Write the quantized GGUF(s) instead of the converter's file (see ``_fused_writer``).

    ``spec["quantize"]`` is written to ``outfile``; each of ``spec["more_outputs"]`` (another
    type and its own file) gets a writer of its own, fed from the same merged tensors. Returns
    tensors per GGML type for each file, in that order.
    """
    # From here on a failure (or a crash in the library) may be ours, not the model's: the
    # parent then retries with llama-quantize (see llama_cpp.run_converter).
    print(f"{STAGE_PREFIX}quantize", flush=True)
    _STAGE["name"] = "quantize"
    import gguf
    import torch

    # The quantizer threads take every core; torch's own OpenMP team on top of them (the merge's
    # casts and adds) spun at its barriers waiting for members the OS had descheduled: on two
    # busy cores the merge ran 5-7x slower than on one thread.
    torch.set_num_threads(1)

    from deploy_to_ollama.gguf._fused_writer import (
        QuantPlan,
        clone_writer,
        plan_quantized_writes,
        write_quantized,
    )
    from deploy_to_ollama.gguf._quant_pipeline import map_large_allocations
    from deploy_to_ollama.gguf.quantizer import QuantLibrary

    map_large_allocations()

    def ggml_type(name: str | None) -> int | None:
        return int(gguf.GGMLQuantizationType[name.upper()]) if name else None

    requests = [spec["quantize"], *(more["quantize"] for more in spec.get("more_outputs") or ())]
    paths = [outfile, *(Path(more["outfile"]) for more in spec.get("more_outputs") or ())]
    plans = [
        QuantPlan(
            ftype=int(gguf.LlamaFileType["MOSTLY_" + request["type"].upper()]),
            output_type=ggml_type(request.get("output_type")),
            token_embedding_type=ggml_type(request.get("token_embedding_type")),
            threads=int(request.get("threads") or 0),
            label=str(request.get("name") or request["type"].lower()),
        )
        for request in requests
    ]
    writers = [writer, *(clone_writer(writer) for _ in requests[1:])]
    first = requests[0]
    kernel = Path(first["kernel"]) if first.get("kernel") else None
    library = QuantLibrary(Path(first["library"]), kernel)
    pipeline, counts = plan_quantized_writes(writers, plans, library, TIMES)

    def on_tensor(done: int, total: int) -> None:
        print(f"{PROGRESS_PREFIX}{done} {total}", flush=True)

    write_quantized(writers, paths, [plan.label for plan in plans], pipeline, on_tensor)
    return counts


class _Reported:
    """Wraps a tensor of the writer: writes it, then tells the parent how far the file is."""

    def __init__(self, tensor: Any, index: int, total: int) -> None:
        self._tensor = tensor
        self._index = index
        self._total = total
        self.nbytes = tensor.nbytes

    def tofile(self, fout: Any) -> None:
        self._tensor.tofile(fout)
        self._tensor = None
        print(f"{PROGRESS_PREFIX}{self._index} {self._total}", flush=True)


def _report_progress(writer: Any) -> None:
    """Make every tensor the writer writes report its position on stdout (see run_converter)."""
    tensors = [info for shard in writer.tensors for info in shard.values()]
    for index, info in enumerate(tensors, start=1):
        info.tensor = _Reported(info.tensor, index, len(tensors))


def _fill_renamed_hparams(hparams: dict[str, Any]) -> None:
    """Add config keys the converter reads under names transformers no longer saves.

    transformers 5 writes GPT-2's context length only as ``n_positions``; the pinned converter
    reads ``n_ctx`` and would fail with a bare KeyError.
    """
    for key, aliases in HPARAM_ALIASES.items():
        if key not in hparams:
            found = next((hparams[a] for a in aliases if a in hparams), None)
            if found is not None:
                hparams[key] = found


def _apply_metadata(writer: Any, spec: dict[str, Any]) -> None:
    """Overwrite the keys we guarantee, whatever the converter derived."""
    if spec.get("name"):
        writer.add_name(spec["name"])
    if spec.get("chat_template"):
        writer.add_chat_template(spec["chat_template"])
    if spec.get("eos_token_id") is not None:
        writer.add_eos_token_id(int(spec["eos_token_id"]))
    if spec.get("eot_token_id") is not None:
        writer.add_eot_token_id(int(spec["eot_token_id"]))


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Convert as ``spec`` says; return facts for the parent (pre-tokenizer, buffering)."""
    import torch

    conversion = _import_converter(Path(spec["toolchain"]))
    import gguf

    ftypes = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "bf16": gguf.LlamaFileType.MOSTLY_BF16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }
    model_cls = _model_class(spec, conversion)
    started = time.perf_counter()
    with torch.inference_mode():
        model = model_cls(
            Path(spec["model_dir"]),
            ftypes[spec["outtype"]],
            Path(spec["outfile"]),
            model_name=spec.get("name"),
        )
        _fill_renamed_hparams(model.hparams)
        model.write()
    state = model_cls._dto_state
    source: _MergedSource | None = state.get("source")
    if source is not None:
        source.close()
        if rest := [n for n in source.names() if n not in source.requested]:
            raise WorkerError(
                f"the converter did not use merged tensors {rest[:3]}",
                "this architecture's converter skips tensors the merge produced; use --save-merged",
            )
    types = state.get("types") or [None]
    return {
        "pretokenizer_detected": state.get("pretokenizer"),
        "max_buffered_tensors": source.max_alive if source else 0,
        "tensor_types": types[0],
        "more_tensor_types": types[1:],
        "timings": _timings(time.perf_counter() - started),
    }


def _timings(wall: float) -> dict[str, float]:
    """Seconds per stage: the run's wall time and the busy time of each stage in it.

    ``convert`` is producing each tensor's 16-bit values beyond reading and merging them (the
    converter's own transforms, rounding); ``quantize <type>`` and ``write <type>`` are per file.
    """
    seconds = TIMES.snapshot()
    source = seconds.pop("source", 0.0)
    seconds.setdefault("read", 0.0)
    seconds.setdefault("merge", 0.0)
    if source:
        seconds["convert"] = round(max(0.0, source - seconds["read"] - seconds["merge"]), 3)
    return {"wall": round(wall, 3), **seconds}


def _may_be_ours(err: Exception) -> bool:
    """Whether a failure during in-process quantization may be this route's fault.

    Not for a model or input problem (bad weights, an adapter that does not fit, unreadable
    files): llama-quantize would fail on those too.
    """
    from deploy_to_ollama.errors import ConversionError, DeployError, InvalidWeightsError

    if isinstance(err, WorkerError | InvalidWeightsError):
        return False
    return isinstance(err, ConversionError) or not isinstance(err, DeployError)


def main(argv: list[str]) -> int:
    """Entry point: read the spec, convert, write ``.result.json`` or ``.error.json``."""
    spec_path = Path(argv[0])
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        facts = run(spec)
    except Exception as err:
        hint = getattr(err, "hint", None) or "rerun with -vv to see the converter's output"
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if not isinstance(err, WorkerError) and type(err).__name__ != "ConversionError":
            traceback.print_exc()
            message = f"{type(err).__name__}: {message}"
        retry = _STAGE["name"] == "quantize" and _may_be_ours(err)
        report = {"message": message, "hint": hint, "in_process_quantization": retry}
        spec_path.with_suffix(".error.json").write_text(json.dumps(report), encoding="utf-8")
        return 2
    spec_path.with_suffix(".result.json").write_text(json.dumps(facts), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
