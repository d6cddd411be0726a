"""Merge a LoRA adapter into its base, tensor by tensor, with PEFT's exact semantics.

Only one base tensor (plus the small adapter) is in memory at a time: the merged model streams
straight into the GGUF converter, or into sharded safetensors with ``save_merged``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._fs import check_disk_space, write_text_atomic
from .errors import InputError, MergeError, OutputExistsError
from .inputs import TOKENIZER_FILES, ResolvedInput
from .lora_adapter import AdapterConfig, adapter_tensor_shapes
from .peft_keys import ADAPTER_WEIGHTS, base_tensor_for, classify_adapter_key
from .progress import NullProgress, ProgressReporter
from .safetensors_io import (
    SAFETENSORS_TORCH_DTYPES,
    read_safetensors_layout,
    safetensors_shapes,
    weight_files,
)

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: Same default shard size as transformers' save_pretrained.
DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3


@dataclass(frozen=True, slots=True)
class _StoredTensor:
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
class _ModulePatch:
    """What the adapter does to one base tensor."""

    module: str
    lora: dict[str, _StoredTensor] = field(default_factory=dict)
    replacement: torch.Tensor | None = None
    base_override: torch.Tensor | None = None


def iter_merged_tensors(
    resolved: ResolvedInput, *, progress: ProgressReporter | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(hf_name, tensor)`` of the merged model in the base dtype, one at a time.

    Why streaming: a merge that loads the whole model (peft's ``merge_and_unload``) needs RAM for
    all of it; here peak memory is one tensor plus the adapter. Deltas are computed as PEFT does
    (``B @ A`` times alpha/r, alpha/sqrt(r) for rsLoRA, per-module rank/alpha patterns, transposed
    for ``fan_in_fan_out``), added in fp32 and cast back to the base tensor's dtype.

    Args:
        resolved: an adapter or merged model from ``resolve_input``.
        progress: told about each tensor under the key ``"merge"``.

    Raises:
        InputError: the input is a GGUF file.
        MergeError: a base tensor cannot be read or the adapter does not fit it.
    """
    progress = progress or NullProgress()
    with MergedTensors(resolved) as merged:
        names = merged.names()
        progress.start("merge", "Merging LoRA" if merged.has_patches else "Reading weights",
                       total=len(names))  # fmt: skip
        for name in names:
            yield name, merged[name]
            progress.advance("merge")
        progress.done("merge")


class MergedTensors:
    """Random access to the merged model: any tensor by name, merged when it is asked for.

    Why random access: a consumer may need tensors in its own order (llama.cpp writes them sorted
    by layer) without anyone buffering the tensors in between. Only the asked-for base tensor and
    the (small) adapter are in memory; the safetensors files stay open until ``close``.
    """

    def __init__(self, resolved: ResolvedInput) -> None:
        if resolved.kind == "gguf":
            raise InputError(
                f"{resolved.path} is already a GGUF file: there is nothing to merge",
                hint="pass the adapter or HF model dir instead",
            )
        model_dir = resolved.model_dir
        assert model_dir is not None  # adapters and merged models always have one
        shapes = safetensors_shapes(model_dir)
        self._cfg = resolved.adapter_config
        self._patches = _load_patches(resolved, shapes) if resolved.kind == "adapter" else {}
        self._extra = dict(_untied_extras(resolved, shapes, self._patches))
        self._where: dict[str, tuple[Path, int, dict[str, Any]]] = {}
        for file in weight_files(model_dir):
            data_start, header = read_safetensors_layout(file)
            for name in sorted(header):
                self._where[name] = (file, data_start, header[name])
        self._handles: dict[Path, int] = {}
        self._product_buffer: torch.Tensor | None = None
        self._product_owner: object = None
        self._opening = threading.Lock()

    @property
    def has_patches(self) -> bool:
        """True when the adapter changes at least one tensor."""
        return bool(self._patches or self._extra)

    def names(self) -> list[str]:
        """Every tensor of the merged model, in file order (then tensors the merge adds)."""
        return [*self._where, *(n for n in self._extra if n not in self._where)]

    def __getitem__(self, name: str) -> torch.Tensor:
        if name in self._extra:
            return self._extra[name]
        if name not in self._where:
            raise KeyError(name)
        tensor = self._read(name)
        patch = self._patches.get(name)
        if patch is not None and self._cfg is not None:
            tensor = _apply(tensor, patch, self._cfg)
        return tensor

    def is_unchanged(self, name: str) -> bool:
        """True when the merge leaves ``name`` as the base has it (rows can then be read alone)."""
        return name in self._where and name not in self._patches and name not in self._extra

    def row_reader(self, name: str) -> Callable[[int, int], torch.Tensor] | None:
        """``rows(first, count)`` of merged tensor ``name`` without the whole merged tensor.

        For an unchanged tensor it reads just those rows. For a plain LoRA patch it computes the
        whole fp32 delta once (``B @ A`` is not split: BLAS rounds a product of a row slice
        differently from the same rows of the full product) and adds the base rows to it as
        they are asked for, so neither the whole base tensor nor the whole merged one in the
        base dtype is ever in memory next to the delta. Each row is exactly ``self[name]``'s.
        None where the whole tensor is needed (replacements, base overrides, embedding LoRA,
        ``fan_in_fan_out``): use ``self[name]``.
        """
        if self.is_unchanged(name):
            return functools.partial(self.rows, name)
        patch = self._patches.get(name)
        if name not in self._where or name in self._extra or patch is None or self._cfg is None:
            return None
        if patch.replacement is not None or patch.base_override is not None:
            return None
        if set(patch.lora) != {"lora_A", "lora_B"} or self._cfg.fan_in_fan_out:
            return None
        dtype = _safetensors_torch_dtype(self._where[name][2]["dtype"])
        if dtype is None:
            return None  # self[name] raises the error that names it
        shape = tuple(int(d) for d in self._where[name][2]["shape"])
        product = self._product(patch, shape)
        scaling = self._cfg.scaling(patch.module)
        token = self._product_owner = object()
        scratch = threading.local()  # rows may be asked for from several threads at once

        def rows(first: int, count: int) -> torch.Tensor:
            import torch

            if self._product_owner is not token:
                raise RuntimeError(f"the row reader of {name} was replaced by a newer one")
            base = self._base_rows(name, first, count)
            part = product[first : first + base.shape[0]]
            buffer = getattr(scratch, "buffer", None)
            if buffer is None or buffer.shape != part.shape:
                buffer = scratch.buffer = torch.empty(part.shape, dtype=torch.float32)
            # As _apply, on these rows only: (B @ A) * scaling, + base, both in fp32, then cast to
            # the base dtype. Element-wise, so each value rounds exactly as in the whole tensor;
            # one scratch buffer per thread for the fp32 steps, no pass over the whole product.
            merged = torch.mul(part, scaling, out=buffer).add_(base)
            return merged.to(dtype, copy=True)  # a copy even for fp32: the buffer is reused

        return rows

    def _product(self, patch: _ModulePatch, shape: tuple[int, ...]) -> torch.Tensor:
        """``B @ A`` of a plain LoRA pair in fp32, in a buffer reused from tensor to tensor.

        Why reused: at 1B the product of an MLP tensor is 46 MB; a fresh one per tensor is
        mapped and zeroed by the kernel page by page each time (about half the merge's cost on
        a busy box). ``matmul(out=)`` runs the same GEMM as ``b @ a``: the values are peft's.
        Only the newest row reader may use it (``row_reader`` checks).
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
        if self._product_buffer is None or self._product_buffer.numel() < numel:
            self._product_buffer = None  # freed before the larger one is made
            self._product_buffer = torch.empty(numel, dtype=torch.float32)
        out = self._product_buffer[:numel].view(got)
        return torch.matmul(b, a, out=out)

    def rows(self, name: str, first: int, count: int) -> torch.Tensor:
        """Rows ``first .. first + count`` of an unchanged tensor, reading only those bytes."""
        if not self.is_unchanged(name):
            return self[name][first : first + count]
        return self._base_rows(name, first, count)

    def _base_rows(self, name: str, first: int, count: int) -> torch.Tensor:
        """Rows ``first .. first + count`` of base tensor ``name``, as stored in its file."""
        _, _, info = self._where[name]
        shape = [int(d) for d in info["shape"]]
        row_bytes = (int(info["data_offsets"][1]) - int(info["data_offsets"][0])) // max(
            1, shape[0]
        )
        count = max(0, min(count, shape[0] - first))
        return self._read(name, first * row_bytes, count * row_bytes).reshape([count, *shape[1:]])

    def _read(self, name: str, skip: int = 0, size: int | None = None) -> torch.Tensor:
        """Read one base tensor (or ``size`` bytes of it) with ``pread`` into memory we own.

        Why not safetensors' ``safe_open``: it memory-maps the file, and every page it touches
        stays resident in this process until the map closes, so a streaming merge of a 2 GB
        model would still show 2 GB of RSS.
        """
        import torch

        file, data_start, info = self._where[name]
        begin, end = (int(x) for x in info["data_offsets"])
        dtype = _safetensors_torch_dtype(info["dtype"])
        if dtype is None:
            raise MergeError(
                f"{file}: tensor {name} has unsupported dtype {info['dtype']}",
                hint="convert the checkpoint to float16, bfloat16 or float32",
            )
        buffer = bytearray(end - begin - skip if size is None else size)
        try:
            handle = self._handles.get(file)
            if handle is None:
                with self._opening:  # readers on several threads open each file once
                    if file not in self._handles:
                        self._handles[file] = os.open(file, os.O_RDONLY)
                handle = self._handles[file]
            got = os.preadv(handle, [buffer], data_start + begin + skip)
        except OSError as err:
            raise MergeError(
                f"cannot read {file}: {err}", hint="re-save or re-download it"
            ) from err
        if got != len(buffer):
            raise MergeError(f"{file} is truncated at {name}", hint="re-save or re-download it")
        if size is not None:
            return torch.frombuffer(buffer, dtype=dtype) if buffer else torch.empty(0, dtype=dtype)
        shape = [int(d) for d in info["shape"]]
        if not buffer:
            return torch.empty(shape, dtype=dtype)
        return torch.frombuffer(buffer, dtype=dtype).reshape(shape)

    def close(self) -> None:
        """Close the safetensors files."""
        for handle in self._handles.values():
            os.close(handle)
        self._handles.clear()

    def __enter__(self) -> MergedTensors:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _safetensors_torch_dtype(name: str) -> torch.dtype | None:
    """The torch dtype of a safetensors dtype name; None for one we do not read."""
    import torch

    attr = SAFETENSORS_TORCH_DTYPES.get(name)
    return getattr(torch, attr) if attr else None


def _apply(base: torch.Tensor, patch: _ModulePatch, cfg: AdapterConfig) -> torch.Tensor:
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
    patch: _ModulePatch, delta: torch.Tensor, shape: tuple[int, ...]
) -> MergeError:
    return MergeError(
        f"LoRA delta for {patch.module} has shape {list(delta.shape)}, base {list(shape)}",
        hint="pass --base with the exact model the adapter was trained on",
    )


def _delta(patch: _ModulePatch, cfg: AdapterConfig) -> torch.Tensor:
    """``transpose(B @ A) * scaling`` in fp32, as PEFT's get_delta_weight computes it."""
    scaling = cfg.scaling(patch.module)
    if "lora_embedding_A" in patch.lora:
        a = patch.lora["lora_embedding_A"].load().float()
        b = patch.lora["lora_embedding_B"].load().float()
        return (b @ a).T.mul_(scaling)
    a, b = patch.lora["lora_A"].load().float(), patch.lora["lora_B"].load().float()
    product = b @ a
    return (product.T if cfg.fan_in_fan_out else product).mul_(scaling)


def _load_patches(
    resolved: ResolvedInput, shapes: dict[str, tuple[list[int], str]]
) -> dict[str, _ModulePatch]:
    """Read the (small) adapter and index its tensors by the base tensor they change."""
    file = resolved.path / ADAPTER_WEIGHTS
    tied = _is_tied(resolved.config, shapes)
    patches: dict[str, _ModulePatch] = {}
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
        patch = patches.setdefault(target, _ModulePatch(module=module))
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


def _stored_tensors(file: Path) -> dict[str, _StoredTensor]:
    """Every tensor of the adapter's safetensors file, by key, located but not read."""
    try:
        data_start, header = read_safetensors_layout(file)
    except InputError as err:
        raise MergeError(f"cannot read {file}: {err}", hint="re-save the adapter") from err
    stored: dict[str, _StoredTensor] = {}
    for key, info in header.items():
        dtype = _safetensors_torch_dtype(info["dtype"])
        if dtype is None:
            raise MergeError(
                f"{file}: tensor {key} has unsupported dtype {info['dtype']}",
                hint="re-save the adapter in float16, bfloat16 or float32",
            )
        begin, end = (int(x) for x in info["data_offsets"])
        shape = tuple(int(d) for d in info["shape"])
        stored[key] = _StoredTensor(file, data_start + begin, end - begin, dtype, shape)
    return stored


def _check_pairs(target: str, patch: _ModulePatch) -> None:
    roles = set(patch.lora)
    if roles and roles not in ({"lora_A", "lora_B"}, {"lora_embedding_A", "lora_embedding_B"}):
        raise MergeError(
            f"adapter for {target} is incomplete (has {sorted(roles)})",
            hint="re-save the adapter with peft's save_pretrained()",
        )


def _is_tied(config: dict[str, Any], shapes: dict[str, tuple[list[int], str]]) -> bool:
    return bool(config.get("tie_word_embeddings", True)) and "lm_head.weight" not in shapes


def _untied_extras(
    resolved: ResolvedInput,
    shapes: dict[str, tuple[list[int], str]],
    patches: dict[str, _ModulePatch],
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
    shared = patches.setdefault(embed, _ModulePatch(module=patch.module))
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


def merged_config(resolved: ResolvedInput) -> dict[str, Any]:
    """The ``config.json`` of the merged model: the base's, with vocab and tying updated.

    An adapter that resized the embeddings (added tokens) grows ``vocab_size``; a full lm_head
    replacement over tied embeddings unties them.
    """
    config = dict(resolved.config)
    if resolved.kind != "adapter":
        return config
    for name, shape in adapter_tensor_shapes(resolved.path).items():
        role, module = classify_adapter_key(name)
        if role in {"replace", "base_layer"} and module.endswith(("embed_tokens", "wte")):
            config["vocab_size"] = max(int(config.get("vocab_size", 0)), shape[0])
        if role == "replace" and module.endswith("lm_head") and config.get("tie_word_embeddings"):
            config["tie_word_embeddings"] = False
    return config


def merged_size_bytes(resolved: ResolvedInput) -> int:
    """Bytes the merged weights take in the base dtype (plus 5% for headers and added rows).

    For the free-disk check before a merge or a conversion, from file sizes alone.
    """
    model_dir = resolved.model_dir
    if model_dir is None:
        return resolved.path.stat().st_size
    return int(sum(f.stat().st_size for f in weight_files(model_dir)) * 1.05)


def save_merged(
    resolved: ResolvedInput,
    out_dir: Path,
    *,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    force: bool = False,
    progress: ProgressReporter | None = None,
) -> Path:
    """Write the merged model as a loadable HF folder, like Unsloth's ``merged_16bit`` save.

    Sharded safetensors (with an index when more than one shard), ``config.json``, the
    generation config and the tokenizer with its chat template. Written into a temp folder
    beside ``out_dir`` and renamed at the end, so an interrupted save leaves no ``out_dir``.

    Args:
        resolved: an adapter or merged model from ``resolve_input``.
        out_dir: the folder to create.
        max_shard_bytes: largest shard size in bytes.
        force: replace an existing ``out_dir``.
        progress: told about each tensor under the key ``"merge"``.

    Returns:
        ``out_dir``.

    Raises:
        OutputExistsError: ``out_dir`` exists and ``force`` is false.
        DiskSpaceError: less free space than the base weights take.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not force:
        raise OutputExistsError(f"{out_dir} already exists", hint="pass --force to replace it")
    check_disk_space(out_dir.parent, merged_size_bytes(resolved))
    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write_shards(iter_merged_tensors(resolved, progress=progress), tmp, max_shard_bytes)
        _write_side_files(resolved, tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
    return out_dir


def _write_shards(
    tensors: Iterator[tuple[str, torch.Tensor]], folder: Path, max_shard_bytes: int
) -> None:
    from safetensors.torch import save_file

    shard: dict[str, torch.Tensor] = {}
    shard_bytes, total = 0, 0
    files: list[tuple[Path, list[str]]] = []
    weight_map: dict[str, str] = {}

    def flush() -> None:
        nonlocal shard, shard_bytes
        if shard:
            part = folder / f"part-{len(files):05d}.safetensors"
            save_file(shard, str(part), metadata={"format": "pt"})
            files.append((part, list(shard)))
        shard, shard_bytes = {}, 0

    for name, tensor in tensors:
        size = tensor.numel() * tensor.element_size()
        if shard and shard_bytes + size > max_shard_bytes:
            flush()
        shard[name] = tensor.contiguous()
        shard_bytes += size
        total += size
    flush()
    if len(files) == 1:
        files[0][0].rename(folder / "model.safetensors")
        return
    for index, (part, names) in enumerate(files, start=1):
        final = f"model-{index:05d}-of-{len(files):05d}.safetensors"
        part.rename(folder / final)
        weight_map.update(dict.fromkeys(names, final))
    index_doc = {"metadata": {"total_size": total}, "weight_map": weight_map}
    write_text_atomic(folder / "model.safetensors.index.json", json.dumps(index_doc, indent=2))


def _write_side_files(resolved: ResolvedInput, folder: Path) -> None:
    config = merged_config(resolved)
    write_text_atomic(folder / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
    copies: list[tuple[Path | None, tuple[str, ...]]] = [
        (resolved.model_dir, ("generation_config.json",))
    ]
    copies.append((resolved.tokenizer_dir, TOKENIZER_FILES))
    for source, names in copies:
        for name in names if source is not None else ():
            if source is not None and (source / name).exists():
                shutil.copy2(source / name, folder / name)


def merged_tensor_specs(resolved: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name → (shape, torch dtype name) of every tensor the merge will produce, in file order.

    Read from safetensors headers only: base shapes, replaced by the full weights an adapter
    carries (``modules_to_save``, resized embeddings), written in the base dtype.
    """
    from .peft_keys import ADAPTER_WEIGHTS, full_weight_target
    from .safetensors_io import SAFETENSORS_TORCH_DTYPES, read_safetensors_header, weight_files

    specs: dict[str, tuple[tuple[int, ...], str]] = {}
    base_dtype = "bfloat16"

    for file in weight_files(Path(resolved.model_dir)):
        for name, info in sorted(read_safetensors_header(file).items()):
            dtype = SAFETENSORS_TORCH_DTYPES.get(info["dtype"], "float32")
            specs[name] = (tuple(int(d) for d in info["shape"]), dtype)
            if dtype in ("bfloat16", "float16", "float32"):
                base_dtype = dtype
    adapter_file = Path(resolved.path) / ADAPTER_WEIGHTS
    if resolved.kind == "adapter" and adapter_file.is_file():
        for key, info in sorted(read_safetensors_header(adapter_file).items()):
            target = full_weight_target(key)
            if target is None:
                continue
            dtype = specs[target][1] if target in specs else base_dtype
            specs[target] = (tuple(int(d) for d in info["shape"]), dtype)
    return specs
