"""Adapter-only export (``--mode adapter``): the base as GGUF plus the LoRA as a GGUF LoRA.

Ollama applies the LoRA at load time (``FROM base`` + ``ADAPTER``), so the weights are never
merged. llama.cpp's ``convert_lora_to_gguf.py`` only takes LoRA A/B pairs, and without ``--base``
it fetches the base config from the Hub, so we always pass the local base dir.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._fs import atomic_path
from .._subprocess import run_tool
from ..errors import UsageError
from ..progress import ProgressReporter
from ..resume import pid_tag
from .llama_cpp import special_token_ids
from .quants import QuantType
from .toolchain import Toolchain

if TYPE_CHECKING:
    from .request import ExportRequest, ExportResult


def full_weights_in_adapter(adapter_dir: Path) -> list[str]:
    """Names of full (non-LoRA) tensors an adapter carries: modules_to_save, resized embeddings."""
    from ..peft_keys import ADAPTER_WEIGHTS, FACTOR_ROLES, classify_adapter_key
    from ..safetensors_io import read_safetensors_header

    path = adapter_dir / ADAPTER_WEIGHTS
    if not path.is_file():
        return []
    return [
        key
        for key in read_safetensors_header(path)
        if classify_adapter_key(key)[0] not in FACTOR_ROLES
    ]


def convert_lora(toolchain: Toolchain, adapter_dir: Path, base_dir: Path, target: Path) -> Path:
    """Write the LoRA of ``adapter_dir`` as an f16 GGUF LoRA at ``target`` (atomically).

    Raises:
        UsageError: the adapter holds full weights the LoRA converter refuses.
        ConversionError: the converter failed.
    """
    full = full_weights_in_adapter(adapter_dir)
    if full:
        raise UsageError(
            f"the adapter carries full weights ({full[0]}{' ...' if len(full) > 1 else ''}), "
            "which a GGUF LoRA cannot hold",
            hint="use --mode merged (the default) for adapters with modules_to_save or new tokens",
        )
    with atomic_path(target) as tmp:
        run_tool(
            [
                sys.executable,
                toolchain.convert_lora,
                "--base",
                base_dir,
                "--outtype",
                "f16",
                "--outfile",
                tmp,
                adapter_dir,
            ],
            what="convert_lora_to_gguf.py",
            env=toolchain.python_env(),
            hint="check that the adapter's architecture is one llama.cpp converts",
        )
    return target


def export_adapter(
    request: ExportRequest,
    resolved: Any,
    quants: list[QuantType],
    stem: str,
    toolchain: Toolchain,
    reporter: ProgressReporter,
) -> ExportResult:
    """Base GGUF(s) at each quant plus one f16 GGUF LoRA, for ``FROM`` + ``ADAPTER``."""
    from .request import ExportResult
    from .steps import GgufFile, convert_and_quantize, converter_step, gguf_filename

    adapter_dir, base_dir = Path(resolved.path), Path(resolved.base_dir)
    lora_target = request.out_dir / f"{stem}-lora.F16.gguf"
    reporter.start("lora", "convert LoRA → GGUF", total=None)
    convert_lora(toolchain, adapter_dir, base_dir, lora_target)
    reporter.done("lora", f"wrote {lora_target.name}")
    tokenizer_dir = Path(resolved.tokenizer_dir or base_dir)
    chat_template = resolved.chat_template
    token_ids = special_token_ids(base_dir, tokenizer_dir, chat_template)
    name = request.name or stem

    convert = converter_step(
        toolchain,
        reporter,
        model_dir=base_dir,
        name=name,
        chat_template=chat_template,
        token_ids=token_ids,
        label="convert base",
        merge_input=base_dir,  # streamed in row chunks through our reader, like a merge
    )

    prefix = f".dto-export-{pid_tag()}-"  # a dead run's leftover is recognised by its PID
    with tempfile.TemporaryDirectory(prefix=prefix, dir=request.out_dir) as work:
        files, facts = convert_and_quantize(
            request.out_dir,
            quants,
            f"{stem}-base",
            base_dir,
            Path(work),
            convert,
            toolchain,
            reporter,
            quantizer=request.quantizer,
        )
    base_files = [dataclasses.replace(f, role="base") for f in files]
    lora = GgufFile(lora_target, "lora-f16", lora_target.stat().st_size, role="adapter")
    assert all(f.path.name == gguf_filename(f"{stem}-base", f.quant) for f in base_files)
    return ExportResult(
        files=(*base_files, lora),
        name=name,
        input_kind="adapter",
        chat_template=chat_template,
        base_dir=base_dir,
        pretokenizer_detected=facts.pretokenizer_detected if facts else None,
    )
