"""Quant types a known Ollama build cannot load: warned about before any heavy work."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.errors import DependencyMissingError
from deploy_to_ollama.gguf.loadable import KNOWN_BUILDS, load_warnings
from deploy_to_ollama.gguf.quants import QUANT_TYPES
from deploy_to_ollama.pipeline import deploy


def test_only_the_types_and_version_of_a_known_build_are_warned_about() -> None:
    (warning,) = load_warnings(["q5_k_m", "q4_k_m"], "0.9.3")
    assert warning.startswith("q4_k_m: ") and "bigdl-core-cpp" in warning
    assert load_warnings(["q4_0"], "0.9.3-ipexllm")  # a build suffix is the same version
    assert load_warnings(["q4_k_m", "q5_k_m"], "0.9.30") == []
    assert load_warnings(["q4_k_m"], "0.12.6") == []
    assert load_warnings(["q4_k_m"], None) == []
    assert load_warnings(["q8_0", "q6_k", "q3_k_m", "q2_k", "bf16"], "0.9.3") == []


def test_the_table_names_only_quant_types_we_export() -> None:
    for known in KNOWN_BUILDS:
        assert known.cannot_load and known.cannot_load <= set(QUANT_TYPES)
        assert known.can_load & set(QUANT_TYPES)
        assert not known.cannot_load & known.can_load


def _tiny_merged_model(folder: Path) -> Path:
    """A merged model folder that passes the source checks (config, one tensor, a template)."""
    import json

    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    save_file({"model.embed_tokens.weight": np.zeros((4, 4), np.float32)}, folder / "w.safetensors")
    template = "{% for m in messages %}{{ m.content }}{% endfor %}"
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    return folder


@pytest.mark.ollama
@pytest.mark.parametrize(("quant", "warned"), [("q4_k_m", True), ("q5_k_m", False)])
def test_deploy_warns_on_the_test_server_before_any_heavy_work(
    quant: str,
    warned: bool,
    ollama_server: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real test server (the build the table describes): the warning comes from its
    /api/version right after the source checks, before the export (here the toolchain it would
    need is missing, so the run stops there with exit 4)."""
    caplog.set_level(logging.WARNING, logger="deploy_to_ollama")
    monkeypatch.setenv("DTO_LLAMA_CPP_DIR", str(tmp_path / "no-llama-cpp"))
    source = _tiny_merged_model(tmp_path / "merged")
    with pytest.raises(DependencyMissingError):
        deploy(source, name="loadable-check", quant=quant, host=ollama_server.host)
    assert ("cannot load it" in caplog.text) is warned
