"""llama-server bad input (issue 13): a port already in use gets another free port; a
llama-server that fails to start is one line naming its log, exit 4, and ``deploy`` (the Go
route) still works with that toolchain.

Real parts only: the shared toolchain's llama-server, a real socket or a real second
llama-server holding the port, a llama-server that really exits at once (a script in a copy of
the real toolchain, since a broken build cannot be produced on purpose), the real test Ollama.
"""

from __future__ import annotations

import json
import socket
import stat
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.chat_template.native import NativeUnavailable, try_verify_native
from deploy_to_ollama.chat_template.source import TemplateSource
from deploy_to_ollama.gguf.llama_server import start_llama_server
from support.cli import run_cli
from support.llama_server import LlamaServer
from support.ollama_server import TINY_CHAT_TEMPLATE, OllamaServer, write_tiny_gguf

DIES = "#!/bin/sh\necho 'error: this llama-server cannot start' >&2\nexit 1\n"


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _props(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/props", timeout=30) as reply:
        props: dict[str, Any] = json.load(reply)
    return props


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port on 127.0.0.1 held by a listening socket that is not llama-server."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.slow
def test_a_port_in_use_gets_another_free_port(
    llama_server_binary: Path, tiny_gguf: Path, held_port: int, tmp_path: Path
) -> None:
    with start_llama_server(llama_server_binary, tiny_gguf, tmp_path, port=held_port) as server:
        assert _port(server.url) != held_port
        assert _props(server.url)["model_path"] == str(tiny_gguf)
        assert server.tokenize("hi")  # it answers
    # The first attempt really ran into the held port, and its log says so.
    refused = tmp_path / f"llama-server-{held_port}.log"
    assert "couldn't bind" in refused.read_text(encoding="utf-8")


@pytest.mark.slow
def test_a_port_held_by_another_llama_server_is_not_mistaken_for_ours(
    llama_server_binary: Path, tiny_llama_server: LlamaServer, tmp_path: Path
) -> None:
    """The other server answers ``/health`` on that port; ours must not be taken for it."""
    ours = write_tiny_gguf(tmp_path / "ours.gguf")
    taken = _port(tiny_llama_server.url)
    with start_llama_server(llama_server_binary, ours, tmp_path, port=taken) as server:
        assert _port(server.url) != taken
        assert _props(server.url)["model_path"] == str(ours)
    assert _props(tiny_llama_server.url)["model_path"] != str(ours)  # the other one still runs


@pytest.mark.slow
def test_a_free_port_asked_for_is_used(
    llama_server_binary: Path, tiny_gguf: Path, tmp_path: Path
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        wanted = int(sock.getsockname()[1])
    with start_llama_server(llama_server_binary, tiny_gguf, tmp_path, port=wanted) as server:
        assert _port(server.url) == wanted


# ------------------------------------------------ a llama-server that fails to start


@pytest.fixture
def dying_server_toolchain(llama_cpp_toolchain: Any, tmp_path: Path) -> Path:
    """A copy (symlinks) of the real toolchain whose llama-server exits at once."""
    real = Path(llama_cpp_toolchain.root)
    root = tmp_path / "llama.cpp"
    root.mkdir()
    for entry in real.iterdir():
        if entry.name != "llama-server":
            (root / entry.name).symlink_to(entry)
    server = root / "llama-server"
    server.write_text(DIES, encoding="utf-8")
    server.chmod(server.stat().st_mode | stat.S_IXUSR)
    return root


def _chatml(tmp_path: Path) -> Path:
    path = tmp_path / "chat_template.jinja"
    path.write_text(TINY_CHAT_TEMPLATE, encoding="utf-8")
    return path


def test_a_server_that_fails_to_start_is_unavailable_naming_its_log(
    dying_server_toolchain: Path, tmp_path: Path
) -> None:
    """For ``deploy``'s route choice: no exception, the reason names the log."""
    source = TemplateSource(
        template=TINY_CHAT_TEMPLATE, origin=Path("t.jinja"), kind="jinja", eos_token="<|im_end|>"
    )
    result = try_verify_native(source, dying_server_toolchain / "llama-server", log_dir=tmp_path)
    assert isinstance(result, NativeUnavailable) and not result.verified
    log = Path(result.reason.split("(see ", 1)[1].split(")", 1)[0])
    assert log.parent == tmp_path and "cannot start" in log.read_text(encoding="utf-8")


@pytest.mark.slow
@pytest.mark.ollama
def test_deploy_works_on_the_go_route_when_llama_server_fails_to_start(
    dying_server_toolchain: Path,
    ollama_server: OllamaServer,
    taught: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DTO_LLAMA_CPP_DIR", str(dying_server_toolchain))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # The native check alone: one line naming the log, exit 4.
    code, _out, err = run_cli(["template", "diff", str(_chatml(tmp_path)), "--native"], capsys)
    assert code == 4, err
    error = next(line for line in err.splitlines() if line.startswith("Error:"))
    assert "did not start" in error and "(see " in error
    # The deploy with the same toolchain: the Go TEMPLATE, verified, registered, exit 0.
    argv = [
        str(taught.adapter_dir), "--name", "llama-server-dies", "--quant", "q8_0",
        "--host", ollama_server.host, "--keep", str(tmp_path / "keep"), "--no-check",
        "--force", "--json",
    ]  # fmt: skip
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["ok"] and report["template_verified"], report
    with urllib.request.urlopen(
        urllib.request.Request(
            ollama_server.host + "/api/show",
            data=json.dumps({"model": "llama-server-dies"}).encode(),
        ),
        timeout=60,
    ) as reply:
        assert "<|" in json.load(reply)["template"]  # our TEMPLATE is registered
