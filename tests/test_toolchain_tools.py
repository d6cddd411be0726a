"""``setup`` builds llama-perplexity and llama-imatrix too, and completes an older toolchain.

The completion runs real cmake on a stand-in source tree (an sdist with the pinned layout whose
CMakeLists has the three optional targets as one-file C programs): the real llama.cpp build is
minutes, and what is tested here is the provisioning around it (which targets are built, what is
kept, what the marker says, which error a missing tool gives).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from deploy_to_ollama.errors import DependencyMissingError
from deploy_to_ollama.gguf.toolchain import (
    IMATRIX_BINARY,
    MARKER_FILE,
    PERPLEXITY_BINARY,
    PROVISIONED_FILES,
    SDIST_NAME,
    SERVER_BINARY,
    Toolchain,
    provision_toolchain,
)
from deploy_to_ollama.gguf.toolchain_build import LLAMA_CPP_PYTHON_VERSION
from deploy_to_ollama.gguf.toolchain_store import release

_CMAKE = """cmake_minimum_required(VERSION 3.16)
project(standin C)
add_executable(llama-server tool.c)
add_executable(llama-perplexity tool.c)
add_executable(llama-imatrix {imatrix})
set_target_properties(llama-server llama-perplexity llama-imatrix
                      PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${{CMAKE_BINARY_DIR}}/bin)
"""


def _standin_sdist(dest: Path, *, imatrix_builds: bool = True) -> Path:
    """An sdist laid out like llama-cpp-python's whose vendored tree builds three tiny tools."""
    tree = dest / "tree" / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}" / "vendor" / "llama.cpp"
    tree.mkdir(parents=True)
    (tree / "tool.c").write_text('#include <stdio.h>\nint main(void) { puts("ok"); return 0; }\n')
    (tree / "broken.c").write_text("int main(void) { return }\n")
    (tree / "CMakeLists.txt").write_text(
        _CMAKE.format(imatrix="tool.c" if imatrix_builds else "broken.c")
    )
    sdist = dest / SDIST_NAME
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(dest / "tree" / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}",
                arcname=f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}")  # fmt: skip
    return sdist


def _old_toolchain(root: Path, marker: dict[str, object]) -> Path:
    for rel in (*PROVISIONED_FILES, SERVER_BINARY):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"#!/bin/sh\necho old {rel}\n")
        (root / rel).chmod(0o755)
    (root / MARKER_FILE).write_text(json.dumps(marker))
    return root


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def needs_cmake() -> None:
    if shutil.which("cmake") is None or shutil.which("cc") is None:
        pytest.skip("cmake and a C compiler are needed")  # the CI image has both


def test_setup_completes_a_toolchain_from_before_the_tools_keeping_what_is_there(
    tmp_path: Path, needs_cmake: None
) -> None:
    cache = tmp_path / "cache"
    old = _old_toolchain(tmp_path / "old", {"commit": "0c1e570", "format": 2, "server": True,
                                           "build_seconds": {"quantize": 300.0}})  # fmt: skip
    provision_toolchain(cache, prebuilt=old)
    for_deploy = provision_toolchain(cache)  # deploys need no tool: nothing is built for them
    assert for_deploy.action == "reused"
    with pytest.raises(DependencyMissingError, match=f"predates {PERPLEXITY_BINARY}") as info:
        for_deploy.toolchain.require_tool(PERPLEXITY_BINARY)
    assert "deploy-to-ollama setup" in (info.value.hint or "")
    kept = {rel: _digest(old / rel) for rel in (*PROVISIONED_FILES, SERVER_BINARY)}

    sdist = _standin_sdist(tmp_path / "sdist")
    done = provision_toolchain(cache, with_server=True, with_tools=True, sdist=sdist, jobs=1)

    assert done.action == "completed"
    root = done.toolchain.root
    assert root != for_deploy.toolchain.root  # a new version: the one in use is not changed
    assert {rel: _digest(root / rel) for rel in kept} == kept  # not rebuilt: the same bytes
    for tool in (PERPLEXITY_BINARY, IMATRIX_BINARY):
        assert done.toolchain.require_tool(tool) == root / tool
    assert set(done.step_seconds) == {"fetch", "extract", "configure", "perplexity", "imatrix"}
    marker = json.loads((root / MARKER_FILE).read_text())
    assert marker["format"] == 3
    assert marker["tools"] == {SERVER_BINARY: True, PERPLEXITY_BINARY: True, IMATRIX_BINARY: True}
    assert marker["build_seconds"] == {"quantize": 300.0}  # the original build's, kept
    again = provision_toolchain(cache, with_server=True, with_tools=True, sdist=sdist)
    assert (again.action, again.toolchain.root) == ("reused", root)
    for version in {for_deploy.toolchain.root, root}:
        release(version)


def test_a_tool_that_fails_to_build_is_recorded_and_named_when_needed(
    tmp_path: Path, needs_cmake: None
) -> None:
    cache = tmp_path / "cache"
    provision_toolchain(cache, prebuilt=_old_toolchain(tmp_path / "old", {"format": 1}))
    sdist = _standin_sdist(tmp_path / "sdist", imatrix_builds=False)
    done = provision_toolchain(cache, with_server=True, with_tools=True, sdist=sdist, jobs=1)
    assert done.action == "completed"
    # Format 1 never tried llama-server: the completion built it too (from the same tree).
    assert set(done.tool_errors) == {IMATRIX_BINARY}
    assert done.tool_errors[IMATRIX_BINARY].startswith(f"building {IMATRIX_BINARY} failed")
    toolchain = done.toolchain
    assert toolchain.server is not None and toolchain.tool(PERPLEXITY_BINARY) is not None
    with pytest.raises(DependencyMissingError, match=f"{IMATRIX_BINARY} failed to build") as info:
        toolchain.require_tool(IMATRIX_BINARY)
    assert info.value.exit_code == 4 and "build.log" in (info.value.hint or "")
    # A failed tool was tried: setup does not retry it on every run (it would fail the same way).
    again = provision_toolchain(cache, with_server=True, with_tools=True, sdist=sdist)
    assert again.action == "reused"
    release(toolchain.root)


def test_a_users_llama_cpp_without_llama_perplexity_says_how_to_build_it(tmp_path: Path) -> None:
    user = tmp_path / "llama.cpp"
    (user / "build" / "bin").mkdir(parents=True)
    toolchain = Toolchain(user)
    with pytest.raises(DependencyMissingError, match=f"no {PERPLEXITY_BINARY} in your") as info:
        toolchain.require_tool(PERPLEXITY_BINARY)
    assert f"--target {PERPLEXITY_BINARY}" in (info.value.hint or "")
    built = user / "build" / "bin" / PERPLEXITY_BINARY  # a cmake checkout keeps it here
    built.write_text("#!/bin/sh\n")
    built.chmod(0o755)
    assert toolchain.require_tool(PERPLEXITY_BINARY) == built
