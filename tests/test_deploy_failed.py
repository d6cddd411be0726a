"""A deploy whose round trip fails leaves nothing registered that the user did not have before.

The source is the tiny random GGUF (no export needed): its answers run into the 4-token cap,
so every round trip here fails for real, on the real test server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.cli import main
from deploy_to_ollama.modelfile import Modelfile
from deploy_to_ollama.ollama_client import OllamaClient
from deploy_to_ollama.pipeline import deploy
from deploy_to_ollama.registrar import backup_name, register_model
from support.ollama_server import TINY_OLLAMA_TEMPLATE, OllamaServer

pytestmark = pytest.mark.ollama


def _deploy(server: OllamaServer, gguf: Path, keep: Path, name: str, **kwargs: Any) -> Any:
    return deploy(
        gguf,
        name=name,
        host=server.host,
        keep=keep,
        parameters=(("num_thread", "1"),),
        num_predict=4,
        **kwargs,
    )


def test_a_new_model_that_fails_is_removed(
    ollama_server: OllamaServer, tiny_gguf: Path, tmp_path: Path
) -> None:
    report = _deploy(ollama_server, tiny_gguf, tmp_path / "keep", "fail-new")
    assert not report.passed and report.round_trip is not None
    assert any("num_predict cap" in p for p in report.round_trip.problems)
    assert report.failed_model == (
        "fail-new:latest failed its round trip and was removed (--keep-failed keeps it)"
    )
    assert report.to_dict()["failed_model"] == report.failed_model
    assert OllamaClient(ollama_server.host).show("fail-new") is None


def test_keep_failed_keeps_it_and_says_so(
    ollama_server: OllamaServer, tiny_gguf: Path, tmp_path: Path
) -> None:
    report = _deploy(ollama_server, tiny_gguf, tmp_path / "keep", "fail-kept", keep_failed=True)
    assert not report.passed
    assert report.failed_model and "kept although its round trip failed" in report.failed_model
    assert OllamaClient(ollama_server.host).exists("fail-kept")
    # A rerun reuses that registration: the user had it before this run, so it stays.
    again = _deploy(ollama_server, tiny_gguf, tmp_path / "keep", "fail-kept")
    assert dict(again.stages)["register"] == "reused"
    assert not again.passed and again.failed_model is None
    assert OllamaClient(ollama_server.host).exists("fail-kept")


def test_a_replaced_model_is_restored_when_its_successor_fails(
    ollama_server: OllamaServer, tiny_gguf: Path, tmp_path: Path
) -> None:
    """Decision: with --force, the model the failed deploy replaced comes back (it was copied
    aside before the create, a manifest copy over the same blobs), and the message says so."""
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "tiny.gguf").symlink_to(tiny_gguf)
    client = OllamaClient(ollama_server.host)
    old = Modelfile(from_="./tiny.gguf", template=TINY_OLLAMA_TEMPLATE, system="the old one")
    register_model("fail-old", old, base_dir=tmp_path / "old", host=ollama_server.host, force=True)
    report = _deploy(ollama_server, tiny_gguf, tmp_path / "keep", "fail-old", force=True)
    assert not report.passed
    assert report.failed_model and "the model it replaced is restored" in report.failed_model
    shown = client.require("fail-old")
    assert shown.system == "the old one"
    assert client.show(backup_name("fail-old:latest")) is None
    # The restored model still runs: its blobs were kept by the copy.
    reply = client.chat("fail-old", [{"role": "user", "content": "hi"}], options={"num_predict": 1})
    assert reply.done


def test_cli_exits_3_and_says_the_model_was_removed(
    ollama_server: OllamaServer,
    tiny_gguf: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [str(tiny_gguf), "--name", "fail-cli", "--host", ollama_server.host]
    argv += ["--keep", str(tmp_path / "keep"), "-p", "num_thread=1", "--num-predict", "4"]
    with pytest.raises(SystemExit) as info:
        main([*argv, "--json"])
    assert info.value.code == 3
    payload = json.loads(capsys.readouterr().out)
    assert payload["ok"] is False and "was removed" in payload["failed_model"]
    assert not OllamaClient(ollama_server.host).exists("fail-cli")
    with pytest.raises(SystemExit) as info:
        main([*argv, "--keep-failed"])
    assert info.value.code == 3
    assert "kept although its round trip failed (--keep-failed)" in capsys.readouterr().err
    assert OllamaClient(ollama_server.host).exists("fail-cli")


def test_a_settled_registration_drops_the_copy_of_what_it_replaced(
    ollama_server: OllamaServer, tiny_gguf: Path, tmp_path: Path
) -> None:
    """The passing side: the replaced model's copy goes away, the new model stays."""
    from deploy_to_ollama.registrar import settle_registration

    (tmp_path / "tiny.gguf").symlink_to(tiny_gguf)
    client = OllamaClient(ollama_server.host)
    first = Modelfile(from_="./tiny.gguf", template=TINY_OLLAMA_TEMPLATE, system="first")
    register_model("settle", first, base_dir=tmp_path, host=ollama_server.host, force=True)
    second = Modelfile(from_="./tiny.gguf", template=TINY_OLLAMA_TEMPLATE, system="second")
    reg = register_model(
        "settle",
        second,
        base_dir=tmp_path,
        host=ollama_server.host,
        force=True,
        keep_replaced=True,
    )
    assert reg.replaced and reg.backup == "settle-dto-replaced:latest"
    backup = client.require(reg.backup)
    assert backup.system == "first"
    settle_registration(reg)
    assert client.show(reg.backup) is None
    assert client.require("settle").system == "second"
