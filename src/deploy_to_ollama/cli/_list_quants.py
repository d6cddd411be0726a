"""``export --list-quants --measure``: the seed's quant table filled with this model's numbers.

Every row (q8_0, q5_k_m, q4_k_m, q3_k_m, q2_k, plus any ``--quant`` asks for) is exported in one
pass into the cache beside a 16-bit reference and measured with llama-perplexity: the file size
and bits per weight are the real files', KL/top-1/perplexity are measured, not looked up.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import typer

from ..errors import UsageError
from ..measuring import LIST_QUANTS, MeasureOptions
from ..progress import RichProgress, console
from ._common import print_result_json
from ._common import settings as cli_settings


def list_quants_measured(
    source: Path | None,
    base: Path | None,
    quant: str,
    options: MeasureOptions,
    llama_cpp: Path | None,
    json_out: bool,
) -> None:
    """Export and measure the table's quants of ``source``; print the table (or ``--json``)."""
    if source is None:
        raise UsageError("--list-quants --measure needs SOURCE",
                         hint="e.g. export ./lora --list-quants --measure")  # fmt: skip
    from ..chat_template.source import check_source
    from ..gguf.export import export_gguf
    from ..gguf.quants import count_parameters, parse_quant_list
    from ..gguf.steps import intermediate_type, model_dtype
    from ..gguf.toolchain import provision_toolchain
    from ..measuring import plan_measurement, reference_dir, run_measurement

    asked = [q.name for q in parse_quant_list(quant)]
    quants = list(dict.fromkeys([*LIST_QUANTS, *asked]))
    resolved: Any = check_source(source, base=base)
    if resolved.kind == "gguf":
        raise UsageError("--list-quants --measure needs a LoRA adapter or merged model",
                         hint="export a GGUF with --measure to measure it")  # fmt: skip
    weights = Path(resolved.base_dir if resolved.kind == "adapter" else resolved.path)
    settings = cli_settings()
    reference_type = intermediate_type(model_dtype(weights))
    parameters = count_parameters(weights)
    with RichProgress(transient=True, lines_when_not_tty=not json_out) as progress:

        def provision() -> Any:
            return provision_toolchain(
                settings.cache_dir, llama_cpp_dir=llama_cpp or settings.llama_cpp_dir,
                with_tools=True, progress=progress,
            ).toolchain  # fmt: skip

        plan = plan_measurement(options, resolved=resolved, toolchain=provision,
                                parameters=parameters, files=len(quants))  # fmt: skip
        toolchain = plan.toolchain
        tag = hashlib.sha256(",".join(quants).encode()).hexdigest()[:8]
        out = reference_dir(settings.cache_dir, resolved.content_key) / f"list-{tag}"
        result = export_gguf(
            source, out_dir=out, quant=[reference_type, *quants], base=base,
            cache_dir=settings.cache_dir, toolchain=toolchain, progress=progress,
            settings=settings, content_key=resolved.content_key, resolved=resolved,
        )  # fmt: skip
        by_quant = {f.quant.lower(): f for f in result.files}
        reference = by_quant[reference_type].path
        files = [by_quant[q].path for q in quants]
        report = run_measurement(plan, files, reference, work_dir=settings.cache_dir / "quality",
                                 progress=progress)  # fmt: skip
    rows: list[dict[str, Any]] = [
        {
            "quant": q,
            "bytes": by_quant[q].size_bytes,
            "bits_per_weight": round(by_quant[q].size_bytes * 8 / parameters, 2),
            "quality": report.files[by_quant[q].path].to_dict(),
        }
        for q in quants
    ]
    if json_out:
        summary = report.to_dict()
        summary.pop("files")
        print_result_json({"parameters": parameters, **summary, "quants": rows})
        return
    console.print(f"{parameters / 1e6:,.1f}M parameters; quality over {report.tokens:,} tokens of "
                  f"{report.eval_source} against {reference.name}, measured with {report.tool} "
                  f"in {report.seconds:.1f} s", markup=False)  # fmt: skip
    typer.echo(f"{'quant':<8} {'size':>10} {'bpw':>6} {'KL mean':>9} {'median':>9} {'p99':>9} "
               f"{'top1':>7} {'PPL':>10}")  # fmt: skip
    typer.echo(f"{reference_type:<8} {_mb(by_quant[reference_type].size_bytes):>10} "
               f"{by_quant[reference_type].size_bytes * 8 / parameters:>6.2f} {'(ref)':>9} "
               f"{'':>9} {'':>9} {'':>7} {report.reference_perplexity:>10.4f}")  # fmt: skip
    for row in rows:
        q = row["quality"]
        typer.echo(f"{row['quant']:<8} {_mb(row['bytes']):>10} {row['bits_per_weight']:>6.2f} "
                   f"{q['kl_mean']:>9.5f} {q['kl_median']:>9.5f} {q['kl_p99']:>9.5f} "
                   f"{q['top1']:>7.2%} {q['perplexity']:>10.4f}")  # fmt: skip


def _mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"
