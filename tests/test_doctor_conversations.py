"""Doctor on tool and thinking conversations (issue 13): the packaged tool/thinking probes are
rendered by transformers from the reference Jinja and through the TEMPLATE (our port of Ollama's
prompt building), graded exact / json_equivalent / differs. A TEMPLATE that keeps the capability
but writes the conversation wrong is diagnosed from the rendering (capabilities cannot see it);
the correct TEMPLATE of the same family is not. No server here: test_doctor_ollama.py repeats
the decisive cases on the real test Ollama."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deploy_to_ollama.capabilities import go_template_capabilities
from deploy_to_ollama.cli import app
from deploy_to_ollama.doctor import examine
from deploy_to_ollama.modelfile import Modelfile, render_modelfile
from support.doctor_models import (
    copy_gguf,
    think_broken_template,
    tools_broken_template,
    write_reference_dir,
)
from support.taught_tools import THINK_GO_TEMPLATE, THINK_JINJA, TOOLS_GO_TEMPLATE, TOOLS_JINJA

runner = CliRunner()
TOOLS_BROKEN_TEMPLATE = tools_broken_template()
THINK_BROKEN_TEMPLATE = think_broken_template()


def _target(tmp_path: Path, gguf_dir: Path, jinja: str, template: str) -> tuple[Path, Path]:
    """(Modelfile with ``template``, reference folder carrying ``jinja``)."""
    ref = write_reference_dir(tmp_path / "ref", chat_template=jinja)
    gguf = copy_gguf(gguf_dir, "plain", tmp_path / "m")
    path = tmp_path / "m" / "Modelfile"
    modelfile = Modelfile(
        from_=f"./{gguf.name}", template=template, parameters=(("stop", "<|im_end|>"),)
    )
    path.write_text(render_modelfile(modelfile), encoding="utf-8")
    return path, ref


def test_the_broken_templates_keep_their_capabilities() -> None:
    """The premise: capabilities alone cannot tell the broken TEMPLATEs from the right ones."""
    assert go_template_capabilities(TOOLS_BROKEN_TEMPLATE) == go_template_capabilities(
        TOOLS_GO_TEMPLATE
    )
    assert "tools" in go_template_capabilities(TOOLS_BROKEN_TEMPLATE)
    assert "thinking" in go_template_capabilities(THINK_BROKEN_TEMPLATE)


@pytest.mark.parametrize(
    ("jinja", "template"),
    [(TOOLS_JINJA, TOOLS_GO_TEMPLATE), (THINK_JINJA, THINK_GO_TEMPLATE)],
    ids=["tools", "thinking"],
)
def test_a_correct_template_is_not_diagnosed(
    tmp_path: Path, doctor_gguf_dir: Path, jinja: str, template: str
) -> None:
    path, ref = _target(tmp_path, doctor_gguf_dir, jinja, template)
    codes = [d.code for d in examine(str(path), source=ref).diagnoses]
    assert "tool_prompt_mismatch" not in codes and "thinking_prompt_mismatch" not in codes
    assert "tools_missing" not in codes and "capabilities_lost" not in codes


def test_a_misrendered_tool_result_is_diagnosed_past_the_json(
    tmp_path: Path, doctor_gguf_dir: Path
) -> None:
    path, ref = _target(tmp_path, doctor_gguf_dir, TOOLS_JINJA, TOOLS_BROKEN_TEMPLATE)
    found = {d.code: d for d in examine(str(path), source=ref).diagnoses}
    assert "capabilities_lost" not in found and "tools_missing" not in found
    mismatch = found["tool_prompt_mismatch"]
    assert mismatch.severity == "error"
    tiers = {p.probe: p.tier for p in mismatch.probes}
    # Tool definitions only: Go's compact JSON, same values -> json_equivalent, never exact.
    assert tiers["tools_available"] == "json_equivalent"
    assert tiers["tool_call_and_result"] == "differs"
    assert mismatch.probes[0].tier == "differs"  # the panel shows a differing probe
    call = next(p for p in mismatch.probes if p.probe == "tool_call_and_result")
    # The difference is the tag, not the JSON layout before it.
    assert call.first_difference is not None and call.actual_difference is not None
    assert call.expected[call.first_difference :].startswith("<tool_response>")
    assert call.actual[call.actual_difference :].startswith("<tool_result>")
    assert "tool_call_and_result: differs (after 2 equal JSON value(s)" in "\n".join(
        mismatch.evidence
    )


def test_a_dropped_think_off_switch_is_diagnosed(tmp_path: Path, doctor_gguf_dir: Path) -> None:
    path, ref = _target(tmp_path, doctor_gguf_dir, THINK_JINJA, THINK_BROKEN_TEMPLATE)
    found = {d.code: d for d in examine(str(path), source=ref).diagnoses}
    mismatch = found["thinking_prompt_mismatch"]
    tiers = {p.probe: p.tier for p in mismatch.probes}
    assert tiers["think_off"] == "differs" and tiers["think_on"] == "exact"
    assert "think_off: differs ('<think>\\n\\n</think>\\n\\n' missing at the end" in "\n".join(
        mismatch.evidence
    )


def test_a_template_without_tools_shows_the_conversation_it_drops(
    tmp_path: Path, doctor_gguf_dir: Path
) -> None:
    from support.doctor_models import CHATML_TEMPLATE

    path, ref = _target(tmp_path, doctor_gguf_dir, TOOLS_JINJA, CHATML_TEMPLATE)
    found = {d.code: d for d in examine(str(path), source=ref).diagnoses}
    assert "tool_prompt_mismatch" not in found  # one problem, one diagnosis
    missing = found["tools_missing"]
    assert missing.probes and all(p.tier == "differs" for p in missing.probes)
    assert any("tool conversations render differently" in e for e in missing.evidence)


def test_json_shows_each_probe_tier(tmp_path: Path, doctor_gguf_dir: Path) -> None:
    path, ref = _target(tmp_path, doctor_gguf_dir, TOOLS_JINJA, TOOLS_BROKEN_TEMPLATE)
    result = runner.invoke(app, ["doctor", str(path), "--source", str(ref), "--json"])
    assert result.exit_code == 3, result.output
    doc = json.loads(result.stdout)
    mismatch = next(d for d in doc["diagnoses"] if d["code"] == "tool_prompt_mismatch")
    assert {p["tier"] for p in mismatch["probes"]} == {"json_equivalent", "differs"}


def test_a_template_without_thinking_shows_the_conversation_it_drops(
    tmp_path: Path, doctor_gguf_dir: Path
) -> None:
    from support.doctor_models import CHATML_TEMPLATE

    path, ref = _target(tmp_path, doctor_gguf_dir, THINK_JINJA, CHATML_TEMPLATE)
    found = {d.code: d for d in examine(str(path), source=ref).diagnoses}
    assert "thinking_prompt_mismatch" not in found  # the loss is capabilities_lost, said once
    lost = found["capabilities_lost"]
    tiers = {p.probe: p.tier for p in lost.probes}
    assert tiers["think_off"] == "differs"  # no switch: the pre-closed <think> block is lost
    assert any("thinking conversations render differently" in e for e in lost.evidence)


def test_fix_writes_a_template_that_renders_the_tool_conversations(
    tmp_path: Path, doctor_gguf_dir: Path
) -> None:
    path, ref = _target(tmp_path, doctor_gguf_dir, TOOLS_JINJA, TOOLS_BROKEN_TEMPLATE)
    result = runner.invoke(app, ["doctor", str(path), "--source", str(ref), "--fix", "--json"])
    assert result.exit_code == 0, result.output
    fix = json.loads(result.stdout)["fix"]
    assert fix["translation_verified"] and fix["after"]["healthy"]
    assert fix["after"]["diagnoses"] == []  # the re-check renders the same conversations
