"""``deploy --mode adapter``: the base once, the LoRA as a GGUF LoRA, ``FROM base`` + ``ADAPTER``.

Why: several fine-tunes of one base then share the base's blob on the server (Ollama stores
files by digest), so a second adapter uploads only its LoRA. The base is registered as a model
of its own (``NAME-base``, or the ``--base-model`` the user already has, after checking it is
the adapter's base), the fine-tune as ``FROM <base model>`` + ``ADAPTER``, with the TEMPLATE,
stops, SYSTEM and parameters every other route writes (``stages.build_modelfile``). The round
trip runs on both: the fine-tune must answer like the fine-tune, the base like the base.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._fs import write_text_atomic
from .adapter_gate import gate_adapter_route, not_convertible
from .errors import (
    AdapterNotConvertibleError,
    DeployError,
    ModelNotFoundError,
    OutputExistsError,
    UsageError,
)
from .modelfile import Modelfile, TemplateResult, render_modelfile
from .modelfile.assembly import relative_from
from .ollama_client import OllamaClient
from .ollama_client.upload import UploadStats, model_bytes, settle_census, take_census
from .registrar import (
    Registration,
    discard_registration,
    register_model,
    settle_registration,
    validate_model_name,
)
from .reports import AdapterFacts, DeployReport
from .resume import (
    LOCK_FILE,
    STATE_FILE,
    StateFile,
    holding,
    remove_stale_temps,
    stable_hash,
)
from .roundtrip import RoundTripReport, check_round_trip, load_reference_for
from .stages import MODELFILE_NAME, build_modelfile, translate_stage

if TYPE_CHECKING:
    from .inputs import ResolvedInput
    from .pipeline import _Plan

logger = logging.getLogger(__name__)

#: ``deploy --mode``: merged (one GGUF), adapter (FROM base + ADAPTER), auto (adapter when the
#: source is a LoRA a GGUF LoRA can carry, else merged).
DEPLOY_MODES = ("merged", "adapter", "auto")
#: The Modelfile of the base model this route registers, beside the fine-tune's.
BASE_MODELFILE_NAME = "Modelfile.base"


def check_mode(mode: str, base_model: str | None) -> str:
    """``--mode`` is known, and ``--base-model`` comes with an adapter mode.

    Raises:
        UsageError: an unknown mode, or ``--base-model`` with ``--mode merged``.

    >>> check_mode("auto", "base:q8_0")
    'auto'
    """
    if mode not in DEPLOY_MODES:
        raise UsageError(f"unknown --mode {mode!r}", hint="use one of " + ", ".join(DEPLOY_MODES))
    if base_model is not None and mode == "merged":
        raise UsageError(
            "--base-model needs --mode adapter (or auto): a merged deploy has no separate base",
            hint="add --mode adapter",
        )
    if base_model is not None:
        validate_model_name(base_model)
    return mode


def default_base_name(name: str) -> str:
    """The base model this route registers for the fine-tune ``name``.

    >>> default_base_name("me/bot:q8_0")
    'me/bot-base:q8_0'
    """
    head, _, tag = validate_model_name(name).rpartition(":")
    return f"{head}-base:{tag}"


def base_stem(resolved: ResolvedInput) -> str:
    """The base GGUF's file stem and ``general.name``: the base's own name, not the fine-tune's.

    >>> from types import SimpleNamespace as NS
    >>> base_stem(NS(base_id="unsloth/Llama-3.2-1B-Instruct", base_dir=None))
    'Llama-3.2-1B-Instruct'
    """
    name = (resolved.base_id or "").rstrip("/").rpartition("/")[2]
    if not name and resolved.base_dir is not None:
        name = Path(resolved.base_dir).name
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "base"


def deploy_route(
    plan: _Plan,
    path: Path,
    resolved: ResolvedInput,
    *,
    merged: Callable[[_Plan, Path, ResolvedInput], DeployReport],
) -> DeployReport:
    """``deploy``'s route by ``--mode``: the adapter route, else ``merged`` (the pipeline's).

    A ``--mode auto`` fallback's reason travels as a warning of the merged report.
    """
    if plan.mode != "merged":
        outcome = deploy_adapter(plan, path, resolved)
        if isinstance(outcome, DeployReport):
            return outcome
        if outcome:
            plan = dataclasses.replace(plan, load_warnings=(*plan.load_warnings, outcome))
    return merged(plan, path, resolved)


def deploy_adapter(plan: _Plan, path: Path, resolved: ResolvedInput) -> DeployReport | str:
    """Run the adapter route, or say why ``--mode auto`` falls back to a merged deploy.

    Returns:
        The report; or, for ``--mode auto`` only, the reason the merged route runs instead
        (empty when the source is no adapter at all).

    Raises:
        UsageError: ``--mode adapter`` on a source that is no LoRA adapter.
        AdapterNotConvertibleError: full embedding / lm_head weights with ``--mode adapter``.
        AdapterRouteUnavailableError: the server no longer creates ``ADAPTER`` models.
        ModelNotFoundError: ``--base-model`` is not on the server.
        AdapterBaseMismatchError: ``--base-model`` is not the adapter's base.
        DeployError: a stage failed; nothing this run registered is left behind.
    """
    if resolved.kind != "adapter":
        if plan.mode == "auto":
            return ""
        raise UsageError(
            f"--mode adapter needs a LoRA adapter, {path} is a {resolved.kind} input",
            hint="drop --mode adapter (a merged model or GGUF is deployed as it is)",
        )
    why = not_convertible(path)
    if why is not None:
        if plan.mode == "auto":
            logger.warning("%s; deploying merged instead (--mode auto)", why)
            return f"{why}; deployed merged instead (--mode auto)"
        raise AdapterNotConvertibleError(
            why,
            hint="pass --mode auto to fall back to a merged deploy, or --mode merged",
        )
    client = OllamaClient(plan.host)
    fallback = gate_adapter_route(plan.mode, client.version(), client.host)
    if fallback:
        return fallback
    route = _Route.prepare(plan, resolved)
    with holding(route.work):
        if plan.keep is not None:
            claim_keep(plan.keep, stable_hash(resolved.content_key, "adapter"), force=plan.force)
        remove_stale_temps(route.work)
        return route.run(path, resolved)


def claim_keep(keep: Path, input_key: str, *, force: bool) -> None:
    """Make ``--keep`` this adapter input's folder, as the merged route does (``deploy-state.json``
    names the input): files of another input, or of a merged deploy, are not overwritten
    without ``--force``; the same input reruns in place.

    Raises:
        OutputExistsError: ``keep`` holds files of another deployment and ``force`` is off.
    """
    state = StateFile.load(keep)
    if state.data.get("input") == input_key:
        return
    if not force and any(e.name not in (STATE_FILE, LOCK_FILE) for e in keep.iterdir()):
        raise OutputExistsError(
            f"--keep folder {keep} holds files of another deployment",
            hint="pass --force to overwrite it, or choose an empty folder",
        )
    state.reset(input=input_key)


@dataclass(frozen=True)
class _Route:
    """One adapter deploy: options, the server, the base it runs on and the work folder."""

    plan: _Plan
    client: OllamaClient
    base_name: str
    given_base: Any
    """``/api/show`` (verbose) of ``--base-model``; None when this run registers the base."""
    work: Path

    @classmethod
    def prepare(cls, plan: _Plan, resolved: ResolvedInput) -> _Route:
        """Check names and the server before any export (exit 1 in a second, not a minute)."""
        client = OllamaClient(plan.host)
        base_name = validate_model_name(plan.base_model or default_base_name(plan.name))
        if base_name.lower() == plan.name.lower():
            raise UsageError(
                f"--base-model {base_name} is the model this deploy would create",
                hint="give the fine-tune another --name than its base",
            )
        given = None
        if plan.base_model is not None:
            given = client.show(base_name, verbose=True)
            if given is None:
                raise ModelNotFoundError(
                    f"--base-model {base_name} is not in Ollama on {client.host}",
                    model=base_name,
                    host=client.host,
                    hint="create or pull it first (`ollama list` shows what is there), or drop "
                    "--base-model to register the adapter's own base",
                )
        if client.exists(plan.name) and not plan.force:
            raise OutputExistsError(
                f"model {plan.name} already exists on {client.host}",
                hint="pass --force to replace it, or choose another --name",
            )
        key = stable_hash(resolved.content_key, "adapter", plan.quant, base_name)
        work = plan.keep or plan.cache / "deploy-adapter" / key[:16]
        work.mkdir(parents=True, exist_ok=True)
        return cls(plan, client, base_name, given, work)

    def run(self, path: Path, resolved: ResolvedInput) -> DeployReport:
        from .pipeline import real_quant

        plan = self.plan
        base_dir = Path(resolved.base_dir) if resolved.base_dir else path
        stages: list[tuple[str, str]] = [("resolve", "done")]
        plan.progress.start("template", "template: translating the chat template")
        template = translate_stage(path, base_dir)  # a bad template fails before the export
        plan.progress.done("template")
        stages.append(("template", "done"))
        base_gguf, lora, status = self._export(path, resolved)
        stages.append(("export", status))
        match = None
        if self.given_base is not None:
            from .base_match import check_same_base

            match = check_same_base(
                self.base_name,
                self.given_base,
                lora_gguf=lora,
                base_dir=base_dir,
                tokenizer_dir=Path(resolved.tokenizer_dir or base_dir),
            )
        fine_tune = self._modelfile(self.base_name, [lora], template, path, base_dir)
        write_text_atomic(self.work / MODELFILE_NAME, render_modelfile(fine_tune))
        base_file = None
        if base_gguf is not None:
            base_file = self._modelfile(
                relative_from(base_gguf, self.work), [], template, path, base_dir
            )
            write_text_atomic(self.work / BASE_MODELFILE_NAME, render_modelfile(base_file))
        stages.append(("modelfile", "done"))
        files = [f for f in (base_gguf, lora) if f is not None]
        census = take_census(self.client, files, plan.progress)
        given_bytes = model_bytes(self.client, self.base_name) if match is not None else 0
        base_reg, base_status = self._register_base(base_file, base_gguf)
        try:
            registration = self._register(plan.name, fine_tune, force=plan.force)
        except BaseException:
            if base_reg is not None:
                discard_registration(base_reg)  # nothing half-registered
            raise
        stages.append(("register", "done"))
        upload = settle_census(self.client, census) + UploadStats(0, given_bytes)
        rt, base_rt, failed = self._check(resolved, base_dir, registration, base_reg)
        if rt is not None:
            stages.append(("check", "done"))
        # The quant warnings are about a base GGUF this run wrote; --base-model brings its own.
        warnings = list(plan.load_warnings) if self.given_base is None else []
        if not template.verified:
            warnings.append(f"template not verified: {template.note or ''}")
        warnings += template.capabilities_lost
        warnings += [template.thinking_note] if template.thinking_note else []
        warnings += _same_answer_warning(rt, base_rt)
        facts = AdapterFacts(
            base_model=self.base_name,
            base_registered="given" if match is not None else base_status,
            upload=upload.to_dict(),
            lora=lora,
            lora_bytes=lora.stat().st_size,
            base_round_trip=base_rt,
            base_check=match.to_dict() if match is not None else None,
        )
        return DeployReport(
            name=plan.name,
            host=self.client.host,
            quant=_base_quant(self.given_base, real_quant(plan.quant, resolved)),
            gguf=lora,
            gguf_bytes=lora.stat().st_size,
            modelfile=self.work / MODELFILE_NAME,
            template_verified=template.verified,
            stages=tuple(stages),
            round_trip=rt,
            warnings=tuple(warnings),
            failed_model=failed,
            adapter=facts,
            thinking_holds_for=template.thinking_holds_for,
        )

    # ------------------------------------------------------------------- stages

    def _export(self, path: Path, resolved: ResolvedInput) -> tuple[Path | None, Path, str]:
        """Base GGUF + GGUF LoRA (base GGUF None when ``--base-model`` provides the base)."""
        from .gguf.export import export_gguf

        plan, settings = self.plan, self.plan.settings
        # Named after the base, not the fine-tune: general.name is in the GGUF's bytes, and
        # every adapter of this base must write the same base file to share its blob.
        stem = base_stem(resolved)
        if self.given_base is not None:
            return None, self._convert_lora_only(path, resolved), "done"
        plan.progress.start("export", f"export: {path.name} -> base GGUF {plan.quant} + LoRA")
        kwargs: dict[str, Any] = {
            "out_dir": self.work,
            "quant": plan.quant,
            "mode": "adapter",
            "base": plan.base,
            "name": stem,
            "cache_dir": plan.cache,
            "llama_cpp_dir": settings.llama_cpp_dir,
            "progress": plan.progress,
            "settings": settings,
            "content_key": resolved.content_key,
            "resolved": resolved,
        }
        try:
            result = export_gguf(path, force=False, **kwargs)
        except OutputExistsError:  # the work folder is this input's: a leftover is replaceable
            result = export_gguf(path, force=True, **kwargs)
        plan.progress.done("export")
        base = next(f.path for f in result.files if f.role == "base")
        lora = next(f.path for f in result.files if f.role == "adapter")
        return base, lora, "reused" if result.reused else "done"

    def _convert_lora_only(self, path: Path, resolved: ResolvedInput) -> Path:
        from .gguf.adapter import convert_lora
        from .gguf.toolchain import provision_toolchain

        plan = self.plan
        plan.progress.start("export", f"export: {path.name} -> GGUF LoRA")
        toolchain = provision_toolchain(
            plan.cache, llama_cpp_dir=plan.settings.llama_cpp_dir, progress=plan.progress
        ).toolchain
        target = self.work / f"{plan.stem}-lora.F16.gguf"
        convert_lora(toolchain, path, Path(resolved.base_dir or path), target)
        plan.progress.done("export")
        return target

    def _modelfile(
        self,
        from_: str,
        adapters: list[Path],
        template: TemplateResult,
        source: Path,
        base_dir: Path,
    ) -> Modelfile:
        return build_modelfile(
            from_=from_,
            source=source,
            template=template,
            base_dir=base_dir,
            adapters=[relative_from(a, self.work) for a in adapters],
            extra=self.plan.parameters,
        )

    def _register_base(
        self, modelfile: Modelfile | None, gguf: Path | None
    ) -> tuple[Registration | None, str]:
        """Register ``NAME-base`` unless the server already has it built from this GGUF."""
        if modelfile is None or gguf is None:
            return None, "given"
        from .ollama_client import file_digest

        shown = self.client.show(self.base_name)
        blob = file_digest(gguf).replace(":", "-")
        if shown is not None and blob in (shown.modelfile or ""):
            same = (shown.template or "") == (modelfile.template or "")
            if same:
                return None, "reused"
        if shown is not None and not self.plan.force:
            raise OutputExistsError(
                f"model {self.base_name} already exists on {self.client.host} and is not this "
                "adapter's base",
                hint="pass --force to replace it, or --base-model NAME to run on another base",
            )
        return self._register(self.base_name, modelfile, force=True), "done"

    def _register(self, name: str, modelfile: Modelfile, *, force: bool) -> Registration:
        plan = self.plan
        plan.progress.start("register", f"register: {name}")
        registration = register_model(
            name,
            modelfile,
            base_dir=self.work,
            host=self.client.host,
            force=force,
            method=plan.method,
            keep_replaced=plan.check and not plan.keep_failed,
            progress=plan.progress,
        )
        plan.progress.done("register")
        return registration

    def _check(
        self,
        resolved: ResolvedInput,
        base_dir: Path,
        registration: Registration,
        base_reg: Registration | None,
    ) -> tuple[RoundTripReport | None, RoundTripReport | None, str | None]:
        """Round trip of the fine-tune and of its base; undo both registrations on failure."""
        plan = self.plan
        fresh = [r for r in (registration, base_reg) if r is not None]
        if not plan.check:
            for reg in fresh:
                settle_registration(reg)
            return None, None, None
        try:
            template = resolved.chat_template  # the base runs with the fine-tune's TEMPLATE too
            rt = self._round_trip(plan.name, resolved.tokenizer_dir, template, plan.expected_answer)
            base_rt = self._round_trip(
                self.base_name, base_dir, template, plan.expected_base_answer
            )
        except (DeployError, KeyboardInterrupt):
            if not plan.keep_failed:
                for reg in fresh:
                    discard_registration(reg)
            raise
        if (rt.passed and base_rt.passed) or plan.keep_failed:
            for reg in fresh:
                settle_registration(reg)
            if rt.passed and base_rt.passed:
                return rt, base_rt, None
            return rt, base_rt, f"{plan.name} kept although a round trip failed (--keep-failed)"
        lines = [discard_registration(reg) for reg in fresh]
        return rt, base_rt, "; ".join(lines)

    def _round_trip(
        self, name: str, tokenizer_dir: Any, chat_template: str | None, expected: str | None
    ) -> RoundTripReport:
        plan = self.plan
        folder = Path(tokenizer_dir) if tokenizer_dir else None
        has_tokenizer = folder is not None and (folder / "tokenizer_config.json").is_file()
        reference = load_reference_for(
            folder if has_tokenizer else None, None, chat_template=chat_template
        )
        return check_round_trip(
            name,
            host=self.client.host,
            reference=reference,
            question=plan.question,
            expected_answer=expected,
            num_predict=plan.num_predict,
            verify=plan.verify,
            progress=plan.progress,
        )


def _same_answer_warning(rt: RoundTripReport | None, base_rt: RoundTripReport | None) -> list[str]:
    """The fine-tune answering exactly like its base hints that the ADAPTER does nothing."""
    if rt is None or base_rt is None or rt.generation is None or base_rt.generation is None:
        return []
    ours, theirs = rt.generation.answer.strip(), base_rt.generation.answer.strip()
    if ours and ours == theirs:
        return [f"the fine-tune answers exactly like its base ({ours[:40]!r}): is the LoRA weak?"]
    return []


def _base_quant(shown: Any, quant: str) -> str:
    """The base's quant: ours, or the level ``/api/show`` reports for ``--base-model``."""
    if shown is not None and shown.details is not None:
        return str(shown.details.quantization_level or quant).lower()
    return quant


__all__ = [
    "BASE_MODELFILE_NAME",
    "DEPLOY_MODES",
    "base_stem",
    "check_mode",
    "default_base_name",
    "deploy_adapter",
    "deploy_route",
    "not_convertible",
]
