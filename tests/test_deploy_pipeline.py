"""Pipeline pieces that need no server: content keys, parameters, work folders, Modelfile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy_to_ollama.errors import InputError, OutputExistsError
from deploy_to_ollama.modelfile import parse_modelfile, render_modelfile
from deploy_to_ollama.pipeline import (
    TemplateResult,
    _build_modelfile,
    _State,
    _work_dir,
    ensure_source_kind,
    hash_tree,
    model_parameters,
)


def test_hash_tree_follows_content_not_timestamps(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "adapter_config.json").write_text("{}")
    (tmp_path / "a" / "w.safetensors").write_bytes(b"\x00" * 10)
    first = hash_tree(tmp_path / "a")
    (tmp_path / "a" / "w.safetensors").touch()
    (tmp_path / "a" / "deploy-state.json").write_text("ignored")
    assert hash_tree(tmp_path / "a") == first
    (tmp_path / "a" / "w.safetensors").write_bytes(b"\x00" * 9 + b"\x01")
    assert hash_tree(tmp_path / "a") != first


def test_model_parameters_from_generation_config_and_training_length(tmp_path: Path) -> None:
    (tmp_path / "generation_config.json").write_text(
        json.dumps({"temperature": 0.6, "top_p": 0.9, "repetition_penalty": 1.1, "eos": 2})
    )
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 2048}))
    assert model_parameters(tmp_path, None) == (
        ("temperature", "0.6"),
        ("top_p", "0.9"),
        ("repeat_penalty", "1.1"),
        ("num_ctx", "2048"),
    )
    # transformers' "unset" sentinel is no training length.
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1e30}))
    assert ("num_ctx", "1000000000000000019884624838656") not in model_parameters(tmp_path, None)
    assert all(k != "num_ctx" for k, _ in model_parameters(tmp_path, None))


def test_generation_config_of_the_base_is_used_for_an_adapter(tmp_path: Path) -> None:
    adapter, base = tmp_path / "adapter", tmp_path / "base"
    adapter.mkdir()
    base.mkdir()
    (base / "generation_config.json").write_text(json.dumps({"do_sample": False}))
    assert model_parameters(adapter, base) == (("temperature", "0"),)


def test_keep_folder_of_another_input_needs_force(tmp_path: Path) -> None:
    keep = tmp_path / "keep"
    assert _work_dir(keep, tmp_path / "cache", "k1", force=False) == keep
    (keep / "model.gguf").write_bytes(b"x")
    assert _work_dir(keep, tmp_path / "cache", "k1", force=False) == keep  # same input: resume
    with pytest.raises(OutputExistsError, match="another deployment"):
        _work_dir(keep, tmp_path / "cache", "k2", force=False)
    _work_dir(keep, tmp_path / "cache", "k2", force=True)
    assert _State.load(keep).data == {"input": "k2"}


def test_state_records_stage_keys(tmp_path: Path) -> None:
    state = _State.load(tmp_path)
    state.put("export", "key-1", gguf="m.gguf")
    again = _State.load(tmp_path)
    assert again.get("export", "key-1") == {"key": "key-1", "gguf": "m.gguf"}
    assert again.get("export", "key-2") is None


def test_modelfile_has_relative_from_stops_and_user_parameters_win(tmp_path: Path) -> None:
    source = tmp_path / "adapter"
    source.mkdir()
    (source / "generation_config.json").write_text(json.dumps({"temperature": 0.7}))
    gguf = tmp_path / "work" / "m.Q8_0.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    template = TemplateResult("{{ .Prompt }}", ("<|eot_id|>", "<|end_of_text|>"), "Hi.", True)
    mf = _build_modelfile(
        gguf, gguf.parent, template, source, None, (("temperature", "0"), ("num_thread", "1"))
    )
    assert mf.from_ == "./m.Q8_0.gguf"
    assert mf.parameters == (
        ("stop", "<|eot_id|>"),
        ("stop", "<|end_of_text|>"),
        ("temperature", "0"),
        ("num_thread", "1"),
    )
    assert parse_modelfile(render_modelfile(mf)) == mf
    assert "verified" in (mf.header_comment or "")


def test_sources_that_are_no_model_are_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"not a \.gguf"):
        ensure_source_kind(tmp_path / "notes.txt")
    with pytest.raises(InputError, match=r"neither adapter_config\.json nor config\.json"):
        ensure_source_kind(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    ensure_source_kind(tmp_path)
