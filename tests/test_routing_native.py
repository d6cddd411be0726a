"""The native route's bad input (issue 13): a GGUF without Jinja, a Jinja llama.cpp's engine
cannot parse, and a GGUF whose Jinja is not the translated one; real llama-server."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy_to_ollama.routing import GoProof, NativeProof, choose_route, prove_native
from deploy_to_ollama.settings import Settings
from support.ollama_server import TINY_CHAT_TEMPLATE, write_tiny_gguf
from support.routes import toolchain_env

pytestmark = pytest.mark.slow

#: ``{% raw %}`` parses in jinja2, not in llama.cpp's engine.
RAW_BLOCK = TINY_CHAT_TEMPLATE + "{% raw %}{{ literal }}{% endraw %}"


def _jinja_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "chat_template.jinja"
    path.write_text(text, encoding="utf-8")
    return path


def _prove(tmp_path: Path, source: Path, gguf: Path, *, required: bool = False) -> NativeProof:
    settings = Settings.from_env(toolchain_env())
    return prove_native(source, None, gguf, settings, required=required)


def test_a_gguf_without_jinja_makes_native_unavailable_said_once(
    llama_server_binary: Path, tmp_path: Path
) -> None:
    bare = write_tiny_gguf(tmp_path / "bare.gguf", chat_template="")
    proof = _prove(tmp_path, _jinja_file(tmp_path, TINY_CHAT_TEMPLATE), bare)
    assert not proof.available and "no tokenizer.chat_template" in str(proof.reason)
    choice = choose_route(
        "auto", version="0.33.0", jinja=None, go=GoProof(verified=False, differs=("x",)),
        native=proof, template="{{ .Prompt }}",
    )  # fmt: skip
    text = " ".join([choice.reason, choice.proof, choice.failure or ""])
    assert text.count("no tokenizer.chat_template") == 1


def test_a_jinja_llama_cpp_cannot_parse_is_unavailable_with_its_error(
    llama_server_binary: Path, tmp_path: Path
) -> None:
    gguf = write_tiny_gguf(tmp_path / "raw.gguf", chat_template=RAW_BLOCK)
    proof = _prove(tmp_path, _jinja_file(tmp_path, RAW_BLOCK), gguf)
    assert not proof.available and "Unknown statement: raw" in str(proof.reason)


def test_the_proof_is_of_the_jinja_the_template_was_translated_from(
    llama_server_binary: Path, tmp_path: Path
) -> None:
    gguf = write_tiny_gguf(tmp_path / "chatml.gguf")
    other = _jinja_file(tmp_path, TINY_CHAT_TEMPLATE + "{{ '' }}")
    proof = _prove(tmp_path, other, gguf)
    assert not proof.available and "is not the template" in str(proof.reason)
    same = _prove(tmp_path, _jinja_file(tmp_path, TINY_CHAT_TEMPLATE), gguf)
    assert same.available and same.verified
