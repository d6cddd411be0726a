"""CLI commands of the export stage: ``setup`` (llama.cpp toolchain) and ``export``."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class HubPush:
    """A validated ``--push-to-hub`` request."""

    repo_id: str
    what: str
    private: bool


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


def check_hub_push(
    repo_id: str | None,
    *,
    what: str | None,
    private: bool,
    source: Path,
    merged_dir: Path | None,
) -> HubPush | None:
    """Validate ``--push-to-hub`` before any heavy work (a failed push after an export is slow).

    Returns None when no push was asked for.
    """
    if repo_id is None:
        if what is not None or private:
            raise UsageError("--what and --private need --push-to-hub", hint="add --push-to-hub")
        return None
    from ..publish import check_kind, check_repo_id, resolve_token

    kind = check_kind(what or "gguf")
    check_repo_id(repo_id)
    if kind == "merged" and merged_dir is None:
        raise UsageError(
            "--what merged pushes the merged model: it needs --save-merged DIR",
            hint="add --save-merged DIR (or --save-merged-4bit DIR with --backend unsloth)",
        )
    if kind == "adapter" and not (source / "adapter_config.json").is_file():
        raise UsageError(
            f"--what adapter needs a LoRA adapter SOURCE, {source} has no adapter_config.json",
            hint="push --what gguf or --what merged instead",
        )
    resolve_token(None)  # a missing token fails now, not after the export
    return HubPush(repo_id=repo_id, what=kind, private=private)


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
    list_quants: Annotated[
        bool, typer.Option("--list-quants", help="List quant types with estimated sizes.")
    ] = False,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Export a fine-tune to GGUF file(s) and a Modelfile, and optionally push it to the Hub."""
    if list_quants:
        _list_quants(source, base, json_out)
        return
    if source is None or out is None:
        raise UsageError("export needs SOURCE and --out", hint="e.g. export ./lora --out ./gguf")
    if mode not in ("merged", "adapter"):
        raise UsageError(f"unknown mode {mode!r}", hint="use --mode merged or --mode adapter")
    if save_merged is not None and save_merged_4bit is not None:
        raise UsageError(
            "--save-merged and --save-merged-4bit exclude each other",
            hint="Unsloth writes one merged model per export: pass only one",
        )
    from ..gguf.quants import parse_quant_list

    parse_quant_list(quant)  # validate before any heavy work
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
    if chosen == "unsloth" and (mode == "adapter" or base is not None):
        raise UsageError(
            "--mode adapter and --base need the llama.cpp backend",
            hint="add --backend llama.cpp",
        )
    if chosen == "unsloth":
        request = UnslothRequest(
            source=source,
            out=out,
            quants=tuple(q.strip() for q in quant.split(",") if q.strip()),
            save_merged=save_merged or save_merged_4bit,
            merged_method="merged_4bit_forced" if save_merged_4bit else "merged_16bit",
            name=name,
            force=force,
            **flags,
        )
        result: Any = _export_unsloth(request, llama_cpp)
    else:
        result = _export_llama_cpp(
            source, out, quant, base, mode, save_merged, name, force, llama_cpp
        )
    modelfile, template_status = _write_modelfile(
        result, source, out, force=force or bool(getattr(result, "reused", False))
    )
    hub = _push(push, result, source, out, template_status, quiet=quiet or json_out)
    _report(result, modelfile, template_status, hub, json_out=json_out, quiet=quiet)


def _export_llama_cpp(
    source: Path,
    out: Path,
    quant: str,
    base: Path | None,
    mode: str,
    save_merged: Path | None,
    name: str | None,
    force: bool,
    llama_cpp: Path | None,
) -> Any:
    from ..gguf.export import export_gguf

    settings = Settings.from_env()
    with RichProgress() as progress:
        return export_gguf(
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


@dataclass(frozen=True, slots=True)
class UnslothRequest:
    """The ``export --backend unsloth`` flags, validated."""

    source: Path
    out: Path
    quants: tuple[str, ...]
    save_merged: Path | None = None
    merged_method: str = "merged_16bit"
    """``merged_16bit`` (--save-merged) or ``merged_4bit_forced`` (--save-merged-4bit)."""
    name: str | None = None
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    force: bool = False


def unsloth_call_kwargs(request: UnslothRequest) -> dict[str, Any]:
    """Keyword arguments of ``export_with_unsloth`` for a request (toolchain and cache aside).

    >>> kw = unsloth_call_kwargs(UnslothRequest(Path("a"), Path("o"), ("q8_0",), load_in_4bit=True))
    >>> kw["load_in_4bit"], kw["merged_method"], kw["quants"]
    (True, 'merged_16bit', ['q8_0'])
    """
    return {
        "quants": list(request.quants),
        "load_in_4bit": request.load_in_4bit,
        "load_in_8bit": request.load_in_8bit,
        "save_merged": request.save_merged,
        "merged_method": request.merged_method,
        "force": request.force,
    }


@dataclass(frozen=True, slots=True)
class UnslothSummary:
    """Unsloth's export in the shape the Modelfile writer and the report read."""

    files: tuple[Any, ...]
    name: str
    merged_dir: Path | None
    input_kind: str = "unsloth"
    pretokenizer_detected: str | None = None


def _export_unsloth(request: UnslothRequest, llama_cpp: Path | None) -> UnslothSummary:
    from ..gguf.export import GgufFile
    from ..gguf.toolchain import provision_toolchain
    from ..gguf.unsloth import export_with_unsloth

    settings = Settings.from_env()
    toolchain = provision_toolchain(
        settings.cache_dir, llama_cpp_dir=llama_cpp or settings.llama_cpp_dir
    ).toolchain
    with RichProgress() as progress:
        result = export_with_unsloth(
            request.source,
            request.out,
            llama_cpp_dir=toolchain.root,
            cache_dir=settings.cache_dir,
            progress=progress,
            **unsloth_call_kwargs(request),
        )
    files = tuple(
        GgufFile(path=g.path, quant=g.quant, size_bytes=g.size_bytes) for g in result.ggufs
    )
    return UnslothSummary(
        files=files,
        name=request.name or request.source.resolve().name,
        merged_dir=result.merged_dir,
    )


def _push(
    push: HubPush | None,
    result: Any,
    source: Path,
    out: Path,
    template_status: str,
    *,
    quiet: bool,
) -> dict[str, Any] | None:
    """Upload what ``--what`` names once the export has succeeded."""
    if push is None:
        return None
    from ..progress import NullProgress
    from ..publish import push_to_hub

    folder = {"gguf": out, "merged": result.merged_dir, "adapter": source}[push.what]
    call: dict[str, Any] = {"what": push.what, "private": push.private}
    if push.what == "gguf":
        call["template_verified"] = {"verified": True, "unverified": False}.get(template_status)
    if quiet:
        pushed = push_to_hub(Path(folder), push.repo_id, progress=NullProgress(), **call)
    else:
        with RichProgress(transient=True) as reporter:
            pushed = push_to_hub(Path(folder), push.repo_id, progress=reporter, **call)
    return dict(pushed.to_dict())


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
    result: Any,
    modelfile: Path,
    template_status: str,
    hub: dict[str, Any] | None,
    *,
    json_out: bool,
    quiet: bool,
) -> None:
    files = [
        {
            "path": str(f.path),
            "quant": f.quant,
            "bytes": f.size_bytes,
            "role": f.role,
            "tensor_types": dict(getattr(f, "tensor_types", None) or {}) or None,
            "timings": dict(getattr(f, "timings", None) or {}) or None,
        }
        for f in result.files
    ]
    unsloth = isinstance(result, UnslothSummary)
    if json_out:
        payload: dict[str, Any] = {
            "backend": "unsloth" if unsloth else "llama.cpp",
            "name": result.name,
            "input_kind": result.input_kind,
            "files": files,
            "modelfile": str(modelfile),
            "template": template_status,
            "merged_dir": str(result.merged_dir) if result.merged_dir else None,
            "pretokenizer_detected": result.pretokenizer_detected,
            "reused": bool(getattr(result, "reused", False)),
            "hub": hub,
        }
        if unsloth:
            payload["general_name"] = "written by Unsloth (not --name)"
        print_result_json(payload)
        return
    if not quiet:
        if getattr(result, "reused", False):
            console.print("reused the existing export (same inputs)", markup=False)
        for f in result.files:
            line = f"{f.role:8} {f.quant:8} {f.size_bytes / 1e6:10.1f} MB  {f.path}"
            if mixture := getattr(f, "tensor_types", None):
                line += "  (" + ", ".join(f"{n} {t}" for t, n in sorted(mixture.items())) + ")"
            console.print(line, markup=False)
            if timings := getattr(f, "timings", None):
                stages = ", ".join(f"{stage} {s:.1f} s" for stage, s in timings.items())
                console.print(f"{'':8} time: {stages} (busy time; stages overlap)", markup=False)
        console.print(f"Modelfile: {modelfile} (template {template_status})", markup=False)
        if unsloth:
            console.print(f"{result.name}: general.name was written by Unsloth", markup=False)
        if hub is not None:
            console.print(f"pushed {len(hub['files'])} files to {hub['repo_url']}", markup=False)
    for f in result.files:
        typer.echo(str(f.path))
