"""The pinned llama.cpp toolchain: provisioned once, reused, laid out the way Unsloth expects."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deploy_to_ollama.cli import app
from deploy_to_ollama.errors import DependencyMissingError
from deploy_to_ollama.gguf.quantizer import CXX_SYMBOLS
from deploy_to_ollama.gguf.toolchain import (
    KERNEL_LIBRARY,
    MARKER_FILE,
    PROVISIONED_FILES,
    QUANT_LIBRARY,
    find_toolchain,
    provision_toolchain,
)


def test_missing_toolchain_says_run_setup(tmp_path: Path) -> None:
    with pytest.raises(DependencyMissingError) as info:
        find_toolchain(tmp_path)
    assert info.value.exit_code == 4
    assert "deploy-to-ollama setup" in (info.value.hint or "")


def test_external_llama_cpp_missing_parts_are_named(tmp_path: Path) -> None:
    (tmp_path / "convert_hf_to_gguf.py").write_text("")
    with pytest.raises(DependencyMissingError, match="llama-quantize") as info:
        find_toolchain(tmp_path / "cache", tmp_path)
    assert "gguf-py" in str(info.value)


@pytest.mark.slow
def test_provisioned_layout(llama_cpp_toolchain: Any) -> None:
    root = Path(llama_cpp_toolchain.root)
    for rel in (*PROVISIONED_FILES, "conversion/__init__.py", MARKER_FILE):
        assert (root / rel).exists(), rel
    marker = json.loads((root / MARKER_FILE).read_text())
    assert marker["commit"] == "0c1e570"
    run = subprocess.run([root / "llama-quantize"], capture_output=True, text=True, check=False)
    assert "usage" in (run.stdout + run.stderr).lower()
    # Static: the same binary runs on the GPU machine (Unsloth backend).
    ldd = subprocess.run(["ldd", root / "llama-quantize"], capture_output=True, text=True)
    assert "not a dynamic executable" in (ldd.stdout + ldd.stderr)
    # The in-process quantizer library exports llama.cpp's type selection and ggml's quantizer.
    nm = subprocess.run(["nm", "-D", "--defined-only", root / QUANT_LIBRARY], capture_output=True)
    for symbol in (*CXX_SYMBOLS.values(), "ggml_quantize_chunk"):
        assert f" T {symbol}\n".encode() in nm.stdout, symbol
    if platform.machine() == "x86_64":  # the AVX2 Q4_K kernel is compiled where it can run
        assert (root / KERNEL_LIBRARY).is_file()


@pytest.mark.slow
def test_setup_is_idempotent_and_reuses(llama_cpp_toolchain: Any) -> None:
    cache = Path(llama_cpp_toolchain.root).parent
    started = time.monotonic()
    again = provision_toolchain(cache)
    assert again.action == "reused"
    assert again.toolchain.root == Path(llama_cpp_toolchain.root)
    assert time.monotonic() - started < 5


@pytest.mark.slow
def test_setup_cli_uses_an_existing_llama_cpp(llama_cpp_toolchain: Any) -> None:
    result = CliRunner().invoke(
        app, ["setup", "--llama-cpp", str(llama_cpp_toolchain.root), "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["action"] == "external"
    assert payload["llama_cpp_dir"] == str(llama_cpp_toolchain.root)


def test_setup_cli_reports_a_broken_llama_cpp(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["setup", "--llama-cpp", str(tmp_path)])
    assert result.exit_code != 0
    assert isinstance(result.exception, DependencyMissingError)
