"""``export --measure`` and ``--list-quants --measure``: the quality report around an export.

Two halves, so that everything that can fail cheaply fails before a byte of GGUF is written:
``plan_measurement`` (flags, eval text, budget, llama-perplexity present) runs before the export,
``run_measurement`` after it (the 16-bit reference, then ``gguf.quality.measure``). The
reference is the export's own f16/bf16 file when one was asked for, else a 16-bit GGUF exported
once into the cache (keyed by the input's content) and reused by later measurements.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._fs import write_text_atomic
from .errors import UsageError
from .gguf.eval_data import EvalText, load_eval_text
from .gguf.quality import (
    DEFAULT_BUDGET_MINUTES,
    DEFAULT_EVAL_TOKENS,
    QualityReport,
    check_budget,
    measure,
)
from .gguf.toolchain import PERPLEXITY_BINARY, Toolchain
from .progress import NullProgress, ProgressReporter

logger = logging.getLogger(__name__)

#: Written beside the GGUFs by ``export --measure``; the model card of ``push`` reads it.
QUALITY_FILE = "quality.json"
#: The rows ``--list-quants --measure`` always measures (the seed's table), plus any asked for.
LIST_QUANTS = ("q8_0", "q5_k_m", "q4_k_m", "q3_k_m", "q2_k")
SIXTEEN_BIT = ("f16", "bf16")


@dataclass(frozen=True, slots=True)
class MeasureOptions:
    """The ``--measure`` flags, validated."""

    eval_data: Path | None = None
    eval_tokens: int = DEFAULT_EVAL_TOKENS
    minutes: float = DEFAULT_BUDGET_MINUTES


@dataclass(frozen=True, slots=True)
class MeasurePlan:
    """What was checked before the export, and what the measurement needs after it."""

    options: MeasureOptions
    text: EvalText
    toolchain: Toolchain


def check_measure_flags(
    *,
    measure: bool,
    eval_data: Path | None,
    eval_tokens: int | None,
    minutes: float | None,
    mode: str,
    backend: str,
) -> MeasureOptions | None:
    """Validate the ``--measure`` flags (usage errors, exit 2); None when not measuring."""
    if not measure:
        given = [f for f, v in (("--eval-data", eval_data), ("--eval-tokens", eval_tokens),
                                ("--measure-minutes", minutes)) if v is not None]  # fmt: skip
        if given:
            raise UsageError(f"{', '.join(given)} need --measure", hint="add --measure")
        return None
    if mode == "adapter":
        raise UsageError("--measure needs --mode merged (an adapter GGUF has no logits alone)",
                         hint="drop --mode adapter, or --measure")  # fmt: skip
    if backend == "unsloth":
        raise UsageError("--measure needs the llama.cpp backend", hint="add --backend llama.cpp")
    if eval_tokens is not None and eval_tokens < 256:
        raise UsageError(f"--eval-tokens {eval_tokens} is too few", hint="use at least 256")
    if minutes is not None and minutes <= 0:
        raise UsageError(f"--measure-minutes {minutes} must be positive", hint="e.g. 30")
    return MeasureOptions(
        eval_data=eval_data,
        eval_tokens=eval_tokens or DEFAULT_EVAL_TOKENS,
        minutes=minutes or DEFAULT_BUDGET_MINUTES,
    )


def plan_measurement(
    options: MeasureOptions,
    *,
    resolved: Any,
    toolchain: Callable[[], Toolchain],
    parameters: int,
    files: int,
) -> MeasurePlan:
    """Check everything a measurement needs, before the export writes anything.

    The cheap checks first (eval text, budget), then ``toolchain`` is called (it may have to
    build llama-perplexity) and asked for llama-perplexity.

    Raises:
        InputError: a bad ``--eval-data``, or over the time budget (the hint says how to raise
            it).
        DependencyMissingError: no llama-perplexity (exit 4, the hint says how to get it).
    """
    text = load_eval_text(
        options.eval_data,
        tokenizer_dir=getattr(resolved, "tokenizer_dir", None),
        chat_template=getattr(resolved, "chat_template", None),
    )
    check_budget(parameters, options.eval_tokens, files, options.minutes)
    found = toolchain()
    found.require_tool(PERPLEXITY_BINARY, needed_for="export works without --measure")
    return MeasurePlan(options, text, found)


def reference_dir(cache_dir: Path, content_key: str) -> Path:
    """Where the 16-bit reference of an input is kept between measurements."""
    return cache_dir / "quality" / content_key[:24]


def run_measurement(
    plan: MeasurePlan,
    files: list[Path],
    reference: Path,
    *,
    work_dir: Path,
    progress: ProgressReporter | None = None,
) -> QualityReport:
    """Measure ``files`` against ``reference`` (see ``gguf.quality.measure``), with progress."""
    reporter = progress or NullProgress()
    reporter.start("measure", "measuring quality (llama-perplexity)", total=len(files) + 1)
    seen: list[Path] = []

    def on_file(path: Path) -> None:
        if seen:
            reporter.advance("measure", 1)
        seen.append(path)

    report = measure(
        files,
        reference,
        toolchain=plan.toolchain,
        text=plan.text.text,
        eval_source=plan.text.source,
        work_dir=work_dir,
        eval_tokens=plan.options.eval_tokens,
        on_file=on_file,
    )
    reporter.done("measure", f"quality measured in {report.seconds:.1f} s")
    return report


@dataclass(frozen=True, slots=True)
class ReferenceSource:
    """How to export the 16-bit reference when the export itself wrote none."""

    source: Path
    base: Path | None
    name: str
    dtype: str
    """The model's torch dtype (bf16 models get a BF16 reference, others F16)."""
    content_key: str
    resolved: Any


def measure_export(
    plan: MeasurePlan,
    written: list[tuple[str, Path]],
    ref: ReferenceSource,
    *,
    out_dir: Path,
    cache_dir: Path,
    settings: Any,
    progress: ProgressReporter | None = None,
) -> QualityReport:
    """Measure an export's GGUFs (``(quant, path)`` pairs) and write ``quality.json`` beside
    them. The reference is the export's own 16-bit file, the GGUF source itself, or a 16-bit
    GGUF exported once into the cache."""
    reference = next((path for quant, path in written if quant.lower() in SIXTEEN_BIT), None)
    if reference is None:
        reference = _reference_gguf(plan, ref, cache_dir, settings, progress)
    files = [path for quant, path in written if path != reference]
    report = run_measurement(plan, files, reference, work_dir=cache_dir / "quality",
                             progress=progress)  # fmt: skip
    write_quality_file(out_dir, report)
    return report


def _reference_gguf(plan: MeasurePlan, ref: ReferenceSource, cache_dir: Path, settings: Any,
                    progress: ProgressReporter | None) -> Path:  # fmt: skip
    if ref.source.suffix.lower() == ".gguf":
        return ref.source  # a GGUF source is measured against itself as given
    from .gguf.export import export_gguf
    from .gguf.steps import intermediate_type

    result = export_gguf(
        ref.source,
        out_dir=reference_dir(cache_dir, ref.content_key),
        quant=[intermediate_type(ref.dtype)],
        base=ref.base,
        name=ref.name,
        cache_dir=cache_dir,
        toolchain=plan.toolchain,
        progress=progress,
        settings=settings,
        content_key=ref.content_key,
        resolved=ref.resolved,
    )
    return result.path


def write_quality_file(out_dir: Path, report: QualityReport) -> Path:
    """Write ``quality.json`` beside the GGUFs (the model card of a later ``push`` reads it)."""
    target = out_dir / QUALITY_FILE
    data = report.to_dict()
    for path in report.files:  # so a later, unmeasured export of the same name is not shown
        data["files"][path.name]["bytes"] = path.stat().st_size
    write_text_atomic(target, json.dumps(data, indent=1) + "\n")
    return target


def quality_markdown(folder: Path) -> str | None:
    """The model card's quality table, from the folder's ``quality.json`` (None without one).

    Only rows whose GGUF is still in the folder with the size it had when measured: a file
    re-exported since without ``--measure`` is not shown with another file's numbers.
    """
    path = folder / QUALITY_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = {
            name: q
            for name, q in data["files"].items()
            if (folder / name).is_file() and (folder / name).stat().st_size == q.get("bytes")
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not rows:
        return None
    lines = [
        f"Measured with {data['tool']} over {data['tokens']:,} tokens of {data['eval']}, "
        f"against `{data['reference']}` (perplexity {data['reference_perplexity']:.4f}); "
        "KL divergence in nats per token, top-1 = how often the most likely next token is the "
        "16-bit model's.",
        "",
        "| File | KL mean | KL median | KL p99 | Top-1 | Perplexity |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, q in rows.items():
        lines.append(f"| `{name}` | {q['kl_mean']:.5f} | {q['kl_median']:.5f} | "
                     f"{q['kl_p99']:.5f} | {q['top1']:.2%} | {q['perplexity']:.4f} |")  # fmt: skip
    return "\n".join(lines)


__all__ = [
    "LIST_QUANTS",
    "QUALITY_FILE",
    "MeasureOptions",
    "MeasurePlan",
    "ReferenceSource",
    "check_measure_flags",
    "measure_export",
    "plan_measurement",
    "quality_markdown",
    "reference_dir",
    "run_measurement",
    "write_quality_file",
]
