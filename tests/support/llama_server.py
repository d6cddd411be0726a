"""A real llama-server (built by ``deploy-to-ollama setup``) on 127.0.0.1, for the tests.

Ollama 0.30+ runs GGUF models on llama.cpp's llama-server, and on its "native" template path
the prompt is rendered by llama.cpp's own Jinja engine. The server is started and stopped by
the product's own driver (``deploy_to_ollama.gguf.llama_server``: free port, ``/health``, a
port taken meanwhile retried); this plugin adds the session fixtures and ``get_json``.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.gguf import llama_server as driver
from support.policy import skip_or_fail


class LlamaServer(driver.LlamaServer):
    """The product's running llama-server, plus a plain GET for the tests."""

    def get_json(self, path: str) -> Any:
        """GET ``path`` and decode the JSON reply."""
        with urllib.request.urlopen(self.url + path, timeout=30) as reply:
            return json.load(reply)


def start_llama_server(
    binary: Path, model: Path, log_dir: Path, *, args: Sequence[str] = ()
) -> LlamaServer:
    """``driver.start_llama_server`` (one thread), as this module's ``LlamaServer``."""
    server = driver.start_llama_server(binary, model, log_dir, args=args)
    return LlamaServer(server.url, server.process, server.log)


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
