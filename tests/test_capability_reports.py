"""Capability parity where the product reports it: ``template --json``, the deploy report's
template stage, and the doctor's ``capabilities_lost``. Each gets a case that must be false.

The lossy case is a Jinja that names ``tools`` and ``<think>``/``</think>`` only in a comment:
Ollama's substring rules give it both capabilities, yet no translation can render either.
"""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from deploy_to_ollama.capabilities import LOST_CODE, capability_warnings
from deploy_to_ollama.cli import app, rewrite_default_commands
from deploy_to_ollama.doctor.diagnoses import diagnose
from deploy_to_ollama.doctor.reference import ReferenceChoice, ReferenceTemplate
from deploy_to_ollama.doctor.targets import Target
from deploy_to_ollama.stages import translate_stage as _template_stage
from support.taught_tools import THINK_GO_TEMPLATE, THINK_JINJA

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHATML_GO = (
    "{{ range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n"
)
#: Tools printed in a layout no TEMPLATE reproduces (upper-cased), and a comment naming the
#: thinking tags: both capabilities lost. (A Jinja that names tools and prints nothing of them
#: keeps tools through an inert .Tools: tool_inert.py, test_tool_inert.py.)
LOSSY = (
    "{# no <think></think> here #}{% if tools %}{{ tools | string | upper }}\n{% endif %}" + CHATML
)


def _folder(tmp_path: Path, jinja: str) -> Path:
    folder = tmp_path / "model"
    folder.mkdir(parents=True)
    config = {"chat_template": jinja, "eos_token": "<|im_end|>", "bos_token": None}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def _template_json(folder: Path) -> dict[str, object]:
    result = CliRunner().invoke(
        app, rewrite_default_commands(["template", "show", str(folder), "--json"])
    )
    doc: dict[str, object] = json.loads(result.stdout)
    return doc


def test_template_json_reports_parity(tmp_path: Path) -> None:
    doc = _template_json(_folder(tmp_path, CHATML))
    assert doc["capabilities"] == {"jinja": [], "template": [], "lost": [], "parity": True}


def test_template_json_reports_a_lost_capability(tmp_path: Path) -> None:
    doc = _template_json(_folder(tmp_path, LOSSY))
    caps = doc["capabilities"]
    assert isinstance(caps, dict)
    assert caps["jinja"] == ["tools", "thinking"]
    assert caps["lost"] == ["tools", "thinking"]
    assert caps["parity"] is False


def test_deploy_template_stage_warns_on_lost_capabilities(tmp_path: Path) -> None:
    lossy = _template_stage(_folder(tmp_path / "a", LOSSY), None)
    assert lossy.capabilities_lost
    assert all(line.startswith(LOST_CODE) for line in lossy.capabilities_lost)
    assert "tools, thinking" in lossy.capabilities_lost[0]
    assert _template_stage(_folder(tmp_path / "b", CHATML), None).capabilities_lost == ()


def test_capability_warnings_are_empty_at_parity() -> None:
    assert capability_warnings(THINK_JINJA, THINK_GO_TEMPLATE) == []
    assert capability_warnings(THINK_JINJA, CHATML_GO) == [
        f"{LOST_CODE}: the TEMPLATE lacks thinking that the Jinja chat template has"
    ]


def _choice(jinja: str) -> ReferenceChoice:
    ref = ReferenceTemplate(
        template=jinja,
        origin="source",
        location="test",
        bos_token=None,
        eos_token="<|im_end|>",
        stop_tokens=("<|im_end|>",),
        add_bos=None,
    )
    return ReferenceChoice(ref, "test")


def _codes(template: str, jinja: str) -> list[str]:
    target = Target("modelfile", "Modelfile", template, None, (("stop", "<|im_end|>"),), None, None)
    return [d.code for d in diagnose(target, _choice(jinja))]


def test_doctor_capabilities_lost_for_thinking() -> None:
    assert LOST_CODE in _codes(CHATML_GO, THINK_JINJA)
    assert LOST_CODE not in _codes(THINK_GO_TEMPLATE, THINK_JINJA)


def test_doctor_does_not_repeat_tools_missing() -> None:
    tools_only = "{% if tools %}{{ tools | tojson }}{% endif %}" + CHATML
    codes = _codes(CHATML_GO, tools_only)
    assert "tools_missing" in codes and LOST_CODE not in codes
    # Thinking lost on top of tools: capabilities_lost names only what tools_missing does not.
    both = _codes(CHATML_GO, tools_only + "{# <think></think> #}")
    assert "tools_missing" in both and LOST_CODE in both
