"""Repair what the doctor found: a corrected Modelfile from the template engine, and for an
Ollama model a re-created model that reuses the existing weights blob (nothing re-uploaded).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from .._fs import write_text_atomic
from ..errors import (
    OutputExistsError,
    RegistrationError,
    ReplaceRefusedError,
    TemplateTranslationError,
)
from ..modelfile import (
    SAMPLING_PARAMETERS,
    Modelfile,
    TemplateResult,
    assemble_modelfile,
    header_comment,
    parameters_from_generation_config,
    render_modelfile,
)
from ..ollama_client import OllamaClient, api_parameters
from ..ollama_client.create import relay_create_progress
from ..progress import NullProgress
from ..registrar import register_model, validate_model_name
from .diagnoses import UNSLOTH_SAMPLING, Diagnosis
from .reference import ReferenceTemplate
from .targets import Target

logger = logging.getLogger(__name__)

#: Parameters the fix rewrites; every other parameter of the model is kept as it was.
_REWRITTEN = frozenset({"stop", *SAMPLING_PARAMETERS})


@dataclass(frozen=True, slots=True)
class FixPlan:
    """The corrected Modelfile and what it changes."""

    modelfile: Modelfile
    translation_verified: bool
    changes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FixResult:
    """What ``apply_fix`` wrote and registered."""

    plan: FixPlan
    modelfile_path: Path | None
    registered: str | None
    """The Ollama model (re-)created, when one was."""


def plan_fix(target: Target, reference: ReferenceTemplate, found: Sequence[Diagnosis]) -> FixPlan:
    """Build the corrected Modelfile: the translated TEMPLATE, its stops and SYSTEM, sampling
    from generation_config (Unsloth's defaults dropped), other parameters kept.

    Raises:
        TemplateTranslationError: the reference template cannot be translated.
    """
    from ..chat_template.translate import translate_template

    if reference.source is None:
        raise TemplateTranslationError(
            "no template source to translate", hint="pass --source the fine-tune's folder"
        )
    # Verified for the serving Ollama's prompt building (None: unknown, the newest).
    translated = translate_template(reference.source, server_version=target.server_version)
    verified = bool(getattr(translated.report, "verified", False))
    route = _route(target, reference, translated.template, found, verified=verified)
    system = _fixed_system(target, translated.system, found)
    # The one Modelfile assembly deploy and export use: stops, sampling, then the model's own.
    modelfile = assemble_modelfile(
        from_=target.weights or target.label,
        adapters=target.adapters,
        template=TemplateResult(
            translated.template, tuple(translated.stop), translated.system, verified
        ),
        model_params=_fixed_sampling(target, reference),
        extra=[(k, v) for k, v in target.parameters if k not in _REWRITTEN],
        header=header_comment(reference.location, verified=verified, by="(doctor --fix)"),
        system=system,
    )
    if route == "native":  # the GGUF's Jinja is what is proven: no TEMPLATE, no SYSTEM
        modelfile, verified, system = replace(modelfile, template=None, system=None), True, None
    params = modelfile.parameters
    changes = [f"TEMPLATE translated from {reference.location}"]
    if route == "native":
        changes = ["route native: no TEMPLATE, llama.cpp's engine renders the GGUF's Jinja "
                   "(proven on Ollama 0.30+; older servers need the go route)"]  # fmt: skip
    changes.append(f"stops: {list(translated.stop)}")
    if system != target.system:
        changes.append(f"SYSTEM: {target.system!r} -> {system!r}")
    old = {k: v for k, v in target.parameters if k in _REWRITTEN and k != "stop"}
    new = {k: v for k, v in params if k in _REWRITTEN and k != "stop"}
    if old != new:
        changes.append(f"sampling: {old} -> {new}")
    return FixPlan(modelfile, verified, tuple(changes))


#: Diagnoses after which ``--fix`` chooses the route again (issue 13), not only the TEMPLATE.
_ROUTE_CODES = frozenset({"template_overridden", "native_render_mismatch", "capabilities_lost"})


def _route(
    target: Target,
    reference: ReferenceTemplate,
    template: str | None,
    found: Sequence[Diagnosis],
    *,
    verified: bool,
) -> str:
    """``go`` unless a route diagnosis was found and only the native route is proven."""
    from .routes import proven_route

    if reference.source is None or not _ROUTE_CODES & {d.code for d in found}:
        return "go"
    version = OllamaClient(target.host).version() if target.kind == "ollama" else None
    return proven_route(reference.source, template or "", verified=verified, version=version)


def _fixed_sampling(target: Target, reference: ReferenceTemplate) -> tuple[tuple[str, str], ...]:
    """generation_config's sampling when known (the one mapping), else the model's own minus
    Unsloth's defaults."""
    trained = dict(reference.generation_config)
    if trained:
        return parameters_from_generation_config(trained)
    return tuple(
        (k, v)
        for k, v in target.parameters
        if k in SAMPLING_PARAMETERS
        and not (k in UNSLOTH_SAMPLING and _float(v) == UNSLOTH_SAMPLING[k])
    )


def _float(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _fixed_system(target: Target, translated: str | None, found: Sequence[Diagnosis]) -> str | None:
    """Keep a user's own SYSTEM unless it is the duplicated default; else the translator's."""
    codes = {d.code for d in found}
    if target.system and "system_duplicated" not in codes:
        return target.system
    return translated


def apply_fix(
    target: Target,
    plan: FixPlan,
    *,
    name: str | None,
    force: bool,
    host: str | None,
    out: Path | None = None,
) -> FixResult:
    """Write the corrected Modelfile and (for Ollama models, or with ``name``) register it.

    An Ollama model is re-created from its existing blobs by digest, so nothing is uploaded.

    Raises:
        ReplaceRefusedError: an Ollama model would be replaced without ``force`` or ``name``.
        OutputExistsError: ``name`` exists and ``force`` is false, or the Modelfile exists.
        OllamaUnavailableError / RegistrationError: registering failed.
    """
    if target.kind == "ollama":
        new_name = _ollama_fix_name(target, name, force=force)
        path = out
        if path is not None:
            write_text_atomic(path, render_modelfile(plan.modelfile))
        recreate_from_blobs(target, plan.modelfile, new_name, host=host, force=force)
        return FixResult(plan, path, new_name)
    path = out or _modelfile_path(target)
    if path.exists() and not force and out is None:
        path = path.with_name(path.name + ".fixed")
    if path.exists() and not force:
        raise OutputExistsError(f"{path} already exists", hint="pass --force to overwrite it")
    modelfile = plan.modelfile
    if target.weights and Path(target.weights).is_absolute():
        modelfile = _relative_from(modelfile, Path(target.weights), path.parent)
    write_text_atomic(path, render_modelfile(modelfile))
    registered = None
    if name is not None:
        registered = register_model(
            name, modelfile, base_dir=path.parent, host=host, force=force
        ).name
    return FixResult(FixPlan(modelfile, plan.translation_verified, plan.changes), path, registered)


def _relative_from(modelfile: Modelfile, weights: Path, folder: Path) -> Modelfile:
    """Write FROM/ADAPTER paths relative to the Modelfile's folder when they lie under it."""

    def rel(value: str) -> str:
        try:
            return f"./{Path(value).relative_to(folder.resolve())}"
        except ValueError:
            return value

    return replace(
        modelfile,
        from_=rel(str(weights)),
        adapters=tuple(rel(a) for a in modelfile.adapters),
    )


def _modelfile_path(target: Target) -> Path:
    if target.kind == "modelfile":
        return Path(target.label)
    if target.kind == "hf" and target.hf_dir is not None:
        return target.hf_dir / "Modelfile"
    return Path(target.label).with_name("Modelfile")


def _ollama_fix_name(target: Target, name: str | None, *, force: bool) -> str:
    if name is None:
        if not force:
            raise ReplaceRefusedError(
                f"--fix would replace the Ollama model {target.label}",
                hint="pass --force to re-create it under the same name, or --name NEW",
            )
        return validate_model_name(target.label)
    return validate_model_name(name)


def recreate_from_blobs(
    target: Target, modelfile: Modelfile, name: str, *, host: str | None, force: bool
) -> None:
    """Create ``name`` from ``target``'s existing blobs (by digest) with the fixed settings.

    Why not ``FROM old-model``: Ollama then merges the old parameters into the new ones, so a
    bad stop or Unsloth's temperature could not be removed.

    Raises:
        OutputExistsError: ``name`` exists (and is not the target itself) without ``force``.
    """
    client = OllamaClient(host or target.host)
    if target.weights_digest is None:
        raise RegistrationError(
            f"cannot find the weights blob of {target.label} in `ollama show`",
            hint="re-create it from the GGUF: `deploy-to-ollama doctor model.gguf --fix --name`",
        )
    if client.exists(name) and not force:
        raise OutputExistsError(
            f"model {name} already exists on {client.host}",
            hint="pass --force, or another --name",
        )
    adapters = {f"adapter{i}.gguf": d for i, d in enumerate(target.adapter_digests)}
    stream = client.create(
        name,
        files={"model.gguf": target.weights_digest},
        adapters=adapters,
        template=modelfile.template,
        system=modelfile.system,
        parameters=api_parameters(modelfile.parameters),
    )
    relay_create_progress(stream, NullProgress())


__all__ = ["FixPlan", "FixResult", "apply_fix", "plan_fix", "recreate_from_blobs"]
