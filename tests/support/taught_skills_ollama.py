"""Session fixtures: the taught tool and thinking adapters on the test Ollama server.

``skills_gguf`` exports each adapter to a q8_0 GGUF (merged HF folder kept beside it) and
registers it under the hand-written Go TEMPLATE of its shape (``*_GO_TEMPLATE`` in
taught_tools.py): that checks the fixture itself, whatever our translator emits today.
``skills_deployed`` runs the real ``deploy`` pipeline on the merged folders, so the TEMPLATE
is the translator's: those tests pass once the translator carries ``.Tools``/``.Thinking``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.ollama_server import OllamaServer
from support.taught_tools import THINK_GO_TEMPLATE, TOOLS_GO_TEMPLATE, TaughtSkills

#: Greedy, one thread (2 shared cores), a short answer budget.
PARAMETERS = (("num_thread", "1"), ("temperature", "0"), ("num_predict", "64"))
CHAT_TIMEOUT_S = 300


@dataclass(frozen=True)
class SkillModel:
    """One taught adapter exported to GGUF, and its merged HF folder."""

    gguf: Path
    merged_dir: Path
    adapter_dir: Path


@dataclass(frozen=True)
class SkillsOnServer:
    """Model names on the test server and the files behind them."""

    host: str
    tools: SkillModel
    thinking: SkillModel
    tools_name: str = "skills-tools-hand:latest"
    thinking_name: str = "skills-thinking-hand:latest"


def chat(host: str, model: str, messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """One non-streamed ``/api/chat`` request; the response document."""
    body = {"model": model, "messages": messages, "stream": False, **extra}
    response = httpx.post(f"{host}/api/chat", json=body, timeout=CHAT_TIMEOUT_S)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def show(host: str, model: str) -> dict[str, Any]:
    response = httpx.post(f"{host}/api/show", json={"model": model}, timeout=60)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _export(adapter_dir: Path, out_dir: Path, toolchain_root: Path) -> SkillModel:
    from deploy_to_ollama.gguf.export import export_gguf

    merged = out_dir / "merged"
    result = export_gguf(
        adapter_dir,
        out_dir=out_dir,
        quant="q8_0",
        save_merged=merged,
        name=adapter_dir.name,
        llama_cpp_dir=toolchain_root,
        cache_dir=out_dir / "cache",
    )
    return SkillModel(result.path, merged, adapter_dir)


def _register(name: str, model: SkillModel, template: str, host: str) -> None:
    from deploy_to_ollama.modelfile import Modelfile
    from deploy_to_ollama.registrar import register_model

    params = (("stop", "<|im_end|>"), ("stop", "<|im_start|>"), *PARAMETERS)
    modelfile = Modelfile(from_=str(model.gguf), template=template, parameters=params)
    register_model(name, modelfile, base_dir=model.gguf.parent, host=host, force=True)


@pytest.fixture(scope="session")
def skills_gguf(
    ollama_server: OllamaServer,
    llama_cpp_toolchain: Any,
    taught_skills: TaughtSkills,
    tmp_path_factory: pytest.TempPathFactory,
) -> SkillsOnServer:
    """Both adapters exported at q8_0 and registered under the hand-written TEMPLATEs."""
    root = Path(llama_cpp_toolchain.root)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HF_HUB_OFFLINE", "1")
        tools = _export(taught_skills.tools_dir, tmp_path_factory.mktemp("skills-tools"), root)
        thinking = _export(
            taught_skills.thinking_dir, tmp_path_factory.mktemp("skills-thinking"), root
        )
    skills = SkillsOnServer(ollama_server.host, tools, thinking)
    _register(skills.tools_name, tools, TOOLS_GO_TEMPLATE, ollama_server.host)
    _register(skills.thinking_name, thinking, THINK_GO_TEMPLATE, ollama_server.host)
    return skills


@dataclass(frozen=True)
class DeployedSkills:
    """The two adapters deployed by ``pipeline.deploy`` (translated TEMPLATEs)."""

    host: str
    tools_name: str
    thinking_name: str
    tools_report: Any
    thinking_report: Any


@pytest.fixture(scope="session")
def skills_deployed(
    skills_gguf: SkillsOnServer,
    llama_cpp_toolchain: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> DeployedSkills:
    """``deploy`` of each merged folder at q8_0, round-trip check off (the tests ask Ollama)."""
    from deploy_to_ollama.pipeline import deploy

    reports = {}
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DTO_LLAMA_CPP_DIR", str(llama_cpp_toolchain.root))
        env.setenv("HF_HUB_OFFLINE", "1")
        for skill, model in (("tools", skills_gguf.tools), ("thinking", skills_gguf.thinking)):
            reports[skill] = deploy(
                model.merged_dir,
                name=f"skills-{skill}-deployed",
                quant="q8_0",
                host=skills_gguf.host,
                keep=tmp_path_factory.mktemp(f"deploy-{skill}"),
                parameters=list(PARAMETERS),
                check=False,
                force=True,
                cache_dir=tmp_path_factory.mktemp(f"deploy-cache-{skill}"),
            )
    return DeployedSkills(
        skills_gguf.host,
        reports["tools"].name,
        reports["thinking"].name,
        reports["tools"],
        reports["thinking"],
    )
