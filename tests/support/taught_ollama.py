"""Session fixture: the taught fixture (its LoRA answers "banana") deployed to the test server.

Shared by the ``chat`` and ``compare`` tests. It merges the LoRA with the exporter's own
``save_merged`` (the weights ``compare`` reads too), then runs the real pipeline on that merged
folder (q8_0 export, template translation, registration) once per session with the round-trip
check off. The streamed adapter → GGUF path is covered by test_deploy_e2e. It also registers the
same GGUF under a deliberately wrong TEMPLATE (ChatML for a Llama-3 model).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from support.ollama_server import TINY_OLLAMA_TEMPLATE, OllamaServer
from support.policy import skip_or_fail

TAUGHT_NAME = "run-taught"
WRONG_NAME = "run-taught-wrong"


@dataclass(frozen=True)
class TaughtInOllama:
    """The deployed taught model and where its files are."""

    host: str
    name: str
    wrong_name: str
    adapter_dir: Path
    keep_dir: Path


@pytest.fixture(scope="session")
def taught_in_ollama(
    ollama_server: OllamaServer,
    llama_cpp_toolchain: Any,
    taught: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> TaughtInOllama:
    """Deploy the taught adapter at q8_0 (num_thread 1) and a wrong-template twin."""
    try:
        from deploy_to_ollama.inputs import resolve_input
        from deploy_to_ollama.merge import save_merged
        from deploy_to_ollama.pipeline import deploy
    except ImportError as err:
        skip_or_fail(f"deploy pipeline incomplete: {err}")
        raise
    from deploy_to_ollama.modelfile import parse_modelfile
    from deploy_to_ollama.registrar import register_model

    keep = tmp_path_factory.mktemp("taught-keep")
    merged = tmp_path_factory.mktemp("taught-merged") / "merged"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DTO_LLAMA_CPP_DIR", str(llama_cpp_toolchain.root))
        env.setenv("HF_HUB_OFFLINE", "1")
        save_merged(resolve_input(Path(taught.adapter_dir)), merged)
        report = deploy(
            merged,
            name=TAUGHT_NAME,
            quant="q8_0",
            host=ollama_server.host,
            keep=keep,
            parameters=[("num_thread", "1"), ("temperature", "0")],  # CLI chat is greedy too
            check=False,
            force=True,
            cache_dir=tmp_path_factory.mktemp("taught-cache"),
        )
    good = parse_modelfile(report.modelfile.read_text(encoding="utf-8"))
    wrong = replace(good, template=TINY_OLLAMA_TEMPLATE, system=None)
    register_model(
        WRONG_NAME, wrong, base_dir=report.modelfile.parent, host=ollama_server.host, force=True
    )
    return TaughtInOllama(
        host=ollama_server.host,
        name=report.name,
        wrong_name=f"{WRONG_NAME}:latest",
        adapter_dir=Path(taught.adapter_dir),
        keep_dir=keep,
    )
