"""Input resolution: turn a user path into a checked adapter, merged model or GGUF.

Reads only JSON files and safetensors headers, so every compatibility problem (missing base,
bitsandbytes weights, another architecture, wrong shapes or vocab) surfaces before heavy work.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import BaseModelNotFoundError, InputError, InputNotFoundError, MergeError

logger = logging.getLogger(__name__)

InputKind = Literal["adapter", "merged", "gguf"]

ADAPTER_WEIGHTS = "adapter_model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
#: Suffixes Unsloth gives pre-quantized uploads; stripping them names the 16-bit original
#: (unslothai/unsloth: unsloth/models/mapper.py maps e.g. unsloth/llama-3-8b-bnb-4bit ->
#: unsloth/llama-3-8b).
BNB_SUFFIXES = ("-unsloth-bnb-4bit", "-bnb-4bit")
#: Tensor-name endings bitsandbytes writes beside its packed weights.
BNB_TENSOR_MARKERS = (".absmax", ".quant_map", ".quant_state.bitsandbytes__nf4", ".SCB")
_PEFT_PREFIX = "base_model.model."


class AdapterConfig(BaseModel):
    """The fields of PEFT's ``adapter_config.json`` that decide how a merge is done."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    peft_type: str = "LORA"
    base_model_name_or_path: str | None = None
    r: int = 8
    lora_alpha: float = 8
    use_rslora: bool = False
    use_dora: bool = False
    fan_in_fan_out: bool = False
    rank_pattern: dict[str, int] = {}
    alpha_pattern: dict[str, float] = {}
    modules_to_save: list[str] | None = None
    lora_bias: bool = False
    bias: str = "none"

    def scaling(self, module: str) -> float:
        """PEFT's scaling for ``module`` (full dotted name): alpha/r, or alpha/sqrt(r) for rsLoRA.

        Patterns match like peft.utils.other.get_pattern_key: the first key whose regex
        ``(.*\\.)?KEY$`` matches the module name wins.

        >>> AdapterConfig(r=8, lora_alpha=16, rank_pattern={"q_proj": 4}).scaling("m.0.q_proj")
        4.0
        """
        r = self.rank_pattern.get(_pattern_key(self.rank_pattern, module), self.r)
        alpha = self.alpha_pattern.get(_pattern_key(self.alpha_pattern, module), self.lora_alpha)
        return float(alpha / math.sqrt(r) if self.use_rslora else alpha / r)


def _pattern_key(patterns: Mapping[str, object], module: str) -> str:
    for key in patterns:
        if re.match(rf"(.*\.)?({key})$", module):
            return key
    return module


@dataclass(frozen=True, slots=True)
class ResolvedInput:
    """A checked input: what it is, where its weights, base and tokenizer live."""

    kind: InputKind
    path: Path
    base_dir: Path | None = None
    """The base model dir of an adapter (None for merged models and GGUFs)."""
    adapter_config: AdapterConfig | None = None
    tokenizer_dir: Path | None = None
    """Where tokenizer files and the chat template come from (the adapter's own win)."""
    architecture: str | None = None
    """``architectures[0]`` of the model config, e.g. ``LlamaForCausalLM``."""
    config: dict[str, Any] = field(default_factory=dict)
    """The model's ``config.json`` (the base's for an adapter)."""
    base_id: str | None = None
    """``base_model_name_or_path`` as the adapter names it."""

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


def resolve_input(path: Path, *, base: Path | None = None) -> ResolvedInput:
    """Work out what ``path`` is and check it can be exported, reading headers only.

    Args:
        path: a LoRA adapter dir, a merged HF model dir, or a ``.gguf`` file.
        base: the base model dir, overriding the adapter's ``base_model_name_or_path``.

    Returns:
        The resolved input.

    Raises:
        InputNotFoundError: ``path`` or ``base`` does not exist.
        BaseModelNotFoundError: the base is neither a local dir nor in the HF cache.
        InputError: the input is not a model, holds bitsandbytes weights, or does not fit its base.
        MergeError: the adapter type (DoRA, non-LoRA) is not supported.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InputNotFoundError(
            f"input not found: {path}",
            path=path,
            hint="pass a LoRA adapter dir, model dir or .gguf",
        )
    if path.is_file():
        return _resolve_gguf(path)
    if (path / "adapter_config.json").exists():
        return _resolve_adapter(path, base)
    if (path / "config.json").exists():
        return _resolve_merged(path)
    raise InputError(
        f"{path} is neither a LoRA adapter (adapter_config.json) nor a model (config.json)",
        hint="point at the folder save_pretrained() wrote",
    )


def _resolve_gguf(path: Path) -> ResolvedInput:
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise InputError(
            f"{path} is not a GGUF file", hint="pass a .gguf, adapter dir or model dir"
        )
    return ResolvedInput(kind="gguf", path=path)


def _resolve_merged(path: Path) -> ResolvedInput:
    config = read_config(path)
    shapes = safetensors_shapes(path)
    _refuse_bitsandbytes(path, config, shapes)
    return ResolvedInput(
        kind="merged",
        path=path,
        tokenizer_dir=path if has_tokenizer(path) else None,
        architecture=_architecture(config),
        config=config,
    )


def _resolve_adapter(path: Path, base: Path | None) -> ResolvedInput:
    adapter_config = read_adapter_config(path)
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
    adapter_shapes = adapter_tensor_shapes(path)
    check_compatible(adapter_config, adapter_shapes, base_shapes, config, adapter_dir=path)
    return ResolvedInput(
        kind="adapter",
        path=path,
        base_dir=base_dir,
        adapter_config=adapter_config,
        tokenizer_dir=path if has_tokenizer(path) else base_dir,
        architecture=_architecture(config),
        config=config,
        base_id=adapter_config.base_model_name_or_path,
    )


def read_adapter_config(adapter_dir: Path) -> AdapterConfig:
    """Parse ``adapter_config.json`` and refuse adapter types we cannot merge exactly."""
    cfg_path = adapter_dir / "adapter_config.json"
    try:
        cfg = AdapterConfig.model_validate_json(cfg_path.read_bytes())
    except ValidationError as err:
        first = err.errors()[0]
        raise InputError(
            f"{cfg_path} is invalid: {'.'.join(map(str, first['loc']))}: {first['msg']}",
            hint="re-save the adapter with peft's save_pretrained()",
        ) from err
    if cfg.peft_type.upper() != "LORA":
        raise MergeError(
            f"adapter type {cfg.peft_type} is not supported (only LoRA)",
            hint="merge it with peft's merge_and_unload() and pass the merged model dir",
        )
    if cfg.use_dora:
        raise MergeError(
            "DoRA adapters (use_dora=true) are not supported",
            hint="merge it with peft's merge_and_unload() and pass the merged model dir",
        )
    if cfg.lora_bias or cfg.bias != "none":
        raise MergeError(
            "LoRA adapters with trained biases are not supported",
            hint="merge it with peft's merge_and_unload() and pass the merged model dir",
        )
    return cfg


def find_base(cfg: AdapterConfig) -> Path:
    """Find the base model: a local dir, or a Hugging Face id in the cache or the Hub.

    Unsloth ``-bnb-4bit`` ids are mapped to their 16-bit originals first, because merging into
    4-bit weights loses the fine-tune. Offline (``HF_HUB_OFFLINE=1``) only the cache is used.
    """
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
    offline = _is_true(os.environ.get("HF_HUB_OFFLINE"))
    for repo_id in candidates:
        found = _snapshot(repo_id, offline=offline)
        if found is not None:
            if repo_id != name:
                logger.info("using %s, the 16-bit original of %s", repo_id, name)
            return found
    where = (
        "in the local Hugging Face cache (HF_HUB_OFFLINE=1)" if offline else "locally or on the Hub"
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


def _is_true(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_cache_dir() -> str | None:
    # huggingface_hub reads HF_HOME at import; read it per call so a changed env is honoured.
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def _snapshot(repo_id: str, *, offline: bool) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        folder = snapshot_download(
            repo_id,
            cache_dir=_hub_cache_dir(),
            local_files_only=offline,
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
    return any((folder / name).exists() for name in TOKENIZER_FILES)


def weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files of a model dir, in index order when an index exists."""
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return [model_dir / name for name in dict.fromkeys(weight_map.values())]
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise InputError(
            f"no *.safetensors weights in {model_dir}",
            hint="re-save the model with save_pretrained(safe_serialization=True)",
        )
    return files


#: safetensors dtype names → torch dtype attribute names.
SAFETENSORS_TORCH_DTYPES: dict[str, str] = {
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F64": "float64",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


def read_safetensors_header(file: Path) -> dict[str, Any]:
    """Parse a safetensors header and check the file is as long as the header says.

    A truncated download or an interrupted save is caught here, not halfway through a merge.
    """
    return read_safetensors_layout(file)[1]


def read_safetensors_layout(file: Path) -> tuple[int, dict[str, Any]]:
    """The file offset where tensor data starts, and the header (``data_offsets`` count from it).

    Raises:
        InputError: the file is unreadable, or shorter than its header says.
    """
    try:
        with file.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            if length > 100_000_000:
                raise ValueError("header length is implausible")
            header = json.loads(fh.read(length))
        size = file.stat().st_size
    except (OSError, ValueError, struct.error) as err:
        raise InputError(
            f"{file} is not a readable safetensors file ({err})",
            hint="re-save or re-download it",
        ) from err
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    end = max((int(v["data_offsets"][1]) for v in tensors.values()), default=0)
    if 8 + length + end > size:
        raise InputError(
            f"{file} is truncated ({size} of {8 + length + end} bytes)",
            hint="re-save or re-download it",
        )
    return 8 + length, tensors


def safetensors_shapes(model_dir: Path) -> dict[str, tuple[list[int], str]]:
    """Name → (shape, dtype) of every tensor in a model dir's safetensors."""
    shapes: dict[str, tuple[list[int], str]] = {}
    for file in weight_files(model_dir):
        for name, info in read_safetensors_header(file).items():
            shapes[name] = (list(info["shape"]), str(info["dtype"]))
    return shapes


def adapter_tensor_shapes(adapter_dir: Path) -> dict[str, list[int]]:
    """Name → shape of the adapter's tensors, with the PEFT prefix removed."""
    file = adapter_dir / ADAPTER_WEIGHTS
    if not file.exists():
        legacy = adapter_dir / "adapter_model.bin"
        extra = " (only adapter_model.bin, a pickle we do not load)" if legacy.exists() else ""
        raise InputNotFoundError(
            f"missing {file}{extra}",
            path=file,
            hint="save the adapter with save_pretrained(safe_serialization=True)",
        )
    return {
        strip_peft_prefix(name): list(info["shape"])
        for name, info in read_safetensors_header(file).items()
    }


def strip_peft_prefix(name: str) -> str:
    """``base_model.model.model.layers.0.q_proj.lora_A.weight`` → ``model.layers.0.q_proj...``."""
    return name[len(_PEFT_PREFIX) :] if name.startswith(_PEFT_PREFIX) else name


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


def base_tensor_for(module: str, base_shapes: Mapping[str, object]) -> str | None:
    """The base tensor a LoRA module adapts (``module.weight``), tolerating a missing prefix."""
    candidates = [f"{module}.weight"]
    if "." in module:
        candidates.append(f"{module.split('.', 1)[1]}.weight")
    return next((name for name in candidates if name in base_shapes), None)


def check_compatible(
    cfg: AdapterConfig,
    adapter_shapes: Mapping[str, list[int]],
    base_shapes: Mapping[str, tuple[list[int], str]],
    base_config: Mapping[str, Any],
    *,
    adapter_dir: Path,
) -> None:
    """Check every adapter tensor targets a base tensor of the right shape; collect all problems.

    Raises:
        InputError: the adapter belongs to another architecture or size, or its vocab differs.
    """
    problems: list[str] = []
    missing: list[str] = []
    for name, shape in adapter_shapes.items():
        role, module = classify_adapter_key(name)
        if role == "original":
            continue
        target = base_tensor_for(module, base_shapes)
        if target is None:
            missing.append(module)
            continue
        base_shape = base_shapes[target][0]
        if role in {"replace", "base_layer"}:
            if base_shape != shape and not _is_vocab_resize(target, shape, base_shape):
                problems.append(f"{name} {shape} vs base {base_shape}")
            continue
        out_dim, in_dim = _lora_dims(role, shape)
        expected = base_shape[::-1] if cfg.fan_in_fan_out or "embedding" in role else base_shape
        if "embedding" in role and in_dim is not None:
            in_dim = None  # the vocab side may be resized; base_layer/replace rows are checked
        if (out_dim is not None and out_dim != expected[0]) or (
            in_dim is not None and in_dim != expected[1]
        ):
            problems.append(f"{name} {shape} vs base {target} {base_shape}")
    if missing:
        arch = _architecture(base_config) or "the base"
        raise InputError(
            f"adapter {adapter_dir} targets modules {arch} does not have "
            f"(e.g. {missing[0]}): it was trained for another architecture",
            hint="pass --base with the model the adapter was trained on",
        )
    if problems:
        raise InputError(
            f"adapter {adapter_dir} does not fit its base: {len(problems)} shape mismatches, "
            f"e.g. {problems[0]}",
            hint="pass --base with the exact model (size, vocab) the adapter was trained on",
        )


AdapterRole = Literal[
    "lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "replace", "base_layer", "original"
]
_ROLE_KEY = re.compile(
    r"^(?P<module>.+?)\.(?:(?P<lora>lora_A|lora_B)\.weight|(?P<emb>lora_embedding_[AB])"
    r"|(?P<wrap>modules_to_save|base_layer|original_module)\.weight|weight)$"
)


_FACTOR_ROLES: dict[str, AdapterRole] = {
    "lora_A": "lora_A",
    "lora_B": "lora_B",
    "lora_embedding_A": "lora_embedding_A",
    "lora_embedding_B": "lora_embedding_B",
}


def classify_adapter_key(name: str) -> tuple[AdapterRole, str]:
    """What an adapter tensor is for, and the base module it belongs to.

    PEFT stores LoRA factors, full replacements (``modules_to_save``, or the whole embedding
    when the vocab was resized: ``X.weight``/``X.modules_to_save.weight``), the possibly resized
    base of a LoRA-wrapped embedding (``X.base_layer.weight``) and copies of the untouched
    original (``X.original_module.weight``).

    >>> classify_adapter_key("base_model.model.lm_head.modules_to_save.weight")
    ('replace', 'lm_head')
    >>> classify_adapter_key("base_model.model.model.embed_tokens.lora_embedding_A")
    ('lora_embedding_A', 'model.embed_tokens')
    """
    match = _ROLE_KEY.match(strip_peft_prefix(name))
    if match is None:
        raise InputError(
            f"unexpected tensor {name} in {ADAPTER_WEIGHTS}",
            hint="only LoRA adapters saved by peft are supported",
        )
    module = str(match["module"])
    factor = match["lora"] or match["emb"]
    if factor is not None:
        return _FACTOR_ROLES[factor], module
    wrap = match["wrap"]
    if wrap == "base_layer":
        return "base_layer", module
    if wrap == "original_module":
        return "original", module
    return "replace", module


def _lora_dims(role: str, shape: list[int]) -> tuple[int | None, int | None]:
    """(out, in) of the adapted weight that one LoRA factor pins down; None where it doesn't."""
    if role in {"lora_A", "lora_embedding_A"}:
        return None, shape[1]
    return shape[0], None


def _is_vocab_resize(target: str, shape: list[int], base_shape: list[int]) -> bool:
    """Embeddings may grow (added tokens): same width, more rows, is a resize, not a mismatch."""
    is_embedding = target.endswith(("embed_tokens.weight", "lm_head.weight", "wte.weight"))
    return is_embedding and shape[1:] == base_shape[1:] and shape[0] >= base_shape[0]
