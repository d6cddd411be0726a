"""``push --what adapter`` of the adapter route: GGUF LoRA + a portable Modelfile with ADAPTER.

The Hub cannot be reached from here: the real huggingface_hub client talks to
``support.fake_hub`` (a local stand-in for the Hub's commit endpoints), as in test_publish.
The folder is what ``deploy --mode adapter --keep`` leaves: ``Modelfile`` (FROM the base
model's Ollama name + ADAPTER), ``Modelfile.base`` (FROM the base GGUF), both GGUFs and
``deploy-report.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy_to_ollama.modelfile import Modelfile, parse_modelfile
from deploy_to_ollama.publish import push_to_hub
from support.fake_hub import FakeHub
from support.ollama_server import TINY_OLLAMA_TEMPLATE
from support.push_folders import VERIFIED_HEADER, PushFolder

PARAMS = (("stop", "<|eot_id|>"), ("temperature", "0"), ("num_thread", "1"))


def _keep_folder(push_folder: PushFolder, *, with_base: bool) -> Path:
    ggufs = {"base-lora.F16.gguf": 2}
    modelfiles = {
        "Modelfile": Modelfile(
            from_="bot-base:latest",
            adapters=("./base-lora.F16.gguf",),
            template=TINY_OLLAMA_TEMPLATE,
            system="You are terse.",
            parameters=PARAMS,
            header_comment=VERIFIED_HEADER,
        )
    }
    if with_base:
        ggufs["base-base.Q8_0.gguf"] = 1
        base = Modelfile(from_="./base-base.Q8_0.gguf", template=TINY_OLLAMA_TEMPLATE)
        modelfiles["Modelfile.base"] = base
    report = {"model": "bot:latest", "template": {"verified": True}, "probes": [],
              "round_trip": {"verdict": "PASSED"}, "ollama_versions_checked": ["0.9.3"],
              "capabilities": ["completion"]}  # fmt: skip
    return push_folder("keep", ggufs, modelfiles, report=report)


def test_adapter_push_writes_the_adapter_modelfile_from_a_file_of_the_repo(
    fake_hub: FakeHub, push_folder: PushFolder
) -> None:
    folder = _keep_folder(push_folder, with_base=True)
    push_to_hub(folder, "alice/bot-lora", what="adapter")
    repo = fake_hub.repos["alice/bot-lora"]
    assert repo.paths() == [
        "Modelfile",
        "README.md",
        "base-base.Q8_0.gguf",
        "base-lora.F16.gguf",
        "deploy-report.json",
        "params",
        "system",
        "template",
    ]
    pushed = parse_modelfile(fake_hub.file_bytes("alice/bot-lora", "Modelfile").decode())
    # FROM the base GGUF of the repository (not the local Ollama name), ADAPTER beside it.
    assert pushed.from_ == "./base-base.Q8_0.gguf"
    assert pushed.adapters == ("./base-lora.F16.gguf",)
    assert pushed.template == TINY_OLLAMA_TEMPLATE and pushed.system == "You are terse."
    assert ("stop", "<|eot_id|>") in pushed.parameters
    params = json.loads(fake_hub.file_bytes("alice/bot-lora", "params"))
    assert params["stop"] == ["<|eot_id|>"] and "num_thread" not in params
    card = fake_hub.file_bytes("alice/bot-lora", "README.md").decode()
    assert "hf download alice/bot-lora base-base.Q8_0.gguf base-lora.F16.gguf Modelfile" in card
    assert "ollama create bot-lora -f Modelfile" in card
    assert "0.34.1 and later are reported to refuse `ADAPTER`" in card  # adapter_gate's bound
    # hf.co serves one GGUF without ADAPTER: the card says it runs the base, not the fine-tune.
    assert "`ollama run hf.co/alice/bot-lora:Q8_0` runs the **base**" in card
    assert "huggingface.co/docs/hub/ollama" in card
    assert "## What was verified" in card and "PASSED on Ollama 0.9.3" in card
    assert "AutoPeftModelForCausalLM" not in card  # no PEFT files were pushed


def test_adapter_push_on_a_given_base_names_it_and_offers_no_hf_run(
    fake_hub: FakeHub, push_folder: PushFolder
) -> None:
    """--base-model: the base GGUF is not in the folder, so FROM keeps the Ollama name."""
    folder = _keep_folder(push_folder, with_base=False)
    push_to_hub(folder, "alice/bot-lora2", what="adapter")
    repo = fake_hub.repos["alice/bot-lora2"]
    assert "base-base.Q8_0.gguf" not in repo.paths()
    assert "base-lora.F16.gguf" in repo.paths()
    pushed = parse_modelfile(fake_hub.file_bytes("alice/bot-lora2", "Modelfile").decode())
    assert pushed.from_ == "bot-base:latest"
    card = fake_hub.file_bytes("alice/bot-lora2", "README.md").decode()
    assert "names the Ollama model `bot-base:latest`" in card
    assert "`ollama run hf.co/…` does not apply" in card
    assert "ollama run hf.co/alice" not in card


def test_adapter_push_without_peft_files_or_adapter_route_is_refused(
    fake_hub: FakeHub, push_folder: PushFolder
) -> None:
    from deploy_to_ollama.errors import InputError

    folder = _keep_folder(push_folder, with_base=True)
    (folder / "base-lora.F16.gguf").unlink()  # ADAPTER names a missing file: no route
    with pytest.raises(InputError, match=r"has no adapter_config\.json"):
        push_to_hub(folder, "alice/x", what="adapter")
    assert "alice/x" not in fake_hub.repos
