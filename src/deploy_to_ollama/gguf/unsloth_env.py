"""Making Unsloth run here: whether it can, and offline on a private copy of our llama.cpp.

Everything ``export_with_unsloth`` sets up before it loads a model: the availability check
(without importing unsloth, whose import patches torch), the staged llama.cpp dir Unsloth may
write into, and the environment that keeps it from cloning, building or downloading anything.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import shutil
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DependencyMissingError

#: What Unsloth needs in its llama.cpp dir (unsloth_zoo/llama_cpp.py ``check_llama_cpp`` and
#: ``_CONVERTER_STAGE_REQUIRED``): a runnable quantizer, the converter and its packages.
LLAMA_CPP_REQUIRED: tuple[str, ...] = (
    "llama-quantize",
    "convert_hf_to_gguf.py",
    "convert_lora_to_gguf.py",
    "gguf-py/gguf/__init__.py",
)
LLAMA_CPP_OPTIONAL: tuple[str, ...] = ("conversion",)


@dataclass(frozen=True, slots=True)
class UnslothAvailability:
    """Whether ``--backend unsloth`` can run here, and if not, why."""

    available: bool
    reason: str


def unsloth_availability() -> UnslothAvailability:
    """Tell whether Unsloth can run, without importing unsloth (its import patches torch).

    Only ``torch`` is imported, and only when installed, to ask ``torch.cuda.is_available()``.
    """
    for module in ("torch", "unsloth", "unsloth_zoo"):
        if importlib.util.find_spec(module) is None:
            return UnslothAvailability(
                available=False, reason=f"python package {module!r} is missing"
            )
    import torch

    if not torch.cuda.is_available():
        return UnslothAvailability(available=False, reason="no CUDA GPU is visible to torch")
    return UnslothAvailability(available=True, reason="unsloth and a CUDA GPU are available")


def require_unsloth() -> None:
    """Refuse the unsloth backend, before any heavy work, where it cannot run.

    Raises:
        DependencyMissingError: unsloth (or unsloth_zoo, torch) is missing, or no CUDA GPU.
    """
    availability = unsloth_availability()
    if not availability.available:
        raise DependencyMissingError(
            f"the unsloth backend cannot run: {availability.reason}",
            hint="use --backend llama.cpp (CPU), or install unsloth on a CUDA machine",
        )


def check_llama_cpp_dir(llama_cpp_dir: Path) -> None:
    """Refuse a llama.cpp dir Unsloth would not accept (it would then try to install its own).

    Raises:
        DependencyMissingError: a required file is missing or llama-quantize is not executable.
    """
    missing = [rel for rel in LLAMA_CPP_REQUIRED if not (llama_cpp_dir / rel).exists()]
    if missing:
        raise DependencyMissingError(
            f"llama.cpp at {llama_cpp_dir} lacks {', '.join(missing)}",
            hint="run `deploy-to-ollama setup` or point DTO_LLAMA_CPP_DIR at a built llama.cpp",
        )
    if not os.access(llama_cpp_dir / "llama-quantize", os.X_OK):
        raise DependencyMissingError(
            f"{llama_cpp_dir / 'llama-quantize'} is not executable",
            hint=f"chmod +x {llama_cpp_dir / 'llama-quantize'} or rerun `deploy-to-ollama setup`",
        )


def staged_llama_cpp_dir(toolchain_dir: Path, cache_dir: Path) -> Path:
    """Where ``stage_llama_cpp_dir`` puts the copy of ``toolchain_dir``: stable per toolchain.

    Stable because unsloth_zoo freezes its llama.cpp dir at import, so every export in one
    process must name the same dir.
    """
    digest = hashlib.sha256(str(toolchain_dir.resolve()).encode()).hexdigest()[:12]
    return cache_dir / "unsloth-llama.cpp" / digest


def stage_llama_cpp_dir(toolchain_dir: Path, cache_dir: Path) -> Path:
    """Copy our llama.cpp toolchain into a private, writable dir laid out for Unsloth.

    Unsloth writes a patched ``unsloth_convert_hf_to_gguf.py`` into its llama.cpp dir and
    purges bytecode there, so it gets a copy and the shared toolchain stays pristine. The copy
    is refreshed on every call, so a rebuilt toolchain is picked up.

    Args:
        toolchain_dir: the provisioned llama.cpp (``llama-quantize`` beside the converter).
        cache_dir: cache root; the copy goes to ``staged_llama_cpp_dir(toolchain_dir, cache_dir)``.

    Returns:
        The staged dir.

    Raises:
        DependencyMissingError: the toolchain lacks something Unsloth needs.
    """
    check_llama_cpp_dir(toolchain_dir)
    stage_dir = staged_llama_cpp_dir(toolchain_dir, cache_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    for rel in ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py"):
        shutil.copy2(toolchain_dir / rel, stage_dir / rel)
    # Linked, not copied: a shared-lib build finds its libggml through RUNPATH=$ORIGIN, which
    # follows the link to the real binary.
    quantize = stage_dir / "llama-quantize"
    quantize.unlink(missing_ok=True)
    quantize.symlink_to((toolchain_dir / "llama-quantize").resolve())
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for rel in ("gguf-py", *LLAMA_CPP_OPTIONAL):
        if (toolchain_dir / rel).is_dir():
            shutil.copytree(toolchain_dir / rel, stage_dir / rel, ignore=ignore, dirs_exist_ok=True)
    return stage_dir


def unsloth_environment(llama_cpp_dir: Path, cache_dir: Path) -> dict[str, str]:
    """The variables that keep Unsloth offline and on our llama.cpp.

    Names from unsloth_zoo/llama_cpp.py (2026.10.9): ``UNSLOTH_LLAMA_CPP_PATH`` is read once,
    at import, into ``LLAMA_CPP_DEFAULT_DIR``; ``UNSLOTH_LLAMA_CPP_SCRIPTS_DIR`` pins the
    converter and "fails closed rather than hitting the network"; ``UNSLOTH_LLAMA_CPP_OFFLINE``
    forbids converter downloads; ``UNSLOTH_AUTO_INSTALL=0`` forbids pip/apt installs.
    ``UNSLOTH_COMPILE_LOCATION`` keeps its compiled-kernel cache out of the user's cwd.
    """
    root = str(llama_cpp_dir.resolve())
    return {
        "UNSLOTH_LLAMA_CPP_PATH": root,
        "UNSLOTH_LLAMA_CPP_SCRIPTS_DIR": root,
        "UNSLOTH_LLAMA_CPP_OFFLINE": "1",
        "UNSLOTH_AUTO_INSTALL": "0",
        "UNSLOTH_LLAMA_CPP_CONVERTER_CACHE": str(cache_dir / "unsloth-converter"),
        "UNSLOTH_COMPILE_LOCATION": str(cache_dir / "unsloth-compiled"),
    }


def configure_unsloth_environment(
    llama_cpp_dir: Path,
    cache_dir: Path,
    environ: MutableMapping[str, str] | None = None,
    modules: Mapping[str, object] | None = None,
) -> dict[str, str]:
    """Set ``unsloth_environment`` in the process env; must run before unsloth is imported.

    If unsloth_zoo was already imported with another llama.cpp dir, its frozen default would
    win, so that is refused rather than silently using the wrong toolchain.

    Returns:
        The variables that were set.

    Raises:
        DependencyMissingError: unsloth_zoo is already imported with a different llama.cpp dir.
    """
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    wanted = unsloth_environment(llama_cpp_dir, cache_dir)
    zoo = modules.get("unsloth_zoo.llama_cpp")
    frozen = getattr(zoo, "LLAMA_CPP_DEFAULT_DIR", None)
    if frozen is not None and os.path.realpath(str(frozen)) != wanted["UNSLOTH_LLAMA_CPP_PATH"]:
        raise DependencyMissingError(
            f"unsloth was imported before deploy-to-ollama could point it at {llama_cpp_dir}",
            hint="run the export in a fresh process, or set UNSLOTH_LLAMA_CPP_PATH yourself",
        )
    environ.update(wanted)
    return wanted


def import_fast_language_model() -> Any:
    try:
        # unsloth must be imported before transformers/peft to patch them.
        importlib.import_module("unsloth")
        return importlib.import_module("unsloth").FastLanguageModel
    except ImportError as err:
        raise DependencyMissingError(
            f"unsloth failed to import: {err}",
            hint="pip install unsloth unsloth_zoo, or use --backend llama.cpp",
        ) from err
