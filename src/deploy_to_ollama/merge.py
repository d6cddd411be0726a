"""Merge a LoRA adapter into its base, tensor by tensor, with PEFT's exact semantics.

Only one base tensor (plus the small adapter) is in memory at a time: the merged model streams
straight into the GGUF converter, or into sharded safetensors with ``save_merged``. This module
is the base side (reading base tensors and rows with ``pread``, the merged model by name and
row by row); what the adapter changes and PEFT's arithmetic for it are in ``lora_patches``.
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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._fs import check_disk_space, write_text_atomic
from .errors import InputError, MergeError, OutputExistsError
from .inputs import TOKENIZER_FILES, ResolvedInput
from .lora_adapter import adapter_tensor_shapes
from .lora_patches import (
    ModulePatch,
    apply_patch,
    load_patches,
    lora_product,
    safetensors_torch_dtype,
    untied_extras,
)
from .peft_keys import classify_adapter_key
from .progress import NullProgress, ProgressReporter
from .safetensors_io import read_safetensors_layout, safetensors_shapes, weight_files

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: Same default shard size as transformers' save_pretrained.
DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3


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
        self._patches = load_patches(resolved, shapes) if resolved.kind == "adapter" else {}
        self._extra = dict(untied_extras(resolved, shapes, self._patches))
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
            tensor = apply_patch(tensor, patch, self._cfg)
        return tensor

    def is_unchanged(self, name: str) -> bool:
        """True when the merge leaves ``name`` as the base has it (rows can then be read alone)."""
        return name in self._where and name not in self._patches and name not in self._extra

    def row_reader(self, name: str) -> Callable[[int, int], torch.Tensor] | None:
        """``rows(first, count)`` of merged tensor ``name`` without the whole merged tensor.

        For an unchanged tensor it reads just those rows. For a plain LoRA patch it computes the
        whole fp32 product ``B @ A`` once (not split: BLAS rounds a product of a row slice
        differently from the same rows of the full product), then scales it and adds the base
        rows as they are asked for, so neither the whole base tensor nor the whole merged one is
        ever in memory next to the product. Each row is exactly ``self[name]``'s. Safe to call
        from several threads at once; only the newest reader of this object may be used.
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
        dtype = safetensors_torch_dtype(self._where[name][2]["dtype"])
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
            # As apply_patch, on these rows only: (B @ A) * scaling, + base, in fp32, then cast
            # to the base dtype. Element-wise, so each value rounds exactly as in the whole
            # tensor; one scratch buffer per thread, and no pass over the whole product.
            merged = torch.mul(part, scaling, out=buffer).add_(base)
            return merged.to(dtype, copy=True)  # a copy even for fp32: the buffer is reused

        return rows

    def release_buffers(self) -> None:
        """Drop the reused LoRA product buffer (row readers still in use keep theirs alive)."""
        self._product_buffer = None

    def _product(self, patch: ModulePatch, shape: tuple[int, ...]) -> torch.Tensor:
        """``B @ A`` of ``patch`` in the buffer reused from tensor to tensor (``lora_product``).

        Only the newest row reader may use it (``row_reader`` checks).
        """
        product, self._product_buffer = lora_product(patch, shape, self._product_buffer)
        return product

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
        dtype = safetensors_torch_dtype(info["dtype"])
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
