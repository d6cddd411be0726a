"""CLI commands of the export stage: ``setup`` (llama.cpp toolchain) and ``export``.

Thin: parse and validate the flags, call ``exporting.export``, render its report.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from .._fs import check_writable_dir
from ..errors import InputNotFoundError, UsageError
from ..exporting import (
    ExportOptions,
    HubPush,
    UnslothRequest,
    UnslothSummary,
    check_hub_push,
    export,
    unsloth_call_kwargs,
)
from ..exporting import write_modelfile as _write_modelfile
from ..gguf.imatrix import ImatrixChoice
from ..progress import NullProgress, RichProgress, console
from ._common import ForceOpt, JsonOpt, app, print_result_json
from ._common import settings as cli_settings

logger = logging.getLogger(__name__)

SETUP_EXAMPLES = """Examples:

  deploy-to-ollama setup                       # build the pinned llama.cpp once (~8 min, 2 cores)

  deploy-to-ollama setup --llama-cpp ~/llama.cpp   # check and use your own checkout
"""
EXPORT_EXAMPLES = """Examples:

  deploy-to-ollama export ./lora --out ./gguf                   # q4_k_m

  deploy-to-ollama export ./lora --out ./gguf --quant q8_0,q4_k_m --name mybot

  deploy-to-ollama export ./lora --out ./gguf --mode adapter    # base GGUF + GGUF LoRA

  deploy-to-ollama export ./lora --list-quants                  # sizes of every quant

  deploy-to-ollama export ./lora --out ./gguf --quant q8_0,q4_k_m --measure --eval-data chats.jsonl

  deploy-to-ollama export ./lora --list-quants --measure        # KL/top-1/PPL of five quants
  deploy-to-ollama export ./lora --out ./gguf --quant iq4_xs,q4_k_m --imatrix auto \\
      --calibration-data ./my_domain.txt                        # importance-matrix quants

  deploy-to-ollama export ./lora --out ./gguf --push-to-hub alice/bot-GGUF --private

  deploy-to-ollama export ./lora --out ./gguf --backend unsloth --load-in-4bit \\
      --save-merged-4bit ./merged4                              # Unsloth on a CUDA GPU
"""

LlamaCppOpt = Annotated[
    Path | None,
    typer.Option(
        "--llama-cpp",
        envvar="DTO_LLAMA_CPP_DIR",
        help="Use this llama.cpp (convert_hf_to_gguf.py + llama-quantize)",
    ),
]
ImatrixOpt = Annotated[
    str | None,
    typer.Option(
        "--imatrix",
        help="Quantize with an importance matrix: auto (computed with llama-imatrix on "
        "--calibration-data, else a packaged text; cached beside the output) or a FILE "
        "(.gguf or .dat from llama-imatrix). Needed by the IQ types (iq4_xs, iq3_m ...).",
    ),
]
CalibrationOpt = Annotated[
    Path | None,
    typer.Option(
        "--calibration-data",
        help="Text (or .jsonl) --imatrix auto computes on; at least ~1,000 tokens.",
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the GGUF paths.")]
BACKENDS = ("auto", "llama.cpp", "unsloth")
#: What needs each optional tool (deploy and export need none of them).
TOOL_USES = {
    "llama-server": "native template checks; deploy works without it",
    "llama-perplexity": "export --measure; export works without it",
    "llama-imatrix": "--imatrix auto; export works without it",
}


@app.command("setup", epilog=SETUP_EXAMPLES)
def setup_command(
    llama_cpp: LlamaCppOpt = None,
    force: ForceOpt = False,
    jobs: Annotated[
        int | None, typer.Option("--jobs", "-j", help="Build jobs (default: CPU count)")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Provision the pinned llama.cpp toolchain (offline after the first run; idempotent)."""
    from ..gguf.toolchain import LLAMA_CPP_COMMIT, OPTIONAL_TOOLS, provision_toolchain

    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}", hint="e.g. --jobs 4")
    settings = cli_settings()
    with RichProgress(transient=True, lines_when_not_tty=not json_out) as progress:
        result = provision_toolchain(
            settings.cache_dir, llama_cpp_dir=llama_cpp, jobs=jobs, force=force,
            with_server=True, with_tools=True, progress=progress,
        )  # fmt: skip
    server = result.toolchain.server
    tools = {name: result.toolchain.tool(name) for name in OPTIONAL_TOOLS}
    payload = {
        "action": result.action,
        "llama_cpp_dir": str(result.toolchain.root),
        "llama_quantize": str(result.toolchain.quantize),
        "llama_server": str(server) if server else None,
        "llama_server_error": result.server_error,
        "tools": {name: str(path) if path else None for name, path in tools.items()},
        "tool_errors": result.tool_errors,
        "commit": LLAMA_CPP_COMMIT if result.action != "external" else None,
        "seconds": round(result.seconds, 1),
        "step_seconds": result.step_seconds,
        "waited": result.waited,
    }
    if json_out:
        print_result_json(payload)
        return
    verb = {"built": "built", "installed": "installed", "reused": "already provisioned",
            "external": "using your", "completed": "completed (missing tools added)"}  # fmt: skip
    console.print(f"llama.cpp {verb[result.action]}: {result.toolchain.root}", markup=False)
    for name, path in tools.items():
        if path is None:
            why = result.tool_errors.get(name) or "not built"
            console.print(f"Warning: no {name}: {why} ({TOOL_USES[name]})", markup=False)
    typer.echo(str(result.toolchain.root))


def check_imatrix_flags(
    quant: str,
    imatrix: str | None,
    calibration_data: Path | None,
    eval_data: Path | None = None,
) -> ImatrixChoice | None:
    """``--quant`` against ``--imatrix`` / ``--calibration-data``, before any heavy work.

    ``auto`` computes on ``--calibration-data``, else on ``eval_data`` (``--eval-data``), else
    on the packaged text.

    Raises:
        UsageError: an IQ type without ``--imatrix``, or calibration text without it (exit 2).
        InputError: the imatrix or calibration file is missing or unreadable (exit 1).
    """
    from ..gguf.imatrix import parse_imatrix_option
    from ..gguf.quants import check_imatrix_needs, parse_quant_list

    if calibration_data is not None and imatrix is None:
        raise UsageError("--calibration-data needs --imatrix auto", hint="add --imatrix auto")
    check_imatrix_needs(parse_quant_list(quant), has_imatrix=imatrix is not None)
    return parse_imatrix_option(imatrix, calibration_data, eval_data)


def _list_quants(source: Path | None, base: Path | None, json_out: bool) -> None:
    from ..gguf.quants import QUANT_ALIASES, QUANT_TYPES, count_parameters

    n_params = 0
    if source is not None:
        from ..inputs import resolve_input

        resolved: Any = resolve_input(source, base=base)
        if resolved.kind != "gguf":
            n_params = count_parameters(
                Path(resolved.base_dir if resolved.kind == "adapter" else resolved.path)
            )
    rows = [
        {
            "quant": q.name,
            "estimated_bytes": q.estimate_bytes(n_params) if n_params else None,
            "bits_per_weight": q.bits_per_weight,
            "use": q.use,
        }
        for q in sorted(QUANT_TYPES.values(), key=lambda q: -q.bits_per_weight)
    ]
    if json_out:
        print_result_json(
            {"parameters": n_params or None, "quants": rows, "aliases": dict(QUANT_ALIASES)}
        )
        return
    if n_params:
        typer.echo(f"{n_params / 1e6:,.1f}M parameters")
    for q in sorted(QUANT_TYPES.values(), key=lambda q: -q.bits_per_weight):
        size = f"{q.estimate_bytes(n_params) / 1e6:10,.1f} MB" if n_params else ""
        typer.echo(f"{q.name:<8} {q.bits_per_weight:5.2f} bpw {size:>14}  {q.use}")
    aliases = ", ".join(f"{k}={v or 'f16/bf16'}" for k, v in QUANT_ALIASES.items())
    typer.echo(f"aliases: {aliases}")


def _pick_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}", hint="use auto, llama.cpp or unsloth")
    if backend != "auto":
        return backend
    from ..gguf.unsloth import unsloth_availability

    return "unsloth" if unsloth_availability().available else "llama.cpp"


def check_mode(mode: str, source: Path) -> None:
    """``--mode adapter`` needs a LoRA adapter SOURCE: say so before the toolchain is built.

    Only the folder's marker file is looked at; a missing SOURCE is left to the export (exit 1).
    """
    if mode == "adapter" and source.exists() and not (source / "adapter_config.json").is_file():
        kind = "GGUF file" if source.suffix.lower() == ".gguf" else "merged model"
        raise UsageError(
            f"--mode adapter needs a LoRA adapter, {source} is a {kind}",
            hint="drop --mode adapter (a merged model or GGUF is exported as it is)",
        )


def _check_unsloth_flags(
    backend: str, *, load_in_4bit: bool, load_in_8bit: bool, save_merged_4bit: Path | None
) -> None:
    """bitsandbytes loading and the forced 4-bit merge exist only on Unsloth's path."""
    if load_in_4bit and load_in_8bit:
        raise UsageError(
            "--load-in-4bit and --load-in-8bit exclude each other", hint="pass only one of them"
        )
    wanted = [
        flag
        for flag, on in (
            ("--load-in-4bit", load_in_4bit),
            ("--load-in-8bit", load_in_8bit),
            ("--save-merged-4bit", save_merged_4bit is not None),
        )
        if on
    ]
    if wanted and backend == "llama.cpp":
        raise UsageError(
            f"{', '.join(wanted)} need the unsloth backend",
            hint="add --backend unsloth (CUDA + unsloth), or drop the flag",
        )


@app.command("export", epilog=EXPORT_EXAMPLES)
def export_command(
    source: Annotated[
        Path | None, typer.Argument(help="LoRA adapter dir, merged model dir or .gguf file")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output directory.")] = None,
    quant: Annotated[
        str, typer.Option("--quant", help="Quant type(s), comma-separated")
    ] = "q4_k_m",
    base: Annotated[Path | None, typer.Option("--base", help="Local base model dir.")] = None,
    backend: Annotated[str, typer.Option("--backend", help="auto | llama.cpp | unsloth")] = "auto",
    mode: Annotated[
        str, typer.Option("--mode", help="merged | adapter (base GGUF + GGUF LoRA)")
    ] = "merged",
    save_merged: Annotated[
        Path | None, typer.Option("--save-merged", help="Also write the merged HF model here.")
    ] = None,
    save_merged_4bit: Annotated[
        Path | None,
        typer.Option(
            "--save-merged-4bit",
            help="Unsloth only: also write a merged 4-bit model here (merged_4bit_forced).",
        ),
    ] = None,
    load_in_4bit: Annotated[
        bool, typer.Option("--load-in-4bit", help="Unsloth only: load with bitsandbytes 4-bit.")
    ] = False,
    load_in_8bit: Annotated[
        bool, typer.Option("--load-in-8bit", help="Unsloth only: load with bitsandbytes 8-bit.")
    ] = False,
    name: Annotated[str | None, typer.Option("--name", help="general.name and file stem.")] = None,
    push_to_hub: Annotated[
        str | None,
        typer.Option("--push-to-hub", help="After the export, upload to USER/REPO (HF_TOKEN)."),
    ] = None,
    what: Annotated[
        str | None,
        typer.Option("--what", help="What --push-to-hub uploads: gguf (default), merged, adapter."),
    ] = None,
    private: Annotated[
        bool, typer.Option("--private", help="Create the Hub repo private.")
    ] = False,
    llama_cpp: LlamaCppOpt = None,
    imatrix: ImatrixOpt = None,
    calibration_data: CalibrationOpt = None,
    list_quants: Annotated[
        bool, typer.Option("--list-quants", help="List quant types with estimated sizes.")
    ] = False,
    measure: Annotated[
        bool,
        typer.Option(
            "--measure",
            help="Measure each GGUF against the 16-bit model: KL "
            "divergence, top-1 agreement, perplexity (llama-perplexity).",
        ),
    ] = False,
    eval_data: Annotated[
        Path | None,
        typer.Option(
            "--eval-data",
            help="--measure on this text, or .jsonl chat data rendered "
            "with the chat template (default: a packaged held-out text).",
        ),
    ] = None,
    eval_tokens: Annotated[
        int | None, typer.Option("--eval-tokens", help="--measure over at most N tokens (4096).")
    ] = None,
    measure_minutes: Annotated[
        float | None,
        typer.Option("--measure-minutes", help="Refuse a --measure estimated to take longer (30)."),
    ] = None,
    template_route: Annotated[
        str,
        typer.Option(
            "--template-route",
            help="Modelfile for this prompt path: go (our verified TEMPLATE; auto, the default, "
            "is go here since no server is asked) or native (no TEMPLATE/SYSTEM: Ollama 0.30+ "
            "renders the GGUF's Jinja; deploy proves it).",
        ),
    ] = "auto",
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Export a fine-tune to GGUF file(s) and a Modelfile, and optionally push it to the Hub."""
    from ..measuring import check_measure_flags
    from ..routing import check_route_request

    route = check_route_request(template_route)
    measuring = check_measure_flags(
        measure=measure, eval_data=eval_data, eval_tokens=eval_tokens, minutes=measure_minutes,
        mode=mode, backend=backend,
    )  # fmt: skip
    if list_quants:
        if measuring is not None:
            from ._list_quants import list_quants_measured

            list_quants_measured(source, base, quant, measuring, llama_cpp, json_out)
            return
        _list_quants(source, base, json_out)
        return
    if source is None or out is None:
        raise UsageError("export needs SOURCE and --out", hint="e.g. export ./lora --out ./gguf")
    if mode not in ("merged", "adapter"):
        raise UsageError(f"unknown mode {mode!r}", hint="use --mode merged or --mode adapter")
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}", hint="use auto, llama.cpp or unsloth")
    if save_merged is not None and save_merged_4bit is not None:
        raise UsageError(
            "--save-merged and --save-merged-4bit exclude each other",
            hint="Unsloth writes one merged model per export: pass only one",
        )
    if imatrix is not None and (backend == "unsloth" or mode == "adapter"):
        raise UsageError(
            "--imatrix works with the llama.cpp backend and --mode merged",
            hint="drop --imatrix, or use --backend llama.cpp --mode merged",
        )
    imatrix_choice = check_imatrix_flags(quant, imatrix, calibration_data, eval_data)
    check_mode(mode, source)
    if not source.exists():  # before the toolchain (minutes on a fresh machine) is provisioned
        raise InputNotFoundError(f"{source} does not exist", path=source, hint="check the path")
    check_writable_dir(out, what="--out")
    flags = {"load_in_4bit": load_in_4bit, "load_in_8bit": load_in_8bit}
    _check_unsloth_flags(backend, save_merged_4bit=save_merged_4bit, **flags)
    push = check_hub_push(
        push_to_hub,
        what=what,
        private=private,
        source=source,
        merged_dir=save_merged or save_merged_4bit,
    )
    chosen = _pick_backend(backend)
    if chosen == "llama.cpp":
        _check_unsloth_flags(chosen, save_merged_4bit=save_merged_4bit, **flags)
    if chosen == "unsloth" and measuring is not None:
        raise UsageError("--measure needs the llama.cpp backend", hint="add --backend llama.cpp")
    if chosen == "unsloth" and (mode == "adapter" or base is not None or imatrix_choice):
        raise UsageError(
            "--mode adapter, --base and --imatrix need the llama.cpp backend",
            hint="add --backend llama.cpp",
        )
    options = ExportOptions(
        source=source,
        out=out,
        quants=tuple(q.strip() for q in quant.split(",") if q.strip()),
        base=base,
        backend="unsloth" if chosen == "unsloth" else "llama.cpp",
        mode="adapter" if mode == "adapter" else "merged",
        save_merged=save_merged,
        save_merged_4bit=save_merged_4bit,
        name=name,
        force=force,
        llama_cpp=llama_cpp,
        push=push,
        load_in_4bit=load_in_4bit,
        load_in_8bit=load_in_8bit,
        measure=measuring,
        imatrix=imatrix_choice,
        template_route=route,
    )
    settings = cli_settings()
    with RichProgress() as progress:
        push_progress = NullProgress() if quiet or json_out else progress
        report = export(options, settings=settings, progress=progress, push_progress=push_progress)
    if json_out:
        print_result_json(report.to_dict())
        return
    if not quiet:
        for line in report.summary_lines():
            console.print(line, markup=False)
    for f in report.files:
        typer.echo(str(f.path))


__all__ = [
    "HubPush",
    "UnslothRequest",
    "UnslothSummary",
    "_write_modelfile",
    "check_hub_push",
    "unsloth_call_kwargs",
]
