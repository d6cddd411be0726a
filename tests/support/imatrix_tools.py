"""A toolchain with ``llama-imatrix`` for the imatrix tests.

``setup`` builds llama-imatrix into the toolchain root (the ``quality`` change to
``toolchain_build``); until a toolchain has it, the binaries built from the same pinned sources
with the same cmake flags in ``DTO_TEST_LLAMA_TOOLS`` (default ``~/.cache/dto-scratch/bin``)
are linked beside the shared toolchain's files in a temp folder. Neither: skip (fail under CI).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deploy_to_ollama.errors import DependencyMissingError
from deploy_to_ollama.gguf.imatrix import find_llama_tool
from deploy_to_ollama.gguf.toolchain import Toolchain
from support.policy import skip_or_fail

TOOLS = ("llama-imatrix", "llama-perplexity")


def _tools_dir() -> Path:
    default = Path.home() / ".cache" / "dto-scratch" / "bin"
    return Path(os.environ.get("DTO_TEST_LLAMA_TOOLS", default))


def with_llama_tools(toolchain: Toolchain, work: Path) -> Toolchain:
    """``toolchain`` itself when it has llama-imatrix, else a linked copy that has it."""
    try:
        find_llama_tool(toolchain, "llama-imatrix")
        return toolchain
    except DependencyMissingError:
        pass
    extra = _tools_dir()
    if not (extra / "llama-imatrix").is_file():
        skip_or_fail(f"llama-imatrix: not in {toolchain.root} nor in {extra}")
    work.mkdir(parents=True, exist_ok=True)
    for entry in toolchain.root.iterdir():
        (work / entry.name).symlink_to(entry)
    for name in TOOLS:
        if (extra / name).is_file() and not (work / name).exists():
            (work / name).symlink_to(extra / name)
    return Toolchain(root=work)


@pytest.fixture(scope="session")
def imatrix_toolchain(
    llama_cpp_toolchain: Toolchain, tmp_path_factory: pytest.TempPathFactory
) -> Toolchain:
    """The shared toolchain, with llama-imatrix and llama-perplexity."""
    return with_llama_tools(llama_cpp_toolchain, tmp_path_factory.mktemp("llama-tools"))
