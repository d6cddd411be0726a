"""Read a few key/values of a GGUF's header without touching its tensors.

``gguf.GGUFReader`` maps the whole file and builds a numpy view for every part of every field
(one per token of a 128k vocabulary) and for every tensor: seconds and ~100 MB for a 1B model,
just to learn its ``tokenizer.chat_template``. This reader walks the key/value section only,
skips the values it was not asked for by their length, and stops at the last key it wants.
Layout: ggml-org/llama.cpp ``gguf-py/gguf/constants.py`` (``GGUFValueType``), ``ggml/src/gguf.cpp``.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, InputNotFoundError

__all__ = ["GgufField", "read_gguf_fields", "read_gguf_prefixed"]

MAGIC = b"GGUF"
#: GGUF value type -> struct code of its scalar (8 string and 9 array are handled apart).
_SCALARS = dict(zip((0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12), "BbHhIif?Qqd", strict=True))
_STRING, _ARRAY = 8, 9


class _Cursor:
    """A position in the mapped header and the byte order of the file."""

    def __init__(self, data: mmap.mmap, endian: str) -> None:
        self.data, self.endian, self.pos = data, endian, 0

    def unpack(self, code: str) -> Any:
        fmt = self.endian + code
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        size = self.unpack("Q")
        if self.pos + size > len(self.data):
            raise ValueError("string past the end of the file")
        raw = self.data[self.pos : self.pos + size]
        self.pos += size
        return raw.decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        size = self.unpack("Q")  # first: unpack moves pos
        self.pos += size

    def value(self, kind: int, *, keep: bool) -> Any:
        """Read (``keep``) or step over one value of GGUF type ``kind``."""
        if kind == _STRING:
            return self.string() if keep else self.skip_string()
        if kind == _ARRAY:
            item, count = self.unpack("I"), self.unpack("Q")
            if keep:
                return [self.value(item, keep=True) for _ in range(count)]
            if item in _SCALARS:  # fixed size: one jump
                self.pos += count * struct.calcsize(self.endian + _SCALARS[item])
                if self.pos > len(self.data):
                    raise ValueError("array past the end of the file")
            else:
                for _ in range(count):
                    self.value(item, keep=False)
            return None
        if kind not in _SCALARS:
            raise ValueError(f"unknown GGUF value type {kind}")
        value = self.unpack(_SCALARS[kind])
        return value if keep else None


@dataclass(frozen=True, slots=True)
class GgufField:
    """One key/value with its GGUF types, so that it can be written again unchanged."""

    kind: int
    """GGUF value type (``gguf.GGUFValueType``)."""
    item: int | None
    """Item type of an array; None for a scalar or string."""
    value: Any


def read_gguf_fields(path: Path, keys: Iterable[str]) -> dict[str, Any]:
    """The values of ``keys`` that ``path``'s header holds (absent keys are left out).

    Strings come back as ``str``, arrays as lists, numbers and booleans as Python scalars; only
    the header pages are read, whatever the size of the file.

    Raises:
        InputNotFoundError: ``path`` does not exist.
        InputError: ``path`` is not a GGUF file, or its header is cut short or malformed.
    """
    wanted = frozenset(keys)
    found = _open_and_read(path, wanted.__contains__, len(wanted))
    return {key: field.value for key, field in found.items()}


def read_gguf_prefixed(path: Path, prefix: str) -> dict[str, GgufField]:
    """Every key/value of ``path``'s header whose key starts with ``prefix``, with its types.

    Raises:
        InputNotFoundError / InputError: as :func:`read_gguf_fields`.
    """
    return _open_and_read(path, lambda key: key.startswith(prefix), None)


def _open_and_read(
    path: Path, keep: Callable[[str], bool], limit: int | None
) -> dict[str, GgufField]:
    try:
        with (
            path.open("rb") as handle,
            mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data,
        ):
            return _read(data, keep, limit)
    except FileNotFoundError as err:
        raise InputNotFoundError(f"GGUF file {path} does not exist", path=path) from err
    except (OSError, ValueError, struct.error) as err:
        raise InputError(
            f"{path} is not a readable GGUF file ({err})",
            hint="pass a .gguf written by llama.cpp",
        ) from err


def _read(data: mmap.mmap, keep: Callable[[str], bool], limit: int | None) -> dict[str, GgufField]:
    """The kept key/values; stops after ``limit`` of them (None: reads the whole header)."""
    if data[:4] != MAGIC:
        raise ValueError("no GGUF magic")
    # A big-endian GGUF shows its version byte-swapped to a little-endian reader.
    endian = "<" if struct.unpack_from("<I", data, 4)[0] < 0x10000 else ">"
    cursor = _Cursor(data, endian)
    cursor.pos = 4
    if cursor.unpack("I") < 2:
        raise ValueError("GGUF version 1 (32-bit counts) is not supported")
    cursor.unpack("Q")  # tensor count: the tensors are never read
    found: dict[str, GgufField] = {}
    for _ in range(cursor.unpack("Q")):
        if limit is not None and len(found) == limit:
            break
        key = cursor.string()
        kind = cursor.unpack("I")
        wanted = keep(key)
        item = struct.unpack_from(endian + "I", data, cursor.pos)[0] if kind == _ARRAY else None
        value = cursor.value(kind, keep=wanted)
        if wanted:
            found[key] = GgufField(kind, item, value)
    return found
