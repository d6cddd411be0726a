"""The content key of a resolved input: one hash of every file the stages read.

Deploy's work folder and export's reuse stamp are keyed by it, so the input is hashed once per
run (``ResolvedInput.content_key`` keeps the result), not once per stage.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .model_files import CONTENT_FILES

#: Bump when what the content key covers changes.
CONTENT_KEY_FORMAT = 1
_CHUNK = 1 << 20


def content_files(path: Path, base_dir: Path | None) -> list[tuple[str, Path]]:
    """``(label, file)`` of every file the content key covers, in a stable order."""
    roots: list[tuple[str, Path]] = [("input", path)]
    if base_dir is not None:
        roots.append(("base", base_dir))
    files: list[tuple[str, Path]] = []
    for label, root in roots:
        if root.is_file():  # a GGUF: its bytes, not its name
            files.append((f"{label}/file", root))
            continue
        for file in sorted(root.iterdir()):
            if file.is_file() and (file.name in CONTENT_FILES or file.suffix == ".safetensors"):
                files.append((f"{label}/{file.name}", file))
    return files


def compute_content_key(kind: str, path: Path, base_dir: Path | None) -> str:
    """Hash what ``ResolvedInput.content_key`` covers (call the property: it keeps the result)."""
    digest = hashlib.sha256(f"dto-input\0{CONTENT_KEY_FORMAT}\0{kind}".encode())
    for label, file in content_files(path, base_dir):
        digest.update(f"\0{label}\0{file.stat().st_size}\0".encode())
        with file.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


__all__ = ["CONTENT_FILES", "CONTENT_KEY_FORMAT", "compute_content_key", "content_files"]
