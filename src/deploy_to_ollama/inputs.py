"""Input resolution: turn a user path into one checked, frozen description every stage reads.

``resolve_input`` decides what the source is (``source_kind``, the only place that decides),
finds the base, the tokenizer and the chat template (each located once, here), and checks the
adapter against its config and base like peft, reading only JSON files and safetensors headers,
so every problem surfaces before heavy work. Safetensors headers are read in ``safetensors_io``,
PEFT tensor names in ``peft_keys``, the adapter config and its checks in ``lora_adapter``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import BaseModelNotFoundError, InputError, InputNotFoundError
from .lora_adapter import (
    AdapterConfig,
    adapter_tensor_shapes,
    check_adapter,
    check_compatible,
    read_adapter_config,
)
from .model_files import TOKENIZER_CORE_FILES, TOKENIZER_FILES
from .peft_keys import (
    ADAPTER_WEIGHTS,
    AdapterRole,
    base_tensor_for,
    classify_adapter_key,
    strip_peft_prefix,
)
from .safetensors_io import (
    SAFETENSORS_TORCH_DTYPES,
    read_safetensors_header,
    read_safetensors_layout,
    safetensors_shapes,
    weight_files,
)
from .template_files import find_chat_template

logger = logging.getLogger(__name__)

InputKind = Literal["adapter", "merged", "gguf"]

#: Suffixes Unsloth gives pre-quantized uploads; stripping them names the 16-bit original
#: (unslothai/unsloth: unsloth/models/mapper.py maps e.g. unsloth/llama-3-8b-bnb-4bit ->
#: unsloth/llama-3-8b).
BNB_SUFFIXES = ("-unsloth-bnb-4bit", "-bnb-4bit")
#: Tensor-name endings bitsandbytes writes beside its packed weights.
BNB_TENSOR_MARKERS = (".absmax", ".quant_map", ".quant_state.bitsandbytes__nf4", ".SCB")
GGUF_MAGIC = b"GGUF"
_SOURCE_HINT = "pass a LoRA adapter folder, a merged model folder or a .gguf file"


@dataclass(frozen=True, slots=True)
class ResolvedInput:
    """A checked input: what it is, where its weights, base, tokenizer and template live.

    Built once by ``resolve_input`` and passed to every stage, so no stage looks at the
    source path again to decide any of these.
    """

    kind: InputKind
    path: Path
    base_dir: Path | None = None
    """The base model dir of an adapter (None for merged models and GGUFs)."""
    adapter_config: AdapterConfig | None = None
    tokenizer_dir: Path | None = None
    """The one tokenizer location: the adapter dir when it has tokenizer files, else its base;
    the model dir of a merged model; None for a GGUF (its tokenizer is inside)."""
    architecture: str | None = None
    """``architectures[0]`` of the model config, e.g. ``LlamaForCausalLM``."""
    config: dict[str, Any] = field(default_factory=dict)
    """The model's ``config.json`` (the base's for an adapter)."""
    base_id: str | None = None
    """``base_model_name_or_path`` as the adapter names it."""
    chat_template: str | None = None
    """The Jinja chat template every stage uses (see ``template_files`` for the order); for a
    GGUF the one embedded in it. None when there is none anywhere."""
    chat_template_file: Path | None = None
    """The file ``chat_template`` was read from (the ``.gguf`` itself for a GGUF source)."""
    gguf_quant: str | None = None
    """A GGUF source's quant type as llama.cpp names it, lower-case (``q4_k_m``, ``f16``), read
    from ``general.file_type`` (else its most common weight type); None for other inputs."""
    _key: list[str] = field(default_factory=list, repr=False, compare=False)

    @property
    def model_dir(self) -> Path | None:
        """The directory whose safetensors hold the (base) weights."""
        return (
            self.base_dir
            if self.kind == "adapter"
            else self.path
            if self.kind == "merged"
            else None
        )

    @property
    def content_key(self) -> str:
        """SHA-256 over the bytes of every file the stages read (input, base, tokenizer).

        Computed on first use and kept, so deploy's work folder and export's stamp share one
        hash of the input instead of reading the weights twice. Covers ``CONTENT_FILES`` and
        ``*.safetensors`` (the GGUF file itself for a GGUF source), by name, size and bytes.
        """
        if not self._key:
            from .content_key import compute_content_key

            self._key.append(compute_content_key(self.kind, self.path, self.base_dir))
        return self._key[0]


def source_kind(path: Path) -> InputKind:
    """What kind of source ``path`` is; the one place that decides it.

    A file is a GGUF when it starts with the GGUF magic; a folder is an adapter when it has
    ``adapter_config.json``, else a model when it has ``config.json``.

    Raises:
        InputNotFoundError: ``path`` does not exist.
        InputError: a file that is no GGUF, or a folder that is neither adapter nor model.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InputNotFoundError(f"input not found: {path}", path=path, hint=_SOURCE_HINT)
    if path.is_file():
        try:
            with path.open("rb") as fh:
                magic = fh.read(len(GGUF_MAGIC))
        except OSError as err:
            raise InputError(f"cannot read {path}: {err}", hint=_SOURCE_HINT) from err
        if magic == GGUF_MAGIC:
            return "gguf"
        if path.suffix.lower() != ".gguf":
            raise InputError(f"{path} is a file but not a .gguf", hint=_SOURCE_HINT)
        raise InputError(
            f"{path} is not a GGUF file (it does not start with the GGUF magic)",
            hint="re-export or re-download it",
        )
    if (path / "adapter_config.json").is_file():
        return "adapter"
    if (path / "config.json").is_file():
        return "merged"
    raise InputError(
        f"{path} is neither a LoRA adapter nor a model: it has neither adapter_config.json nor "
        "config.json",
        hint="point at the folder save_pretrained() wrote",
    )


def resolve_input(path: Path, *, base: Path | None = None) -> ResolvedInput:
    """Work out what ``path`` is and check it can be exported, reading headers only.

    Args:
        path: a LoRA adapter dir, a merged HF model dir, or a ``.gguf`` file.
        base: the base model dir, overriding the adapter's ``base_model_name_or_path``.

    Returns:
        The resolved input.

    Raises:
        InputNotFoundError: ``path`` or ``base`` does not exist, or the adapter has no weights.
        BaseModelNotFoundError: the base is neither a local dir nor in the HF cache.
        InputError: the input is not a model, holds bitsandbytes weights, its config disagrees
            with its tensors (rank, target_modules) or it does not fit its base.
        MergeError: the adapter type (DoRA, non-LoRA) is not supported.
    """
    path = Path(path).expanduser()
    kind = source_kind(path)
    if kind == "gguf":
        return _resolve_gguf(path)
    if kind == "adapter":
        return _resolve_adapter(path, base)
    return _resolve_merged(path)


def _resolve_gguf(path: Path) -> ResolvedInput:
    quant, template = read_gguf_facts(path)
    return ResolvedInput(
        kind="gguf",
        path=path,
        chat_template=template,
        chat_template_file=path if template else None,
        gguf_quant=quant,
    )


def _resolve_merged(path: Path) -> ResolvedInput:
    config = read_config(path)
    shapes = safetensors_shapes(path)
    _refuse_bitsandbytes(path, config, shapes)
    found = find_chat_template(path)
    return ResolvedInput(
        kind="merged",
        path=path,
        tokenizer_dir=path,
        architecture=_architecture(config),
        config=config,
        chat_template=found.text if found else None,
        chat_template_file=found.file if found else None,
    )


def _resolve_adapter(path: Path, base: Path | None) -> ResolvedInput:
    adapter_config = read_adapter_config(path)
    adapter_shapes = adapter_tensor_shapes(path)
    base_dir = Path(base).expanduser() if base is not None else find_base(adapter_config)
    if not (base_dir / "config.json").exists():
        raise InputNotFoundError(
            f"base model not found: {base_dir} has no config.json",
            path=base_dir,
            hint="pass --base with the folder of the base model",
        )
    config = read_config(base_dir)
    base_shapes = safetensors_shapes(base_dir)
    _refuse_bitsandbytes(base_dir, config, base_shapes)
    check_adapter(adapter_config, adapter_shapes, base_shapes, config, adapter_dir=path)
    found = find_chat_template(path, base_dir)
    return ResolvedInput(
        kind="adapter",
        path=path,
        base_dir=base_dir,
        adapter_config=adapter_config,
        tokenizer_dir=locate_tokenizer(path, base_dir),
        architecture=_architecture(config),
        config=config,
        base_id=adapter_config.base_model_name_or_path,
        chat_template=found.text if found else None,
        chat_template_file=found.file if found else None,
    )


def locate_tokenizer(adapter_dir: Path, base_dir: Path) -> Path:
    """The one tokenizer locator: the adapter's own tokenizer if it has one, else the base's."""
    return adapter_dir if has_tokenizer(adapter_dir) else base_dir


def find_base(cfg: AdapterConfig) -> Path:
    """Find the base model: a local dir, or a Hugging Face id in the cache or the Hub.

    Unsloth ``-bnb-4bit`` ids are mapped to their 16-bit originals first, because merging into
    4-bit weights loses the fine-tune. Where the cache is and whether the Hub may be asked
    (``HF_HOME``, ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``) is left to huggingface_hub.
    """
    from huggingface_hub import constants

    name = cfg.base_model_name_or_path
    if not name:
        raise BaseModelNotFoundError(
            "the adapter does not name its base model (base_model_name_or_path is empty)",
            hint="pass --base with the folder of the base model",
        )
    local = Path(name).expanduser()
    if local.is_dir():
        return local
    candidates = _hub_candidates(name)
    for repo_id in candidates:
        found = _snapshot(repo_id)
        if found is not None:
            if repo_id != name:
                logger.info("using %s, the 16-bit original of %s", repo_id, name)
            return found
    where = (
        "in the local Hugging Face cache (HF_HUB_OFFLINE=1)"
        if constants.is_offline_mode()
        else "locally or on the Hub"
    )
    raise BaseModelNotFoundError(
        f"base model {' or '.join(candidates)} not found {where}",
        hint=f"pass --base PATH, or download it first: hf download {candidates[0]}",
    )


def _hub_candidates(name: str) -> list[str]:
    for suffix in BNB_SUFFIXES:
        if name.endswith(suffix):
            return [name[: -len(suffix)]]
    return [name]


def _snapshot(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        # Offline (HF_HUB_OFFLINE) huggingface_hub answers from its cache by itself.
        folder = snapshot_download(
            repo_id,
            allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.jinja", "*.model"],
        )
    except (LocalEntryNotFoundError, RepositoryNotFoundError, HFValidationError, OSError) as err:
        logger.debug("snapshot_download(%s) failed: %s", repo_id, err)
        return None
    return Path(folder)


def read_config(model_dir: Path) -> dict[str, Any]:
    """Load ``config.json`` as a dict."""
    cfg_path = model_dir / "config.json"
    try:
        data = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read {cfg_path}: {err}", hint="re-save the model") from err
    if not isinstance(data, dict):
        raise InputError(f"{cfg_path} is not a JSON object", hint="re-save the model")
    return data


def _architecture(config: Mapping[str, Any]) -> str | None:
    archs = config.get("architectures") or []
    return str(archs[0]) if archs else None


def has_tokenizer(folder: Path) -> bool:
    """Whether ``folder`` holds a tokenizer of its own (else the base model's is used)."""
    return any((folder / name).exists() for name in TOKENIZER_CORE_FILES)


def _refuse_bitsandbytes(
    model_dir: Path, config: Mapping[str, Any], shapes: Mapping[str, object]
) -> None:
    quant = config.get("quantization_config") or {}
    method = str(quant.get("quant_method", "")) if isinstance(quant, dict) else ""
    marked = any(name.endswith(BNB_TENSOR_MARKERS) for name in shapes)
    if method == "bitsandbytes" or marked:
        raise InputError(
            f"{model_dir} holds bitsandbytes 4/8-bit weights, which cannot be merged or converted "
            "without losing the fine-tune",
            hint="use the 16-bit original (drop -bnb-4bit from the id) and pass it as --base",
        )


# --------------------------------------------------------------------------- GGUF facts


def read_gguf_facts(path: Path) -> tuple[str | None, str | None]:
    """A GGUF's quant type (lower-case llama.cpp name) and embedded chat template.

    The quant is ``general.file_type`` (``MOSTLY_Q4_K_M`` → ``q4_k_m``); files without it
    report the most common type of their 2-D weights. A file the ``gguf`` reader cannot parse
    reports neither (the export stage names the problem when it reads the tensors).
    """
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except Exception as err:  # the reader raises plain ValueError/IndexError on a bad file
        logger.info("cannot read the GGUF metadata of %s: %s", path, err)
        return None, None
    template_field = reader.fields.get("tokenizer.chat_template")
    template = (
        bytes(template_field.parts[template_field.data[0]]).decode("utf-8", errors="replace")
        if template_field is not None and template_field.data
        else None
    )
    return _gguf_quant(reader, gguf), template or None


def _gguf_quant(reader: Any, gguf: Any) -> str | None:
    file_type = reader.fields.get("general.file_type")
    if file_type is not None and file_type.data:
        value = int(file_type.parts[file_type.data[0]][0])
        try:
            name = str(gguf.LlamaFileType(value).name)
        except ValueError:
            name = ""
        if name and name != "GUESSED":
            return name.removeprefix("MOSTLY_").removeprefix("ALL_").lower()
    counts: dict[str, int] = {}
    for tensor in reader.tensors:
        if len(tensor.shape) >= 2:
            type_name = str(tensor.tensor_type.name)
            counts[type_name] = counts.get(type_name, 0) + 1
    return max(counts, key=lambda k: counts[k]).lower() if counts else None


__all__ = [
    "ADAPTER_WEIGHTS",
    "BNB_SUFFIXES",
    "SAFETENSORS_TORCH_DTYPES",
    "TOKENIZER_CORE_FILES",
    "TOKENIZER_FILES",
    "AdapterConfig",
    "AdapterRole",
    "InputKind",
    "ResolvedInput",
    "adapter_tensor_shapes",
    "base_tensor_for",
    "check_compatible",
    "classify_adapter_key",
    "find_base",
    "has_tokenizer",
    "locate_tokenizer",
    "read_adapter_config",
    "read_config",
    "read_gguf_facts",
    "read_safetensors_header",
    "read_safetensors_layout",
    "resolve_input",
    "safetensors_shapes",
    "source_kind",
    "strip_peft_prefix",
    "weight_files",
]
