"""The pinned, offline llama.cpp toolchain: provisioned once into the cache dir, or reused.

The toolchain dir is laid out the way Unsloth expects (``llama-quantize``,
``convert_hf_to_gguf.py``, ``convert_lora_to_gguf.py``, ``conversion/``, ``gguf-py/`` at its root),
so the Unsloth backend can point ``UNSLOTH_LLAMA_CPP_PATH`` at it. How it is built lives in
``toolchain_build`` (its sources, libraries and marker: ``toolchain_sources``, ``toolchain_libs``,
``toolchain_marker``); how finished toolchains are stored, locked and replaced: ``toolchain_store``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DependencyMissingError
from ..progress import NullProgress, ProgressReporter
from . import toolchain_store as store
from .toolchain_build import (
    BUILD_LOG,
    CMAKE_FLAGS,
    build_toolchain,
    complete_toolchain,
    progress_key,
)
from .toolchain_libs import KERNEL_LIBRARY, QUANT_LIBRARY, compile_kernel
from .toolchain_marker import (
    IMATRIX_BINARY,
    MARKER_FILE,
    OPTIONAL_TOOLS,
    PERPLEXITY_BINARY,
    SERVER_BINARY,
    read_marker,
    untried_tools,
)
from .toolchain_sources import (
    LLAMA_CPP_COMMIT,
    LLAMA_CPP_PYTHON_VERSION,
    SDIST_NAME,
    SETUP_HINT,
    TOOLCHAIN_DIRNAME,
)

logger = logging.getLogger(__name__)

#: Files the exporter (and Unsloth) need at the toolchain root.
REQUIRED_FILES: tuple[str, ...] = (
    "llama-quantize",
    "convert_hf_to_gguf.py",
    "convert_lora_to_gguf.py",
    "gguf-py/gguf/__init__.py",
)
#: What a toolchain we provision has besides (a user's llama.cpp may lack the library).
PROVISIONED_FILES: tuple[str, ...] = (*REQUIRED_FILES, QUANT_LIBRARY)
#: What a cold build costs, as measured (README, "Set up"); said when a build starts.
BUILD_TIME_NOTE = "about 8 min on 2 idle cores, longer on a busy machine"
__all__ = [
    "CMAKE_FLAGS", "IMATRIX_BINARY", "KERNEL_LIBRARY", "LLAMA_CPP_COMMIT",
    "LLAMA_CPP_PYTHON_VERSION", "MARKER_FILE", "OPTIONAL_TOOLS", "PERPLEXITY_BINARY",
    "PROVISIONED_FILES", "QUANT_LIBRARY", "REQUIRED_FILES", "SDIST_NAME", "SERVER_BINARY",
    "SETUP_HINT", "TOOLCHAIN_DIRNAME", "SetupResult", "Toolchain", "find_toolchain",
    "missing_parts", "provision_toolchain", "toolchain_dir",
]  # fmt: skip


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
        """The AVX2 K-quant kernels, when they were compiled for this machine."""
        path = self.root / KERNEL_LIBRARY
        return path if path.is_file() else None

    @property
    def server(self) -> Path | None:
        """The ``llama-server`` binary built by ``setup``, or None (see ``require_server``)."""
        return self.tool(SERVER_BINARY)

    def tool(self, name: str) -> Path | None:
        """An optional llama.cpp binary (``llama-server``, ``llama-perplexity``,
        ``llama-imatrix``) of this toolchain, or None.

        Looked up at the root (ours, and a user's llama.cpp laid out like it) and in
        ``build/bin`` (a user's checkout built with cmake).
        """
        for path in (self.root / name, self.root / "build" / "bin" / name):
            if path.is_file() and os.access(path, os.X_OK):
                return path
        return None

    def require_server(self) -> Path:
        """Return ``llama-server``; raise with the reason when this toolchain has none.

        Raises:
            DependencyMissingError: see ``require_tool``.
        """
        return self.require_tool(SERVER_BINARY, needed_for="deploys work without it")

    def require_tool(self, name: str, *, needed_for: str | None = None) -> Path:
        """Return the optional tool ``name``; raise with the reason and the fix when absent.

        Args:
            name: the binary (one of ``OPTIONAL_TOOLS``).
            needed_for: a few words on what does without it, added to the hint of a build
                failure (e.g. ``deploys work without it``).

        Raises:
            DependencyMissingError: it failed to build (the message names the build log), was
                never built (a toolchain from before ``setup`` built it: ``setup`` adds it), or
                is not in the user's llama.cpp (``--llama-cpp``).
        """
        found = self.tool(name)
        if found is not None:
            return found
        marker = read_marker(self.root)
        errors = marker.get("tool_errors") if marker else None
        error = errors.get(name) if isinstance(errors, dict) else None
        if marker is not None and error is None and name == SERVER_BINARY:
            error = marker.get("server_error")
        if marker is None:
            message = f"no {name} in your llama.cpp at {self.root}"
            hint = (f"build it there (cmake --build build --target {name}), or drop --llama-cpp "
                    "/ DTO_LLAMA_CPP_DIR and run `deploy-to-ollama setup`")  # fmt: skip
        elif error:
            message = f"{name} failed to build: {error}"
            hint = f"see {self.root / BUILD_LOG}" + (f"; {needed_for}" if needed_for else "")
        else:
            message = f"the llama.cpp toolchain in {self.root} predates {name}"
            hint = ("run `deploy-to-ollama setup` to add it (builds only the missing tools; "
                    "`setup --force` rebuilds everything)")  # fmt: skip
        raise DependencyMissingError(message, hint=hint)

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
    """``reused`` (already there), ``external`` (user's llama.cpp), ``built``, ``completed``
    (optional tools added to an older toolchain) or ``installed`` (copied from ``prebuilt``)."""
    seconds: float
    waited: bool = False
    """Another process held the build lock and we waited for it."""
    step_seconds: dict[str, float] = field(default_factory=dict)
    """Seconds per build step (``fetch``, ``extract``, ``configure``, ``quantize``, ``library``,
    ``server``) when this call built the toolchain."""
    tool_errors: dict[str, str] = field(default_factory=dict)
    """Optional tool -> why it did not build (the toolchain is usable anyway)."""

    @property
    def server_error(self) -> str | None:
        """Why ``llama-server`` did not build, when it did not."""
        return self.tool_errors.get(SERVER_BINARY)


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
    """Where ``setup`` provisions the pinned toolchain inside ``cache_dir`` (a pointer to the
    current version; see ``toolchain_store``)."""
    return cache_dir / TOOLCHAIN_DIRNAME


def _wanted(*, with_server: bool, with_tools: bool) -> tuple[str, ...]:
    """The optional tools a caller wants tried (``setup`` wants all; deploys none)."""
    if with_tools:
        return tuple(OPTIONAL_TOOLS)
    return (SERVER_BINARY,) if with_server else ()


def _incomplete(version: Path, wanted: tuple[str, ...]) -> tuple[str, ...]:
    """The wanted tools the toolchain in ``version`` never tried (one whose build failed was
    tried: retrying would fail the same way)."""
    return tuple(t for t in untried_tools(read_marker(version) or {}) if t in wanted)


def _finished(final: Path) -> Path | None:
    """The finished toolchain version ``final`` points at (marker and files there), or None."""
    version = store.current_version(final)
    if version is None or read_marker(version) is None or missing_parts(version, PROVISIONED_FILES):
        return None
    return version


def _provisioned(final: Path, *, wanted: tuple[str, ...] = ()) -> Toolchain | None:
    """The finished toolchain ``final`` points at, marked in use by this process; else None.

    ``wanted``: a toolchain that never tried to build one of these optional tools does not
    count (``setup`` completes it).
    """
    for _ in range(3):  # a rebuild may retire the version between our look and our lock
        version = _finished(final)
        if version is None or _incomplete(version, wanted):
            return None
        if store.mark_in_use(version):
            return Toolchain(version)
    return None


def find_toolchain(cache_dir: Path, llama_cpp_dir: Path | None = None) -> Toolchain:
    """Return the toolchain to use: the user's (flag/env) first, else the provisioned one.

    Raises:
        DependencyMissingError: none is provisioned, or the user's lacks a part.
    """
    if llama_cpp_dir is not None:
        return _check_usable(_external_root(llama_cpp_dir), source="DTO_LLAMA_CPP_DIR/--llama-cpp")
    root = toolchain_dir(cache_dir)
    found = _provisioned(root)
    if found is None:
        raise DependencyMissingError(
            f"llama.cpp toolchain not provisioned (or from an older version) in {root}",
            hint=SETUP_HINT,
        )
    return _check_usable(found.root, source="provisioned")


def provision_toolchain(
    cache_dir: Path,
    *,
    llama_cpp_dir: Path | None = None,
    sdist: Path | None = None,
    jobs: int | None = None,
    force: bool = False,
    with_server: bool = False,
    with_tools: bool = False,
    prebuilt: Path | None = None,
    progress: ProgressReporter | None = None,
) -> SetupResult:
    """Provision the pinned llama.cpp toolchain once; reuse it (or the user's) afterwards.

    One process builds at a time (a file lock in the cache); another one waits, says so through
    ``progress`` and the log, and then reuses what the first built. The build happens in a work
    dir and becomes a new version that the toolchain pointer is switched to atomically, so an
    interrupted setup leaves nothing half-built under the final name and a rebuild never removes
    a toolchain another process is using (see ``toolchain_store``).

    Args:
        cache_dir: our cache dir (``DTO_CACHE_DIR``).
        llama_cpp_dir: a llama.cpp the user already has; checked and used as is.
        sdist: a local llama-cpp-python sdist to take the sources from.
        jobs: parallel build jobs (default: CPU count).
        force: rebuild even when a provisioned toolchain exists.
        with_server: a toolchain from before ``setup`` built llama-server gets it.
        with_tools: a toolchain from before ``setup`` built llama-perplexity and llama-imatrix
            gets them, and llama-server (``setup`` asks for this; deploys, which need none of
            them, do not). Getting them *completes* the toolchain: what is there is copied into
            a new version, only the missing tools are built (``complete_toolchain``).
        prebuilt: install this finished toolchain (same pinned commit, e.g. from another cache)
            instead of building; it goes through the same lock and switch.
        progress: stage reporter.

    Raises:
        DependencyMissingError: cmake/compiler missing, or the sources cannot be obtained.
        ConversionError: the build of llama-quantize failed (the message names the log).
    """
    reporter = progress or NullProgress()
    started = time.monotonic()
    if llama_cpp_dir is not None:
        tool = _check_usable(_external_root(llama_cpp_dir), source="--llama-cpp/DTO_LLAMA_CPP_DIR")
        return SetupResult(tool, "external", time.monotonic() - started)
    final = toolchain_dir(cache_dir)
    wanted = _wanted(with_server=with_server, with_tools=with_tools)
    if not force and (found := _provisioned(final, wanted=wanted)) is not None:
        compile_kernel(found.root / KERNEL_LIBRARY)  # toolchains from before the kernel get it now
        return SetupResult(found, "reused", time.monotonic() - started)
    with store.build_lock(final, on_wait=lambda who: _say_waiting(reporter, who, final)) as waited:
        if waited:
            reporter.done(progress_key("wait"))
        # Whoever we waited for has just built it: a second build, even forced, would be waste.
        if (not force or waited) and (found := _provisioned(final, wanted=wanted)):
            return SetupResult(found, "reused", time.monotonic() - started, waited=waited)
        store.collect_garbage(final)
        existing = None if force or prebuilt is not None else _finished(final)
        work = Path(tempfile.mkdtemp(prefix=store.work_prefix(final), dir=cache_dir))
        try:
            if prebuilt is not None:
                staged, steps, errors = _copy_prebuilt(prebuilt, work, reporter), {}, {}
            else:
                log = final.with_name(final.name + ".build.log")
                log.write_text("", encoding="utf-8")
                _say_building(final, log, existing, wanted)
                n_jobs = jobs or os.cpu_count() or 2
                if existing is not None:
                    staged, report = complete_toolchain(
                        cache_dir, existing, work, sdist=sdist, jobs=n_jobs, log=log,
                        reporter=reporter,
                    )  # fmt: skip
                else:
                    staged, report = build_toolchain(
                        cache_dir, work, sdist=sdist, jobs=n_jobs, log=log, reporter=reporter
                    )
                steps, errors = report.seconds, report.tool_errors
            version = store.install_version(staged, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        store.collect_garbage(final)
    tool = _check_usable(version, source="provisioned")
    store.mark_in_use(version)
    logger.info("llama.cpp %s provisioned in %s", LLAMA_CPP_COMMIT, final)
    action = "installed" if prebuilt is not None else "completed" if existing else "built"
    return SetupResult(tool, action, time.monotonic() - started, waited, dict(steps), dict(errors))


def _say_building(final: Path, log: Path, existing: Path | None, wanted: tuple[str, ...]) -> None:
    """Say what is built and where its log is: visible at the default level even where no
    progress bar can be drawn."""
    if existing is not None:
        logger.warning(
            "adding %s to the llama.cpp toolchain in %s (the rest is kept); log: %s",
            ", ".join(_incomplete(existing, wanted)), final, log,
        )  # fmt: skip
        return
    logger.warning(
        "building llama.cpp %s into %s, once per machine (%s); log: %s",
        LLAMA_CPP_COMMIT, final, BUILD_TIME_NOTE, log,
    )  # fmt: skip


def _say_waiting(reporter: ProgressReporter, who: str, final: Path) -> None:
    message = f"waiting for {who} to finish building llama.cpp in {final.parent}"
    logger.warning("%s", message)
    reporter.start(progress_key("wait"), message, total=None)


def _copy_prebuilt(prebuilt: Path, work: Path, reporter: ProgressReporter) -> Path:
    """Stage a copy of a finished toolchain (checked first: marker and every provisioned file)."""
    lacks = ", ".join(missing_parts(prebuilt, (*PROVISIONED_FILES, MARKER_FILE)))
    if lacks:
        raise DependencyMissingError(
            f"{prebuilt} is not a finished llama.cpp toolchain (lacks {lacks})", hint=SETUP_HINT
        )
    reporter.start(progress_key("install"), f"llama.cpp: copying {prebuilt}", total=None)
    staged = work / "toolchain"
    shutil.copytree(prebuilt, staged, symlinks=True,
                    ignore=shutil.ignore_patterns(store.IN_USE_FILE))  # fmt: skip
    reporter.done(progress_key("install"))
    return staged
