"""The two shared libraries of a toolchain: llama.cpp's quantizer and our AVX2 K-quant kernels.

Both serve in-process quantization (``gguf/quantizer.py``); the library is linked from the
archives of the llama-quantize build, the kernels are compiled from ``kquants_avx2.c``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

from .._subprocess import run_tool
from ..errors import ConversionError, DependencyMissingError

logger = logging.getLogger(__name__)

#: llama.cpp's quantizer and type-selection rules as a shared library, for in-process quantization
#: (see ``gguf/quantizer.py``). Linked from the static archives of the same build as llama-quantize.
QUANT_LIBRARY = "libdto-llama.so"
#: Our AVX2 Q3_K/Q4_K/Q5_K/Q6_K kernels (``kquants_avx2.c`` and the two beside it), bit-identical
#: to ggml's and several times faster; optional: absent where they cannot be compiled (no
#: x86-64), and then ggml's code is used.
KERNEL_LIBRARY = "libdto-kquants.so"
KERNEL_SOURCES: tuple[Path, ...] = tuple(
    Path(__file__).with_name(name)
    for name in ("kquants_avx2.c", "kquants_q6_avx2.c", "kquants_q3_avx2.c")
)
#: Included by every source: part of what the cached kernel is keyed on.
KERNEL_HEADER = Path(__file__).with_name("kquants_lanes.h")
#: No -mfma and no contraction: a fused multiply-add rounds differently from ggml's code.
#: -O3 (no reassociation without -ffast-math, so the same bits) ran Q5_K/Q6_K ~8% faster than -O2.
KERNEL_FLAGS: tuple[str, ...] = (
    "-O3", "-mavx2", "-mf16c", "-ffp-contract=off", "-fno-fast-math", "-fPIC", "-shared",
)  # fmt: skip
#: The static archives that make up the library, as the cmake build lays them out.
_ARCHIVES: tuple[str, ...] = (
    "src/libllama.a",
    "ggml/src/libggml.a",
    "ggml/src/libggml-cpu.a",
    "ggml/src/libggml-base.a",
)


def link_quant_library(build: Path, dest: Path) -> None:
    """Link llama.cpp's static archives into one shared library with every symbol exported.

    Why not a second, shared cmake build: that compiles all of llama.cpp twice; the archives of
    the llama-quantize build are position-independent and already hold everything.
    """
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        raise DependencyMissingError(
            "no C++ compiler found to link the quantizer library",
            hint="install g++ (apt-get install g++)",
        )
    archives = [build / rel for rel in _ARCHIVES]
    if missing := [str(a) for a in archives if not a.is_file()]:
        raise ConversionError(f"the build produced no {missing[0]}", hint="rerun with -vv")
    command: list[str | Path] = [
        compiler, "-shared", "-o", dest,
        "-Wl,--whole-archive", *archives, "-Wl,--no-whole-archive",
        "-pthread", "-ldl", "-lm",
    ]  # fmt: skip
    run_tool(command, what="linking the quantizer library")


def compile_kernel(dest: Path) -> bool:
    """Compile the AVX2 K-quant kernels to ``dest`` unless it was built from this source and flags.

    Keyed on the SHA-256 of the source and the flags (a ``.sha256`` stamp beside it), not on
    mtimes: a changed kernel source (a new type) or flag is recompiled at the next ``setup``
    or toolchain lookup, and a clean build (CI) always compiles it.

    Best effort: without a C compiler or off x86-64 there is no kernel and ggml's quantizer is
    used, which is slower and writes the same bytes.
    """
    # Keyed by source and flags: a cached kernel built another way is rebuilt.
    text = b"".join(path.read_bytes() for path in (*KERNEL_SOURCES, KERNEL_HEADER))
    digest = hashlib.sha256(text + " ".join(KERNEL_FLAGS).encode()).hexdigest()
    stamp = dest.with_name(dest.name + ".sha256")
    if dest.is_file() and stamp.is_file() and stamp.read_text(encoding="utf-8") == digest:
        return True
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None or not os.access(dest.parent, os.W_OK):
        return False
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    command: list[str | Path] = [compiler, *KERNEL_FLAGS, "-o", tmp, *KERNEL_SOURCES]
    try:
        run_tool(command, what="compiling the AVX2 K-quant kernels")
        os.replace(tmp, dest)
        stamp.write_text(digest, encoding="utf-8")
    except ConversionError as err:
        logger.info("no AVX2 K-quant kernels (%s); ggml's quantizer will be used", err.message)
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True
