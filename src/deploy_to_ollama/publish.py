"""Publish stage: push GGUF files (+ Modelfile), a merged model or an adapter to the Hub.

One push is one commit made through huggingface_hub. A rerun after a failure resumes: the Hub
reports content it already stores (LFS/Xet) and unchanged files, so only what is missing moves.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._fs import read_json_object
from ._version import __version__
from .deploy_report import REPORT_NAME, summary_markdown
from .errors import HubError, InputError, InputNotFoundError, UsageError
from .inputs import TOKENIZER_FILES as MERGED_TOKENIZER_FILES
from .model_card import CardFile, ModelCardData, PushKind, hub_base_model, render_model_card
from .progress import NullProgress, ProgressReporter
from .publish_adapter import find_adapter_route
from .publish_hub import hub_errors
from .publish_hub import resolve_token as resolve_token  # re-exported: export checks it early
from .publish_hub import translate_hub_error as translate_hub_error

logger = logging.getLogger(__name__)

PUSH_KINDS: tuple[PushKind, ...] = ("gguf", "merged", "adapter")

#: Tokenizer and chat-template files that travel with a merged model or an adapter.
TOKENIZER_FILES = (*MERGED_TOKENIZER_FILES, "generation_config.json")
#: Which top-level files of the folder each kind uploads (README.md is always ours).
UPLOAD_PATTERNS: Mapping[PushKind, tuple[str, ...]] = {
    "gguf": ("*.gguf", "Modelfile", "LICENSE*", REPORT_NAME),
    "merged": (
        "config.json",
        "*.safetensors",
        "*.safetensors.index.json",
        *TOKENIZER_FILES,
        "LICENSE*",
        REPORT_NAME,
    ),
    "adapter": (
        "adapter_config.json",
        "adapter_model.safetensors",
        *TOKENIZER_FILES,
        "LICENSE*",
        REPORT_NAME,
    ),
}
#: Patterns that must each match at least one file, per kind.
REQUIRED_PATTERNS: Mapping[PushKind, tuple[str, ...]] = {
    "gguf": ("*.gguf",),
    "merged": ("config.json", "*.safetensors"),
    "adapter": ("adapter_config.json", "adapter_model.safetensors"),
}
#: Modelfile parameters that describe the user's machine, not the model: kept out of ``params``.
MACHINE_PARAMETERS = frozenset({"num_thread", "num_gpu", "main_gpu", "use_mmap", "numa"})

_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
_QUANT_RE = re.compile(r"\.([A-Za-z0-9_]+)\.gguf$")


@dataclass(frozen=True, slots=True)
class PushResult:
    """What a push did."""

    repo_id: str
    repo_url: str
    what: PushKind
    files: tuple[str, ...]
    """Paths in the repository that this push sent (model files and generated ones)."""
    total_bytes: int
    commit_oid: str | None
    commit_url: str | None
    endpoint: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for ``--json``."""
        return {
            "repo_id": self.repo_id,
            "repo_url": self.repo_url,
            "what": self.what,
            "files": list(self.files),
            "total_bytes": self.total_bytes,
            "commit_oid": self.commit_oid,
            "commit_url": self.commit_url,
            "endpoint": self.endpoint,
        }


# --------------------------------------------------------------------------- checks


def check_kind(what: str) -> PushKind:
    """Validate ``--what`` before any work.

    >>> check_kind("GGUF")
    'gguf'
    """
    lowered = what.strip().lower()
    if lowered not in PUSH_KINDS:
        raise UsageError(f"unknown --what {what!r}", hint=f"choose one of {', '.join(PUSH_KINDS)}")
    return lowered


def check_repo_id(repo_id: str) -> str:
    """Validate ``USER/REPO`` (the namespace is needed for ``ollama run hf.co/USER/REPO``).

    >>> check_repo_id("alice/my-model")
    'alice/my-model'
    """
    if not _REPO_ID_RE.match(repo_id) or ".." in repo_id or repo_id.endswith((".git", ".")):
        raise UsageError(
            f"invalid Hub repository id {repo_id!r}",
            hint="write it as USER/REPO (letters, digits, '-', '_', '.'), e.g. alice/my-model",
        )
    return repo_id


def select_files(folder: Path, what: PushKind) -> list[Path]:
    """The top-level files of ``folder`` that a ``what`` push uploads, sorted by name.

    Hidden files (our atomic writes' ``.name.partial`` temps) and README.md are left out.

    Raises:
        InputNotFoundError: ``folder`` does not exist.
        InputError: a file the kind needs is missing.
    """
    if not folder.is_dir():
        raise InputNotFoundError(
            f"{folder} is not a folder", path=folder, hint="pass the export or save folder"
        )
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    missing = [
        pattern
        for pattern in REQUIRED_PATTERNS[what]
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names)
    ]
    if missing and what == "adapter" and find_adapter_route(folder) is not None:
        missing = []  # the adapter route (GGUF LoRA + Modelfile) needs no PEFT files
    if missing:
        raise InputError(
            f"{folder} has no {' or '.join(missing)} for --what {what}",
            hint=_missing_hint(what),
        )
    keep = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in UPLOAD_PATTERNS[what])]
    route = find_adapter_route(folder) if what == "adapter" else None
    extra = [f.name for f in route.files if f.name not in keep] if route else []
    return [folder / n for n in sorted(keep + extra)]


def _missing_hint(what: PushKind) -> str:
    return {
        "gguf": "export first: deploy-to-ollama export SOURCE --out DIR, then push DIR",
        "merged": "save it first: deploy-to-ollama export SOURCE --save-merged DIR",
        "adapter": "push the folder that holds adapter_config.json (save_pretrained's output)",
    }[what]


def quant_tag(filename: str) -> str | None:
    """The quant tag Ollama's ``hf.co/USER/REPO:TAG`` matches, from ``<stem>.<QUANT>.gguf``.

    >>> quant_tag("bot.Q4_K_M.gguf"), quant_tag("bot.q8_0.gguf"), quant_tag("bot.gguf")
    ('Q4_K_M', 'Q8_0', None)
    """
    match = _QUANT_RE.search(filename)
    return match.group(1).upper() if match else None


# --------------------------------------------------------------------------- generated files


def _gguf_base_model(path: Path) -> str | None:
    """``general.base_model.0.*`` of a GGUF, as a Hub id when the converter recorded one."""
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
    except Exception as err:  # a GGUF we cannot read only loses the card's base_model line
        logger.debug("cannot read GGUF metadata of %s: %s", path, err)
        return None

    def text(key: str) -> str | None:
        field = reader.fields.get(key)
        if field is None or not field.data:
            return None
        return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")

    url = text("general.base_model.0.repo_url") or ""
    if url.startswith("https://huggingface.co/"):
        return url.removeprefix("https://huggingface.co/").strip("/")
    org, name = text("general.base_model.0.organization"), text("general.base_model.0.name")
    return f"{org}/{name}" if org and name else None


def detect_base_model(folder: Path, what: PushKind, files: list[Path]) -> str | None:
    """The base model recorded in the folder's own files, if any."""
    if what == "adapter":
        value = read_json_object(folder / "adapter_config.json").get("base_model_name_or_path")
        return str(value) if value else None
    if what == "merged":
        value = read_json_object(folder / "config.json").get("_name_or_path")
        return hub_base_model(str(value)) if value else None
    ggufs = [f for f in files if f.suffix == ".gguf"]
    return _gguf_base_model(ggufs[0]) if ggufs else None


def _template_status(header: str | None) -> bool | None:
    """Read the verification note our pipeline writes into the Modelfile header."""
    if not header:
        return None
    if "NOT verified" in header:
        return False
    if "verified" in header:
        return True
    return None


def ollama_repo_files(modelfile_path: Path) -> tuple[dict[str, bytes], ModelCardData | None]:
    """``template``, ``system`` and ``params`` files for ``ollama run hf.co/…`` from a Modelfile.

    Ollama's Hub integration reads these three files instead of guessing a template from the
    GGUF (https://huggingface.co/docs/hub/ollama, "Custom Chat Template and Parameters").

    Returns:
        The files, and a partial card (template, system, parameters, verification, FROM).
    """
    from .modelfile import parse_modelfile

    return ollama_files_for(parse_modelfile(modelfile_path.read_text(encoding="utf-8")))


def ollama_files_for(modelfile: Any) -> tuple[dict[str, bytes], ModelCardData | None]:
    """``ollama_repo_files`` for a parsed Modelfile."""
    from .ollama_client import api_parameters

    files: dict[str, bytes] = {}
    if modelfile.template:
        files["template"] = modelfile.template.encode()
    if modelfile.system:
        files["system"] = modelfile.system.encode()
    portable = tuple((k, v) for k, v in modelfile.parameters if k not in MACHINE_PARAMETERS)
    params = api_parameters(portable)
    if params:
        files["params"] = (json.dumps(params, indent=2, ensure_ascii=False) + "\n").encode()
    source = modelfile.from_.removeprefix("./")
    card = ModelCardData(
        repo_id="",
        what="gguf",
        files=(),
        template=modelfile.template,
        system=modelfile.system,
        parameters=params,
        template_verified=_template_status(modelfile.header_comment),
        license=None,
        modelfile_from=source if "/" not in source and source.endswith(".gguf") else None,
        adapter_files=tuple(Path(a).name for a in modelfile.adapters),
    )
    return files, card


def build_repo_files(
    folder: Path,
    repo_id: str,
    what: PushKind,
    files: list[Path],
    *,
    base_model: str | None = None,
    template_verified: bool | None = None,
) -> dict[str, bytes]:
    """The generated files of a push: README.md, plus ``template``/``system``/``params`` for GGUF.

    Args:
        folder: the pushed folder.
        repo_id: target repository.
        what: push kind.
        files: the folder's files being uploaded (from ``select_files``).
        base_model: overrides the base model found in the folder.
        template_verified: overrides the status read from the Modelfile header.
    """
    extra: dict[str, bytes] = {}
    partial: ModelCardData | None = None
    modelfile = folder / "Modelfile"
    route = find_adapter_route(folder) if what == "adapter" else None
    if what == "gguf" and modelfile.is_file():
        extra, partial = ollama_repo_files(modelfile)
    elif route is not None:  # the adapter route's Modelfile, FROM a file of the repository
        extra, partial = ollama_files_for(route.modelfile)
        extra["Modelfile"] = route.modelfile_text().encode()
    adapters = set(partial.adapter_files) if partial else set()
    card_files = tuple(
        CardFile(
            f.name,
            f.stat().st_size,
            quant_tag(f.name) if f.suffix == ".gguf" and f.name not in adapters else None,
        )
        for f in files
    )
    verified = template_verified
    if verified is None and partial is not None:
        verified = partial.template_verified
    data = ModelCardData(
        repo_id=repo_id,
        what=what,
        files=card_files,
        base_model=base_model or detect_base_model(folder, what, files),
        template=partial.template if partial else None,
        system=partial.system if partial else None,
        parameters=partial.parameters if partial else {},
        template_verified=verified,
        modelfile_from=partial.modelfile_from if partial else None,
        adapter_files=partial.adapter_files if partial else (),
        proof=_proof(folder),
        base_ollama_model=route.base_model_name if route else None,
        quality=quality_markdown(folder) if what == "gguf" else None,
        imatrix=imatrix_lines(files),
    )
    extra["README.md"] = render_model_card(data).encode()
    return extra


def quality_markdown(folder: Path) -> str | None:
    """The card's quality table from ``export --measure``'s ``quality.json``, when there is one."""
    from .measuring import quality_markdown as table

    return table(folder)


def imatrix_lines(files: list[Path]) -> tuple[str, ...]:
    """The card's line for each pushed GGUF whose header records an importance matrix."""
    from .deploy_report import gguf_imatrix

    lines = []
    for path in files:
        facts = gguf_imatrix(path)
        if facts is not None:
            on = f", computed on {facts['dataset']}" if facts.get("dataset") else ""
            lines.append(f"`{path.name}`: {facts.get('entries', '?')} entries{on}")
    return tuple(lines)


def _proof(folder: Path) -> str | None:
    """The card's summary of the folder's ``deploy-report.json``, when it has one."""
    path = folder / REPORT_NAME
    if not path.is_file():
        return None
    data = read_json_object(path)
    return summary_markdown(data) if data else None


# --------------------------------------------------------------------------- push


def push_to_hub(
    folder: Path,
    repo_id: str,
    *,
    what: str,
    private: bool = False,
    token: str | None = None,
    progress: ProgressReporter | None = None,
    base_model: str | None = None,
    template_verified: bool | None = None,
    commit_message: str | None = None,
) -> PushResult:
    """Upload ``folder``'s GGUF files, merged model or adapter to ``repo_id`` in one commit.

    GGUF pushes also upload the Modelfile and the ``template``/``system``/``params`` files that
    ``ollama run hf.co/USER/REPO:QUANT`` reads; every push writes a generated README.md.
    The repo is created when missing. Rerunning after a failure resumes: content the Hub
    already stores is not uploaded again, and a push with nothing new makes no commit.

    Args:
        folder: export folder (GGUFs + Modelfile), merged model folder or adapter folder.
        repo_id: ``USER/REPO``.
        what: ``gguf``, ``merged`` or ``adapter``.
        private: create the repo private (an existing repo keeps its visibility).
        token: Hub token; default HF_TOKEN or the huggingface_hub login.
        progress: stage reporter (repo, upload).
        base_model: base model id for the card; default read from the folder.
        template_verified: template status for the card; default read from the Modelfile.
        commit_message: default names the kind and our version.

    Returns:
        The repository, commit and files.

    Raises:
        UsageError: bad ``what`` or ``repo_id``.
        InputError: the folder lacks the files of the kind.
        HubError: no token, token rejected, no permission, or another Hub error.
        HubUnavailableError: the Hub (HF_ENDPOINT) cannot be reached.
    """
    reporter = progress or NullProgress()
    kind = check_kind(what)
    check_repo_id(repo_id)
    files = select_files(folder, kind)
    generated = build_repo_files(
        folder, repo_id, kind, files, base_model=base_model, template_verified=template_verified
    )
    from huggingface_hub import CommitOperationAdd, HfApi, constants

    if constants.is_offline_mode():
        raise HubError(
            "huggingface_hub is in offline mode (HF_HUB_OFFLINE)",
            hint="unset HF_HUB_OFFLINE (or set it to 0) to push",
        )
    resolved = resolve_token(token)
    api = HfApi(token=resolved)
    total = sum(f.stat().st_size for f in files) + sum(len(b) for b in generated.values())
    add = CommitOperationAdd
    operations = [add(path_in_repo=f.name, path_or_fileobj=str(f)) for f in files]
    operations += [add(path_in_repo=n, path_or_fileobj=d) for n, d in generated.items()]
    with hub_errors(repo_id, api.endpoint):
        reporter.start("repo", f"hub: repository {repo_id}")
        repo_url = api.create_repo(repo_id, private=True if private else None, exist_ok=True)
        reporter.done("repo")
        reporter.start("upload", f"hub: {len(operations)} files, {total} bytes", total=total)
        info = api.create_commit(
            repo_id,
            operations,
            commit_message=commit_message or f"Upload {kind} with deploy-to-ollama {__version__}",
        )
        reporter.done("upload", f"pushed to {repo_url}")
    return PushResult(
        repo_id=repo_id,
        repo_url=str(repo_url),
        what=kind,
        files=tuple(op.path_in_repo for op in operations),
        total_bytes=total,
        commit_oid=info.oid,
        commit_url=info.commit_url,
        endpoint=api.endpoint,
    )
