"""``deploy``: resolve -> template -> export -> Modelfile -> register -> check, resumably.

Each stage's output lives in one work folder (``--keep`` or the cache) with a state file
(``resume.StateFile``) keyed by the input's content key, so a rerun skips what is already done
for the same inputs: the template translation, the GGUF export and the registration. Reports
live in ``reports``, resume state in ``resume``, the stages themselves in ``deploy_stages``, the
Modelfile in ``stages``/``modelfile``.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ._fs import check_writable_dir, write_text_atomic
from .chat_template.source import check_source
from .deploy_report import write_deploy_report
from .deploy_stages import (
    build_deploy_modelfile,
    gguf_name,
    reregister,
    run_export,
    run_register,
    run_template,
)
from .errors import DeployError, InputNotFoundError, OutputExistsError
from .gguf.imatrix import ImatrixChoice
from .gguf.loadable import load_warnings
from .inputs import ResolvedInput, source_kind
from .modelfile import Modelfile, TemplateResult, model_parameters, render_modelfile
from .ollama_client import Method, OllamaClient
from .progress import NullProgress, ProgressReporter
from .registrar import (
    Registration,
    discard_registration,
    settle_registration,
    validate_model_name,
)
from .reports import DeployReport
from .resume import (
    LOCK_FILE,
    STATE_FILE,
    StateFile,
    hash_tree,
    holding,
    pid_tag,
    remove_stale_temps,
    stable_hash,
)
from .roundtrip import DEFAULT_QUESTION, RoundTripReport, check_round_trip, load_reference_for
from .route_deploy import confirm_deployed_route, route_for_deploy
from .routing import (
    RouteChoice,
    RouteRequest,
    check_route_for_server,
    check_route_request,
    library_fallback,
    modelfile_for_route,
)
from .settings import Settings, normalize_host
from .stages import MODELFILE_NAME, check_parameters

logger = logging.getLogger(__name__)

#: The work folder's resume record (kept under its old private name for callers and tests).
_State = StateFile
_hash = stable_hash
#: The Modelfile ``deploy`` registers (``deploy_stages``; the old private name for tests).
_build_modelfile = build_deploy_modelfile


# --------------------------------------------------------------------------- sources


@contextlib.contextmanager
def _materialised(source: str | Path | tuple[Any, Any]) -> Iterator[Path]:
    """A folder or GGUF path for ``source``; an in-memory (model, tokenizer) is saved first."""
    if isinstance(source, tuple):
        model, tokenizer = source
        with tempfile.TemporaryDirectory(prefix=f"dto-inmemory-{pid_tag()}-") as tmp:
            folder = Path(tmp) / "adapter"
            model.save_pretrained(str(folder))
            tokenizer.save_pretrained(str(folder))
            yield folder
        return
    path = Path(source).expanduser()
    if not path.exists():
        raise InputNotFoundError(
            f"source {path} does not exist",
            path=path,
            hint="pass a LoRA adapter folder, a merged model folder or a .gguf file",
        )
    yield path


def deploy(
    source: str | Path | tuple[Any, Any],
    *,
    name: str,
    quant: str = "q4_k_m",
    host: str | None = None,
    force: bool = False,
    keep: Path | None = None,
    base: Path | None = None,
    parameters: Sequence[tuple[str, str]] = (),
    expected_answer: str | None = None,
    question: str | None = None,
    num_predict: int = 64,
    method: Method = "auto",
    check: bool = True,
    verify: bool = True,
    keep_failed: bool = False,
    cache_dir: Path | None = None,
    progress: ProgressReporter | None = None,
    settings: Settings | None = None,
    mode: str = "merged",
    base_model: str | None = None,
    expected_base_answer: str | None = None,
    template_route: str = "auto",
    strict: bool = False,
    imatrix: ImatrixChoice | None = None,
) -> DeployReport:
    """Deploy a fine-tune to Ollama and prove it works.

    Args:
        source: a LoRA adapter folder, a merged model folder, a ``.gguf`` file, or the in-memory
            ``(model, tokenizer)`` of a just-finished Unsloth/PEFT run (saved to a temp folder).
        name: the Ollama model name.
        quant: GGUF quant type (``q4_k_m``, ``q8_0``, ...; ignored for a ``.gguf`` source).
        host: Ollama server (``OLLAMA_HOST`` form); default ``settings.ollama_host``.
        force: replace an existing model or kept files of a different input.
        keep: folder for the GGUF, Modelfile and state; default a folder in the cache.
        base: base model folder for an adapter (else ``base_model_name_or_path``).
        parameters: extra ``PARAMETER`` lines (e.g. ``("num_thread", "1")``).
        expected_answer: the generation check must answer exactly this.
        question: user turn of the generation check.
        num_predict: token cap of the generation check.
        method: registration path (``auto``, ``cli``, ``api``).
        check: run the round-trip check.
        verify: a render check with nothing to compare with fails the check (``--no-verify``
            turns this off; the report then says "NOT verified").
        keep_failed: keep a model that failed its round trip; by default it is removed, or the
            model it replaced is restored, so a failed deploy leaves the server as it was.
        cache_dir: cache root (default ``settings.cache_dir``).
        progress: stage reporter.
        settings: configuration read once at the entry point (default: the environment).
        mode: ``merged``, ``adapter`` (``FROM base`` + ``ADAPTER``, see ``adapter_deploy``) or
            ``auto`` (adapter when the LoRA converts, else merged).
        base_model: an Ollama model to run the adapter on (checked to be its base).
        expected_base_answer: in adapter mode, the base's generation check must answer this.
        template_route: ``auto``, ``go`` or ``native`` (``routing``: which prompt path the
            user's server takes, proven on purpose).
        strict: a capability the Jinja has and the deployed model lacks fails (exit 3).
        imatrix: quantize with an importance matrix (``gguf.imatrix.parse_imatrix_option``);
            the IQ types need one.

    Returns:
        The report; ``passed`` is false when the round trip failed (the CLI exits 3).

    Raises:
        UsageError: a ``parameters`` pair Ollama would refuse, or an unknown quant.
        DeployError: a stage failed (subclass and exit code say which).
    """
    from .adapter_deploy import check_mode, deploy_route
    from .gguf.quants import check_imatrix_needs, parse_quant_list

    settings = settings or Settings.from_env()
    # a bad quant is a usage error before any work
    check_imatrix_needs(parse_quant_list(quant), has_imatrix=imatrix is not None)
    check_mode(mode, base_model)
    plan = _Plan(
        name=validate_model_name(name),
        host=normalize_host(host or settings.ollama_host),
        quant=quant,
        base=base,
        keep=keep,
        cache=cache_dir or settings.cache_dir,
        parameters=check_parameters(tuple(parameters)),
        expected_answer=expected_answer,
        question=question or DEFAULT_QUESTION,
        num_predict=num_predict,
        method=method,
        force=force,
        check=check,
        verify=verify,
        keep_failed=keep_failed,
        progress=progress or NullProgress(),
        settings=settings,
        mode=mode,
        base_model=validate_model_name(base_model) if base_model else None,
        expected_base_answer=expected_base_answer,
        template_route=check_route_request(template_route),
        strict=strict,
        imatrix=imatrix,
    )
    if keep is not None:
        check_writable_dir(keep, what="--keep")
    with _materialised(source) as path:
        # Config, tensors against config and base, chat template (JSON, headers, one render):
        # refused here, before the server, the toolchain or an export is touched.
        resolved = check_source(path, base=base)
        version = OllamaClient(plan.host).version()  # then the server (exit 4), before work
        check_route_for_server(plan.template_route, version)
        real = real_quant(plan.quant, resolved)  # an alias resolved, a GGUF source's own type
        plan = replace(
            plan, load_warnings=tuple(load_warnings([real], version)), server_version=version
        )
        for warning in plan.load_warnings:  # now, not after a long export that fails to load
            logger.warning("%s", warning)
        report = deploy_route(plan, path, resolved, merged=_run)  # --mode: adapter_deploy
    write_deploy_report(report)  # deploy-report.json beside the Modelfile: the proof travels
    return report


@dataclass(frozen=True)
class _Plan:
    """The validated options of one ``deploy`` call."""

    name: str
    host: str
    quant: str
    base: Path | None
    keep: Path | None
    cache: Path
    parameters: tuple[tuple[str, str], ...]
    expected_answer: str | None
    question: str
    num_predict: int
    method: Method
    force: bool
    check: bool
    verify: bool
    keep_failed: bool
    progress: ProgressReporter
    settings: Settings
    load_warnings: tuple[str, ...] = ()
    """The chosen quant is one a known build with the server's version cannot load."""
    mode: str = "merged"
    base_model: str | None = None
    expected_base_answer: str | None = None
    template_route: RouteRequest = "auto"
    strict: bool = False
    server_version: str | None = None
    """The server's version: the TEMPLATE is verified with its prompt building."""
    imatrix: ImatrixChoice | None = None

    @property
    def stem(self) -> str:
        """The GGUF file stem: the model part of the name (``me/bot:q8`` -> ``bot``)."""
        return self.name.rpartition("/")[2].partition(":")[0]


def _run(plan: _Plan, path: Path, resolved: ResolvedInput) -> DeployReport:
    stages: list[tuple[str, str]] = []
    plan.progress.start("resolve", f"resolve: hashing {path.name}")
    base_dir = resolved.base_dir if resolved.kind == "adapter" else None
    input_key = _input_key(path, resolved, base_dir)
    if plan.keep is None:
        check_writable_dir(plan.cache, what="the cache (DTO_CACHE_DIR)")
    # Held before its state is read or reset: a concurrent run of the same input is refused.
    with holding(plan.keep or plan.cache / "deploy" / input_key[:16]):
        work = _work_dir(plan.keep, plan.cache, input_key, force=plan.force)
        remove_stale_temps(work)
        state = _State.load(work)
        plan.progress.done("resolve")
        stages.append(("resolve", "done"))
        # The template first: a bad chat template fails before minutes of export.
        template, template_status = run_template(
            path, base_dir, state, input_key, plan.progress, server_version=plan.server_version
        )
        quant = real_quant(plan.quant, resolved)
        planned = path if resolved.kind == "gguf" else work / gguf_name(plan.stem, quant)
        modelfile = build_deploy_modelfile(planned, work, template, path, base_dir, plan.parameters)
        render_modelfile(modelfile)  # content Ollama cannot read fails before the export
        gguf, status = run_export(plan, path, resolved, work, state, input_key, quant)
        stages.append(("export", status))
        stages.append(("template", template_status))
        route = route_for_deploy(
            plan.template_route, strict=plan.strict, host=plan.host, source=path,
            base_dir=base_dir, gguf=gguf, template=template, jinja=resolved.chat_template,
            settings=plan.settings,
        )  # fmt: skip
        route, modelfile_path, registration = _register_on_route(
            plan, route, modelfile, work, gguf, state, stages,
            jinja=resolved.chat_template, template=template.template,
        )  # fmt: skip
    round_trip, failed_model = _run_check(plan, resolved, gguf, registration)
    if round_trip is not None:
        stages.append(("check", "done"))
    warnings = list(plan.load_warnings)
    if not template.verified:
        warnings.append(f"template not verified: {template.note or ''}")
    warnings += template.capabilities_lost if route.route == "go" else ()
    go = route.route == "go"  # the TEMPLATE is what serves; native routes drop it
    warnings += [template.thinking_note] if go and template.thinking_note else []
    warnings += route.warnings
    return DeployReport(
        name=plan.name,
        host=plan.host,
        quant=quant,
        gguf=gguf,
        gguf_bytes=gguf.stat().st_size,
        modelfile=modelfile_path,
        template_verified=template.verified,
        stages=tuple(stages),
        round_trip=round_trip,
        warnings=tuple(warnings),
        failed_model=failed_model,
        route=route,
        thinking_holds_for=template.thinking_holds_for if go else None,
    )


def _register_on_route(
    plan: _Plan,
    route: RouteChoice,
    go_modelfile: Modelfile,
    work: Path,
    gguf: Path,
    state: _State,
    stages: list[tuple[str, str]],
    *,
    jinja: str | None,
    template: str | None,
) -> tuple[RouteChoice, Path, Registration | None]:
    """Write the route's Modelfile, register it and decide the route again from what the server
    has; a library TEMPLATE that leaves ``auto``'s native route unproven is replaced by ours
    (``routing.library_fallback``), and a rerun goes straight to ours (remembered in the state).
    """
    modelfile = modelfile_for_route(route, go_modelfile)
    memo = _hash(render_modelfile(modelfile), plan.name, plan.host)
    earlier = state.get("route_fallback", memo)
    if earlier:
        modelfile = go_modelfile
    modelfile_path = work / MODELFILE_NAME
    write_text_atomic(modelfile_path, render_modelfile(modelfile))
    stages.append(("modelfile", "done"))
    status, registration = run_register(plan, modelfile, work, gguf, state)
    stages.append(("register", status))
    route = confirm_deployed_route(
        route, host=plan.host, name=plan.name, jinja=jinja, template=modelfile.template
    )
    if earlier:
        reason = str(earlier["reason"])
        return (
            replace(route, reason=reason, warnings=(*route.warnings, reason)),
            modelfile_path,
            registration,
        )
    fallback = library_fallback(route, jinja=jinja, template=template)
    if fallback is None:
        return route, modelfile_path, registration
    reregister(plan, go_modelfile, modelfile_path, gguf, state)  # a library TEMPLATE came
    state.put("route_fallback", memo, reason=fallback.reason)
    confirmed = confirm_deployed_route(
        fallback, host=plan.host, name=plan.name, jinja=jinja, template=template
    )
    return confirmed, modelfile_path, registration


def _input_key(path: Path, resolved: ResolvedInput, base_dir: Path | None) -> str:
    """The input's content key, computed once (``ResolvedInput.content_key``)."""
    return resolved.content_key


def real_quant(quant: str, resolved: Any) -> str:
    """The quant type the deployed GGUF really has: an alias resolved (``q4_k`` -> ``q4_k_m``,
    ``not_quantized`` -> ``f16``/``bf16`` by the model's dtype), a GGUF source's own type.
    """
    from .gguf.quants import parse_quant_list
    from .gguf.steps import model_dtype

    if resolved.kind == "gguf":
        return resolved.gguf_quant or "unknown"  # the one GGUF reader: ``inputs``
    weights = Path(resolved.base_dir if resolved.kind == "adapter" else resolved.path)
    return parse_quant_list(quant, model_dtype=model_dtype(weights))[0].name


def _run_check(
    plan: _Plan, resolved: ResolvedInput, gguf: Path, registration: Registration | None
) -> tuple[RoundTripReport | None, str | None]:
    """Round trip against the reference the stages used; undo a fresh registration that fails.

    The reference is the tokenizer of the adapter, else of its base (``ResolvedInput``), else
    the chat template embedded in the GGUF. A model this run registered and that fails is
    removed (or the model it replaced restored) unless ``keep_failed``; a registration reused
    from an earlier run is left alone, since the user had it before.
    """
    if not plan.check:
        if registration is not None:
            settle_registration(registration)
        return None, None
    try:
        reference = load_reference_for(
            resolved.tokenizer_dir,
            gguf,
            chat_template=resolved.chat_template if resolved.tokenizer_dir else None,
        )
        report = check_round_trip(
            plan.name,
            host=plan.host,
            reference=reference,
            question=plan.question,
            expected_answer=plan.expected_answer,
            num_predict=plan.num_predict,
            verify=plan.verify,
            progress=plan.progress,
            require_capabilities=plan.strict,
        )
    except (DeployError, KeyboardInterrupt):
        if registration is not None and not plan.keep_failed:
            discard_registration(registration)
        raise
    if registration is None:
        return report, None
    if report.passed or plan.keep_failed:
        settle_registration(registration)
        kept = f"{plan.name} kept although its round trip failed (--keep-failed)"
        return report, None if report.passed else kept
    return report, discard_registration(registration)


def _work_dir(keep: Path | None, cache: Path, input_key: str, *, force: bool) -> Path:
    """The folder holding this input's GGUF, Modelfile and state."""
    work = keep if keep is not None else cache / "deploy" / input_key[:16]
    state = _State.load(work)
    if state.data.get("input") != input_key:
        if keep is not None and keep.is_dir() and _holds_files(keep) and not force:
            raise OutputExistsError(
                f"--keep folder {keep} holds files of another deployment",
                hint="pass --force to overwrite it, or choose an empty folder",
            )
        work.mkdir(parents=True, exist_ok=True)
        state.reset(input=input_key)
    return work


def _holds_files(folder: Path) -> bool:
    return any(entry.name not in (STATE_FILE, LOCK_FILE) for entry in folder.iterdir())


def ensure_source_kind(path: Path) -> None:
    """Refuse a source that is neither an adapter, a model folder nor a GGUF, before heavy work.

    Raises:
        InputError: not a GGUF, and a folder without ``adapter_config.json`` or ``config.json``.
    """
    source_kind(path)


__all__ = [
    "DeployReport",
    "TemplateResult",
    "deploy",
    "ensure_source_kind",
    "hash_tree",
    "model_parameters",
    "real_quant",
]
