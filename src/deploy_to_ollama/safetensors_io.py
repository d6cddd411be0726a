"""The one safetensors header reader: tensor names, shapes, dtypes and data offsets, no data.

Every stage that needs to know what a checkpoint holds (input checks, merge, GGUF planning,
parameter counts) reads it here, so a truncated or corrupt file is reported the same way
everywhere, before any tensor is loaded.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from .errors import InputError

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
#: A header longer than this is a corrupt length field, not a real header.
MAX_HEADER_BYTES = 100_000_000


def read_safetensors_layout(file: Path) -> tuple[int, dict[str, Any]]:
    """The file offset where tensor data starts, and the header (``data_offsets`` count from it).

    ``__metadata__`` is left out. The file must be as long as the header says, so a truncated
    download or an interrupted save is caught here, not halfway through a merge.

    Raises:
        InputError: the file is unreadable, or shorter than its header says.
    """
    try:
        with file.open("rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise ValueError("shorter than the 8-byte header length")
            (length,) = struct.unpack("<Q", raw)
            if length > MAX_HEADER_BYTES:
                raise ValueError("header length is implausible")
            header = json.loads(fh.read(length))
            if not isinstance(header, dict):
                raise ValueError("header is not a JSON object")
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


def read_safetensors_header(file: Path) -> dict[str, Any]:
    """Name → ``{"dtype", "shape", "data_offsets"}`` of every tensor in ``file``.

    Raises:
        InputError: the file is unreadable or truncated (see :func:`read_safetensors_layout`).
    """
    return read_safetensors_layout(file)[1]


def weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files of a model dir, in index order when an index exists.

    Raises:
        InputError: the dir holds no safetensors weights, or its index is unreadable.
    """
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InputError(
                f"{index} is not a readable safetensors index ({err})",
                hint="re-save or re-download the model",
            ) from err
        return [model_dir / name for name in dict.fromkeys(weight_map.values())]
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise InputError(
            f"no *.safetensors weights in {model_dir}",
            hint="re-save the model with save_pretrained(safe_serialization=True)",
        )
    return files


def safetensors_shapes(model_dir: Path) -> dict[str, tuple[list[int], str]]:
    """Name → (shape, safetensors dtype) of every tensor in a model dir's safetensors."""
    shapes: dict[str, tuple[list[int], str]] = {}
    for file in weight_files(model_dir):
        for name, info in read_safetensors_header(file).items():
            shapes[name] = (list(info["shape"]), str(info["dtype"]))
    return shapes


def count_elements(shapes: dict[str, tuple[list[int], str]]) -> int:
    """Total number of weights over ``safetensors_shapes``' result.

    >>> count_elements({"a": ([2, 3], "F16"), "b": ([4], "F32")})
    10
    """
    total = 0
    for shape, _ in shapes.values():
        numel = 1
        for dim in shape:
            numel *= int(dim)
        total += numel
    return total


__all__ = [
    "SAFETENSORS_TORCH_DTYPES",
    "count_elements",
    "read_safetensors_header",
    "read_safetensors_layout",
    "safetensors_shapes",
    "weight_files",
]
