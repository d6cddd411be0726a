"""A LoRA adapter checked against its base as peft checks it, from JSON and headers only.

``adapter_config.json`` is parsed into :class:`AdapterConfig`; :func:`check_adapter` then holds
the tensors to the config and to the base: every LoRA factor has the rank the config gives its
module (``r`` or ``rank_pattern``), ``target_modules`` names modules the base has and covers every
module the adapter changes, and every tensor fits the base tensor it changes. peft refuses (or,
for tensors outside ``target_modules``, drops) such adapters; merging them anyway would write
wrong weights that still load.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import InputError, InputNotFoundError, MergeError
from .peft_keys import (
    ADAPTER_WEIGHTS,
    FACTOR_ROLES,
    base_tensor_for,
    classify_adapter_key,
    module_matches,
    strip_peft_prefix,
)
from .safetensors_io import read_safetensors_header

#: peft's shorthand for "every linear layer but the output head" (no names to check).
ALL_LINEAR = "all-linear"
_REFIT_HINT = "re-save the adapter with peft's save_pretrained(), or fix adapter_config.json"


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
    target_modules: list[str] | str | None = None
    """Module names (suffix match) or one regex over full names, as peft reads it."""
    lora_bias: bool = False
    bias: str = "none"

    def rank(self, module: str) -> int:
        """The rank peft gives ``module`` (full dotted name): ``rank_pattern``, else ``r``.

        >>> AdapterConfig(r=8, rank_pattern={"q_proj": 4}).rank("model.layers.0.q_proj")
        4
        """
        return self.rank_pattern.get(_pattern_key(self.rank_pattern, module), self.r)

    def scaling(self, module: str) -> float:
        """PEFT's scaling for ``module`` (full dotted name): alpha/r, or alpha/sqrt(r) for rsLoRA.

        Patterns match like peft.utils.other.get_pattern_key: the first key whose regex
        ``(.*\\.)?KEY$`` matches the module name wins.

        >>> AdapterConfig(r=8, lora_alpha=16, rank_pattern={"q_proj": 4}).scaling("m.0.q_proj")
        4.0
        """
        r = self.rank(module)
        alpha = self.alpha_pattern.get(_pattern_key(self.alpha_pattern, module), self.lora_alpha)
        return float(alpha / math.sqrt(r) if self.use_rslora else alpha / r)

    def targets(self, module: str) -> bool:
        """Whether ``target_modules`` selects ``module`` (peft's check_target_module_exists).

        >>> AdapterConfig(target_modules=["q_proj"]).targets("model.layers.0.self_attn.q_proj")
        True
        >>> AdapterConfig(target_modules=r".*\\.v_proj").targets("model.layers.0.self_attn.q_proj")
        False
        """
        targets = self.target_modules
        if targets is None or targets == ALL_LINEAR:
            return True
        if isinstance(targets, str):
            return re.fullmatch(targets, module) is not None
        return any(module_matches(target, module) for target in targets)


def _pattern_key(patterns: Mapping[str, object], module: str) -> str:
    for key in patterns:
        if re.match(rf"(.*\.)?({key})$", module):
            return key
    return module


def read_adapter_config(adapter_dir: Path) -> AdapterConfig:
    """Parse ``adapter_config.json`` and refuse adapter types we cannot merge exactly.

    Raises:
        InputError: the file is not valid JSON or has a field of the wrong type.
        MergeError: DoRA, trained biases or another PEFT method.
    """
    cfg_path = adapter_dir / "adapter_config.json"
    try:
        cfg = AdapterConfig.model_validate_json(cfg_path.read_bytes())
    except ValidationError as err:
        first = err.errors()[0]
        if first["type"] == "json_invalid":
            raise InputError(
                f"{cfg_path} is not valid JSON ({first['msg'].removeprefix('Invalid JSON: ')})",
                hint=_REFIT_HINT,
            ) from err
        where = ".".join(map(str, first["loc"])) or "the top level"
        raise InputError(
            f"{cfg_path} is invalid: {where}: {first['msg']}", hint=_REFIT_HINT
        ) from err
    except OSError as err:
        raise InputError(f"cannot read {cfg_path}: {err}", hint=_REFIT_HINT) from err
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


def adapter_tensor_shapes(adapter_dir: Path) -> dict[str, list[int]]:
    """Name → shape of the adapter's tensors, with the PEFT prefix removed.

    Raises:
        InputNotFoundError: no ``adapter_model.safetensors`` (names a pickle-only adapter).
        InputError: the file is unreadable or truncated.
    """
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


def check_adapter(
    cfg: AdapterConfig,
    adapter_shapes: Mapping[str, list[int]],
    base_shapes: Mapping[str, tuple[list[int], str]],
    base_config: Mapping[str, Any],
    *,
    adapter_dir: Path,
) -> None:
    """Hold the adapter's tensors to its base, then to its own config.

    Raises:
        InputError: a tensor does not fit its base (another architecture or size);
            ``target_modules`` names nothing in the base or misses a module the adapter changes;
            a LoRA factor's rank is not the config's.
    """
    check_compatible(cfg, adapter_shapes, base_shapes, base_config, adapter_dir=adapter_dir)
    check_target_modules(cfg, adapter_shapes, base_shapes, adapter_dir=adapter_dir)
    check_ranks(cfg, adapter_shapes, adapter_dir=adapter_dir)


def check_target_modules(
    cfg: AdapterConfig,
    adapter_shapes: Mapping[str, list[int]],
    base_shapes: Mapping[str, object],
    *,
    adapter_dir: Path,
) -> None:
    """``target_modules`` must select a base module, and every LoRA module the adapter has.

    peft raises "Target modules {...} not found in the base model" for the first; for the second
    it loads the adapter and drops the unselected tensors with a warning, so the model would not
    be the one trained.
    """
    if cfg.target_modules is None or cfg.target_modules == ALL_LINEAR:
        return
    base_modules = {
        name.removesuffix(".weight") for name in base_shapes if name.endswith(".weight")
    }
    if not any(cfg.targets(module) for module in base_modules):
        raise InputError(
            f"adapter {adapter_dir}: target modules {_shown(cfg.target_modules)} not found in "
            "the base model",
            hint="fix target_modules in adapter_config.json, or pass --base with the model the "
            "adapter was trained on",
        )
    untargeted = sorted(
        {
            module
            for name in adapter_shapes
            for role, module in [classify_adapter_key(name)]
            if role in FACTOR_ROLES and not cfg.targets(module)
        }
    )
    if untargeted:
        raise InputError(
            f"adapter {adapter_dir} has LoRA weights for {len(untargeted)} modules that "
            f"target_modules {_shown(cfg.target_modules)} does not name (e.g. {untargeted[0]}); "
            "peft would drop them",
            hint="fix target_modules in adapter_config.json to name every adapted module",
        )


def _shown(targets: list[str] | str) -> str:
    return repr(targets) if isinstance(targets, str) else repr(sorted(targets))


def check_ranks(
    cfg: AdapterConfig, adapter_shapes: Mapping[str, list[int]], *, adapter_dir: Path
) -> None:
    """Every LoRA factor has the rank the config gives its module (``rank_pattern``, else ``r``).

    peft builds the LoRA layers from the config and then loads the tensors, failing with
    "size mismatch for KEY: copying a param with shape ... from checkpoint, the shape in current
    model is ..."; a merge that trusted ``r`` alone would scale the delta by the wrong alpha/r.
    """
    problems: list[str] = []
    for name, shape in adapter_shapes.items():
        role, module = classify_adapter_key(name)
        if role not in FACTOR_ROLES or len(shape) != 2:
            continue
        r = cfg.rank(module)
        # lora_A / lora_embedding_A hold the rank in dim 0, lora_B / lora_embedding_B in dim 1.
        axis = 0 if role in ("lora_A", "lora_embedding_A") else 1
        if shape[axis] != r:
            expected = list(shape)
            expected[axis] = r
            problems.append(f"{name}: checkpoint shape {shape}, config (r={r}) expects {expected}")
    if problems:
        raise InputError(
            f"adapter {adapter_dir}: adapter_config.json does not match the weights: size "
            f"mismatch for {len(problems)} LoRA tensors, e.g. {problems[0]}",
            hint="set r (or rank_pattern) in adapter_config.json to the rank the adapter was "
            "trained with",
        )


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
        archs = base_config.get("architectures") or []
        arch = str(archs[0]) if archs else "the base"
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


def _lora_dims(role: str, shape: list[int]) -> tuple[int | None, int | None]:
    """(out, in) of the adapted weight that one LoRA factor pins down; None where it doesn't."""
    if role in {"lora_A", "lora_embedding_A"}:
        return None, shape[1]
    return shape[0], None


def _is_vocab_resize(target: str, shape: list[int], base_shape: list[int]) -> bool:
    """Embeddings may grow (added tokens): same width, more rows, is a resize, not a mismatch."""
    is_embedding = target.endswith(("embed_tokens.weight", "lm_head.weight", "wte.weight"))
    return is_embedding and shape[1:] == base_shape[1:] and shape[0] >= base_shape[0]


__all__ = [
    "ALL_LINEAR",
    "AdapterConfig",
    "adapter_tensor_shapes",
    "check_adapter",
    "check_compatible",
    "check_ranks",
    "check_target_modules",
    "read_adapter_config",
]
