"""The test Ollama server itself: it starts, registers a GGUF, runs it, and logs prompts."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from support.ollama_server import OllamaServer, decode_go_string, free_port


def _post(server: OllamaServer, path: str, payload: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{server.host}{path}",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as resp:
        result: dict[str, Any] = json.load(resp)
    return result


def test_decode_go_string_undoes_strconv_quote() -> None:
    assert decode_go_string(r'"a\nb\t\"c\"\\"') == 'a\nb\t"c"\\'
    assert decode_go_string(r'"\u2581x\U0001f642"') == "▁x🙂"
    # Invalid UTF-8 bytes are written as \x escapes; valid multi-byte text stays literal.
    assert decode_go_string(r'"\xe2\x96\x81 ok é"') == "▁ ok é"


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


@pytest.mark.ollama
def test_server_answers_with_its_version(ollama_server: OllamaServer) -> None:
    assert ollama_server.version() == "0.9.3"
    assert ollama_server.models_dir.is_dir()


@pytest.mark.ollama
def test_tiny_gguf_registers_runs_and_logs_the_rendered_prompt(
    ollama_server: OllamaServer, tiny_gguf: Path, tmp_path: Path
) -> None:
    (tmp_path / "tiny.gguf").symlink_to(tiny_gguf)
    (tmp_path / "Modelfile").write_text(
        'FROM ./tiny.gguf\nTEMPLATE """<|im_start|>user\n{{ .Prompt }}<|im_end|>\n'
        '<|im_start|>assistant\n"""\nPARAMETER stop <|im_end|>\nPARAMETER num_thread 1\n'
    )
    created = ollama_server.ollama_cli("create", "server-smoke", "-f", str(tmp_path / "Modelfile"))
    assert created.returncode == 0, created.stderr
    listed = ollama_server.ollama_cli("list")
    assert "server-smoke:latest" in listed.stdout

    ollama_server.mark_log()
    reply = _post(
        ollama_server,
        "/api/generate",
        {
            "model": "server-smoke",
            "prompt": 'say "hi"\\n',
            "stream": False,
            "options": {"num_predict": 4, "temperature": 0, "seed": 1},
        },
    )
    assert reply["done"] is True
    assert reply["eval_count"] <= 4
    assert ollama_server.prompts() == [
        '<|im_start|>user\nsay "hi"\\n<|im_end|>\n<|im_start|>assistant\n'
    ]
