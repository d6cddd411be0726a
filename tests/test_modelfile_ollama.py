"""Ollama itself as the oracle: what we write, ``ollama create`` reads as we say it does."""

from __future__ import annotations

import itertools
import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploy_to_ollama.errors import ModelfileError
from deploy_to_ollama.modelfile import Modelfile, parse_modelfile, render_modelfile
from support.ollama_server import OllamaServer, decode_go_string, write_tiny_gguf

pytestmark = pytest.mark.ollama

# No "{{": Ollama rejects a TEMPLATE that is not a valid Go template, which is not the point here.
_TEXT = st.text(alphabet=st.sampled_from([*'"\\\n\r\t #:|<>ab ', "▁", "字", "🙂"]), max_size=30)
_NAMES = (f"oracle-{i}" for i in itertools.count())


def _show(server: OllamaServer, name: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{server.host}/api/show",
        data=json.dumps({"model": name}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as resp:
        result: dict[str, Any] = json.load(resp)
    return result


def _stops(parameters: str) -> list[str]:
    """The ``stop`` values from ``/api/show``'s parameters text (``%#v``-quoted)."""
    return [
        decode_go_string(m.group(1))
        for m in re.finditer(r'^stop +("(?:[^"\\]|\\.)*")$', parameters, re.M)
    ]


def _create(server: OllamaServer, folder: Path, text: str) -> tuple[str, Any]:
    name = next(_NAMES)
    (folder / "Modelfile").write_text(text, encoding="utf-8", newline="")
    proc = server.ollama_cli("create", name, "-f", str(folder / "Modelfile"))
    return name, proc


@pytest.fixture(scope="module")
def oracle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GGUF without a chat template: Ollama then keeps exactly what the Modelfile says."""
    folder = tmp_path_factory.mktemp("oracle")
    write_tiny_gguf(folder / "tiny.gguf", chat_template="")
    return folder


def _assert_ollama_reads(server: OllamaServer, folder: Path, mf: Modelfile) -> None:
    try:
        text = render_modelfile(mf)
    except ModelfileError:
        return  # refused up front; test_modelfile checks that refusals are exactly right
    name, proc = _create(server, folder, text)
    assert proc.returncode == 0, proc.stderr[-500:]
    shown = _show(server, name)
    assert shown.get("template", "") == (mf.template or "{{ .Prompt }}")
    assert shown.get("system", "") == (mf.system or "")
    assert shown.get("license", "") == (mf.license or "")
    assert [(m["role"], m["content"]) for m in shown.get("messages") or []] == list(mf.messages)
    assert _stops(shown.get("parameters", "")) == list(mf.parameter_values("stop"))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    template=_TEXT,
    system=st.none() | _TEXT,
    license_=st.none() | _TEXT,
    stops=st.lists(_TEXT.filter(bool), max_size=2, unique=True),
    messages=st.lists(st.tuples(st.sampled_from(["user", "assistant"]), _TEXT), max_size=2),
)
def test_ollama_create_reads_back_what_we_wrote(
    ollama_server: OllamaServer,
    oracle_dir: Path,
    template: str,
    system: str | None,
    license_: str | None,
    stops: list[str],
    messages: list[tuple[str, str]],
) -> None:
    mf = Modelfile(
        from_="./tiny.gguf",
        template=template or None,
        system=system or None,
        license=license_ or None,
        parameters=tuple(("stop", s) for s in stops),
        messages=tuple(messages),
    )
    _assert_ollama_reads(ollama_server, oracle_dir, mf)


@pytest.mark.parametrize(
    "text",
    [
        'FROM ./tiny.gguf\nTEMPLATE """a""" b\nc"""\nSYSTEM  x  \n',
        'FROM ./tiny.gguf\ntemplate """a\\n ""x"" \r\nb"""\r\nparameter stop """"""""\n',
        'FROM ./tiny.gguf\nSYSTEM "a\x00b\u00a0c"\nLICENSE MIT\nLICENSE """two\nlines"""\n',
        "# header\nFROM ./tiny.gguf\nMESSAGE user a: b\nMESSAGE assistant  spaced  \n",
    ],
)
def test_our_parser_agrees_with_ollama_on_handwritten_files(
    ollama_server: OllamaServer, oracle_dir: Path, text: str
) -> None:
    ours = parse_modelfile(text)
    name, proc = _create(ollama_server, oracle_dir, text)
    assert proc.returncode == 0, proc.stderr[-500:]
    shown = _show(ollama_server, name)
    assert shown.get("template", "") == (ours.template or "{{ .Prompt }}")
    assert shown.get("system", "") == (ours.system or "")
    assert shown.get("license", "") == (ours.license or "")
    assert [(m["role"], m["content"]) for m in shown.get("messages") or []] == list(ours.messages)
    assert _stops(shown.get("parameters", "")) == ours.parameter_values("stop")


@pytest.mark.parametrize(
    "text", ['FROM ./tiny.gguf\nSYSTEM """open\n', "FROM ./tiny.gguf\nBOGUS x\n"]
)
def test_files_we_reject_ollama_rejects_too(
    ollama_server: OllamaServer, oracle_dir: Path, text: str
) -> None:
    with pytest.raises(ModelfileError):
        parse_modelfile(text)
    _, proc = _create(ollama_server, oracle_dir, text)
    assert proc.returncode != 0
