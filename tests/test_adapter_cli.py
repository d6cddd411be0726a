"""``deploy --mode/--base-model/--expect-base``: flag mistakes are refused before any work.

No server runs here: the host is a closed port, so a refusal that came after the server was
asked would exit 4 instead of the usage error's 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support.cli import run_cli
from support.ollama_server import free_port


@pytest.mark.parametrize(
    ("flags", "code", "needle"),
    [
        (["--mode", "lora"], 2, "unknown --mode 'lora'"),
        (["--base-model", "base:q8"], 2, "--base-model needs --mode adapter"),
        (["--expect-base", "apple"], 2, "--expect-base needs --mode adapter"),
        (["--mode", "adapter", "--base-model", "bad name!"], 1, "invalid model name"),
    ],
)
def test_adapter_flags_are_checked_first(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    code: int,
    needle: str,
) -> None:
    host = f"127.0.0.1:{free_port()}"  # nothing listens: a later check would exit 4
    argv = [str(tmp_path), "--name", "x", "--host", host, "--json", *flags]
    got, out, err = run_cli(argv, capsys)
    assert got == code, err
    assert needle in json.loads(out)["error"]


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"alpha_pattern": {"q_proj": 32}}, "per-module alpha_pattern"),
        ({"use_rslora": True, "rank_pattern": {"q_proj": 4}}, "rsLoRA with a per-module"),
    ],
)
def test_scales_a_gguf_lora_cannot_carry_are_not_convertible(
    tmp_path: Path, config: dict[str, object], needle: str
) -> None:
    """llama.cpp applies one alpha / rank-of-tensor: these adapters would run at wrong scales."""
    from deploy_to_ollama.adapter_deploy import not_convertible

    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16, **config}))
    why = not_convertible(tmp_path)
    assert why is not None and needle in why
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8, "use_rslora": True}))
    assert not_convertible(tmp_path) is None  # plain rsLoRA is rescaled at conversion


def test_keep_folder_of_another_adapter_input_needs_force(tmp_path: Path) -> None:
    """As the merged route (test_deploy_pipeline): the same input reruns, another needs --force."""
    from deploy_to_ollama.adapter_deploy import claim_keep
    from deploy_to_ollama.errors import OutputExistsError
    from deploy_to_ollama.resume import StateFile

    keep = tmp_path / "keep"
    keep.mkdir()
    claim_keep(keep, "a1", force=False)  # empty: claimed
    (keep / "lora.F16.gguf").write_bytes(b"x")
    claim_keep(keep, "a1", force=False)  # same input: resume in place
    with pytest.raises(OutputExistsError, match="holds files of another deployment") as refused:
        claim_keep(keep, "a2", force=False)
    assert "--force" in (refused.value.hint or "")
    assert (keep / "lora.F16.gguf").read_bytes() == b"x"
    claim_keep(keep, "a2", force=True)
    assert StateFile.load(keep).data == {"input": "a2"}

    merged = tmp_path / "merged"  # a merged deploy's folder: its state names another input
    merged.mkdir()
    StateFile.load(merged).reset(input="merged-key")
    (merged / "bot.Q8_0.gguf").write_bytes(b"y")
    with pytest.raises(OutputExistsError):
        claim_keep(merged, "a1", force=False)
