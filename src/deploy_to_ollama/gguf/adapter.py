"""Adapter-only export (``--mode adapter``): the base as GGUF plus the LoRA as a GGUF LoRA.

Ollama applies the LoRA at load time (``FROM base`` + ``ADAPTER``), so the weights are never
merged. llama.cpp's ``convert_lora_to_gguf.py`` only takes LoRA A/B pairs, and without ``--base``
it fetches the base config from the Hub, so we always pass the local base dir.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._fs import atomic_path, read_json_object
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
    problem = scale_problem(adapter_dir)
    if problem:
        raise UsageError(
            f"the adapter {problem}", hint="use --mode merged (or --mode auto on deploy)"
        )
    with atomic_path(target) as tmp, _scaled_for_llama_cpp(adapter_dir) as source:
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
                source,
            ],
            what="convert_lora_to_gguf.py",
            env=toolchain.python_env(),
            hint="check that the adapter's architecture is one llama.cpp converts",
        )
    return target


def scale_problem(adapter_dir: Path) -> str | None:
    """Why llama.cpp would scale this LoRA unlike PEFT, beyond what we can correct, or None.

    llama.cpp applies ``alpha / rank`` with one ``adapter.lora.alpha`` for every tensor and the
    rank from each tensor's shape (src/llama-adapter.h ``get_scale``);
    ``convert_lora_to_gguf.py`` copies ``lora_alpha`` and ignores ``use_rslora`` and
    ``alpha_pattern``. A per-module alpha, or rsLoRA with per-module ranks, has no single alpha
    that gives PEFT's scales.
    """
    config = read_json_object(adapter_dir / "adapter_config.json")
    if config.get("alpha_pattern"):
        return "sets a per-module alpha_pattern, which a GGUF LoRA (one alpha) cannot carry"
    if config.get("use_rslora") and config.get("rank_pattern"):
        return "is rsLoRA with a per-module rank_pattern, which one GGUF LoRA alpha cannot express"
    return None


@contextlib.contextmanager
def _scaled_for_llama_cpp(adapter_dir: Path) -> Iterator[Path]:
    """The adapter folder, or for rsLoRA a copy whose alpha gives llama.cpp PEFT's scale.

    rsLoRA scales by ``alpha / sqrt(r)``, llama.cpp by ``alpha / r``: ``alpha * sqrt(r)`` in the
    GGUF makes them equal (the weights are linked, not copied).
    """
    config = read_json_object(adapter_dir / "adapter_config.json")
    if not config.get("use_rslora"):
        yield adapter_dir
        return
    rank = int(config.get("r") or 8)
    config |= {"lora_alpha": float(config.get("lora_alpha") or 8) * math.sqrt(rank)}
    config["use_rslora"] = False
    with tempfile.TemporaryDirectory(prefix=f"dto-rslora-{pid_tag()}-") as tmp:
        folder = Path(tmp)
        for entry in adapter_dir.iterdir():
            if entry.name != "adapter_config.json" and entry.is_file():
                (folder / entry.name).symlink_to(entry.resolve())
        (folder / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
        yield folder


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
