"""What a LoRA adapter does to each base tensor, and PEFT's arithmetic for it.

The adapter side of the streaming merge (``merge.MergedTensors`` is the base side): its tensors
located in the safetensors file and read only when their base tensor is merged, indexed by the
base tensor they change (LoRA pairs, full replacements, base overrides, tied lm_head), and the
merged value computed bit for bit as peft's ``merge_and_unload`` computes it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputError, MergeError
from .inputs import ResolvedInput
from .lora_adapter import AdapterConfig
from .peft_keys import ADAPTER_WEIGHTS, base_tensor_for, classify_adapter_key
from .safetensors_io import SAFETENSORS_TORCH_DTYPES, read_safetensors_layout

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, slots=True)
class StoredTensor:
    """An adapter tensor left in its file until its merge reads it.

    Why: a LoRA on every linear layer of a 3B model is ~50 MB in bf16; reading only the pair
    being merged keeps the merge's memory from growing with the model.
    """

    file: Path
    offset: int
    nbytes: int
    dtype: torch.dtype
    shape: tuple[int, ...]

    def load(self) -> torch.Tensor:
        import torch

        buffer = bytearray(self.nbytes)
        try:
            with self.file.open("rb") as fh:
                got = os.preadv(fh.fileno(), [buffer], self.offset)
        except OSError as err:
            raise MergeError(f"cannot read {self.file}: {err}", hint="re-save the adapter") from err
        if got != self.nbytes:
            raise MergeError(f"{self.file} is truncated", hint="re-save the adapter")
        if not buffer:
            return torch.empty(self.shape, dtype=self.dtype)
        return torch.frombuffer(buffer, dtype=self.dtype).reshape(self.shape)


@dataclass(slots=True)
class ModulePatch:
    """What the adapter does to one base tensor."""

    module: str
    lora: dict[str, StoredTensor] = field(default_factory=dict)
    replacement: torch.Tensor | None = None
    base_override: torch.Tensor | None = None


def safetensors_torch_dtype(name: str) -> torch.dtype | None:
    """The torch dtype of a safetensors dtype name; None for one we do not read."""
    import torch

    attr = SAFETENSORS_TORCH_DTYPES.get(name)
    return getattr(torch, attr) if attr else None


def apply_patch(base: torch.Tensor, patch: ModulePatch, cfg: AdapterConfig) -> torch.Tensor:
    """The merged value of one tensor; the base dtype is kept."""
    dtype = base.dtype
    if patch.replacement is not None:
        return patch.replacement.to(dtype)
    if patch.base_override is not None:
        base = patch.base_override
    if not patch.lora:
        return base.to(dtype)
    delta = _delta(patch, cfg)
    if tuple(delta.shape) != tuple(base.shape):
        raise _delta_shape_error(patch, delta, tuple(base.shape))
    # In place (the sum is exactly base.float() + delta): one fp32 copy fewer per tensor.
    return delta.add_(base).to(dtype)


def _delta_shape_error(
    patch: ModulePatch, delta: torch.Tensor, shape: tuple[int, ...]
) -> MergeError:
    return MergeError(
        f"LoRA delta for {patch.module} has shape {list(delta.shape)}, base {list(shape)}",
        hint="pass --base with the exact model the adapter was trained on",
    )


def _delta(patch: ModulePatch, cfg: AdapterConfig) -> torch.Tensor:
    """``transpose(B @ A) * scaling`` in fp32, as PEFT's get_delta_weight computes it."""
    scaling = cfg.scaling(patch.module)
    if "lora_embedding_A" in patch.lora:
        a = patch.lora["lora_embedding_A"].load().float()
        b = patch.lora["lora_embedding_B"].load().float()
        return (b @ a).T.mul_(scaling)
    a, b = patch.lora["lora_A"].load().float(), patch.lora["lora_B"].load().float()
    product = b @ a
    return (product.T if cfg.fan_in_fan_out else product).mul_(scaling)


def load_patches(
    resolved: ResolvedInput, shapes: dict[str, tuple[list[int], str]]
) -> dict[str, ModulePatch]:
    """Read the (small) adapter and index its tensors by the base tensor they change."""
    file = resolved.path / ADAPTER_WEIGHTS
    tied = _is_tied(resolved.config, shapes)
    patches: dict[str, ModulePatch] = {}
    for key, stored in _stored_tensors(file).items():
        role, module = classify_adapter_key(key)
        if role == "original":
            continue
        target = base_tensor_for(module, shapes)
        if target is None and tied and module.endswith("lm_head"):
            target = "__untied__lm_head.weight"  # peft shares the tied weight; handled below
        if target is None:
            raise MergeError(
                f"adapter tensor {key} has no base tensor to merge into",
                hint="pass --base with the model the adapter was trained on",
            )
        patch = patches.setdefault(target, ModulePatch(module=module))
        if role == "replace":
            # peft may store both X.modules_to_save.weight (the trained copy) and X.weight.
            if ".modules_to_save." in key or patch.replacement is None:
                patch.replacement = stored.load()
        elif role == "base_layer":
            patch.base_override = stored.load()
        else:
            patch.lora[role] = stored
    for target, patch in patches.items():
        _check_pairs(target, patch)
    return patches


def _stored_tensors(file: Path) -> dict[str, StoredTensor]:
    """Every tensor of the adapter's safetensors file, by key, located but not read."""
    try:
        data_start, header = read_safetensors_layout(file)
    except InputError as err:
        raise MergeError(f"cannot read {file}: {err}", hint="re-save the adapter") from err
    stored: dict[str, StoredTensor] = {}
    for key, info in header.items():
        dtype = safetensors_torch_dtype(info["dtype"])
        if dtype is None:
            raise MergeError(
                f"{file}: tensor {key} has unsupported dtype {info['dtype']}",
                hint="re-save the adapter in float16, bfloat16 or float32",
            )
        begin, end = (int(x) for x in info["data_offsets"])
        shape = tuple(int(d) for d in info["shape"])
        stored[key] = StoredTensor(file, data_start + begin, end - begin, dtype, shape)
    return stored


def _check_pairs(target: str, patch: ModulePatch) -> None:
    roles = set(patch.lora)
    if roles and roles not in ({"lora_A", "lora_B"}, {"lora_embedding_A", "lora_embedding_B"}):
        raise MergeError(
            f"adapter for {target} is incomplete (has {sorted(roles)})",
            hint="re-save the adapter with peft's save_pretrained()",
        )


def _is_tied(config: dict[str, Any], shapes: dict[str, tuple[list[int], str]]) -> bool:
    return bool(config.get("tie_word_embeddings", True)) and "lm_head.weight" not in shapes


def untied_extras(
    resolved: ResolvedInput,
    shapes: dict[str, tuple[list[int], str]],
    patches: dict[str, ModulePatch],
) -> list[tuple[str, torch.Tensor]]:
    """With tied embeddings, an lm_head LoRA changes the shared embedding as in PEFT; a full
    lm_head replacement unties them, so it is written as its own tensor."""
    patch = patches.pop("__untied__lm_head.weight", None)
    if patch is None:
        return []
    embed = next((n for n in shapes if n.endswith(("embed_tokens.weight", "wte.weight"))), None)
    if patch.replacement is not None:
        dtype_name = shapes[embed][1] if embed else "F32"
        return [("lm_head.weight", patch.replacement.to(_torch_dtype(dtype_name)))]
    if embed is None:
        raise MergeError(
            "adapter changes lm_head but the base has neither lm_head nor embedding weights",
            hint="pass --base with the model the adapter was trained on",
        )
    shared = patches.setdefault(embed, ModulePatch(module=patch.module))
    if shared.lora:
        raise MergeError(
            "adapter has LoRA on both tied embeddings and lm_head",
            hint="merge it with peft's merge_and_unload() and pass the merged model dir",
        )
    shared.lora = patch.lora
    return []


def _torch_dtype(name: str) -> torch.dtype:
    import torch

    table = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
    return table.get(name, torch.float32)


def lora_product(
    patch: ModulePatch, shape: tuple[int, ...], buffer: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``B @ A`` of a plain LoRA pair in fp32 (unscaled), written into ``buffer`` when it fits.

    Returns the product (a view of the buffer) and the buffer, a new one when ``buffer`` was
    too small. Why a buffer: at 1B the product of an MLP tensor is 46 MB; a fresh one per tensor
    is mapped and zeroed by the kernel page by page each time. ``matmul(out=)`` runs the same
    GEMM as ``b @ a``, so the values are peft's; scale them with ``* cfg.scaling(module)``.

    Raises:
        MergeError: the pair's product does not have the base tensor's ``shape``.
    """
    import torch

    a, b = patch.lora["lora_A"].load().float(), patch.lora["lora_B"].load().float()
    got = (b.shape[0], a.shape[1])
    if got != shape or b.shape[1] != a.shape[0]:
        raise MergeError(
            f"LoRA delta for {patch.module} has shape {list(got)}, base {list(shape)}",
            hint="pass --base with the exact model the adapter was trained on",
        )
    numel = got[0] * got[1]
    if buffer is None or buffer.numel() < numel:
        buffer = None  # the smaller one freed before the larger one is made
        buffer = torch.empty(numel, dtype=torch.float32)
    return torch.matmul(b, a, out=buffer[:numel].view(got)), buffer
