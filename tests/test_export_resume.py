"""One Modelfile for export and deploy, resuming an interrupted export, and a reused GGUF named
for the deploy that reuses it (real llama.cpp, real test Ollama server)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama import pipeline
from deploy_to_ollama.modelfile import parse_modelfile
from support.ollama_server import OllamaServer

pytestmark = pytest.mark.slow


def _export_cli(source: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "deploy_to_ollama", "export", str(source), "--out", str(out),
        "--backend", "llama.cpp", *extra,
    ]  # fmt: skip


@pytest.mark.ollama
def test_export_writes_the_modelfile_deploy_registers_and_a_reused_gguf_takes_the_new_name(
    ollama_server: OllamaServer,
    llama_cpp_toolchain: Any,
    tiny_llama: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DTO_LLAMA_CPP_DIR", str(llama_cpp_toolchain.root))
    source = tmp_path / "lora"
    shutil.copytree(tiny_llama.adapter_dir, source)
    # Sampling and the training length must reach both Modelfiles.
    (source / "generation_config.json").write_text(json.dumps({"temperature": 0.6, "top_k": 20}))
    out = tmp_path / "out"
    env = {**os.environ}
    exported = subprocess.run(
        _export_cli(source, out, "--quant", "f16", "--name", "tiny", "--json"),
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr[-3000:]

    report = pipeline.deploy(
        source,
        name="tiny",
        quant="f16",
        host=ollama_server.host,
        keep=tmp_path / "keep",
        check=False,
    )
    deployed = (tmp_path / "keep" / "Modelfile").read_text()
    assert (out / "Modelfile").read_text() == deployed  # byte for byte, FROM ./tiny.F16.gguf
    parsed = parse_modelfile(deployed)
    assert parsed.from_ == "./tiny.F16.gguf"
    assert parsed.parameter_values("temperature") == ["0.6"]
    assert parsed.parameter_values("top_k") == ["20"]
    assert parsed.header_comment and "Written by deploy-to-ollama" in parsed.header_comment
    assert report.quant == "f16"

    # Deploying the same input under another name reuses the cached GGUF, renamed for it.
    cache = tmp_path / "cache"
    first = pipeline.deploy(
        source, name="first", quant="q8_0", host=ollama_server.host, cache_dir=cache, check=False
    )
    second = pipeline.deploy(
        source,
        name="me/second:v1",
        quant="fast_quantized",  # Unsloth's alias of q8_0
        host=ollama_server.host,
        cache_dir=cache,
        check=False,
    )
    assert dict(second.stages)["export"] == "reused"
    assert first.gguf.name == "first.Q8_0.gguf"
    assert second.gguf.name == "second.Q8_0.gguf" and second.gguf.is_file()
    assert second.gguf.parent == first.gguf.parent and not first.gguf.exists()
    assert second.quant == "q8_0"  # the alias resolved, not the flag echoed
    assert parse_modelfile(second.modelfile.read_text()).from_ == "./second.Q8_0.gguf"


def _switchable_toolchain(real_root: Path, where: Path, started: Path, block: Path) -> Path:
    """The real toolchain, except that ``llama-quantize`` blocks while ``block`` exists (after
    marking that it started), so one command can be interrupted and then rerun as is."""
    where.mkdir()
    for entry in real_root.iterdir():
        if entry.name != "llama-quantize":
            (where / entry.name).symlink_to(entry)
    script = where / "llama-quantize"
    script.write_text(
        "#!/bin/sh\n"
        f"if [ -e '{block}' ]; then touch '{started}'; exec sleep 600; fi\n"
        f"exec '{real_root / 'llama-quantize'}' \"$@\"\n",
        encoding="utf-8",
    )
    script.chmod(0o755)
    return where


def _kill_orphans(entry: str) -> None:
    """Kill the processes this test started whose environment holds ``entry``, by PID."""
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if entry.encode() in environ.read_bytes().split(b"\0"):
                os.kill(int(environ.parent.name), signal.SIGKILL)
        except OSError:
            continue


def test_a_killed_export_is_continued_by_the_same_command(
    llama_cpp_toolchain: Any, llama256: Any, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    started, block = tmp_path / "started", tmp_path / "block"
    block.touch()
    toolchain = _switchable_toolchain(llama_cpp_toolchain.root, tmp_path / "tc", started, block)
    command = _export_cli(llama256.adapter_dir, out, "--quant", "q8_0,q4_k_m", "--name", "m")
    command.append("--json")
    # Two-step route: q8_0 comes from the converter, q4_k_m from llama-quantize (held still).
    env = {**os.environ, "DTO_LLAMA_CPP_DIR": str(toolchain), "DTO_QUANTIZER": "llama-quantize"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert started.exists(), proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    _kill_orphans(f"DTO_LLAMA_CPP_DIR={toolchain}")  # the blocked llama-quantize outlives it
    finished = out / "m.Q8_0.gguf"
    assert finished.is_file() and not (out / "m.Q4_K_M.gguf").exists()
    assert not (out / "Modelfile").exists()
    leftovers = [p for p in out.iterdir() if p.name.startswith(".dto-export-pid-")]
    assert leftovers, "SIGKILL leaves the temp folder (with the dead PID in its name)"
    mtime = finished.stat().st_mtime_ns

    block.unlink()
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    payload = json.loads(rerun.stdout)
    assert payload["resumed"] == [str(finished)]
    assert not payload["reused"]
    assert {f["quant"] for f in payload["files"]} == {"q8_0", "q4_k_m"}
    assert finished.stat().st_mtime_ns == mtime  # kept, not remade
    assert (out / "m.Q4_K_M.gguf").stat().st_size > 0
    assert parse_modelfile((out / "Modelfile").read_text()).from_ == "./m.Q8_0.gguf"
    assert not any(p.exists() for p in leftovers)  # the dead run's temp folder is gone
    again = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert again.returncode == 0 and json.loads(again.stdout)["reused"] is True
