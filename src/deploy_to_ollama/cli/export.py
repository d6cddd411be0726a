"""CLI commands of the export stage: ``setup`` (llama.cpp toolchain) and ``export``."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import DeployError, UsageError
from ..progress import RichProgress, console
from ..settings import Settings
from ._common import ForceOpt, JsonOpt, app, print_result_json

logger = logging.getLogger(__name__)

SETUP_EXAMPLES = """Examples:

  deploy-to-ollama setup                       # build the pinned llama.cpp once (~4 min)

  deploy-to-ollama setup --llama-cpp ~/llama.cpp   # check and use your own checkout
"""
EXPORT_EXAMPLES = """Examples:

  deploy-to-ollama export ./lora --out ./gguf                   # q4_k_m

  deploy-to-ollama export ./lora --out ./gguf --quant q8_0,q4_k_m --name mybot

  deploy-to-ollama export ./lora --out ./gguf --mode adapter    # base GGUF + GGUF LoRA

  deploy-to-ollama export ./lora --list-quants                  # sizes of every quant
"""

LlamaCppOpt = Annotated[
    Path | None,
    typer.Option(
        "--llama-cpp",
        envvar="DTO_LLAMA_CPP_DIR",
        help="Use this llama.cpp (convert_hf_to_gguf.py + llama-quantize)",
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print only the GGUF paths.")]


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
    from ..gguf.toolchain import LLAMA_CPP_COMMIT, provision_toolchain

    settings = Settings.from_env()
    with RichProgress(transient=True) as progress:
        result = provision_toolchain(
            settings.cache_dir, llama_cpp_dir=llama_cpp, jobs=jobs, force=force, progress=progress
        )
    payload = {
        "action": result.action,
        "llama_cpp_dir": str(result.toolchain.root),
        "llama_quantize": str(result.toolchain.quantize),
        "commit": LLAMA_CPP_COMMIT if result.action != "external" else None,
        "seconds": round(result.seconds, 1),
    }
    if json_out:
        print_result_json(payload)
        return
    verb = {"built": "built", "reused": "already provisioned", "external": "using your"}
    console.print(f"llama.cpp {verb[result.action]}: {result.toolchain.root}", markup=False)
    typer.echo(str(result.toolchain.root))


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
    if backend not in ("auto", "llama.cpp", "unsloth"):
        raise UsageError(f"unknown backend {backend!r}", hint="use auto, llama.cpp or unsloth")
    if backend != "auto":
        return backend
    from ..gguf.unsloth import unsloth_availability

    return "unsloth" if unsloth_availability().available else "llama.cpp"


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
    name: Annotated[str | None, typer.Option("--name", help="general.name and file stem.")] = None,
    llama_cpp: LlamaCppOpt = None,
    list_quants: Annotated[
        bool, typer.Option("--list-quants", help="List quant types with estimated sizes.")
    ] = False,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Export a fine-tune to GGUF file(s) and a Modelfile."""
    if list_quants:
        _list_quants(source, base, json_out)
        return
    if source is None or out is None:
        raise UsageError("export needs SOURCE and --out", hint="e.g. export ./lora --out ./gguf")
    if mode not in ("merged", "adapter"):
        raise UsageError(f"unknown mode {mode!r}", hint="use --mode merged or --mode adapter")
    from ..gguf.quants import parse_quant_list

    parse_quant_list(quant)  # validate before any heavy work
    chosen = _pick_backend(backend)
    if chosen == "unsloth" and (mode == "adapter" or base is not None or name is not None):
        raise UsageError(
            "--mode adapter, --base and --name need the llama.cpp backend",
            hint="add --backend llama.cpp",
        )
    if chosen == "unsloth":
        _export_unsloth(source, out, quant, save_merged, force, json_out, quiet, llama_cpp)
        return
    from ..gguf.export import export_gguf

    settings = Settings.from_env()
    with RichProgress() as progress:
        result = export_gguf(
            source,
            out_dir=out,
            quant=quant,
            base=base,
            mode="adapter" if mode == "adapter" else "merged",
            save_merged=save_merged,
            name=name,
            force=force,
            cache_dir=settings.cache_dir,
            llama_cpp_dir=llama_cpp or settings.llama_cpp_dir,
            progress=progress,
        )
    modelfile, template_status = _write_modelfile(result, source, out, force=force)
    _report(result, modelfile, template_status, json_out=json_out, quiet=quiet)


def _export_unsloth(
    source: Path,
    out: Path,
    quant: str,
    save_merged: Path | None,
    force: bool,
    json_out: bool,
    quiet: bool,
    llama_cpp: Path | None,
) -> None:
    from ..gguf.toolchain import provision_toolchain
    from ..gguf.unsloth import export_with_unsloth

    settings = Settings.from_env()
    toolchain = provision_toolchain(settings.cache_dir, llama_cpp_dir=llama_cpp).toolchain
    with RichProgress() as progress:
        result = export_with_unsloth(
            source,
            out,
            quants=[q.strip() for q in quant.split(",") if q.strip()],
            llama_cpp_dir=toolchain.root,
            cache_dir=settings.cache_dir,
            save_merged=save_merged,
            force=force,
            progress=progress,
        )
    files = [{"path": str(g.path), "quant": g.quant, "bytes": g.size_bytes} for g in result.ggufs]
    if json_out:
        print_result_json({"backend": "unsloth", "files": files})
    else:
        for f in files:
            typer.echo(f["path"])


def _write_modelfile(result: Any, source: Path, out: Path, *, force: bool) -> tuple[Path, str]:
    """Modelfile beside the GGUFs: TEMPLATE and stops from the template engine when available."""
    from .._fs import write_text_atomic
    from ..errors import OutputExistsError
    from ..modelfile import Modelfile, render_modelfile, stop_parameters

    target = out / "Modelfile"
    if target.exists() and not force:
        raise OutputExistsError(f"{target} already exists", hint="pass --force to replace it")
    template = stops = system = None
    status = "not translated"
    try:
        engine = importlib.import_module("deploy_to_ollama.chat_template")
        translated = engine.translate_template(engine.load_template_source(source))
        template, stops, system = translated.template, translated.stop, translated.system
        status = "verified" if translated.verified else "unverified"
    except (ImportError, AttributeError):
        status = "template engine unavailable"
    except DeployError as err:
        logger.warning("chat template not translated: %s", err.message)
        status = f"failed: {err.message}"
    model = next(f for f in result.files if f.role in ("model", "base"))
    adapters = tuple(f"./{f.path.name}" for f in result.files if f.role == "adapter")
    modelfile = Modelfile(
        from_=f"./{model.path.name}",
        adapters=adapters,
        template=str(template) if template else None,
        system=system,
        parameters=stop_parameters(stops or ()),
    )
    write_text_atomic(target, render_modelfile(modelfile))
    return target, status


def _report(
    result: Any, modelfile: Path, template_status: str, *, json_out: bool, quiet: bool
) -> None:
    files = [
        {"path": str(f.path), "quant": f.quant, "bytes": f.size_bytes, "role": f.role}
        for f in result.files
    ]
    if json_out:
        print_result_json(
            {
                "name": result.name,
                "input_kind": result.input_kind,
                "files": files,
                "modelfile": str(modelfile),
                "template": template_status,
                "merged_dir": str(result.merged_dir) if result.merged_dir else None,
                "pretokenizer_detected": result.pretokenizer_detected,
            }
        )
        return
    if not quiet:
        for f in result.files:
            console.print(f"{f.role:8} {f.quant:8} {f.size_bytes / 1e6:10.1f} MB  {f.path}")
        console.print(f"Modelfile: {modelfile} (template {template_status})", markup=False)
    for f in result.files:
        typer.echo(str(f.path))
