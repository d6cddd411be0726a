"""``deploy``: resolve -> export -> template -> Modelfile -> register -> check, resumably.

Each stage's output lives in one work folder (``--keep`` or the cache) with a state file that
records the content hash of the stage's inputs, so a rerun skips what is already done for the
same inputs: the GGUF export, the template translation and the registration.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from ._fs import read_json_object, write_text_atomic
from .deploy_report import write_deploy_report
from .errors import DeployError, InputNotFoundError, OutputExistsError
from .inputs import ResolvedInput, check_source, source_kind
from .modelfile import (
    Modelfile,
    num_ctx_parameter,
    parameters_from_generation_config,
    render_modelfile,
    stop_parameters,
)
from .ollama_client import Method, OllamaClient, file_digest
from .progress import NullProgress, ProgressReporter
from .registrar import (
    Registration,
    discard_registration,
    register_model,
    settle_registration,
    validate_model_name,
)
from .roundtrip import DEFAULT_QUESTION, RoundTripReport, check_round_trip, load_reference_for
from .settings import Settings, normalize_host

logger = logging.getLogger(__name__)

STATE_FILE = "deploy-state.json"
MODELFILE_NAME = "Modelfile"
#: tokenizer_config ``model_max_length`` above this is transformers' "unset" sentinel, not a
#: training length (Unsloth writes the real ``max_seq_length`` there).
MAX_SENSIBLE_CONTEXT = 1 << 20


@dataclass(frozen=True, slots=True)
class TemplateResult:
    """What the template stage produced for the Modelfile."""

    template: str
    stops: tuple[str, ...]
    system: str | None
    verified: bool
    note: str | None = None
    capabilities_lost: tuple[str, ...] = ()
    """``capabilities_lost: …`` lines: what Ollama derives from the Jinja but not the TEMPLATE."""


@dataclass(frozen=True, slots=True)
class DeployReport:
    """The outcome of one ``deploy`` run (``--json`` prints ``to_dict()``)."""

    name: str
    host: str
    quant: str
    gguf: Path
    gguf_bytes: int
    modelfile: Path
    template_verified: bool
    stages: tuple[tuple[str, str], ...]
    """``(stage, "done" | "skipped" | "reused")`` in order."""
    round_trip: RoundTripReport | None
    warnings: tuple[str, ...] = field(default=())
    failed_model: str | None = None
    """What became of the model when its round trip failed: removed, restored or kept."""

    @property
    def passed(self) -> bool:
        return self.round_trip is None or self.round_trip.passed

    @property
    def run_command(self) -> str:
        return f"ollama run {self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.passed,
            "name": self.name,
            "host": self.host,
            "quant": self.quant,
            "gguf": str(self.gguf),
            "gguf_bytes": self.gguf_bytes,
            "modelfile": str(self.modelfile),
            "template_verified": self.template_verified,
            "stages": [{"stage": s, "status": st} for s, st in self.stages],
            "round_trip": self.round_trip.to_dict() if self.round_trip else None,
            "warnings": list(self.warnings),
            "failed_model": self.failed_model,
            "run": self.run_command,
        }

    def summary_lines(self) -> list[str]:
        size = f"{self.gguf_bytes / 1e6:.1f} MB"
        lines = [
            f"model    {self.name} on {self.host}",
            f"quant    {self.quant} ({size}, {self.gguf})",
            f"template {'verified' if self.template_verified else 'NOT verified'}",
        ]
        rt = self.round_trip
        if rt is None:
            lines.append("check    skipped")
        else:
            lines.append(f"check    {rt.verdict}")
            lines += ["  " + line for line in rt.summary_lines()[1:]]
        lines += [f"warning  {w}" for w in self.warnings]
        if self.failed_model:
            lines.append(f"model    {self.failed_model}")
        lines.append(f"run      {self.run_command}")
        return lines


# --------------------------------------------------------------------------- state


@dataclass
class _State:
    path: Path
    data: dict[str, Any]

    @classmethod
    def load(cls, folder: Path) -> _State:
        path = folder / STATE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        return cls(path, data if isinstance(data, dict) else {})

    def get(self, stage: str, key: str) -> dict[str, Any] | None:
        entry = self.data.get(stage)
        return entry if isinstance(entry, dict) and entry.get("key") == key else None

    def put(self, stage: str, key: str, **values: Any) -> None:
        self.data[stage] = {"key": key, **values}
        write_text_atomic(self.path, json.dumps(self.data, indent=2, sort_keys=True) + "\n")


def _hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def hash_tree(path: Path) -> str:
    """Content hash of a file or of every file under a folder (names and bytes)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        rel = file.name if path.is_file() else file.relative_to(path).as_posix()
        if rel.startswith(".") or STATE_FILE in rel:
            continue
        digest.update(rel.encode() + b"\0")
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


# --------------------------------------------------------------------------- sources


@contextmanager
def _materialised(source: str | Path | tuple[Any, Any]) -> Iterator[Path]:
    """A folder or GGUF path for ``source``; an in-memory (model, tokenizer) is saved first."""
    if isinstance(source, tuple):
        model, tokenizer = source
        with tempfile.TemporaryDirectory(prefix="dto-inmemory-") as tmp:
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


def model_parameters(folder: Path, base_dir: Path | None) -> tuple[tuple[str, str], ...]:
    """Sampling parameters from generation_config.json and num_ctx from the training length."""
    params: list[tuple[str, str]] = []
    for candidate in (folder, base_dir):
        if candidate is not None and (candidate / "generation_config.json").is_file():
            config = read_json_object(candidate / "generation_config.json")
            params += parameters_from_generation_config(config)
            break
    max_length = read_json_object(folder / "tokenizer_config.json").get("model_max_length")
    if isinstance(max_length, int | float) and 0 < max_length <= MAX_SENSIBLE_CONTEXT:
        params.append(num_ctx_parameter(int(max_length)))
    return tuple(params)


# --------------------------------------------------------------------------- stages


def _export_stage(
    source: Path,
    *,
    quant: str,
    base: Path | None,
    name: str,
    work: Path,
    cache_dir: Path,
    progress: ProgressReporter,
) -> tuple[Path, Path | None]:
    """One GGUF for ``source`` through the exporter; returns it and the base it merged into."""
    from .gguf.export import export_gguf

    result = export_gguf(
        source,
        out_dir=work,
        quant=quant,
        base=base,
        name=name.rpartition("/")[2].partition(":")[0],
        force=True,  # the state file said the work folder's GGUF is stale or missing
        cache_dir=cache_dir,
        llama_cpp_dir=Settings.from_env().llama_cpp_dir,
        progress=progress,
    )
    model = next(f for f in result.files if f.role == "model")
    return model.path, result.base_dir


def _template_stage(source: Path, base_dir: Path | None) -> TemplateResult:
    """Ollama TEMPLATE, stops and SYSTEM translated from the fine-tune's chat template.

    An adapter folder normally carries the tokenizer (Unsloth and PEFT save it there); when it
    does not, the base model's chat template is the one the fine-tune was trained with.
    """
    from .capabilities import capability_warnings
    from .chat_template import load_template_source, translate_template
    from .errors import TemplateNotFoundError

    try:
        template_source = load_template_source(source)
    except TemplateNotFoundError:
        if base_dir is None:
            raise
        template_source = load_template_source(base_dir)
    translated = translate_template(template_source)
    failure = translated.report.first_failure()
    note = f"probe {failure.probe} differs at {failure.position}" if failure else None
    return TemplateResult(
        template=translated.template,
        stops=tuple(translated.stop),
        system=translated.system,
        verified=translated.verified,
        note=note or "; ".join(translated.warnings) or None,
        capabilities_lost=tuple(capability_warnings(template_source.template, translated.template)),
    )


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
) -> DeployReport:
    """Deploy a fine-tune to Ollama and prove it works.

    Args:
        source: a LoRA adapter folder, a merged model folder, a ``.gguf`` file, or the in-memory
            ``(model, tokenizer)`` of a just-finished Unsloth/PEFT run (saved to a temp folder).
        name: the Ollama model name.
        quant: GGUF quant type (``q4_k_m``, ``q8_0``, ...; ignored for a ``.gguf`` source).
        host: Ollama server (``OLLAMA_HOST`` form); default from the environment.
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
        cache_dir: cache root (default ``DTO_CACHE_DIR``).
        progress: stage reporter.

    Returns:
        The report; ``passed`` is false when the round trip failed (the CLI exits 3).

    Raises:
        DeployError: a stage failed (subclass and exit code say which).
    """
    settings = Settings.from_env()
    plan = _Plan(
        name=validate_model_name(name),
        host=normalize_host(host or settings.ollama_host),
        quant=quant,
        base=base,
        keep=keep,
        cache=cache_dir or settings.cache_dir,
        parameters=tuple(parameters),
        expected_answer=expected_answer,
        question=question or DEFAULT_QUESTION,
        num_predict=num_predict,
        method=method,
        force=force,
        check=check,
        verify=verify,
        keep_failed=keep_failed,
        progress=progress or NullProgress(),
    )
    OllamaClient(plan.host).version()  # fail fast (exit 4) before any heavy work
    with _materialised(source) as path:
        # Config, tensors against config and base, chat template (JSON, headers, one render):
        # refused here, before the toolchain or an export is touched.
        resolved = check_source(path, base=base)
        report = _run(plan, path, resolved)
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


def _run(plan: _Plan, path: Path, resolved: ResolvedInput) -> DeployReport:
    stages: list[tuple[str, str]] = []
    plan.progress.start("resolve", f"resolve: hashing {path.name}")
    input_key = _hash(hash_tree(path), str(plan.base) if plan.base else None, __version__)
    work = _work_dir(plan.keep, plan.cache, input_key, force=plan.force)
    state = _State.load(work)
    plan.progress.done("resolve")
    stages.append(("resolve", "done"))
    gguf, base_used, status = _run_export(plan, path, work, state, input_key)
    stages.append(("export", status))
    template, status = _run_template(path, base_used, state, input_key, plan.progress)
    stages.append(("template", status))
    modelfile = _build_modelfile(gguf, work, template, path, base_used, plan.parameters)
    modelfile_path = work / MODELFILE_NAME
    write_text_atomic(modelfile_path, render_modelfile(modelfile))
    stages.append(("modelfile", "done"))
    status, registration = _run_register(plan, modelfile, work, gguf, state)
    stages.append(("register", status))
    round_trip, failed_model = _run_check(plan, resolved, gguf, registration)
    if round_trip is not None:
        stages.append(("check", "done"))
    warnings = [] if template.verified else [f"template not verified: {template.note or ''}"]
    warnings += template.capabilities_lost
    return DeployReport(
        name=plan.name,
        host=plan.host,
        quant=resolved.gguf_quant or plan.quant,  # a GGUF source keeps its own quant type
        gguf=gguf,
        gguf_bytes=gguf.stat().st_size,
        modelfile=modelfile_path,
        template_verified=template.verified,
        stages=tuple(stages),
        round_trip=round_trip,
        warnings=tuple(warnings),
        failed_model=failed_model,
    )


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
        if keep is not None and keep.is_dir() and any(keep.iterdir()) and not force:
            raise OutputExistsError(
                f"--keep folder {keep} holds files of another deployment",
                hint="pass --force to overwrite it, or choose an empty folder",
            )
        work.mkdir(parents=True, exist_ok=True)
        state.data = {"input": input_key}
        write_text_atomic(state.path, json.dumps(state.data, indent=2) + "\n")
    return work


def _run_export(
    plan: _Plan, path: Path, work: Path, state: _State, input_key: str
) -> tuple[Path, Path | None, str]:
    if path.is_file():
        return path, None, "skipped"  # already a GGUF
    key = _hash(input_key, plan.quant.lower(), "export")
    done = state.get("export", key)
    if done and (work / done["gguf"]).is_file():
        plan.progress.start("export", "export: reusing the GGUF of an earlier run")
        plan.progress.done("export")
        base_dir = Path(done["base"]) if done.get("base") else None
        return work / done["gguf"], base_dir, "reused"
    plan.progress.start("export", f"export: {path.name} -> GGUF {plan.quant}")
    gguf, base_used = _export_stage(
        path,
        quant=plan.quant,
        base=plan.base,
        name=plan.name,
        work=work,
        cache_dir=plan.cache,
        progress=plan.progress,
    )
    plan.progress.done("export")
    gguf = _inside(gguf, work)
    state.put("export", key, gguf=gguf.name, base=str(base_used) if base_used else None)
    return gguf, base_used, "done"


def _inside(gguf: Path, work: Path) -> Path:
    """Keep the GGUF beside the Modelfile so ``FROM ./name.gguf`` resolves."""
    if gguf.parent.resolve() == work.resolve():
        return gguf
    target = work / gguf.name
    shutil.copy2(gguf, target)
    return target


def _run_template(
    path: Path, base_dir: Path | None, state: _State, input_key: str, progress: ProgressReporter
) -> tuple[TemplateResult, str]:
    key = _hash(input_key, "template")
    done = state.get("template", key)
    if done:
        values = {k: v for k, v in done.items() if k != "key"}
        values["stops"] = tuple(values.get("stops") or ())
        values["capabilities_lost"] = tuple(values.get("capabilities_lost") or ())
        return TemplateResult(**values), "reused"
    progress.start("template", "template: translating the chat template")
    result = _template_stage(path, base_dir)
    progress.done("template")
    state.put("template", key, **asdict(result))
    return result, "done"


def _build_modelfile(
    gguf: Path,
    work: Path,
    template: TemplateResult,
    source: Path,
    base_dir: Path | None,
    extra: Sequence[tuple[str, str]],
) -> Modelfile:
    params = list(stop_parameters(template.stops))
    if source.is_dir():
        params += model_parameters(source, base_dir)
    overridden = {k for k, _ in extra}
    params = [(k, v) for k, v in params if k not in overridden or k == "stop"]
    params += list(extra)
    rel = gguf.relative_to(work) if gguf.is_relative_to(work) else gguf
    return Modelfile(
        from_=f"./{rel.as_posix()}" if not rel.is_absolute() else str(rel),
        template=template.template,
        system=template.system,
        parameters=tuple(params),
        header_comment=(
            f"Written by deploy-to-ollama {__version__} from {source.name}.\n"
            f"Template {'verified' if template.verified else 'NOT verified'} against "
            "transformers' rendering."
        ),
    )


def _run_register(
    plan: _Plan, modelfile: Modelfile, work: Path, gguf: Path, state: _State
) -> tuple[str, Registration | None]:
    """Register unless the server already has this exact model; None when reused."""
    digest = _gguf_digest(gguf, state, plan.progress)
    key = _hash(digest, render_modelfile(modelfile), plan.name, plan.host)
    if state.get("register", key) and _registered_same(plan.name, plan.host, digest, modelfile):
        plan.progress.start("register", f"register: {plan.name} is already up to date")
        plan.progress.done("register")
        return "reused", None
    plan.progress.start("register", f"register: {plan.name}")
    registration = register_model(
        plan.name,
        modelfile,
        base_dir=work,
        host=plan.host,
        force=plan.force,
        method=plan.method,
        keep_replaced=plan.check and not plan.keep_failed,
        progress=plan.progress,
    )
    plan.progress.done("register")
    state.put("register", key, name=plan.name, host=plan.host, digest=digest)
    return "done", registration


def _gguf_digest(gguf: Path, state: _State, progress: ProgressReporter) -> str:
    stat = gguf.stat()
    fingerprint = _hash(str(gguf), stat.st_size, stat.st_mtime_ns)
    done = state.get("digest", fingerprint)
    if done:
        return str(done["digest"])
    digest = file_digest(gguf, progress)
    state.put("digest", fingerprint, digest=digest)
    return digest


def _registered_same(name: str, host: str, digest: str, modelfile: Modelfile) -> bool:
    """The server already has ``name`` built from this GGUF with this template and system."""
    shown = OllamaClient(host).show(name)
    if shown is None:
        return False
    blob = digest.replace(":", "-")
    return (
        blob in (shown.modelfile or "")
        and (shown.template or "") == (modelfile.template or "")
        and (shown.system or "") == (modelfile.system or "")
    )


def ensure_source_kind(path: Path) -> None:
    """Refuse a source that is neither an adapter, a model folder nor a GGUF, before heavy work.

    Raises:
        InputError: a file other than ``.gguf``, or a folder without ``adapter_config.json``
            or ``config.json``.
    """
    source_kind(path)


__all__ = [
    "DeployReport",
    "TemplateResult",
    "deploy",
    "ensure_source_kind",
    "hash_tree",
    "model_parameters",
]
