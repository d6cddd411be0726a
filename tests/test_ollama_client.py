"""The one Ollama client: its monopoly on httpx/ollama, host parsing, and the exit-code contract.

Per command (register, check, chat, compare, doctor, deploy): a closed port on 127.0.0.1 exits 4,
a malformed host exits 2, a server that answers HTML is "not an Ollama server" (exit 4, no HTML
in the message), and a model the real test server does not have exits 1 (never 3).
"""

from __future__ import annotations

import ast
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.errors import (
    DeployError,
    InputNotFoundError,
    InvalidHostError,
    ModelNotFoundError,
    NotOllamaServerError,
    RoundTripError,
)
from deploy_to_ollama.modelfile import Modelfile, render_modelfile
from deploy_to_ollama.ollama_client import OllamaClient, check_local_files, parse_host
from deploy_to_ollama.registrar import register_model
from support.cli import run_cli as _cli
from support.ollama_server import TINY_OLLAMA_TEMPLATE, OllamaServer, free_port

SRC = Path(__file__).resolve().parents[1] / "src" / "deploy_to_ollama"


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_only_the_client_package_imports_httpx_or_ollama() -> None:
    offenders = [
        str(path.relative_to(SRC))
        for path in sorted(SRC.rglob("*.py"))
        if "ollama_client" not in path.parts and {"httpx", "ollama"} & _imported_roots(path)
    ]
    # publish.py names httpx only as a string, to recognise huggingface_hub's network errors.
    assert offenders == []
    assert {"httpx", "ollama"} <= set().union(
        *(_imported_roots(p) for p in (SRC / "ollama_client").glob("*.py"))
    )


@pytest.mark.parametrize("host", ["http://[::1", "http://host:99999", "ftp://127.0.0.1:1", "[::1"])
def test_malformed_host_is_a_usage_error(host: str) -> None:
    with pytest.raises(InvalidHostError) as info:
        parse_host(host)
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value) and repr(host) in str(info.value)
    assert info.value.hint and "127.0.0.1:11434" in info.value.hint


@pytest.mark.parametrize(
    ("host", "url"),
    [
        (None, "http://127.0.0.1:11434"),
        ("[::1]:5000", "http://[::1]:5000"),
        ("https://example.com", "https://example.com:443"),
    ],
)
def test_good_hosts_parse(host: str | None, url: str) -> None:
    assert parse_host(host) == url


# --------------------------------------------------------------------------- not Ollama


class _HtmlEverywhere(BaseHTTPRequestHandler):
    """A web server that is not Ollama: every path answers 200 with an HTML page."""

    def log_message(self, *args: Any) -> None:
        return None

    def _html(self) -> None:
        body = b"<!DOCTYPE html><html><body><h1>Welcome to nginx!</h1></body></html>"
        if "Content-Length" in self.headers:
            self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._html()

    def do_POST(self) -> None:
        self._html()


class _QuietFiles(SimpleHTTPRequestHandler):
    """``python -m http.server``: 404 pages for /api/*, 501 for POST, all HTML."""

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture(params=["html-200", "http.server"])
def web_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "html-200":
        handler: Callable[..., BaseHTTPRequestHandler] = _HtmlEverywhere
    else:
        (tmp_path / "www").mkdir()
        (tmp_path / "www" / "index.html").write_text("<html><body>files</body></html>")

        def handler(*args: Any) -> BaseHTTPRequestHandler:
            return _QuietFiles(*args, directory=str(tmp_path / "www"))

    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_web_server_is_not_an_ollama_server(web_server: str) -> None:
    with pytest.raises(NotOllamaServerError) as info:
        OllamaClient(web_server).show("m")
    assert info.value.exit_code == 4
    assert f"{web_server} is not an Ollama server" in str(info.value)
    assert "<" not in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- CLI, per command


@pytest.fixture
def modelfile_path(tmp_path: Path, tiny_gguf: Path) -> Path:
    (tmp_path / "tiny.gguf").symlink_to(tiny_gguf)
    path = tmp_path / "Modelfile"
    path.write_text(render_modelfile(Modelfile(from_="./tiny.gguf", template=TINY_OLLAMA_TEMPLATE)))
    return path


def _commands(modelfile: Path, source: Path, name: str) -> dict[str, list[str]]:
    """Each command that talks to Ollama, on the model ``name`` (``--host`` appended)."""
    return {
        "register": ["register", str(modelfile), "--name", name],
        "check": ["check", name],
        "chat": ["chat", name, "--prompt", "hi"],
        "compare": ["compare", str(source), name],
        "doctor": ["doctor", name],
        "deploy": ["deploy", str(source), "--name", name],
    }


COMMANDS = ["register", "check", "chat", "compare", "doctor", "deploy"]


@pytest.mark.parametrize("command", COMMANDS)
def test_closed_port_exits_4_for_every_command(
    command: str, modelfile_path: Path, tiny_gguf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _commands(modelfile_path, tiny_gguf, "some-model")[command]
    code, _, err = _cli([*argv, "--host", f"127.0.0.1:{free_port()}"], capsys)
    assert code == 4, err
    assert "cannot reach the Ollama server" in err and "ollama serve" in err


@pytest.mark.parametrize("command", COMMANDS)
def test_malformed_host_exits_2_for_every_command(
    command: str,
    modelfile_path: Path,
    tiny_gguf: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "http://[::1")
    code, _, err = _cli(_commands(modelfile_path, tiny_gguf, "some-model")[command], capsys)
    assert code == 2, err
    assert "Error: Ollama host 'http://[::1' is not an address" in err
    assert "Hint: set --host / OLLAMA_HOST to host:port" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", COMMANDS)
def test_a_web_server_exits_4_for_every_command(
    command: str,
    web_server: str,
    modelfile_path: Path,
    tiny_gguf: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = _commands(modelfile_path, tiny_gguf, "some-model")[command]
    code, out, err = _cli([*argv, "--host", web_server], capsys)
    assert code == 4, err
    assert f"{web_server} is not an Ollama server" in err
    assert "<" not in err + out


def test_register_names_a_missing_from_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 11: Ollama takes a missing FROM file for a model name ("invalid model name")."""
    path = tmp_path / "Modelfile"
    path.write_text(render_modelfile(Modelfile(from_="./weights/missing-q8_0.gguf")))
    # The file is checked before the server is contacted: no server needed for this answer.
    code, _, err = _cli(
        ["register", str(path), "--name", "x", "--host", f"127.0.0.1:{free_port()}"], capsys
    )
    assert code == 1, err
    assert "FROM ./weights/missing-q8_0.gguf" in err and "does not exist" in err
    assert "invalid model name" not in err
    with pytest.raises(InputNotFoundError) as info:
        check_local_files(Modelfile(from_="~/nope.gguf"), tmp_path)
    assert info.value.path == Path("~/nope.gguf").expanduser()
    check_local_files(Modelfile(from_="llama3.2:1b"), tmp_path)  # a model name, not a file


@pytest.mark.ollama
def test_register_model_names_a_missing_adapter_file(
    ollama_server: OllamaServer, modelfile_path: Path
) -> None:
    modelfile = Modelfile(from_="./tiny.gguf", adapters=("./lora.gguf",))
    with pytest.raises(InputNotFoundError, match=r"ADAPTER \./lora\.gguf: the file .* does not"):
        register_model("x", modelfile, base_dir=modelfile_path.parent, host=ollama_server.host)


# --------------------------------------------------------------------------- real server


@pytest.mark.ollama
@pytest.mark.parametrize("command", ["check", "chat", "compare", "doctor"])
def test_missing_model_exits_1_for_every_command(
    command: str,
    ollama_server: OllamaServer,
    modelfile_path: Path,
    tiny_gguf: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = _commands(modelfile_path, tiny_gguf, "no-such-model")[command]
    code, _, err = _cli([*argv, "--host", ollama_server.host], capsys)
    assert code == 1, err
    assert "no model 'no-such-model'" in err and "ollama list" in err


@pytest.mark.ollama
def test_other_http_errors_are_exit_1_not_a_failed_check(
    ollama_server: OllamaServer, modelfile_path: Path
) -> None:
    name = register_model(
        "client-tiny",
        Modelfile(from_="./tiny.gguf", template=TINY_OLLAMA_TEMPLATE),
        base_dir=modelfile_path.parent,
        host=ollama_server.host,
        force=True,
    ).name
    client = OllamaClient(ollama_server.host)
    with pytest.raises(DeployError) as info:
        client.chat(name, [{"role": "user", "content": "hi"}], options={"num_ctx": "lots"})
    assert type(info.value) is DeployError and info.value.exit_code == 1
    assert not isinstance(info.value, RoundTripError | ModelNotFoundError)
    # Ollama 0.9.3 answers 500 for a mistyped option; the text is Ollama's own.
    assert "HTTP 500" in str(info.value) and '"num_ctx" must be of type integer' in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.ollama
def test_typed_replies_and_delete(ollama_server: OllamaServer, modelfile_path: Path) -> None:
    client = OllamaClient(ollama_server.host)
    register_model(
        "client-del",
        Modelfile(from_="./tiny.gguf", template=TINY_OLLAMA_TEMPLATE, system="Be brief."),
        base_dir=modelfile_path.parent,
        host=ollama_server.host,
        force=True,
    )
    shown = client.require("client-del")
    assert shown.template == TINY_OLLAMA_TEMPLATE and shown.system == "Be brief."
    assert "client-del:latest" in [m.model for m in client.list().models]
    assert client.delete("client-del") is True
    assert client.delete("client-del") is False
    assert client.show("client-del") is None
    assert json.dumps(client.version())
