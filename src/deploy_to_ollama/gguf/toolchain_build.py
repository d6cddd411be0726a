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
from .toolchain_store import IN_USE_FILE

logger = logging.getLogger(__name__)

#: llama-cpp-python release whose sdist vendors the llama.cpp we pin (commit 0c1e570).
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
LLAMA_CPP_COMMIT = "0c1e570"
SDIST_NAME = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
TOOLCHAIN_DIRNAME = f"llama.cpp-{LLAMA_CPP_COMMIT}"
MARKER_FILE = ".dto-toolchain.json"
#: 2: ``setup`` also tried to build llama-server (the marker says whether it worked).
#: 3: and llama-perplexity and llama-imatrix (``tools`` / ``tool_errors`` say which worked).
MARKER_FORMAT = 3
SERVER_BINARY = "llama-server"
PERPLEXITY_BINARY = "llama-perplexity"
IMATRIX_BINARY = "llama-imatrix"
#: Optional binaries of the same build tree, in build order, with the marker format that first
#: tried each (a toolchain of an older format never tried it: ``setup`` completes it).
OPTIONAL_TOOLS: dict[str, int] = {SERVER_BINARY: 2, PERPLEXITY_BINARY: 3, IMATRIX_BINARY: 3}
BUILD_LOG = "build.log"
#: llama.cpp's quantizer and type-selection rules as a shared library, for in-process quantization
#: (see ``gguf/quantizer.py``). Linked from the static archives of the same build as llama-quantize.
QUANT_LIBRARY = "libdto-llama.so"
#: Our AVX2 Q4_K/Q5_K/Q6_K kernels (``kquants_avx2.c``), bit-identical to ggml's and several times
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
#: ``[ 42%] Building ...`` (Makefiles) or ``[17/230] Building ...`` (Ninja).
_PERCENT = re.compile(r"^\[\s*(\d{1,3})%\]")
_COUNT = re.compile(r"^\[(\d+)/(\d+)\]")


@dataclass
class BuildReport:
    """What a build did: seconds per step and, for each optional tool that failed, why."""

    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    """CPU time of the step's tools: unlike wall time, it does not depend on how busy the
    machine was (wall time on an idle machine is about this divided by the build jobs)."""
    tool_errors: dict[str, str] = field(default_factory=dict)
    """Optional tool -> why it did not build (absent: built, or not tried by this build)."""
    patched: list[str] = field(default_factory=list)
    """Source files ``SOURCE_PATCHES`` changed in this build."""

    @property
    def server_error(self) -> str | None:
        """Why llama-server did not build, when it did not."""
        return self.tool_errors.get(SERVER_BINARY)


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
    """Compile the AVX2 K-quant kernels to ``dest`` unless it is there and newer than its source.

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
        run_tool(command, what="compiling the AVX2 K-quant kernels")
        os.replace(tmp, dest)
        stamp.write_text(digest, encoding="utf-8")
    except ConversionError as err:
        logger.info("no AVX2 K-quant kernels (%s); ggml's quantizer will be used", err.message)
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


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
    build = _configure(src, work / "build", log, report, reporter)
    with _step(report, reporter, "quantize", "llama.cpp: building llama-quantize", total=100):
        binary = _build_target(build, "llama-quantize", jobs, log, reporter, "quantize")
        shutil.copy2(binary, staged / "llama-quantize")
    with _step(report, reporter, "library", "llama.cpp: linking the quantizer library", None):
        _link_quant_library(build, staged / QUANT_LIBRARY)
        compile_kernel(staged / KERNEL_LIBRARY)
    for target in OPTIONAL_TOOLS:
        build_optional(build, staged, target, jobs=jobs, log=log, reporter=reporter, report=report)
    shutil.copy2(log, staged / BUILD_LOG)
    write_marker(staged, report)
    return staged, report


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


def _configure(
    src: Path, build: Path, log: Path, report: BuildReport, reporter: ProgressReporter
) -> Path:
    report.patched = patch_sources(src)
    with _step(report, reporter, "configure", "llama.cpp: configuring (cmake)", None):
        run_logged([_cmake(), "-S", src, "-B", build, *CMAKE_FLAGS], what="configuring llama.cpp",
                   log=log)  # fmt: skip
    return build


def untried_tools(marker: dict[str, object]) -> tuple[str, ...]:
    """The optional tools a toolchain with this marker never tried to build (older formats).

    >>> untried_tools({"format": 2})
    ('llama-perplexity', 'llama-imatrix')
    >>> untried_tools({"commit": "0c1e570"})  # format 1: from before llama-server
    ('llama-server', 'llama-perplexity', 'llama-imatrix')
    >>> untried_tools({"format": 3})
    ()
    >>> untried_tools({"format": 2, "tools": {"llama-perplexity": True, "llama-imatrix": False}})
    ()

    A tool the marker names (built or failed) was tried, whatever the format says: a marker
    rewritten for an older reader must not cost a rebuild.
    """
    fmt = marker.get("format", 1)
    version = fmt if isinstance(fmt, int) else 1
    tried = marker.get("tools")
    named = set(tried) if isinstance(tried, dict) else set()
    return tuple(
        tool for tool, since in OPTIONAL_TOOLS.items() if version < since and tool not in named
    )


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
    with _step(report, reporter, "fetch", "llama.cpp: getting the sources (77 MB, once)", None):
        source = obtain_sdist(cache_dir, sdist)
    with _step(report, reporter, "extract", "llama.cpp: unpacking the sources", None):
        key = progress_key("extract")
        src = _extract_vendor(source, work / "src", lambda n: reporter.advance(key, n))
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


def write_marker(
    staged: Path,
    report: BuildReport,
    *,
    earlier: dict[str, object] | None = None,
) -> None:
    """Write the marker that makes ``staged`` a finished toolchain (last step of a build).

    Every optional tool has been tried by then (built, or its error is in ``report``).
    ``earlier``: the marker of the toolchain this one completes (its build times are kept, this
    build's go under ``complete_seconds``).
    """
    marker: dict[str, object] = {
        "llama_cpp_python": LLAMA_CPP_PYTHON_VERSION,
        "commit": LLAMA_CPP_COMMIT,
        "format": MARKER_FORMAT,
        "server": (staged / SERVER_BINARY).is_file(),
        "server_error": report.server_error,
        "tools": {tool: (staged / tool).is_file() for tool in OPTIONAL_TOOLS},
        "tool_errors": {tool: report.tool_errors.get(tool) for tool in OPTIONAL_TOOLS},
        "patched": report.patched,
        "build_seconds": report.seconds,
        "build_cpu_seconds": report.cpu_seconds,
    }
    if earlier is not None:
        marker["build_seconds"] = earlier.get("build_seconds", {})
        marker["build_cpu_seconds"] = earlier.get("build_cpu_seconds", {})
        marker["complete_seconds"] = report.seconds
    (staged / MARKER_FILE).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")


def read_marker(root: Path) -> dict[str, object] | None:
    """The marker of a provisioned toolchain, or None when absent or unreadable."""
    try:
        data = json.loads((root / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
