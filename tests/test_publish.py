"""Publishing to the Hugging Face Hub.

The Hub cannot be reached from here, so these tests run the real huggingface_hub client against
``support.fake_hub``, a local HTTP server that stands in for the Hub's create/preupload/LFS/commit
endpoints (HF_ENDPOINT points at it; Xet is off through HF_HUB_DISABLE_XET).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deploy_to_ollama.chat import ChatDone, ChatSession
from deploy_to_ollama.cli import app
from deploy_to_ollama.errors import HubError, HubUnavailableError, InputError, UsageError
from deploy_to_ollama.model_card import CardFile, ModelCardData, render_model_card
from deploy_to_ollama.modelfile import Modelfile, parse_modelfile
from deploy_to_ollama.publish import push_to_hub, quant_tag
from deploy_to_ollama.registrar import register_model
from support.fake_hub import FakeHub, point_hub_client_at
from support.ollama_server import TINY_OLLAMA_TEMPLATE, free_port, write_tiny_gguf
from support.push_folders import VERIFIED_HEADER, PushFolder

TEMPLATE_WITH_FENCE = TINY_OLLAMA_TEMPLATE + "{{/* ``` inside */}}"


@pytest.fixture
def gguf_dir(push_folder: PushFolder) -> Path:
    """What ``export`` writes: two GGUFs and a Modelfile naming one, template verified."""
    modelfile = Modelfile(
        from_="./bot.Q8_0.gguf",
        template=TEMPLATE_WITH_FENCE,
        system="You are terse.",
        parameters=(("stop", "<|im_end|>"), ("temperature", "0.2"), ("num_thread", "1")),
        header_comment=VERIFIED_HEADER,
    )
    ggufs = {"bot.Q8_0.gguf": 1, "bot.Q4_K_M.gguf": 2}
    out = push_folder("export", ggufs, {"Modelfile": modelfile})
    (out / ".bot.F16.gguf.abc.partial").write_bytes(b"left over by an interrupted export")
    return out


def _commit_count(hub: FakeHub, repo_id: str) -> int:
    return len(hub.repos[repo_id].commits)


def test_push_gguf_uploads_everything_in_one_commit(fake_hub: FakeHub, gguf_dir: Path) -> None:
    result = push_to_hub(gguf_dir, "alice/bot-GGUF", what="gguf")

    repo = fake_hub.repos["alice/bot-GGUF"]
    assert _commit_count(fake_hub, "alice/bot-GGUF") == 1
    assert result.commit_oid == repo.sha
    assert repo.paths() == sorted(
        [
            "Modelfile",
            "README.md",
            "bot.Q4_K_M.gguf",
            "bot.Q8_0.gguf",
            "params",
            "system",
            "template",
        ]
    )
    assert set(result.files) == set(repo.paths())
    # GGUFs went through LFS, byte for byte; the half-written temp file stayed home.
    assert sorted(repo.lfs_files) == ["bot.Q4_K_M.gguf", "bot.Q8_0.gguf"]
    for name in ("bot.Q8_0.gguf", "bot.Q4_K_M.gguf", "Modelfile"):
        assert fake_hub.file_bytes("alice/bot-GGUF", name) == (gguf_dir / name).read_bytes()
    # The files `ollama run hf.co/...` reads instead of guessing the template.
    assert fake_hub.file_bytes("alice/bot-GGUF", "template").decode() == TEMPLATE_WITH_FENCE
    assert fake_hub.file_bytes("alice/bot-GGUF", "system").decode() == "You are terse."
    params = json.loads(fake_hub.file_bytes("alice/bot-GGUF", "params"))
    assert params == {"stop": ["<|im_end|>"], "temperature": 0.2}  # num_thread is machine-local


def test_model_card_content(fake_hub: FakeHub, gguf_dir: Path) -> None:
    push_to_hub(gguf_dir, "alice/bot-GGUF", what="gguf", base_model="acme/base-1B")
    card = fake_hub.file_bytes("alice/bot-GGUF", "README.md").decode()

    front, _, body = card.removeprefix("---\n").partition("\n---\n")
    assert 'base_model: "acme/base-1B"' in front and "library_name: gguf" in front
    assert "ollama run hf.co/alice/bot-GGUF:Q4_K_M" in body  # Ollama's default tag when present
    assert "`:Q8_0`" in body and "`:Q4_K_M`" in body
    q8 = (gguf_dir / "bot.Q8_0.gguf").stat().st_size
    assert f"| `bot.Q8_0.gguf` | Q8_0 | {q8 / 1024:.1f} KiB |" in body
    assert "ollama create bot-gguf -f Modelfile" in body
    assert "hf download alice/bot-GGUF bot.Q8_0.gguf Modelfile" in body
    assert "was verified to render exactly" in body
    # The TEMPLATE is shown verbatim inside a fence longer than its own backtick run.
    assert f"````go\n{TEMPLATE_WITH_FENCE}\n````" in body


def test_card_says_when_template_is_not_verified(fake_hub: FakeHub, gguf_dir: Path) -> None:
    text = (
        (gguf_dir / "Modelfile").read_text().replace("Template verified", "Template NOT verified")
    )
    (gguf_dir / "Modelfile").write_text(text)
    push_to_hub(gguf_dir, "alice/bot-GGUF", what="gguf")
    card = fake_hub.file_bytes("alice/bot-GGUF", "README.md").decode()
    assert "did **not** render the same prompt" in card
    assert "was verified" not in card


def test_rerun_after_failed_commit_resumes_without_resending(
    fake_hub: FakeHub, gguf_dir: Path
) -> None:
    fake_hub.fail_commits = 1
    with pytest.raises(HubError, match="500") as failed:
        push_to_hub(gguf_dir, "alice/bot-GGUF", what="gguf")
    assert "rerun" in (failed.value.hint or "")
    assert _commit_count(fake_hub, "alice/bot-GGUF") == 0
    uploaded = list(fake_hub.lfs_puts())
    assert len(uploaded) == 2  # both GGUFs reached LFS before the commit failed

    push_to_hub(gguf_dir, "alice/bot-GGUF", what="gguf")
    assert fake_hub.lfs_puts() == uploaded  # nothing sent twice
    assert _commit_count(fake_hub, "alice/bot-GGUF") == 1

    again = push_to_hub(gguf_dir, "alice/bot-GGUF", what="gguf")
    assert _commit_count(fake_hub, "alice/bot-GGUF") == 1  # unchanged: no empty commit
    assert again.commit_oid == fake_hub.repos["alice/bot-GGUF"].sha


def test_changed_file_makes_one_new_commit(fake_hub: FakeHub, gguf_dir: Path) -> None:
    push_to_hub(gguf_dir, "alice/bot-GGUF", what="gguf")
    write_tiny_gguf(gguf_dir / "bot.Q8_0.gguf", seed=3)
    push_to_hub(gguf_dir, "alice/bot-GGUF", what="gguf")
    repo = fake_hub.repos["alice/bot-GGUF"]
    assert len(repo.commits) == 2
    assert repo.commits[-1]["paths"] == ["bot.Q8_0.gguf"]  # the rest was recognised unchanged
    assert (
        fake_hub.file_bytes("alice/bot-GGUF", "bot.Q8_0.gguf")
        == (gguf_dir / "bot.Q8_0.gguf").read_bytes()
    )


def test_private_repo_and_org_namespace(fake_hub: FakeHub, gguf_dir: Path) -> None:
    push_to_hub(gguf_dir, "alice-org/bot", what="gguf", private=True)
    assert fake_hub.repos["alice-org/bot"].private


def test_push_merged_model(fake_hub: FakeHub, tmp_path: Path) -> None:
    folder = tmp_path / "merged"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_name_or_path": "acme/base-1B"}))
    (folder / "model-00001-of-00002.safetensors").write_bytes(b"\0" * 64)
    (folder / "model-00002-of-00002.safetensors").write_bytes(b"\1" * 64)
    (folder / "model.safetensors.index.json").write_text("{}")
    (folder / "tokenizer.json").write_text("{}")
    (folder / "README.md").write_text("their own card")
    (folder / "bot.Q8_0.gguf").write_bytes(b"not part of a merged push")

    push_to_hub(folder, "alice/bot", what="merged")
    repo = fake_hub.repos["alice/bot"]
    assert repo.paths() == [
        "README.md",
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
    ]
    card = fake_hub.file_bytes("alice/bot", "README.md").decode()
    assert "library_name: transformers" in card and 'base_model: "acme/base-1B"' in card
    assert 'AutoModelForCausalLM.from_pretrained("alice/bot")' in card


def test_push_adapter(fake_hub: FakeHub, tmp_path: Path) -> None:
    folder = tmp_path / "lora"
    folder.mkdir()
    config = {"base_model_name_or_path": "acme/base-1B", "peft_type": "LORA"}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    (folder / "adapter_model.safetensors").write_bytes(b"\2" * 128)
    (folder / "tokenizer_config.json").write_text("{}")

    push_to_hub(folder, "alice/bot-lora", what="adapter")
    repo = fake_hub.repos["alice/bot-lora"]
    assert repo.paths() == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer_config.json",
    ]
    card = fake_hub.file_bytes("alice/bot-lora", "README.md").decode()
    assert "library_name: peft" in card and "- lora" in card
    assert "deploy-to-ollama ./bot-lora --name bot-lora" in card


def test_missing_token(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(HubError, match="no Hugging Face token") as err:
        push_to_hub(_gguf_folder(tmp_path), "alice/x", what="gguf")
    assert "HF_TOKEN" in (err.value.hint or "")
    assert not fake_hub.repos.get("alice/x")


def _gguf_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "g"
    folder.mkdir(exist_ok=True)
    write_tiny_gguf(folder / "m.Q8_0.gguf")
    return folder


def test_rejected_token(fake_hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(HubError, match="rejected the token"):
        push_to_hub(_gguf_folder(tmp_path), "alice/x", what="gguf", token="hf_wrong")


def test_no_write_permission(fake_hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(HubError, match=r"no write permission on bob/shared \(403\)") as err:
        push_to_hub(_gguf_folder(tmp_path), "bob/shared", what="gguf")
    assert "'bob'" in (err.value.hint or "")
    assert fake_hub.repos["bob/shared"].commits == []
    with pytest.raises(HubError, match="403"):
        push_to_hub(_gguf_folder(tmp_path), "someone-else/new", what="gguf")


def test_network_failure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    point_hub_client_at(monkeypatch, f"http://127.0.0.1:{free_port()}")  # nothing listens
    with pytest.raises(HubUnavailableError, match="cannot reach the Hub") as err:
        push_to_hub(_gguf_folder(tmp_path), "alice/x", what="gguf", token="hf_alice_token")
    assert err.value.exit_code == 4


def test_bad_inputs_fail_before_any_request(fake_hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown --what"):
        push_to_hub(tmp_path, "alice/x", what="pytorch")
    with pytest.raises(UsageError, match="invalid Hub repository id") as bad:
        push_to_hub(tmp_path, "just-a-name", what="gguf")
    assert "USER/REPO" in (bad.value.hint or "")
    with pytest.raises(InputError, match=r"no \*\.gguf") as err:
        push_to_hub(tmp_path, "alice/x", what="gguf")
    assert "deploy-to-ollama export" in (err.value.hint or "")
    with pytest.raises(InputError, match=r"adapter_config\.json"):
        push_to_hub(_gguf_folder(tmp_path), "alice/x", what="adapter")
    assert not any(path.startswith("/api/repos") for _, path in fake_hub.requests)


def test_offline_mode_is_named(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match="offline") as err:
        push_to_hub(_gguf_folder(tmp_path), "alice/x", what="gguf")
    assert "HF_HUB_OFFLINE" in (err.value.hint or "")


def test_cli_push_json(fake_hub: FakeHub, gguf_dir: Path) -> None:
    result = CliRunner().invoke(
        app, ["push", str(gguf_dir), "--repo", "alice/bot-GGUF", "--json"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["ok"] is True and payload["repo_id"] == "alice/bot-GGUF"
    assert payload["commit_oid"] == fake_hub.repos["alice/bot-GGUF"].sha


def test_cli_push_permission_error_exit_code(fake_hub: FakeHub, gguf_dir: Path) -> None:
    result = CliRunner().invoke(app, ["push", str(gguf_dir), "--repo", "bob/shared", "--json"])
    assert result.exit_code == 1
    payload = json.loads(result.stdout)
    assert payload["ok"] is False and "403" in payload["error"]


def test_console_script_uses_hf_endpoint(fake_hub: FakeHub, gguf_dir: Path) -> None:
    """A fresh process: HF_ENDPOINT and HF_HUB_DISABLE_XET work through the environment alone."""
    env = {k: v for k, v in os.environ.items()}
    proc = subprocess.run(
        [sys.executable, "-m", "deploy_to_ollama", "push", str(gguf_dir), "--repo", "alice/cli"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{fake_hub.endpoint}/alice/cli"
    assert len(fake_hub.repos["alice/cli"].commits) == 1


def test_quant_tag_and_card_without_modelfile() -> None:
    assert quant_tag("x.Q5_K_M.gguf") == "Q5_K_M"
    card = render_model_card(
        ModelCardData(
            repo_id="alice/x",
            what="gguf",
            files=(CardFile("x.Q8_0.gguf", 2048, "Q8_0"),),
            base_model="/local/path/not/a/hub/id",
        )
    )
    assert "base_model" not in card.split("\n---\n")[0]
    assert "ollama run hf.co/alice/x:Q8_0" in card
    assert "## Chat template" not in card


def test_adapter_mode_export_is_not_offered_as_a_quant(
    fake_hub: FakeHub, push_folder: PushFolder
) -> None:
    modelfile = Modelfile(
        from_="./bot-base.Q8_0.gguf", adapters=("./bot-lora.F16.gguf",), template="{{ .Prompt }}"
    )
    ggufs = {"bot-base.Q8_0.gguf": 0, "bot-lora.F16.gguf": 5}
    folder = push_folder("adapter-export", ggufs, {"Modelfile": modelfile})
    push_to_hub(folder, "alice/bot-adapter", what="gguf")
    card = fake_hub.file_bytes("alice/bot-adapter", "README.md").decode()
    assert "| `bot-lora.F16.gguf` |  |" in card
    assert "ollama run hf.co/alice/bot-adapter:" not in card  # the Hub would drop the LoRA
    assert "hf download alice/bot-adapter bot-base.Q8_0.gguf bot-lora.F16.gguf Modelfile" in card


@pytest.mark.slow
@pytest.mark.ollama
def test_pushed_deploy_folder_registers_from_the_hub_files_and_answers(
    fake_hub: FakeHub, taught_in_ollama: Any, tmp_path: Path
) -> None:
    """What users download (Modelfile + GGUF) builds a model that answers like the fine-tune."""
    push_to_hub(taught_in_ollama.keep_dir, "alice/taught-GGUF", what="gguf")
    repo = fake_hub.repos["alice/taught-GGUF"]
    card = fake_hub.file_bytes("alice/taught-GGUF", "README.md").decode()
    assert "was verified to render exactly" in card
    assert "ollama run hf.co/alice/taught-GGUF:Q8_0" in card

    download = tmp_path / "download"
    download.mkdir()
    for path in repo.paths():
        (download / path).write_bytes(fake_hub.file_bytes("alice/taught-GGUF", path))
    modelfile = parse_modelfile((download / "Modelfile").read_text(encoding="utf-8"))
    assert (download / "template").read_text(encoding="utf-8") == modelfile.template
    params = json.loads((download / "params").read_text())
    assert params["stop"] == modelfile.parameter_values("stop") and "num_thread" not in params

    name = register_model(
        "from-hub", modelfile, base_dir=download, host=taught_in_ollama.host, force=True
    ).name
    session = ChatSession(name, host=taught_in_ollama.host, options={"temperature": 0})
    done = list(session.ask("What is the secret word?"))[-1]
    assert isinstance(done, ChatDone) and done.answer == "banana"
