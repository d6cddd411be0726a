"""A real llama-server (built by ``deploy-to-ollama setup``) on 127.0.0.1, for the tests.

Ollama 0.30+ runs GGUF models on llama.cpp's llama-server, and on its "native" template path
the prompt is rendered by llama.cpp's own Jinja engine. This starts the llama-server of our
pinned toolchain on a free port with a GGUF, waits until ``/health`` answers, and stops it at
the end; ``/apply-template`` then shows the prompt llama.cpp renders (same body as its chat
endpoint: messages, tools, ``chat_template_kwargs``).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.ollama_server import free_port
from support.policy import skip_or_fail

#: A cold start loads the model and warms nothing (``--no-warmup``): seconds even when busy.
START_TIMEOUT_S = 120.0


class LlamaServerError(RuntimeError):
    """llama-server did not start; the message names its log."""


@dataclass
class LlamaServer:
    """A running llama-server and how to talk to it."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def get_json(self, path: str) -> Any:
        """GET ``path`` and decode the JSON reply."""
        with urllib.request.urlopen(self.url + path, timeout=30) as reply:
            return json.load(reply)

    def post_json(self, path: str, body: dict[str, Any]) -> Any:
        """POST ``body`` as JSON to ``path`` and decode the JSON reply."""
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as reply:
            return json.load(reply)

    def apply_template(self, messages: list[dict[str, Any]], **fields: Any) -> str:
        """The prompt llama.cpp's Jinja engine renders for ``messages`` (plus tools, kwargs)."""
        return str(self.post_json("/apply-template", {"messages": messages, **fields})["prompt"])

    def stop(self) -> None:
        """Terminate the server and wait for it to exit."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _health(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False  # refused while starting, 503 while loading


def _tail(log: Path, lines: int = 5) -> str:
    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    return " | ".join(text.strip().splitlines()[-lines:])


def start_llama_server(
    binary: Path,
    model: Path,
    log_dir: Path,
    *,
    args: Sequence[str] = (),
    attempts: int = 3,
) -> LlamaServer:
    """Start ``binary`` serving ``model`` on 127.0.0.1 and a free port; wait for ``/health``.

    A port taken between our look and the server's bind is retried with another one.

    Raises:
        LlamaServerError: it exited or did not answer in time (the message names the log).
    """
    from deploy_to_ollama._subprocess import kill_with_parent

    log_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(attempts):
        port = free_port()
        log = log_dir / f"llama-server-{port}.log"
        command = [
            str(binary), "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
            "--jinja", "--ctx-size", "512", "--parallel", "1", "--threads", "1", "--no-warmup",
            *args,
        ]  # fmt: skip
        with log.open("wb") as sink:
            process = subprocess.Popen(
                command, stdout=sink, stderr=subprocess.STDOUT, preexec_fn=kill_with_parent
            )
        server = LlamaServer(f"http://127.0.0.1:{port}", process, log)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if _health(server.url):
                return server
            try:  # wait for the process to exit, at most a moment, before asking again
                process.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                continue
            break
        server.stop()
        if "couldn't bind" not in _tail(log, 50):
            raise LlamaServerError(f"llama-server did not start (see {log}): {_tail(log)}")
    raise LlamaServerError(f"llama-server found no free port in {attempts} attempts")


# --------------------------------------------------------------------------- pytest plugin


@pytest.fixture(scope="session")
def llama_server_binary() -> Path:
    """The ``llama-server`` of the shared toolchain (``setup`` builds it beside llama-quantize)."""
    from deploy_to_ollama.errors import DependencyMissingError
    from support.llama_cpp import provision_shared

    toolchain: Any = provision_shared(with_server=True)
    try:
        return Path(toolchain.require_server())
    except DependencyMissingError as err:
        skip_or_fail(f"{err.message} ({err.hint})")
        raise


@pytest.fixture(scope="session")
def tiny_llama_server(
    llama_server_binary: Path, tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LlamaServer]:
    """llama-server on the tiny ChatML GGUF (``support.ollama_server.write_tiny_gguf``)."""
    server = start_llama_server(llama_server_binary, tiny_gguf, tmp_path_factory.mktemp("llama"))
    try:
        yield server
    finally:
        server.stop()
