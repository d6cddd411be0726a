"""Read what the doctor examines: an Ollama model, a GGUF file, a Modelfile or an HF folder.

Every kind of target becomes one ``Target``: the TEMPLATE, SYSTEM and parameters Ollama will
use, plus the GGUF's tokenizer metadata (embedded Jinja template, BOS/EOS/EOT, add_bos).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from ..errors import InputError, InputNotFoundError, ModelfileError
from ..modelfile import Modelfile, parse_modelfile
from ..ollama_client import OllamaClient, ShownModel

logger = logging.getLogger(__name__)

TargetKind = Literal["ollama", "gguf", "modelfile", "hf"]

#: What Ollama uses when it has no TEMPLATE (server/images.go: the raw prompt, unformatted).
PROMPT_FALLBACK = "{{ .Prompt }}"

#: GGUF keys that name end-of-generation tokens (llama.cpp src/llama-vocab.cpp).
EOG_KEYS = (
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.eom_token_id",
)

#: Every GGUF key ``gguf_info_from_metadata`` reads.
GGUF_INFO_KEYS = (
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.chat_template",
    "general.architecture",
    *EOG_KEYS,
)


@dataclass(frozen=True, slots=True)
class GgufInfo:
    """The tokenizer facts of a GGUF that decide how prompts are tokenized and where it stops."""

    chat_template: str | None
    bos_token: str | None
    eos_token: str | None
    eog_tokens: tuple[str, ...]
    """Texts of every token llama.cpp treats as end of generation (eos, eot, eom)."""
    add_bos: bool
    """llama.cpp prepends BOS to every prompt, so a TEMPLATE must not write it again."""
    architecture: str | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """What Ollama does (or would do) with one model."""

    kind: TargetKind
    label: str
    """The TARGET as the user gave it (model name or path)."""
    template: str | None
    """The Go TEMPLATE Ollama uses; None when none is set (Ollama then uses ``{{ .Prompt }}``)."""
    system: str | None
    parameters: tuple[tuple[str, str], ...]
    gguf: GgufInfo | None
    weights: str | None
    """What a fixed Modelfile's ``FROM`` names: a GGUF path or the existing Ollama model."""
    hf_dir: Path | None = None
    """For HF targets: the folder itself (it is also the reference)."""
    host: str | None = None
    weights_digest: str | None = None
    """``sha256:…`` of the Ollama model's weights blob (re-used by ``--fix``, no upload)."""
    adapter_digests: tuple[str, ...] = ()
    adapters: tuple[str, ...] = ()
    """``ADAPTER`` files of a Modelfile target (absolute paths), kept by ``--fix``."""
    route: Literal["go", "native"] | None = None
    """The prompt path the model was deployed for or is served on, where known: from the
    ``deploy-report.json`` beside a Modelfile, or a 0.30+ server that serves a model without
    a TEMPLATE natively (None: unknown)."""
    server_version: str | None = None
    """The serving Ollama's version (its prompt-building rules); None: the newest."""

    @property
    def stops(self) -> list[str]:
        """The ``stop`` parameters, in order."""
        return [value for key, value in self.parameters if key == "stop"]

    @property
    def effective_template(self) -> str:
        """The TEMPLATE Ollama renders with (its fallback when none is set)."""
        return self.template if self.template and self.template.strip() else PROMPT_FALLBACK


# --------------------------------------------------------------------------- GGUF


def read_gguf_info(path: Path) -> GgufInfo:
    """Read tokenizer metadata from a GGUF file's header (tensors are not loaded).

    Raises:
        InputNotFoundError: ``path`` does not exist.
        InputError: the file is not a GGUF.
    """
    if not path.is_file():
        raise InputNotFoundError(
            f"GGUF file {path} does not exist", path=path, hint="check the path"
        )
    from ..gguf.metadata import read_gguf_fields

    try:
        # The header keys GgufInfo needs, not gguf-py's map of every field and tensor.
        fields = read_gguf_fields(path, GGUF_INFO_KEYS)
    except InputError as err:
        raise InputError(
            err.message,
            hint="pass a .gguf written by llama.cpp, a Modelfile, a model dir or an Ollama model",
        ) from err
    return gguf_info_from_metadata(fields)


def gguf_info_from_metadata(meta: Mapping[str, Any]) -> GgufInfo:
    """Build ``GgufInfo`` from GGUF key/values (a reader's fields or ``/api/show`` model_info).

    >>> info = gguf_info_from_metadata({"tokenizer.ggml.tokens": ["<s>", "</s>", "a"],
    ...     "tokenizer.ggml.bos_token_id": 0, "tokenizer.ggml.eos_token_id": 1})
    >>> info.bos_token, info.eos_token, info.eog_tokens, info.add_bos
    ('<s>', '</s>', ('</s>',), True)
    """
    tokens = meta.get("tokenizer.ggml.tokens")
    token_list = list(tokens) if isinstance(tokens, list | tuple) else []

    def text(key: str) -> str | None:
        idx = meta.get(key)
        if isinstance(idx, int) and 0 <= idx < len(token_list):
            return str(token_list[idx])
        return None

    bos = text("tokenizer.ggml.bos_token_id")
    add_bos = meta.get("tokenizer.ggml.add_bos_token")
    eogs = tuple(dict.fromkeys(t for t in (text(k) for k in EOG_KEYS) if t))
    template = meta.get("tokenizer.chat_template")
    arch = meta.get("general.architecture")
    return GgufInfo(
        chat_template=str(template) if template else None,
        bos_token=bos,
        eos_token=text("tokenizer.ggml.eos_token_id"),
        eog_tokens=eogs,
        # llama.cpp defaults add_bos to true for SPM/BPE-llama vocabularies when the key is absent.
        add_bos=bool(add_bos) if add_bos is not None else bos is not None,
        architecture=str(arch) if arch else None,
    )


def load_gguf_target(path: Path) -> Target:
    """A bare GGUF as ``ollama create`` with ``FROM path`` and nothing else would see it."""
    info = read_gguf_info(path)
    return Target("gguf", str(path), None, None, (), info, str(path.resolve()))


# --------------------------------------------------------------------------- Modelfile


def load_modelfile_target(path: Path, *, host: str | None = None) -> Target:
    """A Modelfile, following its ``FROM`` to a GGUF file or an Ollama model.

    Raises:
        InputError: the Modelfile does not parse, or its FROM is a folder of safetensors.
    """
    try:
        modelfile = parse_modelfile(path.read_text(encoding="utf-8"))
    except ModelfileError as err:
        raise InputError(f"{path}: {err.message}", hint=err.hint or "fix the Modelfile") from err
    base = _resolve_from(modelfile, path.parent, host)
    template = modelfile.template if modelfile.template is not None else base.template
    system = modelfile.system if modelfile.system is not None else base.system
    parameters = _merge_parameters(base.parameters, modelfile.parameters)
    adapters = tuple(
        str(a if a.is_absolute() else (path.parent / a).resolve())
        for a in (Path(x).expanduser() for x in modelfile.adapters)
    )
    deployed = _deployed_route(path.parent)
    return Target(
        "modelfile",
        str(path),
        template,
        system,
        parameters,
        base.gguf,
        base.weights,
        host=base.host,
        adapters=adapters,
        route=deployed[0] if modelfile.template is None else None,
        server_version=base.server_version or deployed[1],
    )


def _deployed_route(folder: Path) -> tuple[Literal["go", "native"] | None, str | None]:
    """The route and server version ``deploy`` recorded in ``deploy-report.json`` there."""
    from .._fs import read_json_object
    from ..deploy_report import REPORT_NAME

    route = read_json_object(folder / REPORT_NAME).get("template_route")
    if not isinstance(route, dict):
        return None, None
    chosen = route.get("template_route")
    version = route.get("server_version")
    return (
        chosen if chosen in ("go", "native") else None,
        version if isinstance(version, str) and version != "unknown" else None,
    )


def _resolve_from(modelfile: Modelfile, folder: Path, host: str | None) -> Target:
    local = Path(modelfile.from_).expanduser()
    local = local if local.is_absolute() else folder / local
    if local.is_file():
        return load_gguf_target(local)
    if local.is_dir() or modelfile.from_.startswith((".", "/", "~")):
        raise InputError(
            f"FROM {modelfile.from_} is not a GGUF file",
            hint="doctor checks Modelfiles whose FROM is a .gguf file or an Ollama model name",
        )
    return load_ollama_target(modelfile.from_, host=host)


def _merge_parameters(
    base: tuple[tuple[str, str], ...], own: tuple[tuple[str, str], ...]
) -> tuple[tuple[str, str], ...]:
    """Ollama replaces an inherited parameter wholesale when the Modelfile sets that name."""
    names = {key for key, _ in own}
    return tuple((k, v) for k, v in base if k not in names) + own


# --------------------------------------------------------------------------- Ollama


def load_ollama_target(name: str, *, host: str | None = None) -> Target:
    """An Ollama model as the server reports it.

    Raises:
        OllamaUnavailableError: the server does not answer (exit 4).
        ModelNotFoundError: the server has no such model (exit 1).
    """
    client = OllamaClient(host)
    shown = client.require(name, verbose=True, timeout=120)
    return ollama_target_from_show(name, shown, host=client.host, version=client.version())


def ollama_target_from_show(
    name: str, shown: ShownModel, *, host: str, version: str | None = None
) -> Target:
    """Turn an ``/api/show`` reply into a ``Target`` (``version``: the server's)."""
    info = gguf_info_from_metadata(shown.modelinfo or {})
    blob = _weights_blob(shown)
    if blob is not None and info.chat_template is None:
        # /api/show leaves the embedded Jinja out of model_info; a local blob still has it.
        try:
            info = read_gguf_info(blob)
        except InputError:
            logger.info("could not read the weights blob %s", blob)
    digests = blob_digests(shown.modelfile or "")
    template = shown.template
    if template and template == info.chat_template:
        template = None  # 0.30+'s native path shows the Jinja; the model has no TEMPLATE
    return Target(
        "ollama",
        name,
        template,
        shown.system or None,
        parse_show_parameters(shown.parameters or ""),
        info,
        name,
        host=host,
        weights_digest=digests.get("FROM", [None])[0],
        adapter_digests=tuple(digests.get("ADAPTER", [])),
        route=_served_route(template, info.chat_template, version),
        server_version=version,
    )


def _served_route(
    template: str | None, jinja: str | None, version: str | None
) -> Literal["go", "native"] | None:
    """``native`` where a 0.30+ server serves the model's Jinja (``ollama_route``); None when
    the server is older or unknown (only the TEMPLATE path then) or the model has a TEMPLATE
    (its own checks say which path)."""
    from ..ollama_route import ModelFacts, parse_server_version, select_route

    if version is None or not jinja or (template and template.strip() != PROMPT_FALLBACK):
        return None
    parsed = parse_server_version(version)[0]
    if not parsed.native_path:
        return None
    native = select_route(ModelFacts(template=None, jinja=jinja), parsed).path == "native"
    return "native" if native else None


def blob_digests(modelfile: str) -> dict[str, list[str]]:
    """Blob digests of the FROM/ADAPTER lines of ``ollama show --modelfile`` output.

    >>> blob_digests("FROM /m/blobs/sha256-ab12\\nADAPTER /m/blobs/sha256-cd34\\nTEMPLATE x")
    {'FROM': ['sha256:ab12'], 'ADAPTER': ['sha256:cd34']}
    """
    out: dict[str, list[str]] = {}
    for line in modelfile.splitlines():
        command, _, value = line.partition(" ")
        name = Path(value.strip()).name
        if command in ("FROM", "ADAPTER") and name.startswith("sha256-"):
            out.setdefault(command, []).append("sha256:" + name.removeprefix("sha256-"))
    return out


def _weights_blob(shown: ShownModel) -> Path | None:
    for line in (shown.modelfile or "").splitlines():
        if line.startswith("FROM "):
            path = Path(line[5:].strip())
            return path if path.is_file() else None
    return None


def parse_show_parameters(text: str) -> tuple[tuple[str, str], ...]:
    """Parse ``/api/show``'s ``parameters`` text (``name   value``; strings Go-quoted).

    >>> parse_show_parameters('num_ctx    2048\\nstop    "<|im_end|>"\\nstop "a\\\\"b"')
    (('num_ctx', '2048'), ('stop', '<|im_end|>'), ('stop', 'a"b'))
    """
    out: list[tuple[str, str]] = []
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if not key:
            continue
        value = value.strip()
        if value.startswith('"'):
            try:
                decoded = json.loads(value)
                value = decoded if isinstance(decoded, str) else value
            except ValueError:
                value = value.strip('"')
        out.append((key, value))
    return tuple(out)


# --------------------------------------------------------------------------- HF folder


def load_hf_target(folder: Path) -> Target:
    """An HF model/adapter folder: a ``Modelfile`` in it (Unsloth writes one) when present."""
    modelfile = folder / "Modelfile"
    if modelfile.is_file():
        inner = load_modelfile_target(modelfile)
        return replace(inner, kind="hf", label=str(folder), hf_dir=folder)
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise InputError(
            f"{folder} holds no Modelfile or GGUF: nothing deployed to examine",
            hint=f"run `deploy-to-ollama doctor MODEL_NAME --source {folder}` on the Ollama model",
        )
    info = read_gguf_info(ggufs[0])
    return Target("hf", str(folder), None, None, (), info, str(ggufs[0].resolve()), hf_dir=folder)


def is_hf_dir(path: Path) -> bool:
    """A folder with a tokenizer config or adapter config."""
    return path.is_dir() and any(
        (path / name).is_file()
        for name in ("tokenizer_config.json", "adapter_config.json", "config.json")
    )


def load_target(target: str, *, host: str | None = None) -> Target:
    """Load ``target``: an existing path (GGUF, Modelfile, HF folder) or an Ollama model name.

    Raises:
        InputError: a path of a kind doctor cannot read.
        OllamaUnavailableError: a model name, and the server does not answer.
    """
    path = Path(target).expanduser()
    if path.is_dir():
        if is_hf_dir(path) or (path / "Modelfile").is_file():
            return load_hf_target(path)
        raise InputError(
            f"{path} is neither a Hugging Face model/adapter folder nor holds a Modelfile",
            hint="pass an Ollama model name, a .gguf file, a Modelfile or a fine-tune folder",
        )
    if path.is_file():
        with path.open("rb") as handle:
            magic = handle.read(4)
        if magic == b"GGUF":
            return load_gguf_target(path)
        return load_modelfile_target(path, host=host)
    if target.endswith((".gguf", "Modelfile")) or "/" in target.rstrip("/").split(":")[0][:1]:
        raise InputNotFoundError(f"{target} does not exist", path=path, hint="check the path")
    return load_ollama_target(target, host=host)


__all__ = [
    "PROMPT_FALLBACK",
    "GgufInfo",
    "Target",
    "TargetKind",
    "gguf_info_from_metadata",
    "load_gguf_target",
    "load_hf_target",
    "load_modelfile_target",
    "load_ollama_target",
    "load_target",
    "ollama_target_from_show",
    "parse_show_parameters",
    "read_gguf_info",
]
