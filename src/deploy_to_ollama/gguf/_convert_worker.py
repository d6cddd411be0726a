"""Child process that runs llama.cpp's converter with our tensors and our metadata.

Run as ``python -m deploy_to_ollama.gguf._convert_worker SPEC.json``. It imports the vendored
converter (``conversion/`` + ``gguf-py``) of the toolchain and:

* feeds it merged tensors (``_merged_source``) instead of reading safetensors, so an adapter
  export never writes merged weights to disk first;
* names the pre-tokenizer from ``tokenizer.json`` when the converter's hash check rejects it;
* writes ``general.name``, ``tokenizer.chat_template`` and eos/eot ids explicitly.
* with ``quantize`` (and ``more_outputs``), writes quantized GGUFs instead of the converter's
  file, all of them in this one run (``_fused_writer``), and reports per-stage timings.

It is a separate process because the converter mutates ``sys.path`` and global logging, and so
that an interrupted conversion never leaves state behind in the caller. Failures are reported as
JSON in ``SPEC.error.json`` and exit code 2.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from deploy_to_ollama.gguf._merged_source import MergedSource, WorkerError, merged_index
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


def _import_converter(root: Path) -> Any:
    sys.path.insert(0, str(root / "gguf-py"))
    sys.path.insert(1, str(root))
    import conversion

    return conversion


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
            state["source"] = MergedSource(spec, TIMES)
            return merged_index(state["source"], conversion, self.filter_tensors)

        def get_tensors(self) -> Any:
            for name, tensor in super().get_tensors():
                state["last"] = tensor
                yield name, tensor

        def modify_tensors(self, data_torch: Any, name: str, bid: int | None) -> Any:
            outputs = list(super().modify_tensors(data_torch, name, bid))
            source: MergedSource | None = state.get("source")
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
    source: MergedSource | None = state.get("source")
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
