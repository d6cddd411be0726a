"""Building the pinned llama.cpp toolchain from the llama-cpp-python sdist, with progress.

One cmake configure, then the targets one after the other in the same build tree:
``llama-quantize`` (required), the quantizer library linked from its archives, our AVX2 kernel,
and ``llama-server`` (optional: when it fails, the toolchain is still complete for deploys and
the failure is recorded in the marker with the log that explains it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import resource
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .._subprocess import kill_with_parent, run_tool
from ..errors import ConversionError, DependencyMissingError
from ..progress import ProgressReporter

logger = logging.getLogger(__name__)

#: llama-cpp-python release whose sdist vendors the llama.cpp we pin (commit 0c1e570).
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
LLAMA_CPP_COMMIT = "0c1e570"
SDIST_NAME = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
TOOLCHAIN_DIRNAME = f"llama.cpp-{LLAMA_CPP_COMMIT}"
MARKER_FILE = ".dto-toolchain.json"
#: 2: ``setup`` also tried to build llama-server (the marker says whether it worked).
MARKER_FORMAT = 2
SERVER_BINARY = "llama-server"
BUILD_LOG = "build.log"
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
    # No HTTPS and no curl: llama-server only ever listens on 127.0.0.1 for us.
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    # Position-independent archives, so they also link into the shared QUANT_LIBRARY.
    "-DCMAKE_POSITION_INDEPENDENT_CODE=ON",
    "-DGGML_BLAS=OFF",
    "-DGGML_OPENMP=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_SERVER=ON",
    # The server's web UI is neither built (npm) nor downloaded (HF bucket): offline, API only.
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    # Fully static so the same binaries run on the GPU machine too.
    "-DCMAKE_EXE_LINKER_FLAGS=-static",
)
SETUP_HINT = "run `deploy-to-ollama setup` (or set DTO_LLAMA_CPP_DIR to a llama.cpp checkout)"
#: ``[ 42%] Building ...`` (Makefiles) or ``[17/230] Building ...`` (Ninja).
_PERCENT = re.compile(r"^\[\s*(\d{1,3})%\]")
_COUNT = re.compile(r"^\[(\d+)/(\d+)\]")


@dataclass
class BuildReport:
    """What a build did: seconds per step and, when llama-server failed, why."""

    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    """CPU time of the step's tools: unlike wall time, it does not depend on how busy the
    machine was (wall time on an idle machine is about this divided by the build jobs)."""
    server_error: str | None = None


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def progress_key(step: str) -> str:
    """The reporter key of a toolchain step (apart from the keys of the stages that follow)."""
    return f"toolchain-{step}"


@contextmanager
def _step(
    report: BuildReport, reporter: ProgressReporter, key: str, what: str, total: float | None
) -> Iterator[None]:
    """One reported, timed build step (``key`` in the report, ``what`` on the progress line)."""
    started, cpu = time.monotonic(), _children_cpu()
    reporter.start(progress_key(key), what, total=total)
    yield
    report.seconds[key] = round(time.monotonic() - started, 1)
    report.cpu_seconds[key] = round(_children_cpu() - cpu, 1)
    reporter.done(progress_key(key))
    logger.info("%s: %.0f s", what, report.seconds[key])


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


def _extract_vendor(sdist: Path, dest: Path, advance: Callable[[int], None]) -> Path:
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


def build_progress(line: str) -> float | None:
    """The build's completion in percent, read from one line of cmake's build output.

    >>> build_progress("[ 42%] Building CXX object src/CMakeFiles/llama.dir/llama.cpp.o")
    42.0
    >>> build_progress("[3/12] Building C object ggml/src/ggml.c.o")
    25.0
    >>> build_progress("-- Configuring done") is None
    True
    """
    if match := _PERCENT.match(line):
        return float(min(100, int(match.group(1))))
    if (count := _COUNT.match(line)) and int(count.group(2)) > 0:
        return 100.0 * int(count.group(1)) / int(count.group(2))
    return None


def run_logged(
    command: Sequence[str | Path],
    *,
    what: str,
    log: Path,
    on_progress: Callable[[float], None] | None = None,
) -> None:
    """Run a build command with its output appended to ``log``, reporting build progress.

    Raises:
        ConversionError: it failed; the message has its last error line and names ``log``.
    """
    argv = [str(part) for part in command]
    logger.debug("running %s", " ".join(argv))
    tail: list[str] = []
    with log.open("a", encoding="utf-8") as sink:
        sink.write(f"$ {' '.join(argv)}\n")
        sink.flush()
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            preexec_fn=kill_with_parent,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                sink.write(line)
                sink.flush()  # so that `tail -f` on the log follows a long build
                tail = [*tail[-19:], line.rstrip()]
                percent = build_progress(line)
                if percent is not None and on_progress is not None:
                    on_progress(percent)
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if code != 0:
        errors = [line for line in tail if "error" in line.lower()] or tail or [f"exit {code}"]
        raise ConversionError(
            f"{what} failed: {errors[-1].strip()}",
            hint=f"the full output is in {log}",
            command=argv,
            stderr_tail="\n".join(tail),
        )


def _cmake() -> str:
    cmake = shutil.which("cmake")
    if cmake is None:
        raise DependencyMissingError(
            "cmake is not installed; building llama.cpp needs it",
            hint="install cmake and a C++ compiler (apt-get install cmake g++)",
        )
    return cmake


def _build_target(
    build: Path, target: str, jobs: int, log: Path, reporter: ProgressReporter, key: str
) -> Path:
    """Build one cmake target of the configured tree; return its binary."""
    run_logged(
        [_cmake(), "--build", build, "--target", target, "-j", str(jobs)],
        what=f"building {target}",
        log=log,
        on_progress=lambda percent: reporter.advance(progress_key(key), completed=percent),
    )
    binary = build / "bin" / target
    if not binary.exists():
        raise ConversionError(f"the build produced no {binary}", hint=f"see {log}")
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


def compile_kernel(dest: Path) -> bool:
    """Compile the AVX2 Q4_K kernel to ``dest`` unless it is there and newer than its source.

    Best effort: without a C compiler or off x86-64 there is no kernel and ggml's quantizer is
    used, which is slower and writes the same bytes.
    """
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


def build_server(build: Path, staged: Path, *, jobs: int, log: Path, reporter: ProgressReporter,
                 report: BuildReport) -> None:  # fmt: skip
    """Build ``llama-server`` in the configured tree into ``staged``; a failure is recorded.

    Optional on purpose: deploys need only llama-quantize, so a server that does not build
    (an old compiler, a missing header) must not cost the user the whole toolchain.
    """
    with _step(report, reporter, "server", "llama.cpp: building llama-server", total=100):
        try:
            binary = _build_target(build, SERVER_BINARY, jobs, log, reporter, "server")
        except ConversionError as err:
            report.server_error = err.message
            logger.warning("llama-server was not built: %s (%s)", err.message, err.hint)
            return
        shutil.copy2(binary, staged / SERVER_BINARY)


def build_toolchain(
    cache_dir: Path,
    work: Path,
    *,
    sdist: Path | None,
    jobs: int,
    log: Path,
    reporter: ProgressReporter,
) -> tuple[Path, BuildReport]:
    """Fetch, configure and build the pinned llama.cpp in ``work``; return the staged toolchain.

    Every tool's output goes to ``log`` (outside ``work``, so it survives a failed build); a
    finished toolchain keeps a copy as ``build.log``. The caller moves the staged dir into place
    (see ``toolchain_store.install_version``).
    """
    report = BuildReport()
    with _step(report, reporter, "fetch", "llama.cpp: getting the sources (77 MB, once)", None):
        source = obtain_sdist(cache_dir, sdist)
    with _step(report, reporter, "extract", "llama.cpp: unpacking the sources", None):
        key = progress_key("extract")
        src = _extract_vendor(source, work / "src", lambda n: reporter.advance(key, n))
    staged = work / "toolchain"
    staged.mkdir()
    for part in PYTHON_PARTS:
        if (src / part).is_dir():
            shutil.copytree(src / part, staged / part)
        elif (src / part).exists():
            shutil.copy2(src / part, staged / part)
    build = work / "build"
    with _step(report, reporter, "configure", "llama.cpp: configuring (cmake)", None):
        run_logged([_cmake(), "-S", src, "-B", build, *CMAKE_FLAGS], what="configuring llama.cpp",
                   log=log)  # fmt: skip
    with _step(report, reporter, "quantize", "llama.cpp: building llama-quantize", total=100):
        binary = _build_target(build, "llama-quantize", jobs, log, reporter, "quantize")
        shutil.copy2(binary, staged / "llama-quantize")
    with _step(report, reporter, "library", "llama.cpp: linking the quantizer library", None):
        _link_quant_library(build, staged / QUANT_LIBRARY)
        compile_kernel(staged / KERNEL_LIBRARY)
    build_server(build, staged, jobs=jobs, log=log, reporter=reporter, report=report)
    shutil.copy2(log, staged / BUILD_LOG)
    write_marker(staged, report)
    return staged, report


def write_marker(staged: Path, report: BuildReport) -> None:
    """Write the marker that makes ``staged`` a finished toolchain (last step of a build)."""
    marker = {
        "llama_cpp_python": LLAMA_CPP_PYTHON_VERSION,
        "commit": LLAMA_CPP_COMMIT,
        "format": MARKER_FORMAT,
        "server": (staged / SERVER_BINARY).is_file(),
        "server_error": report.server_error,
        "build_seconds": report.seconds,
        "build_cpu_seconds": report.cpu_seconds,
    }
    (staged / MARKER_FILE).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")


def read_marker(root: Path) -> dict[str, object] | None:
    """The marker of a provisioned toolchain, or None when absent or unreadable."""
    try:
        data = json.loads((root / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
