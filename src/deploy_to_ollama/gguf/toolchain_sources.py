"""The pinned llama.cpp sources: the llama-cpp-python sdist that vendors them, and our one patch.

Why an sdist: PyPI is the one place we may download from, and llama-cpp-python's sdist carries
the llama.cpp tree of a known commit (``vendor/llama.cpp``), converters included.
"""

from __future__ import annotations

import logging
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

from .._subprocess import run_tool
from ..errors import ConversionError, DependencyMissingError

logger = logging.getLogger(__name__)

#: llama-cpp-python release whose sdist vendors the llama.cpp we pin (commit 0c1e570).
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
LLAMA_CPP_COMMIT = "0c1e570"
SDIST_NAME = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
TOOLCHAIN_DIRNAME = f"llama.cpp-{LLAMA_CPP_COMMIT}"
#: Python parts copied from the vendored tree (``conversion/`` exists from late-2026 llama.cpp).
PYTHON_PARTS: tuple[str, ...] = (
    "convert_hf_to_gguf.py",
    "convert_lora_to_gguf.py",
    "conversion",
    "gguf-py",
)
#: The one change we make to the pinned sources: llama-perplexity and llama-imatrix wait for
#: llama.cpp's logger thread before they exit. Unpatched, their last lines (the statistics
#: ``export --measure`` reads) are sometimes lost when the machine is busy: the logger is
#: intentionally leaked at exit (llama.cpp issue 22142). Output only; no computation changes.
_LOG_FLUSH_ANCHOR = "\n    llama_backend_free();\n\n    return 0;\n}\n"
_LOG_FLUSH = (
    "\n    llama_backend_free();\n\n"
    "    common_log_pause(common_log_main()); // deploy-to-ollama: print every queued line\n\n"
    "    return 0;\n}\n"
)
SOURCE_PATCHES: tuple[tuple[str, str, str], ...] = (
    ("tools/perplexity/perplexity.cpp", _LOG_FLUSH_ANCHOR, _LOG_FLUSH),
    ("tools/imatrix/imatrix.cpp", _LOG_FLUSH_ANCHOR, _LOG_FLUSH),
)
SETUP_HINT = "run `deploy-to-ollama setup` (or set DTO_LLAMA_CPP_DIR to a llama.cpp checkout)"


def obtain_sdist(cache_dir: Path, sdist: Path | None) -> Path:
    """Return the pinned sdist: given, cached, or fetched once with ``pip download``."""
    if sdist is not None:
        return sdist
    cached = cache_dir / "src" / SDIST_NAME
    if cached.exists():
        return cached
    dest = cache_dir / "src"
    dest.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary=:all:",
        "--dest", str(dest), f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}",
    ]  # fmt: skip
    hint = f"put {SDIST_NAME} into {dest} when offline"
    try:
        run_tool(command, what="pip download llama-cpp-python sources", hint=hint)
    except ConversionError as err:
        raise DependencyMissingError(err.message, hint=hint) from err
    return dest / SDIST_NAME


def extract_vendor(sdist: Path, dest: Path, advance: Callable[[int], None]) -> Path:
    """Extract ``vendor/llama.cpp`` of the sdist into ``dest``; return its path."""
    prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/"
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        if not members:
            raise DependencyMissingError(
                f"{sdist} holds no vendor/llama.cpp", hint=f"delete it and {SETUP_HINT}"
            )
        for start in range(0, len(members), 200):
            batch = members[start : start + 200]
            tar.extractall(dest, members=batch, filter="data")
            advance(len(batch))
    return dest / prefix


def patch_sources(src: Path) -> list[str]:
    """Apply ``SOURCE_PATCHES`` to the extracted tree; return the files patched.

    A file whose anchor is not there exactly once is left as it is (logged): the tool still
    builds, and ``gguf/quality.py`` retries a run whose output was cut off.
    """
    patched: list[str] = []
    for rel, anchor, replacement in SOURCE_PATCHES:
        path = src / rel
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        if text.count(anchor) != 1:
            logger.info("not patching %s: its end is not the expected one", rel)
            continue
        path.write_text(text.replace(anchor, replacement), encoding="utf-8")
        patched.append(rel)
    return patched
