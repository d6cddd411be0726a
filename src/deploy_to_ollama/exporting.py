"""``export``: resolve -> template -> GGUF(s) -> Modelfile -> (Hub push), resumably.

The library entry behind ``deploy-to-ollama export``: the CLI parses and validates flags into an
``ExportOptions``, calls ``export`` and renders the ``ExportReport``. Everything that can fail
cheaply (output folder, input, template, Modelfile content, Hub token) fails before the toolchain
is provisioned or a byte of GGUF is written; the Modelfile is the one ``deploy`` would register.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ._fs import check_writable_dir, write_text_atomic
from .errors import DeployError, OutputExistsError, UsageError
from .gguf.imatrix import ImatrixChoice
from .gguf.steps import GgufFile
from .measuring import MeasureOptions
from .modelfile import TemplateResult, render_modelfile
from .progress import NullProgress, ProgressReporter
from .reports import ExportReport
from .settings import Settings
from .stages import MODELFILE_NAME, build_modelfile, translate_stage

if TYPE_CHECKING:
    from .routing import RouteRequest

logger = logging.getLogger(__name__)

Backend = Literal["llama.cpp", "unsloth"]


@dataclass(frozen=True, slots=True)
class HubPush:
    """A validated ``--push-to-hub`` request."""

    repo_id: str
    what: str
    private: bool


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


@dataclass(frozen=True, slots=True)
class UnslothSummary:
    """Unsloth's export in the shape the Modelfile writer and the report read."""

    files: tuple[Any, ...]
    name: str
    merged_dir: Path | None
    input_kind: str = "unsloth"
    pretokenizer_detected: str | None = None


@dataclass(frozen=True, slots=True)
class ExportOptions:
    """One ``export`` call, its flags validated (see ``deploy-to-ollama export --help``)."""

    source: Path
    out: Path
    quants: tuple[str, ...] = ("q4_k_m",)
    base: Path | None = None
    backend: Backend = "llama.cpp"
    mode: Literal["merged", "adapter"] = "merged"
    save_merged: Path | None = None
    save_merged_4bit: Path | None = None
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    name: str | None = None
    force: bool = False
    llama_cpp: Path | None = None
    push: HubPush | None = None
    extra_parameters: tuple[tuple[str, str], ...] = field(default=())
    """User ``PARAMETER`` lines (the library API's; the CLI has none for export)."""
    measure: MeasureOptions | None = None
    """``--measure``: the quality report (``measuring.py``); None: not measured."""
    imatrix: ImatrixChoice | None = None
    template_route: RouteRequest = "auto"
    """``--template-route``: native writes the Modelfile without TEMPLATE/SYSTEM (``routing``)."""
    """``--imatrix auto|FILE`` (with its calibration text), checked by the CLI."""


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

    Raises:
        UsageError: contradicting flags; HubError: no token.
    """
    if repo_id is None:
        if what is not None or private:
            raise UsageError("--what and --private need --push-to-hub", hint="add --push-to-hub")
        return None
    from .publish import check_kind, check_repo_id, resolve_token

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


@dataclass(frozen=True, slots=True)
class _Translation:
    """The template stage's outcome for ``export`` (a failure is reported, not raised)."""

    template: TemplateResult | None
    status: str


def translate_for_export(source: Path, base_dir: Path | None) -> _Translation:
    """The template for the Modelfile; ``export`` still writes GGUFs when it cannot translate."""
    try:
        template = translate_stage(source, base_dir)
    except DeployError as err:
        logger.warning("chat template not translated: %s", err.message)
        return _Translation(None, f"failed: {err.message}")
    return _Translation(template, "verified" if template.verified else "unverified")


def export(
    options: ExportOptions,
    *,
    settings: Settings | None = None,
    progress: ProgressReporter | None = None,
    push_progress: ProgressReporter | None = None,
) -> ExportReport:
    """Export a fine-tune to GGUF file(s) and the Modelfile ``deploy`` would register.

    A rerun of the same export continues an interrupted one (finished GGUFs are kept) and an
    identical rerun reuses everything (``report.reused``).

    Args:
        options: the validated flags.
        settings: configuration read once at the entry point (default: the environment).
        progress: reporter of the export stages.
        push_progress: reporter of the Hub upload.

    Returns:
        What was written (and pushed).

    Raises:
        DeployError: a stage failed (the subclass and its exit code say which).
    """
    settings = settings or Settings.from_env()
    reporter = progress or NullProgress()
    check_writable_dir(options.out, what="--out")
    quality = None
    if options.backend == "unsloth":
        result, translation, modelfile_text = _export_unsloth(options, settings, reporter)
    else:
        result, translation, modelfile_text, quality = _export_llama_cpp(
            options, settings, reporter
        )
    modelfile = options.out / MODELFILE_NAME
    write_text_atomic(modelfile, modelfile_text)
    hub = _push(options, result, translation.status, push_progress or NullProgress())
    return ExportReport(
        backend=options.backend,
        result=result,
        modelfile=modelfile,
        template_status=translation.status,
        hub=hub,
        quality=quality,
    )


def _export_llama_cpp(
    options: ExportOptions, settings: Settings, reporter: ProgressReporter
) -> tuple[Any, _Translation, str, Any]:
    from .chat_template.source import check_source
    from .gguf.export import ExportRequest, export_gguf, plan_files
    from .gguf.quants import parse_quant_list
    from .gguf.steps import model_dtype
    from .resume import content_key

    # Config, tensors against config and base, a Jinja that parses: before any export work.
    resolved: Any = check_source(options.source, base=options.base)
    hashed = _content_key_in_background(resolved)
    base_dir = Path(resolved.base_dir) if resolved.kind == "adapter" else None
    translation = translate_for_export(options.source, base_dir)
    weights = Path(resolved.base_dir if resolved.kind == "adapter" else resolved.path)
    dtype = model_dtype(weights) if resolved.kind != "gguf" else "bf16"
    quants = parse_quant_list(list(options.quants), model_dtype=dtype)
    stem = options.name or (
        options.source.resolve().name if options.source.is_dir() else options.source.stem
    )
    planned = plan_files(
        ExportRequest(options.source, options.out, options.quants, mode=options.mode),
        quants,
        stem,
    )
    adapters = [f"./{p.name}" for p in planned if p.name.endswith("-lora.F16.gguf")]
    text = _modelfile_text(options, translation, f"./{planned[0].name}", adapters, base_dir)
    _check_modelfile_target(options, text)

    def key() -> str:
        return hashed() or content_key(Path(resolved.path), base_dir, exclude=options.out)

    plan = _plan_measurement(options, settings, reporter, resolved, weights, len(quants))
    result = export_gguf(
        options.source,
        out_dir=options.out,
        quant=list(options.quants),
        base=options.base,
        mode=options.mode,
        save_merged=options.save_merged,
        name=options.name,
        force=options.force,
        cache_dir=settings.cache_dir,
        llama_cpp_dir=options.llama_cpp or settings.llama_cpp_dir,
        progress=reporter,
        settings=settings,
        content_key=key,
        resolved=resolved,
        toolchain=plan.toolchain if plan is not None else None,
        imatrix=options.imatrix,
    )
    quality = None
    if plan is not None:
        from .measuring import ReferenceSource, measure_export

        ref = ReferenceSource(options.source, options.base, stem, dtype, key(), resolved)
        written = [(f.quant, f.path) for f in result.files if f.role == "model"]
        quality = measure_export(plan, written, ref, out_dir=options.out,
                                 cache_dir=settings.cache_dir, settings=settings,
                                 progress=reporter)  # fmt: skip
    return result, translation, text, quality


def _content_key_in_background(resolved: Any) -> Callable[[], str | None]:
    """Start hashing ``resolved.content_key`` on a thread; the returned call waits for it.

    Why: the SHA-256 over the weights (~1.4 s at 1B) reads and hashes with the GIL released,
    and a first export needs the key only when it records its first file (``ExportStamp``), so
    it runs beside the converter worker's start (imports, tokenizer: one core) instead of
    before it. The key is the same value; its errors are raised by the call.
    """
    if not hasattr(type(resolved), "content_key"):
        return lambda: None
    box: list[str | BaseException] = []

    def run() -> None:
        try:
            box.append(resolved.content_key)
        except BaseException as err:  # re-raised on the caller's thread
            box.append(err)

    thread = threading.Thread(target=run, name="dto-content-key", daemon=True)
    thread.start()

    def result() -> str | None:
        thread.join()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    return result


def _plan_measurement(options: ExportOptions, settings: Settings, reporter: ProgressReporter,
                      resolved: Any, weights: Path, n_quants: int) -> Any:  # fmt: skip
    """``--measure``: the toolchain with llama-perplexity, the eval text and the budget, checked
    before the export writes anything (None when not measuring)."""
    if options.measure is None:
        return None
    from .gguf.quants import count_parameters
    from .gguf.toolchain import provision_toolchain
    from .measuring import plan_measurement

    def toolchain() -> Any:
        return provision_toolchain(
            settings.cache_dir, llama_cpp_dir=options.llama_cpp or settings.llama_cpp_dir,
            with_tools=True, progress=reporter,
        ).toolchain  # fmt: skip

    gguf = resolved.kind == "gguf"
    parameters = Path(resolved.path).stat().st_size // 2 if gguf else count_parameters(weights)
    return plan_measurement(options.measure, resolved=resolved, toolchain=toolchain,
                            parameters=parameters, files=n_quants)  # fmt: skip


def _modelfile_text(
    options: ExportOptions,
    translation: _Translation,
    from_: str,
    adapters: list[str],
    base_dir: Path | None,
) -> str:
    """The Modelfile, rendered now so that content Ollama cannot read fails before the export."""
    return _assemble(
        from_, options.source, translation, base_dir=base_dir, adapters=adapters,
        extra=options.extra_parameters, route=options.template_route,
    )  # fmt: skip


def _assemble(
    from_: str,
    source: Path,
    translation: _Translation,
    *,
    base_dir: Path | None,
    adapters: Sequence[str],
    extra: tuple[tuple[str, str], ...],
    route: RouteRequest,
) -> str:
    """The one Modelfile assembly of ``export`` (``stages.build_modelfile`` shaped for the
    route by ``routing.route_modelfile``, as ``deploy`` does)."""
    from .routing import export_route, route_modelfile

    modelfile = build_modelfile(
        from_=from_,
        source=source,
        template=translation.template,
        base_dir=base_dir,
        adapters=tuple(adapters),
        extra=extra,
    )
    return render_modelfile(route_modelfile(export_route(route), modelfile))


def _check_modelfile_target(options: ExportOptions, text: str) -> None:
    """An existing Modelfile is replaced only with ``--force`` or when it is this export's own."""
    target = options.out / MODELFILE_NAME
    if target.is_dir():
        raise OutputExistsError(f"{target} is a folder", hint="remove it or choose another --out")
    if options.force or not target.exists():
        return
    try:
        same = target.read_text(encoding="utf-8") == text
    except (OSError, UnicodeDecodeError):
        same = False
    if not same:
        raise OutputExistsError(
            f"{target} already exists", hint="pass --force to replace it, or choose another --out"
        )


def _export_unsloth(
    options: ExportOptions, settings: Settings, reporter: ProgressReporter
) -> tuple[UnslothSummary, _Translation, str]:
    from .gguf.toolchain import provision_toolchain
    from .gguf.unsloth import export_with_unsloth, require_unsloth

    require_unsloth()  # before provisioning: a CPU machine must not build llama.cpp first
    translation = translate_for_export(options.source, None)
    target = options.out / MODELFILE_NAME
    if target.exists() and not options.force:
        raise OutputExistsError(f"{target} already exists", hint="pass --force to replace it")
    request = unsloth_request(options)
    toolchain = provision_toolchain(
        settings.cache_dir,
        llama_cpp_dir=options.llama_cpp or settings.llama_cpp_dir,
        progress=reporter,
    ).toolchain
    made = export_with_unsloth(
        request.source,
        request.out,
        llama_cpp_dir=toolchain.root,
        cache_dir=settings.cache_dir,
        progress=reporter,
        **unsloth_call_kwargs(request),
    )
    summary = UnslothSummary(
        files=tuple(
            GgufFile(path=g.path, quant=g.quant, size_bytes=g.size_bytes) for g in made.ggufs
        ),
        name=request.name or request.source.resolve().name,
        merged_dir=made.merged_dir,
    )
    text = modelfile_for(summary, options.source, translation, route=options.template_route)
    return summary, translation, text


def unsloth_request(options: ExportOptions) -> UnslothRequest:
    """The Unsloth call for ``options``."""
    return UnslothRequest(
        source=options.source,
        out=options.out,
        quants=options.quants,
        save_merged=options.save_merged or options.save_merged_4bit,
        merged_method="merged_4bit_forced" if options.save_merged_4bit else "merged_16bit",
        name=options.name,
        load_in_4bit=options.load_in_4bit,
        load_in_8bit=options.load_in_8bit,
        force=options.force,
    )


def modelfile_for(
    result: Any,
    source: Path,
    translation: _Translation,
    *,
    base_dir: Path | None = None,
    extra: tuple[tuple[str, str], ...] = (),
    route: RouteRequest = "auto",
) -> str:
    """The Modelfile text for GGUFs already written (FROM the model/base, ADAPTER the LoRA)."""
    model = next(f for f in result.files if f.role in ("model", "base"))
    adapters = tuple(f"./{f.path.name}" for f in result.files if f.role == "adapter")
    return _assemble(
        f"./{model.path.name}", source, translation, base_dir=base_dir, adapters=adapters,
        extra=extra, route=route,
    )  # fmt: skip


def write_modelfile(result: Any, source: Path, out: Path, *, force: bool) -> tuple[Path, str]:
    """Translate ``source``'s template and write the Modelfile beside ``result``'s GGUFs.

    Returns:
        The Modelfile's path and the template status (``verified``, ``unverified``,
        ``failed: ...``).
    """
    target = out / MODELFILE_NAME
    if target.exists() and not force:
        raise OutputExistsError(f"{target} already exists", hint="pass --force to replace it")
    base_dir = getattr(result, "base_dir", None)
    translation = translate_for_export(source, base_dir)
    write_text_atomic(target, modelfile_for(result, source, translation, base_dir=base_dir))
    return target, translation.status


def _push(
    options: ExportOptions, result: Any, template_status: str, progress: ProgressReporter
) -> dict[str, Any] | None:
    """Upload what ``--what`` names once the export has succeeded."""
    push = options.push
    if push is None:
        return None
    from .publish import push_to_hub

    # --mode adapter: the adapter route (GGUF LoRA, base GGUF, Modelfile with ADAPTER).
    adapter = options.out if options.mode == "adapter" else options.source
    folder = {"gguf": options.out, "merged": result.merged_dir, "adapter": adapter}[push.what]
    call: dict[str, Any] = {"what": push.what, "private": push.private}
    if push.what == "gguf":
        call["template_verified"] = {"verified": True, "unverified": False}.get(template_status)
    pushed = push_to_hub(Path(folder), push.repo_id, progress=progress, **call)
    return dict(pushed.to_dict())


__all__ = [
    "ExportOptions",
    "ExportReport",
    "HubPush",
    "UnslothRequest",
    "UnslothSummary",
    "check_hub_push",
    "export",
    "modelfile_for",
    "unsloth_call_kwargs",
    "unsloth_request",
    "write_modelfile",
]
