"""The convert → quantize steps of an export, and the GGUF files they write.

One converter run per converter type (f16, q8_0 ...). Types llama-quantize makes are all
quantized inside one more converter run when the toolchain has the quantizer library (each
tensor read and merged once for every type, no 16-bit file), else from one lossless 16-bit GGUF
with the llama-quantize binary; both write the same bytes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import ConversionError
from ..progress import ProgressReporter
from .imatrix import Imatrix, ImatrixChoice, resolve_imatrix
from .llama_cpp import ConvertFacts, TokenIds, quantize_gguf, run_converter
from .quants import QuantType
from .toolchain import Toolchain

logger = logging.getLogger(__name__)

#: ``convert(outtype, target, quant=None, more=())``: one converter run (quantizing in-process
#: if asked, to ``target`` and to each (type, path) of ``more``).
Converter = Callable[..., ConvertFacts]
#: Called with each GGUF once it is under its final name (the export stamp records it).
OnFile = Callable[["GgufFile"], None]


@dataclass(frozen=True, slots=True)
class GgufFile:
    """One GGUF written by the export."""

    path: Path
    quant: str
    """Lower-case quant name (``q4_k_m``, ``f16``); ``lora-f16`` for a LoRA GGUF."""
    size_bytes: int
    role: Literal["model", "base", "adapter"] = "model"
    tensor_types: Mapping[str, int] | None = None
    """Tensors per GGML type (``{"Q4_K": 109, "Q6_K": 19, "F32": 37}``) when we quantized."""
    timings: Mapping[str, float] | None = None
    """Seconds per stage of the converter run that wrote the file (in-process quantization):
    ``wall``, ``read``, ``merge``, ``convert`` of the run (shared by the files it wrote), and
    ``quantize`` and ``write`` of this file. Busy time per stage: stages overlap. A tensor
    two files of the run hold in the same type is quantized once and counted in both."""


def gguf_filename(stem: str, quant: str) -> str:
    """Unsloth's naming: ``<stem>.<QUANT>.gguf``.

    >>> gguf_filename("mymodel", "q4_k_m")
    'mymodel.Q4_K_M.gguf'
    """
    return f"{stem}.{quant.upper()}.gguf"


def model_dtype(model_dir: Path) -> str:
    """The torch dtype a model's config declares (bf16 when it declares none)."""
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        return "bfloat16"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    return str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")


def intermediate_type(dtype: str) -> str:
    """The lossless converter type llama-quantize starts from: bf16 for bf16 models, else f16."""
    return "bf16" if dtype == "bfloat16" else "f16"


def converter_step(
    toolchain: Toolchain,
    reporter: ProgressReporter,
    *,
    model_dir: Path,
    name: str,
    chat_template: str | None,
    token_ids: TokenIds,
    label: str = "convert",
    merge_input: Path | None = None,
    merge_base: Path | None = None,
) -> Converter:
    """One converter run per output type, reported as its own progress stage."""

    def convert(
        outtype: str,
        target: Path,
        quant: QuantType | None = None,
        more: Sequence[tuple[QuantType, Path]] = (),
    ) -> ConvertFacts:
        final = "+".join([quant.name, *(q.name for q, _ in more)]) if quant else outtype
        key = f"convert-{final}"
        stage = f"{label} + quantize" if quant else label
        reporter.start(key, f"{stage} → {final}", total=100)

        def on_progress(done: int, total: int) -> None:
            reporter.advance(key, completed=100 * done / max(1, total))

        facts = run_converter(
            toolchain,
            model_dir=model_dir,
            outfile=target,
            outtype=outtype,
            name=name,
            chat_template=chat_template,
            token_ids=token_ids,
            merge_input=merge_input,
            merge_base=merge_base,
            quantize=quant,
            more=more,
            on_progress=on_progress,
        )
        reporter.done(key, "wrote " + ", ".join([target.name, *(p.name for _, p in more)]))
        return facts

    return convert


def convert_and_quantize(
    out_dir: Path,
    quants: list[QuantType],
    stem: str,
    model_dir: Path,
    work: Path,
    convert: Converter,
    toolchain: Toolchain,
    reporter: ProgressReporter,
    *,
    quantizer: str = "auto",
    on_file: OnFile | None = None,
    imatrix: ImatrixChoice | None = None,
    used_imatrix: list[Imatrix] | None = None,
) -> tuple[list[GgufFile], ConvertFacts | None]:
    """Converter types straight from the converter; the rest quantized in-process when the
    toolchain can (and ``quantizer`` is not ``llama-quantize``), else from one lossless
    intermediate GGUF with llama-quantize. ``on_file`` hears of each finished file.

    With ``imatrix`` the quantized types always take the second route, llama-quantize
    ``--imatrix``: the in-process planner (``llama_quant_compute_types``) plans as if there were
    no imatrix, which changes the type mix of iq4_xs/iq4_nl/iq3_xxs/q4_0/q5_0, and
    ``llama_model_quantize_params.imatrix`` is only read by llama.cpp's file-to-file
    quantizer. ``auto`` needs the 16-bit GGUF on disk for llama-imatrix anyway. The imatrix
    used is appended to ``used_imatrix``.
    """
    files: list[GgufFile] = []
    facts: ConvertFacts | None = None

    def finished(file: GgufFile) -> None:
        files.append(file)
        if on_file is not None:
            on_file(file)

    direct = [q for q in quants if q.producer == "convert"]
    via_quantize = [q for q in quants if q.producer == "quantize"]
    middle_type = intermediate_type(model_dtype(model_dir))
    middle: Path | None = None
    for quant in direct:
        target = out_dir / gguf_filename(stem, quant.name)
        facts = convert(quant.name, target)
        finished(gguf_file(target, quant.name))
        if quant.name == middle_type:
            middle = target
    if via_quantize and imatrix is None and in_process_quantization(toolchain, quantizer=quantizer):
        try:
            # One run for all of them: each tensor is read and merged once, quantized per type.
            targets = [out_dir / gguf_filename(stem, q.name) for q in via_quantize]
            more = list(zip(via_quantize[1:], targets[1:], strict=True))
            facts = convert(middle_type, targets[0], via_quantize[0], more)
            types = [facts.tensor_types, *facts.more_tensor_types]
            for quant, target, mixture in zip(via_quantize, targets, types, strict=True):
                timings = file_timings(facts.timings, quant.name)
                finished(gguf_file(target, quant.name, types=mixture, timings=timings))
            via_quantize = []
        except ConversionError as err:
            if not err.in_process_quantization:
                raise
            # Our in-process route broke, not the model: the classic route still works.
            logger.warning("%s; quantizing with llama-quantize instead", err.message)
        if not via_quantize:
            return files, facts
    if via_quantize:
        if middle is None:
            middle = work / gguf_filename(stem, middle_type)
            facts = convert(middle_type, middle)
        weights = None
        if imatrix is not None:
            weights = _imatrix_step(imatrix, toolchain, middle, out_dir, stem, reporter, model_dir)
            if used_imatrix is not None:
                used_imatrix.append(weights)
        for quant in via_quantize:
            target = out_dir / gguf_filename(stem, quant.name)
            reporter.start(f"quantize-{quant.name}", f"quantize → {quant.name}", total=None)
            quantize_gguf(
                toolchain, middle, target, quant, imatrix=weights.path if weights else None
            )
            reporter.done(f"quantize-{quant.name}", f"wrote {target.name}")
            finished(gguf_file(target, quant.name))
    return files, facts


def _imatrix_step(
    choice: ImatrixChoice,
    toolchain: Toolchain,
    model: Path,
    out_dir: Path,
    stem: str,
    reporter: ProgressReporter,
    tokenizer_dir: Path,
) -> Imatrix:
    label = "imatrix (llama-imatrix)" if choice.auto else f"imatrix check ({choice.file})"
    reporter.start("imatrix", label, total=None)
    weights = resolve_imatrix(choice, toolchain, model, out_dir, stem, tokenizer_dir=tokenizer_dir)
    how = "computed" if weights.computed else "reused"
    reporter.done("imatrix", f"imatrix {how}: {weights.path.name}, {weights.entries} entries")
    return weights


def in_process_quantization(toolchain: Toolchain, *, quantizer: str | None = None) -> bool:
    """Quantize inside the converter (one pass, no 16-bit GGUF on disk) rather than with
    llama-quantize: when the toolchain has the library and ``quantizer`` (``Settings.quantizer``,
    ``DTO_QUANTIZER``; read from the environment only when not given) does not say no."""
    if quantizer is None:
        from ..settings import Settings

        quantizer = Settings.from_env().quantizer
    return toolchain.quant_library is not None and quantizer != "llama-quantize"


def gguf_file(
    path: Path,
    quant: str,
    role: Literal["model", "base", "adapter"] = "model",
    *,
    types: Mapping[str, int] | None = None,
    timings: Mapping[str, float] | None = None,
) -> GgufFile:
    return GgufFile(
        path=path,
        quant=quant,
        size_bytes=path.stat().st_size,
        role=role,
        tensor_types=types,
        timings=timings,
    )


def file_timings(run: Mapping[str, float] | None, quant: str) -> dict[str, float] | None:
    """One file's view of its converter run's timings: the shared stages and its own.

    >>> file_timings({"wall": 9.0, "read": 1.0, "quantize q4_k_m": 5.0, "quantize q5_k_m": 6.0,
    ...               "write q4_k_m": 0.2}, "q4_k_m")
    {'wall': 9.0, 'read': 1.0, 'quantize': 5.0, 'write': 0.2}
    """
    if run is None:
        return None
    mine: dict[str, float] = {}
    for stage, seconds in run.items():
        kind, _, owner = stage.partition(" ")
        if not owner:
            mine[stage] = seconds
        elif owner == quant:
            mine[kind] = seconds
    return mine
