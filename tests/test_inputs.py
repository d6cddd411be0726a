"""resolve_input on real fixtures: adapters, merged dirs, GGUF, HF cache ids and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from deploy_to_ollama.errors import (
    BaseModelNotFoundError,
    InputError,
    InputNotFoundError,
    MergeError,
)
from deploy_to_ollama.inputs import resolve_input
from support.models import LoraFixture


def _copy_adapter(src: Path, dst: Path, *, base: str | None = None) -> Path:
    shutil.copytree(src, dst)
    if base is not None:
        cfg_path = dst / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = base
        cfg_path.write_text(json.dumps(cfg))
    return dst


def test_adapter_resolves_to_its_local_base(tiny_llama: LoraFixture) -> None:
    resolved = resolve_input(tiny_llama.adapter_dir)
    assert resolved.kind == "adapter"
    assert resolved.base_dir == tiny_llama.base_dir
    assert resolved.architecture == "LlamaForCausalLM"
    assert resolved.tokenizer_dir == tiny_llama.adapter_dir
    assert resolved.adapter_config is not None
    assert resolved.adapter_config.r == 8
    assert resolved.model_dir == tiny_llama.base_dir


def test_merged_dir_and_gguf(tiny_llama: LoraFixture, tmp_path: Path) -> None:
    merged = resolve_input(tiny_llama.base_dir)
    assert (merged.kind, merged.base_dir, merged.architecture) == (
        "merged",
        None,
        "LlamaForCausalLM",
    )
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + bytes(20))
    assert resolve_input(gguf).kind == "gguf"
    (tmp_path / "junk.gguf").write_bytes(b"nope")
    with pytest.raises(InputError, match="not a GGUF"):
        resolve_input(tmp_path / "junk.gguf")


def test_missing_path_and_empty_dir(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError) as info:
        resolve_input(tmp_path / "nope")
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(InputError, match="neither a LoRA adapter"):
        resolve_input(tmp_path)


def _fake_hub_cache(hf_home: Path, repo_id: str, model_dir: Path) -> None:
    """Lay a local model out as huggingface_hub's cache stores a downloaded snapshot."""
    from huggingface_hub.file_download import repo_folder_name

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hf_home / "hub" / repo_folder_name(repo_id=repo_id, repo_type="model")
    shutil.copytree(model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


def test_hub_id_resolves_offline_from_cache_and_maps_bnb_4bit(
    tiny_llama: LoraFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    hf_home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub read the variables at import: its constants say where the cache is.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    _fake_hub_cache(hf_home, "unsloth/tiny-llama", tiny_llama.base_dir)
    adapter = _copy_adapter(
        tiny_llama.adapter_dir, tmp_path / "a", base="unsloth/tiny-llama-bnb-4bit"
    )
    resolved = resolve_input(adapter)
    assert resolved.base_dir is not None
    assert (resolved.base_dir / "config.json").read_bytes() == (
        tiny_llama.base_dir / "config.json"
    ).read_bytes()
    assert "snapshots" in resolved.base_dir.parts
    assert resolved.base_id == "unsloth/tiny-llama-bnb-4bit"


def test_hub_id_not_cached_offline_names_the_fix(
    tiny_llama: LoraFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    adapter = _copy_adapter(tiny_llama.adapter_dir, tmp_path / "a", base="someone/not-cached")
    with pytest.raises(BaseModelNotFoundError, match="HF_HUB_OFFLINE") as info:
        resolve_input(adapter)
    assert info.value.hint is not None and "--base" in info.value.hint
    # --base wins over the id in the adapter config.
    assert resolve_input(adapter, base=tiny_llama.base_dir).base_dir == tiny_llama.base_dir


def test_bitsandbytes_base_is_refused(tiny_llama: LoraFixture, tmp_path: Path) -> None:
    base = shutil.copytree(tiny_llama.base_dir, tmp_path / "bnb")
    cfg = json.loads((base / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (base / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="bitsandbytes"):
        resolve_input(tiny_llama.adapter_dir, base=base)


def test_dora_is_not_supported(tiny_llama_dir: Path) -> None:
    with pytest.raises(MergeError, match="DoRA"):
        resolve_input(tiny_llama_dir / "dora")


def test_missing_and_truncated_adapter_weights(tiny_llama: LoraFixture, tmp_path: Path) -> None:
    adapter = _copy_adapter(tiny_llama.adapter_dir, tmp_path / "a")
    weights = adapter / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 100])
    with pytest.raises(InputError, match="truncated"):
        resolve_input(adapter)
    weights.unlink()
    with pytest.raises(InputNotFoundError, match="missing"):
        resolve_input(adapter)


def test_adapter_for_another_architecture(tiny_llama: LoraFixture, tiny_gpt2: LoraFixture) -> None:
    with pytest.raises(InputError, match="another architecture"):
        resolve_input(tiny_llama.adapter_dir, base=tiny_gpt2.base_dir)


def test_adapter_for_another_size(tiny_llama: LoraFixture, llama256: LoraFixture) -> None:
    with pytest.raises(InputError, match="shape mismatches"):
        resolve_input(tiny_llama.adapter_dir, base=llama256.base_dir)


def test_content_key_covers_input_and_base_bytes_once(
    tiny_llama: LoraFixture, tmp_path: Path
) -> None:
    base = Path(shutil.copytree(tiny_llama.base_dir, tmp_path / "base"))
    adapter = _copy_adapter(tiny_llama.adapter_dir, tmp_path / "a", base=str(base))
    first = resolve_input(adapter)
    key = first.content_key
    copy = _copy_adapter(adapter, tmp_path / "copy")
    assert resolve_input(copy).content_key == key  # bytes, not paths or timestamps
    (adapter / "README.md").write_text("notes the stages never read")
    assert resolve_input(adapter).content_key == key
    weights = base / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert first.content_key == key  # computed once per resolution, then kept
    assert resolve_input(adapter).content_key != key  # one byte of the base changes it
