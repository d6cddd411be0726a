"""The pinned, offline llama.cpp toolchain: provisioned once into the cache dir, or reused.

The toolchain dir is laid out the way Unsloth expects (``llama-quantize``,
``convert_hf_to_gguf.py``, ``convert_lora_to_gguf.py``, ``conversion/``, ``gguf-py/`` at its root),
so the Unsloth backend can point ``UNSLOTH_LLAMA_CPP_PATH`` at it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .._subprocess import run_tool
from ..errors import ConversionError, DependencyMissingError
from ..progress import NullProgress, ProgressReporter

logger = logging.getLogger(__name__)

#: llama-cpp-python release whose sdist vendors the llama.cpp we pin (commit 0c1e570).
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
LLAMA_CPP_COMMIT = "0c1e570"
SDIST_NAME = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
TOOLCHAIN_DIRNAME = f"llama.cpp-{LLAMA_CPP_COMMIT}"
MARKER_FILE = ".dto-toolchain.json"
#: llama.cpp's quantizer and type-selection rules as a shared library, for in-process quantization
#: (see ``gguf/quantizer.py``). Linked from the static archives of the same build as llama-quantize.
QUANT_LIBRARY = "libdto-llama.so"
#: Our AVX2 Q4_K/Q5_K kernels (``kquants_avx2.c``), bit-identical to ggml's and several times
#: faster; optional: absent where they cannot be compiled (no x86-64), and then ggml's code is used.
KERNEL_LIBRARY = "libdto-kquants.so"
KERNEL_SOURCE = Path(__file__).with_name("kquants_avx2.c")
#: No -mfma and no contraction: a fused multiply-add rounds differently from ggml's code.
KERNEL_FLAGS: tuple[str, ...] = (
    "-O2", "-mavx2", "-mf16c", "-ffp-contract=off", "-fno-fast-math", "-fPIC", "-shared",
)  # fmt: skip
#: The static archives that make up the library, as the cmake build lays them out.
_ARCHIVES: tuple[str, ...] = (
    "src/libllama.a",
    "ggml/src/libggml.a",
    "ggml/src/libggml-cpu.a",
    "ggml/src/libggml-base.a",
)

#: Files the exporter (and Unsloth) need at the toolchain root.
REQUIRED_FILES: tuple[str, ...] = (
    "llama-quantize",
    "convert_hf_to_gguf.py",
    "convert_lora_to_gguf.py",
    "gguf-py/gguf/__init__.py",
)
#: What a toolchain we provision has besides (a user's llama.cpp may lack the library).
PROVISIONED_FILES: tuple[str, ...] = (*REQUIRED_FILES, QUANT_LIBRARY)
#: Python parts copied from the vendored tree (``conversion/`` exists from late-2026 llama.cpp).
PYTHON_PARTS: tuple[str, ...] = (
    "convert_hf_to_gguf.py",
    "convert_lora_to_gguf.py",
    "conversion",
    "gguf-py",
)
CMAKE_FLAGS: tuple[str, ...] = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    # Position-independent archives, so they also link into the shared QUANT_LIBRARY.
    "-DCMAKE_POSITION_INDEPENDENT_CODE=ON",
    "-DGGML_BLAS=OFF",
    "-DGGML_OPENMP=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    # Fully static so the same binary runs on the GPU machine too.
    "-DCMAKE_EXE_LINKER_FLAGS=-static",
)
SETUP_HINT = "run `deploy-to-ollama setup` (or set DTO_LLAMA_CPP_DIR to a llama.cpp checkout)"


@dataclass(frozen=True, slots=True)
class Toolchain:
    """A usable llama.cpp: the quantizer binary and the converter scripts beside it."""

    root: Path

    @property
    def quantize(self) -> Path:
        """The ``llama-quantize`` binary."""
        return self.root / "llama-quantize"

    @property
    def quant_library(self) -> Path | None:
        """The in-process quantizer library, when this toolchain has one (ours always does)."""
        path = self.root / QUANT_LIBRARY
        return path if path.is_file() else None

    @property
    def kernel_library(self) -> Path | None:
        """The AVX2 Q4_K kernel, when it was compiled for this machine."""
        path = self.root / KERNEL_LIBRARY
        return path if path.is_file() else None

    @property
    def convert_hf(self) -> Path:
        """``convert_hf_to_gguf.py``."""
        return self.root / "convert_hf_to_gguf.py"

    @property
    def convert_lora(self) -> Path:
        """``convert_lora_to_gguf.py``."""
        return self.root / "convert_lora_to_gguf.py"

    @property
    def gguf_py(self) -> Path:
        """The vendored ``gguf-py`` (PyPI gguf is too old for this converter)."""
        return self.root / "gguf-py"

    def python_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for running the converter: vendored gguf-py and the root first on path."""
        env = dict(os.environ if base is None else base)
        parts = [str(self.gguf_py), str(self.root)]
        if env.get("PYTHONPATH"):
            parts.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(parts)
        env.pop("NO_LOCAL_GGUF", None)
        # The converter must never reach the network (HF ids in configs, tokenizer downloads).
        env["HF_HUB_OFFLINE"] = "1"
        return env


@dataclass(frozen=True, slots=True)
class SetupResult:
    """What ``provision_toolchain`` did."""

    toolchain: Toolchain
    action: str
    """``reused`` (already there), ``external`` (user's llama.cpp) or ``built``."""
    seconds: float


def missing_parts(root: Path, required: tuple[str, ...] = REQUIRED_FILES) -> list[str]:
    """Return the required toolchain files absent under ``root``."""
    return [rel for rel in required if not (root / rel).exists()]


def _check_usable(root: Path, *, source: str) -> Toolchain:
    missing = missing_parts(root)
    if missing:
        raise DependencyMissingError(
            f"llama.cpp at {root} ({source}) lacks {', '.join(missing)}",
            hint=SETUP_HINT,
        )
    if not os.access(root / "llama-quantize", os.X_OK):
        raise DependencyMissingError(
            f"{root / 'llama-quantize'} is not executable", hint=f"chmod +x it or {SETUP_HINT}"
        )
    return Toolchain(root=root)


def _external_root(path: Path) -> Path:
    """Accept a llama.cpp checkout whose quantizer lives in build/bin (the usual cmake layout)."""
    if (path / "llama-quantize").exists():
        return path
    built = path / "build" / "bin" / "llama-quantize"
    if built.exists() and (path / "convert_hf_to_gguf.py").exists():
        # Unsloth wants llama-quantize at the root: link it there when we may.
        with contextlib.suppress(OSError):
            (path / "llama-quantize").symlink_to(built)
        return path
    return path


def toolchain_dir(cache_dir: Path) -> Path:
    """Where ``setup`` provisions the pinned toolchain inside ``cache_dir``."""
    return cache_dir / TOOLCHAIN_DIRNAME


def find_toolchain(cache_dir: Path, llama_cpp_dir: Path | None = None) -> Toolchain:
    """Return the toolchain to use: the user's (flag/env) first, else the provisioned one.

    Raises:
        DependencyMissingError: none is provisioned, or the user's lacks a part.
    """
    if llama_cpp_dir is not None:
        return _check_usable(_external_root(llama_cpp_dir), source="DTO_LLAMA_CPP_DIR/--llama-cpp")
    root = toolchain_dir(cache_dir)
    if not (root / MARKER_FILE).exists() or missing_parts(root, PROVISIONED_FILES):
        raise DependencyMissingError(
            f"llama.cpp toolchain not provisioned (or from an older version) in {root}",
            hint=SETUP_HINT,
        )
    return _check_usable(root, source="provisioned")


def _obtain_sdist(cache_dir: Path, sdist: Path | None) -> Path:
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


def _extract_vendor(sdist: Path, dest: Path) -> Path:
    """Extract ``vendor/llama.cpp`` of the sdist into ``dest``; return its path."""
    prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/"
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        if not members:
            raise DependencyMissingError(
                f"{sdist} holds no vendor/llama.cpp", hint=f"delete it and {SETUP_HINT}"
            )
        tar.extractall(dest, members=members, filter="data")
    return dest / prefix


def _build_quantize(src: Path, build: Path, jobs: int) -> Path:
    """Configure and build only the ``llama-quantize`` target (static, portable CPU)."""
    cmake = shutil.which("cmake")
    if cmake is None:
        raise DependencyMissingError(
            "cmake is not installed; building llama-quantize needs it",
            hint="install cmake and a C++ compiler (apt-get install cmake g++)",
        )
    run_tool([cmake, "-S", src, "-B", build, *CMAKE_FLAGS], what="configuring llama.cpp (cmake)")
    run_tool(
        [cmake, "--build", build, "--target", "llama-quantize", "-j", str(jobs)],
        what="building llama-quantize",
    )
    binary = build / "bin" / "llama-quantize"
    if not binary.exists():
        raise ConversionError(
            f"the build produced no {binary}", hint="rerun with -vv and report it"
        )
    return binary


def _link_quant_library(build: Path, dest: Path) -> None:
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


def _compile_kernel(dest: Path) -> bool:
    """Compile the AVX2 Q4_K kernel to ``dest`` unless it is there and newer than its source.

    Best effort: without a C compiler or off x86-64 there is no kernel and ggml's quantizer is
    used, which is slower and writes the same bytes.
    """
    import hashlib

    digest = hashlib.sha256(KERNEL_SOURCE.read_bytes()).hexdigest()
    stamp = dest.with_name(dest.name + ".sha256")
    if dest.is_file() and stamp.is_file() and stamp.read_text(encoding="utf-8") == digest:
        return True
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None or not os.access(dest.parent, os.W_OK):
        return False
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    command: list[str | Path] = [compiler, *KERNEL_FLAGS, "-o", tmp, KERNEL_SOURCE]
    try:
        run_tool(command, what="compiling the Q4_K kernel")
        os.replace(tmp, dest)
        stamp.write_text(digest, encoding="utf-8")
    except ConversionError as err:
        logger.info("no AVX2 Q4_K kernel (%s); ggml's quantizer will be used", err.message)
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def provision_toolchain(
    cache_dir: Path,
    *,
    llama_cpp_dir: Path | None = None,
    sdist: Path | None = None,
    jobs: int | None = None,
    force: bool = False,
    progress: ProgressReporter | None = None,
) -> SetupResult:
    """Provision the pinned llama.cpp toolchain once; reuse it (or the user's) afterwards.

    The build happens in a temp dir beside the final one and is renamed into place at the end,
    so an interrupted setup leaves nothing half-built under the final name.

    Args:
        cache_dir: our cache dir (``DTO_CACHE_DIR``).
        llama_cpp_dir: a llama.cpp the user already has; checked and used as is.
        sdist: a local llama-cpp-python sdist to take the sources from.
        jobs: parallel build jobs (default: CPU count).
        force: rebuild even when a provisioned toolchain exists.
        progress: stage reporter.

    Raises:
        DependencyMissingError: cmake/compiler missing, or the sources cannot be obtained.
        ConversionError: the build failed.
    """
    import time

    reporter = progress or NullProgress()
    started = time.monotonic()
    if llama_cpp_dir is not None:
        tool = _check_usable(_external_root(llama_cpp_dir), source="--llama-cpp/DTO_LLAMA_CPP_DIR")
        return SetupResult(tool, "external", time.monotonic() - started)
    final = toolchain_dir(cache_dir)
    if (final / MARKER_FILE).exists() and not force and not missing_parts(final, PROVISIONED_FILES):
        _compile_kernel(final / KERNEL_LIBRARY)  # toolchains from before the kernel get it now
        return SetupResult(Toolchain(final), "reused", time.monotonic() - started)
    reporter.start("setup", "llama.cpp: fetching sources", total=3)
    source = _obtain_sdist(cache_dir, sdist)
    cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{TOOLCHAIN_DIRNAME}.", dir=cache_dir))
    try:
        src = _extract_vendor(source, work / "src")
        reporter.advance("setup")
        staged = work / "toolchain"
        staged.mkdir()
        for part in PYTHON_PARTS:
            if (src / part).is_dir():
                shutil.copytree(src / part, staged / part)
            elif (src / part).exists():
                shutil.copy2(src / part, staged / part)
        binary = _build_quantize(src, work / "build", jobs or os.cpu_count() or 2)
        shutil.copy2(binary, staged / "llama-quantize")
        _link_quant_library(work / "build", staged / QUANT_LIBRARY)
        _compile_kernel(staged / KERNEL_LIBRARY)
        reporter.advance("setup")
        marker = {"llama_cpp_python": LLAMA_CPP_PYTHON_VERSION, "commit": LLAMA_CPP_COMMIT}
        (staged / MARKER_FILE).write_text(json.dumps(marker) + "\n", encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(staged, final)
        reporter.done("setup", f"llama.cpp {LLAMA_CPP_COMMIT} provisioned in {final}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return SetupResult(
        _check_usable(final, source="provisioned"), "built", time.monotonic() - started
    )
