"""The one grammar of PEFT's saved tensor names: which base module a key changes, and how.

``adapter_model.safetensors`` holds LoRA factors (``X.lora_A.weight``), full replacements
(``X.modules_to_save.weight``, or a resized ``X.weight``), the resized base of a LoRA-wrapped
embedding (``X.base_layer.weight``) and copies of the untouched original
(``X.original_module.weight``). Input checks, the merge, GGUF planning and the adapter-only
export all read the names through this module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

from .errors import InputError

#: The weights file peft's ``save_pretrained(safe_serialization=True)`` writes.
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: The prefix peft puts before the base model's own tensor names.
PEFT_PREFIX = "base_model.model."

AdapterRole = Literal[
    "lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "replace", "base_layer", "original"
]
#: Roles that are LoRA factors (merged as ``B @ A``); the others are full tensors.
FACTOR_ROLES: frozenset[str] = frozenset(
    {"lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B"}
)
# peft saves without the adapter name; ``.default`` appears in state dicts saved by hand.
_ROLE_KEY = re.compile(
    r"^(?P<module>.+?)\.(?:(?P<lora>lora_A|lora_B)(?:\.default)?\.weight"
    r"|(?P<emb>lora_embedding_[AB])(?:\.default)?"
    r"|(?P<wrap>modules_to_save|base_layer|original_module)(?:\.default)?\.weight|weight)$"
)
_FACTORS: dict[str, AdapterRole] = {
    "lora_A": "lora_A",
    "lora_B": "lora_B",
    "lora_embedding_A": "lora_embedding_A",
    "lora_embedding_B": "lora_embedding_B",
}


def strip_peft_prefix(name: str) -> str:
    """``base_model.model.model.layers.0.q_proj.lora_A.weight`` → ``model.layers.0.q_proj...``.

    >>> strip_peft_prefix("base_model.model.lm_head.weight")
    'lm_head.weight'
    """
    return name.removeprefix(PEFT_PREFIX)


def classify_adapter_key(name: str) -> tuple[AdapterRole, str]:
    """What an adapter tensor is for, and the base module it belongs to.

    >>> classify_adapter_key("base_model.model.lm_head.modules_to_save.weight")
    ('replace', 'lm_head')
    >>> classify_adapter_key("base_model.model.model.embed_tokens.lora_embedding_A")
    ('lora_embedding_A', 'model.embed_tokens')
    >>> classify_adapter_key("base_model.model.model.layers.0.mlp.up_proj.lora_B.weight")
    ('lora_B', 'model.layers.0.mlp.up_proj')

    Raises:
        InputError: a name peft does not write for a LoRA adapter.
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
        return _FACTORS[factor], module
    wrap = match["wrap"]
    if wrap == "base_layer":
        return "base_layer", module
    if wrap == "original_module":
        return "original", module
    return "replace", module


def full_weight_target(name: str) -> str | None:
    """The model tensor a full (non-LoRA) adapter weight replaces; None for factors and copies.

    >>> full_weight_target("base_model.model.lm_head.modules_to_save.weight")
    'lm_head.weight'
    >>> full_weight_target("base_model.model.model.layers.0.q_proj.lora_A.weight") is None
    True
    """
    role, module = classify_adapter_key(name)
    if role in FACTOR_ROLES or role == "original":
        return None
    return f"{module}.weight"


def base_tensor_for(module: str, base_shapes: Mapping[str, object]) -> str | None:
    """The base tensor a LoRA module adapts (``module.weight``), tolerating a missing prefix."""
    candidates = [f"{module}.weight"]
    if "." in module:
        candidates.append(f"{module.split('.', 1)[1]}.weight")
    return next((name for name in candidates if name in base_shapes), None)


def module_matches(target: str, module: str) -> bool:
    """Whether ``target_modules`` entry ``target`` names ``module`` as peft matches it.

    peft (``check_target_module_exists``): a list entry matches the full name or its last
    ``.``-separated suffix; a string is a regex that must match the whole name.

    >>> module_matches("q_proj", "model.layers.0.self_attn.q_proj")
    True
    >>> module_matches("proj", "model.layers.0.self_attn.q_proj")
    False
    """
    return module == target or module.endswith(f".{target}")


__all__ = [
    "ADAPTER_WEIGHTS",
    "FACTOR_ROLES",
    "PEFT_PREFIX",
    "AdapterRole",
    "base_tensor_for",
    "classify_adapter_key",
    "full_weight_target",
    "module_matches",
    "strip_peft_prefix",
]
