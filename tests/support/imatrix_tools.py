"""A toolchain with ``llama-imatrix`` and ``llama-perplexity`` for the imatrix tests.

``setup`` builds both into the toolchain root (``gguf/toolchain_build.OPTIONAL_TOOLS``); the
shared test toolchain is provisioned the way ``setup`` does it, a cached one from before the
tools is completed on first use.
"""

from __future__ import annotations

import pytest

from deploy_to_ollama.errors import DependencyMissingError
from deploy_to_ollama.gguf.imatrix import find_llama_tool
from deploy_to_ollama.gguf.toolchain import Toolchain
from support.policy import skip_or_fail

TOOLS = ("llama-imatrix", "llama-perplexity")


@pytest.fixture(scope="session")
def imatrix_toolchain(llama_cpp_full_toolchain: Toolchain) -> Toolchain:
    """The shared toolchain, with llama-imatrix and llama-perplexity."""
    for name in TOOLS:
        try:
            find_llama_tool(llama_cpp_full_toolchain, name)
        except DependencyMissingError as err:
            skip_or_fail(f"{name}: {err.message}")
    return llama_cpp_full_toolchain
