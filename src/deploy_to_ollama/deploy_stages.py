"""The resumable stages of ``deploy`` (``pipeline``): template, export, Modelfile, register.

Each stage records its result in the work folder's state file (``resume.StateFile``) under a key
of everything it depends on, so a rerun for the same inputs reuses it: the template translation
per server version, the GGUF per quant and importance matrix, the registration per GGUF digest,
Modelfile, name and host (checked against what the server really has).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._fs import write_text_atomic
from .errors import OutputExistsError
from .modelfile import Modelfile, TemplateResult, render_modelfile
from .modelfile.assembly import relative_from
from .ollama_client import OllamaClient, file_digest
from .progress import ProgressReporter
from .registrar import Registration, register_model
from .resume import StateFile, stable_hash
from .routing import registered_template_matches
from .stages import build_modelfile, translate_stage

if TYPE_CHECKING:
    from .pipeline import _Plan

logger = logging.getLogger(__name__)

__all__ = [
    "build_deploy_modelfile",
    "gguf_name",
    "reregister",
    "run_export",
    "run_register",
    "run_template",
]


def gguf_name(stem: str, quant: str) -> str:
    from .gguf.steps import gguf_filename

    return gguf_filename(stem, quant)


def run_export(
    plan: _Plan,
    path: Path,
    resolved: Any,
    work: Path,
    state: StateFile,
    input_key: str,
    quant: str,
) -> tuple[Path, str]:
    if resolved.kind == "gguf":
        return path, "skipped"  # already a GGUF
    imatrix = [plan.imatrix.fingerprint()] if plan.imatrix else []
    key = stable_hash(input_key, quant, "export", *imatrix)
    expected = work / gguf_name(plan.stem, quant)
    done = state.get("export", key)
    if done and (work / done["gguf"]).is_file():
        plan.progress.start("export", "export: reusing the GGUF of an earlier run")
        gguf = _named_for_this_deploy(work / done["gguf"], expected)
        if gguf.name != done["gguf"]:
            state.put("export", key, gguf=gguf.name)
        plan.progress.done("export")
        return gguf, "reused"
    plan.progress.start("export", f"export: {path.name} -> GGUF {quant}")
    gguf, reused = _export_stage(plan, path, resolved, work, input_key, quant)
    plan.progress.done("export")
    state.put("export", key, gguf=gguf.name)
    return gguf, "reused" if reused else "done"


def _named_for_this_deploy(gguf: Path, expected: Path) -> Path:
    """A GGUF reused from an earlier deploy of the same input takes this deploy's name."""
    if gguf == expected:
        return gguf
    os.replace(gguf, expected)
    logger.info("renamed the reused %s to %s", gguf.name, expected.name)
    return expected


def _export_stage(
    plan: _Plan, path: Path, resolved: Any, work: Path, input_key: str, quant: str
) -> tuple[Path, bool]:
    """One GGUF for ``path`` in the work folder, through the exporter (which resumes itself)."""
    from .gguf.export import export_gguf

    settings = plan.settings
    kwargs: dict[str, Any] = {
        "out_dir": work,
        "quant": quant,
        "base": plan.base,
        "name": plan.stem,
        "cache_dir": plan.cache,
        "llama_cpp_dir": settings.llama_cpp_dir,
        "progress": plan.progress,
        "settings": settings,
        "content_key": input_key,
        "resolved": resolved,
        "imatrix": plan.imatrix,
    }
    try:
        result = export_gguf(path, force=False, **kwargs)
    except OutputExistsError:
        # The work folder belongs to this input: a GGUF there without a matching stamp is a
        # leftover of an older layout or a changed option, safe to replace.
        result = export_gguf(path, force=True, **kwargs)
    model = next(f for f in result.files if f.role == "model")
    return model.path, result.reused


def run_template(
    path: Path,
    base_dir: Path | None,
    state: StateFile,
    input_key: str,
    progress: ProgressReporter,
    *,
    server_version: str | None = None,
) -> tuple[TemplateResult, str]:
    # Verified for this server's prompt building: another version is another verification.
    key = stable_hash(input_key, "template", server_version or "")
    done = state.get("template", key)
    if done:
        values = {k: v for k, v in done.items() if k != "key"}
        values["stops"] = tuple(values.get("stops") or ())
        values["capabilities_lost"] = tuple(values.get("capabilities_lost") or ())
        values["thinking_holds_for"] = tuple(values.get("thinking_holds_for") or ())
        return TemplateResult(**values), "reused"
    progress.start("template", "template: translating the chat template")
    result = translate_stage(path, base_dir, server_version=server_version)
    progress.done("template")
    state.put("template", key, **asdict(result))
    return result, "done"


def build_deploy_modelfile(
    gguf: Path,
    work: Path,
    template: TemplateResult,
    source: Path,
    base_dir: Path | None,
    extra: Sequence[tuple[str, str]],
) -> Modelfile:
    """The Modelfile ``deploy`` registers (``stages.build_modelfile``, FROM beside it)."""
    return build_modelfile(
        from_=relative_from(gguf, work),
        source=source,
        template=template,
        base_dir=base_dir,
        extra=extra,
    )


def run_register(
    plan: _Plan, modelfile: Modelfile, work: Path, gguf: Path, state: StateFile
) -> tuple[str, Registration | None]:
    """Register unless the server already has this exact model; None when reused."""
    digest = _gguf_digest(gguf, state, plan.progress)
    key = stable_hash(digest, render_modelfile(modelfile), plan.name, plan.host)
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


def reregister(
    plan: _Plan, modelfile: Modelfile, modelfile_path: Path, gguf: Path, state: StateFile
) -> None:
    """Register ``modelfile`` over the model this run just registered (or reused), and write
    it as the Modelfile beside the GGUF: what the server has is what the folder says. The
    registration is recorded as ``run_register`` records it, so a rerun reuses it."""
    from .ollama_client import create_model

    write_text_atomic(modelfile_path, render_modelfile(modelfile))
    plan.progress.start("register", f"register: {plan.name} again, with our TEMPLATE")
    create_model(
        OllamaClient(plan.host), plan.name, modelfile, base_dir=modelfile_path.parent,
        method=plan.method, progress=plan.progress,
    )  # fmt: skip
    plan.progress.done("register")
    digest = _gguf_digest(gguf, state, plan.progress)
    key = stable_hash(digest, render_modelfile(modelfile), plan.name, plan.host)
    state.put("register", key, name=plan.name, host=plan.host, digest=digest)


def _gguf_digest(gguf: Path, state: StateFile, progress: ProgressReporter) -> str:
    stat = gguf.stat()
    fingerprint = stable_hash(str(gguf), stat.st_size, stat.st_mtime_ns)
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
        and registered_template_matches(shown, modelfile.template)
        and (shown.system or "") == (modelfile.system or "")
    )
