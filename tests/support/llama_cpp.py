"""Session fixture: the pinned llama.cpp toolchain, provisioned once into the test cache.

The cache is persistent (``test_cache_dir()``), so the ~3.5 min ``llama-quantize`` build happens
once per machine, and CI on the same machine reuses it. ``DTO_LLAMA_CPP_DIR`` overrides it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from support.policy import skip_or_fail, test_cache_dir


def _sdist_available() -> bool:
    from deploy_to_ollama.gguf.toolchain import SDIST_NAME

    cached = Path.home() / ".cache" / "dto-src" / SDIST_NAME
    return cached.exists() or (test_cache_dir() / "toolchain" / "src" / SDIST_NAME).exists()


@pytest.fixture(scope="session")
def llama_cpp_toolchain() -> object:
    """A usable ``Toolchain`` (provisioned on first use; the build takes minutes)."""
    from filelock import FileLock

    from deploy_to_ollama.errors import DeployError
    from deploy_to_ollama.gguf.toolchain import provision_toolchain

    external = os.environ.get("DTO_LLAMA_CPP_DIR")
    if external:
        return provision_toolchain(test_cache_dir(), llama_cpp_dir=Path(external)).toolchain
    if shutil.which("cmake") is None and not _sdist_available():
        skip_or_fail("cmake and the llama-cpp-python sdist are needed to build llama.cpp")
    cache = test_cache_dir() / "toolchain"
    cache.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(cache / ".lock")):
            return provision_toolchain(cache, jobs=2).toolchain
    except DeployError as err:
        skip_or_fail(f"llama.cpp toolchain unavailable: {err}")
        raise
