"""The round-trip reference uses the tokenizer the stages used: the adapter's, else its base's.

An adapter saved without tokenizer files used to get its render check marked ``not_run``
although the template came from the base's tokenizer, which can serve the check.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from support.models import LoraFixture
from support.ollama_server import OllamaServer

pytestmark = [pytest.mark.slow, pytest.mark.ollama]


def test_adapter_without_tokenizer_is_render_checked_with_its_base(
    ollama_server: OllamaServer,
    tiny_llama: LoraFixture,
    llama_cpp_toolchain: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from deploy_to_ollama.pipeline import deploy

    monkeypatch.setenv("DTO_LLAMA_CPP_DIR", str(llama_cpp_toolchain.root))
    adapter = Path(shutil.copytree(tiny_llama.adapter_dir, tmp_path / "adapter"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (adapter / name).unlink()
    report = deploy(
        adapter,
        name="dto-base-tokenizer",
        quant="q8_0",
        host=ollama_server.host,
        base=tiny_llama.base_dir,
        keep=tmp_path / "keep",
        num_predict=4,
        parameters=(("num_thread", "1"),),
        cache_dir=tmp_path / "cache",
    )
    assert report.round_trip is not None
    assert report.round_trip.render_method != "not_run", report.summary_lines()
    assert report.round_trip.render_verified, report.summary_lines()
