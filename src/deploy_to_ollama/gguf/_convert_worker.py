"""Child process that runs llama.cpp's converter with our tensors and our metadata.

Run as ``python -m deploy_to_ollama.gguf._convert_worker SPEC.json``. It imports the vendored
converter (``conversion/`` + ``gguf-py``) of the toolchain and:

* feeds it merged tensors streamed from ``deploy_to_ollama.merge.iter_merged_tensors`` instead of
  reading safetensors, so an adapter export never writes merged weights to disk first;
* names the pre-tokenizer from ``tokenizer.json`` when the converter's hash check rejects it;
* writes ``general.name``, ``tokenizer.chat_template`` and eos/eot ids explicitly.

It is a separate process because the converter mutates ``sys.path`` and global logging, and so
that an interrupted conversion never leaves state behind in the caller. Failures are reported as
JSON in ``SPEC.error.json`` and exit code 2.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger("deploy_to_ollama.gguf.convert")

OUTTYPES = ("f32", "f16", "bf16", "q8_0")


class WorkerError(Exception):
    """A failure the parent turns into a ``ConversionError`` with this hint."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


class _TensorCursor:
    """Hand out tensors of a one-pass iterator by name, buffering ones asked for out of order."""

    def __init__(self, source: Iterator[tuple[str, Any]]) -> None:
        self._source = source
        self._buffer: dict[str, Any] = {}
        self.max_buffered = 0

    def take(self, name: str) -> Any:
        while name not in self._buffer:
            try:
                got, tensor = next(self._source)
            except StopIteration:
                raise WorkerError(
                    f"the merge produced no tensor {name!r}",
                    "the adapter and base disagree on tensor names; check --base",
                ) from None
            self._buffer[got] = tensor
            self.max_buffered = max(self.max_buffered, len(self._buffer))
        return self._buffer.pop(name)

    def leftover(self) -> list[str]:
        rest = list(self._buffer)
        rest.extend(name for name, _ in self._source)
        return rest


def _import_converter(root: Path) -> Any:
    sys.path.insert(0, str(root / "gguf-py"))
    sys.path.insert(1, str(root))
    import conversion

    return conversion


def _merged_index(
    spec: dict[str, Any], conversion: Any, filter_tensors: Callable[..., Any]
) -> tuple[dict[str, Callable[[], Any]], _TensorCursor]:
    """Index the merged model's tensors as lazy tensors that pull from the streaming merge."""
    import torch

    from deploy_to_ollama.gguf.llama_cpp import merged_tensor_specs
    from deploy_to_ollama.inputs import resolve_input
    from deploy_to_ollama.merge import iter_merged_tensors

    base = Path(spec["base"]) if spec.get("base") else None
    resolved = resolve_input(Path(spec["input"]), base=base)
    cursor = _TensorCursor(iter(iter_merged_tensors(resolved)))
    lazy_cls = conversion.LazyTorchTensor
    index: dict[str, Callable[[], Any]] = {}
    for name, (shape, dtype_name) in merged_tensor_specs(resolved).items():
        dtype = getattr(torch, dtype_name)

        def load(_: object, name: str = name, shape: tuple[int, ...] = shape) -> Any:
            tensor = cursor.take(name)
            if tuple(tensor.shape) != shape:
                raise WorkerError(
                    f"merged tensor {name} has shape {tuple(tensor.shape)}, expected {shape}",
                    "the adapter does not fit this base model; check --base",
                )
            return tensor.contiguous()

        def gen(
            shape: tuple[int, ...] = shape, dtype: Any = dtype, load: Callable[..., Any] = load
        ) -> Any:
            # Defaults bind this iteration's values: the converter calls gen() after the loop.
            meta = lazy_cls.meta_with_dtype_and_shape(dtype, shape)
            return lazy_cls(meta=meta, args=(None,), func=load)

        if item := filter_tensors((name, gen)):
            index[item[0]] = item[1]
    return index, cursor


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
            index, state["cursor"] = _merged_index(spec, conversion, self.filter_tensors)
            return index

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
            self.gguf_writer.write_header_to_file(path=self.fname_out)
            self.gguf_writer.write_kv_data_to_file()
            self.gguf_writer.write_tensors_to_file(progress=False)
            self.gguf_writer.close()

    Model.__name__ = base_cls.__name__
    Model._dto_state = state
    return Model


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
    with torch.inference_mode():
        model = model_cls(
            Path(spec["model_dir"]),
            ftypes[spec["outtype"]],
            Path(spec["outfile"]),
            model_name=spec.get("name"),
        )
        model.write()
    state = model_cls._dto_state
    cursor: _TensorCursor | None = state.get("cursor")
    if cursor is not None and (rest := cursor.leftover()):
        raise WorkerError(
            f"the converter did not use merged tensors {rest[:3]}",
            "this architecture's converter skips tensors the merge produced; use --save-merged",
        )
    return {
        "pretokenizer_detected": state.get("pretokenizer"),
        "max_buffered_tensors": cursor.max_buffered if cursor else 0,
    }


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
        spec_path.with_suffix(".error.json").write_text(
            json.dumps({"message": message, "hint": hint}), encoding="utf-8"
        )
        return 2
    spec_path.with_suffix(".result.json").write_text(json.dumps(facts), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
