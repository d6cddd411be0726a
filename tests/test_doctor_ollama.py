"""Doctor against the real test Ollama server: models broken in one way each are diagnosed with
that cause, ``--fix`` repairs them from the existing weights blob, and the re-check passes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from deploy_to_ollama.cli import app, main
from deploy_to_ollama.errors import UsageError
from deploy_to_ollama.modelfile import Modelfile
from deploy_to_ollama.registrar import register_model
from support.doctor_models import (
    CHATML_TEMPLATE,
    DEFAULT_SYSTEM,
    LLAMA3_TEMPLATE,
    copy_gguf,
    write_reference_dir,
)
from support.ollama_server import OllamaServer, free_port

pytestmark = pytest.mark.ollama
runner = CliRunner()
THREAD = ("num_thread", "1")
STOP = ("stop", "<|im_end|>")


def _register(
    server: OllamaServer,
    gguf_dir: Path,
    tmp_path: Path,
    name: str,
    *,
    variant: str = "plain",
    template: str | None = CHATML_TEMPLATE,
    system: str | None = None,
    parameters: tuple[tuple[str, str], ...] = (STOP,),
) -> str:
    gguf = copy_gguf(gguf_dir, variant, tmp_path)
    modelfile = Modelfile(
        from_=gguf.name, template=template, system=system, parameters=(THREAD, *parameters)
    )
    reg = register_model(
        name, modelfile, base_dir=tmp_path, host=server.host, force=True, method="api"
    )
    return reg.name


def _doctor(server: OllamaServer, *args: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, ["doctor", *args, "--host", server.host, "--json"])
    return result.exit_code, json.loads(result.stdout)


def _show(server: OllamaServer, name: str) -> dict[str, Any]:
    response = httpx.post(f"{server.host}/api/show", json={"model": name}, timeout=60)
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data


def _weight_blobs(server: OllamaServer) -> set[str]:
    """Blob files big enough to be weights (templates and params are tiny JSON/text)."""
    blobs = server.models_dir / "blobs"
    return {p.name for p in blobs.iterdir() if p.stat().st_size > 50_000}


def test_healthy_model_gets_exit_0_and_no_alarms(
    ollama_server: OllamaServer, doctor_gguf_dir: Path, chatml_reference: Path, tmp_path: Path
) -> None:
    name = _register(ollama_server, doctor_gguf_dir, tmp_path, "doc-healthy")
    code, doc = _doctor(ollama_server, name, "--source", str(chatml_reference))
    assert code == 0, doc
    assert doc["healthy"] and doc["diagnoses"] == []
    assert doc["target"]["kind"] == "ollama" and doc["target"]["stops"] == ["<|im_end|>"]


BROKEN: dict[str, tuple[dict[str, Any], str, str]] = {
    # case: (how it was registered, reference fixture, the diagnosis that explains it)
    "no_template": ({"template": None}, "chatml_reference", "no_template"),
    "other_family": ({"template": LLAMA3_TEMPLATE}, "chatml_reference", "template_mismatch"),
    "missing_stop": (
        {"variant": "eos_endoftext", "parameters": ()},
        "chatml_reference",
        "eot_not_stop",
    ),
    "double_bos": (
        {"variant": "add_bos", "template": "<|endoftext|>" + CHATML_TEMPLATE},
        "chatml_reference",
        "double_bos",
    ),
    "lost_system": (
        {"parameters": (STOP, ("temperature", "0.7"), ("top_p", "0.8"))},
        "system_reference",
        "default_system_lost",
    ),
    "duplicated_system": (
        {
            "template": f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n" + CHATML_TEMPLATE,
            "system": DEFAULT_SYSTEM,
            "parameters": (STOP, ("temperature", "0.7"), ("top_p", "0.8")),
        },
        "system_reference",
        "system_duplicated",
    ),
    "newline_stop": ({"parameters": (STOP, ("stop", "\n"))}, "chatml_reference", "stop_in_answers"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_model_is_diagnosed_and_fixed_in_place(
    case: str,
    ollama_server: OllamaServer,
    doctor_gguf_dir: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    how, reference_fixture, expected = BROKEN[case]
    reference: Path = request.getfixturevalue(reference_fixture)
    name = _register(
        ollama_server, doctor_gguf_dir, tmp_path, f"doc-{case.replace('_', '-')}", **how
    )
    code, doc = _doctor(ollama_server, name, "--source", str(reference))
    assert code == 3
    codes = [d["code"] for d in doc["diagnoses"] if d["severity"] == "error"]
    assert expected in codes, codes

    blobs_before = _weight_blobs(ollama_server)
    code, doc = _doctor(
        ollama_server, name, "--source", str(reference), "--fix", "--force", "--skip-generation"
    )
    assert code == 0, json.dumps(doc["fix"], indent=1)
    fix = doc["fix"]
    assert fix["registered"] == name
    assert fix["after"]["healthy"] and fix["after"]["diagnoses"] == []
    assert fix["round_trip"]["passed"] and fix["round_trip"]["render_verified"]
    assert fix["round_trip"]["render_method"] == "go_renderer"
    # The weights blob was reused, not uploaded again.
    assert _weight_blobs(ollama_server) == blobs_before
    shown = _show(ollama_server, name)
    assert "<|im_start|>assistant" in shown["template"]
    assert "num_thread" in shown["parameters"]  # the user's other parameters survive


#: (reference Jinja, TEMPLATE registered, the conversation diagnosis expected or None).
CONVERSATIONS: dict[str, tuple[str, str, str | None]] = {
    "tools_correct": ("tools_jinja", "tools_ok", None),
    "tools_broken": ("tools_jinja", "tools_broken", "tool_prompt_mismatch"),
    "thinking_correct": ("think_jinja", "think_ok", None),
    "thinking_broken": ("think_jinja", "think_broken", "thinking_prompt_mismatch"),
}


def _conversation_texts() -> dict[str, str]:
    from support.doctor_models import think_broken_template, tools_broken_template
    from support.taught_tools import THINK_GO_TEMPLATE, THINK_JINJA, TOOLS_GO_TEMPLATE, TOOLS_JINJA

    return {
        "tools_jinja": TOOLS_JINJA,
        "tools_ok": TOOLS_GO_TEMPLATE,
        "tools_broken": tools_broken_template(),
        "think_jinja": THINK_JINJA,
        "think_ok": THINK_GO_TEMPLATE,
        "think_broken": think_broken_template(),
    }


@pytest.mark.parametrize("case", sorted(CONVERSATIONS))
def test_tool_and_thinking_conversations_on_the_server(
    case: str, ollama_server: OllamaServer, doctor_gguf_dir: Path, tmp_path: Path
) -> None:
    """The TEMPLATE as the server stores it (``/api/show``), its capabilities as the server
    reports them, and the conversation diagnosis only for the deliberately broken one."""
    jinja_key, template_key, expected = CONVERSATIONS[case]
    texts = _conversation_texts()
    jinja, template = texts[jinja_key], texts[template_key]
    reference = write_reference_dir(tmp_path / "ref", chat_template=jinja)
    name = _register(
        ollama_server, doctor_gguf_dir, tmp_path, f"doc-conv-{case.replace('_', '-')}",
        template=template,
    )  # fmt: skip
    kind = "tools" if case.startswith("tools") else "thinking"
    # The server grants the capability to both TEMPLATEs: capabilities cannot tell them apart.
    assert kind in _show(ollama_server, name).get("capabilities", [])
    code, doc = _doctor(ollama_server, name, "--source", str(reference))
    codes = [d["code"] for d in doc["diagnoses"]]
    assert doc["target"]["server_version"] == "0.9.3"
    if expected is None:
        assert code == 0 and doc["diagnoses"] == [], codes
        return
    assert code == 3 and expected in codes, codes
    found = next(d for d in doc["diagnoses"] if d["code"] == expected)
    tiers = {p["probe"]: p["tier"] for p in found["probes"]}
    assert "differs" in tiers.values()
    if kind == "tools":
        assert tiers["tool_call_and_result"] == "differs"
        assert tiers["tools_available"] == "json_equivalent"  # Go's compact JSON, same values
    else:
        assert tiers["think_off"] == "differs" and tiers["think_on"] == "exact"


def test_fix_under_a_new_name_leaves_the_original(
    ollama_server: OllamaServer, doctor_gguf_dir: Path, chatml_reference: Path, tmp_path: Path
) -> None:
    name = _register(
        ollama_server,
        doctor_gguf_dir,
        tmp_path,
        "doc-unsloth",
        template=LLAMA3_TEMPLATE,
        parameters=(("temperature", "1.5"), ("min_p", "0.1")),
    )
    code, doc = _doctor(
        ollama_server,
        name,
        "--source",
        str(chatml_reference),
        "--fix",
        "--name",
        "doc-unsloth-fixed",
        "--skip-generation",
    )
    assert code == 0, doc
    assert {d["code"] for d in doc["diagnoses"]} >= {"template_mismatch", "sampling_conflict"}
    assert _show(ollama_server, name)["template"] == LLAMA3_TEMPLATE
    fixed = _show(ollama_server, "doc-unsloth-fixed")
    assert "temperature" not in fixed["parameters"] and "min_p" not in fixed["parameters"]
    assert '"<|im_end|>"' in fixed["parameters"]


def test_fix_without_force_or_name_is_refused(
    ollama_server: OllamaServer, doctor_gguf_dir: Path, chatml_reference: Path, tmp_path: Path
) -> None:
    name = _register(ollama_server, doctor_gguf_dir, tmp_path, "doc-noforce", template=None)
    result = runner.invoke(
        app,
        ["doctor", name, "--source", str(chatml_reference), "--fix", "--host", ollama_server.host],
    )
    assert result.exit_code == 1
    assert isinstance(result.exception, UsageError)
    assert "--force" in (result.exception.hint or "")
    assert _show(ollama_server, name)["template"] == "{{ .Prompt }}"


def test_embedded_template_is_the_reference_without_source(
    ollama_server: OllamaServer, doctor_gguf_dir: Path, tmp_path: Path
) -> None:
    name = _register(
        ollama_server,
        doctor_gguf_dir,
        tmp_path,
        "doc-embedded",
        variant="embedded",
        template=LLAMA3_TEMPLATE,
    )
    code, doc = _doctor(ollama_server, name)
    assert code == 3
    assert doc["reference"]["origin"] == "gguf"
    assert doc["diagnoses"][0]["code"] == "template_mismatch"


def test_guessed_template_that_drops_the_default_system_prompt(
    ollama_server: OllamaServer, doctor_gguf_dir: Path, tmp_path: Path
) -> None:
    # No TEMPLATE: Ollama 0.9.3 matches the embedded Jinja to its ChatML by similarity and
    # silently loses the default system prompt; the GGUF's own Jinja is the reference.
    name = _register(
        ollama_server,
        doctor_gguf_dir,
        tmp_path,
        "doc-guessed",
        variant="embedded_system",
        template=None,
        parameters=(),
    )
    assert "<|im_start|>" in _show(ollama_server, name)["template"]
    code, doc = _doctor(ollama_server, name)
    assert code == 3
    assert doc["reference"]["origin"] == "gguf"
    assert "default_system_lost" in [d["code"] for d in doc["diagnoses"]]
    code, doc = _doctor(ollama_server, name, "--fix", "--force", "--skip-generation")
    assert code == 0, doc["fix"]
    assert doc["fix"]["after"]["diagnoses"] == [] and doc["fix"]["round_trip"] is None
    shown = _show(ollama_server, name)
    assert DEFAULT_SYSTEM in shown["template"] + str(shown.get("system"))


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out = capsys.readouterr()
    return int(info.value.code or 0), out.out, out.err


def test_unknown_model_is_exit_1_and_closed_port_exit_4(
    ollama_server: OllamaServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _main(["doctor", "no-such-model", "--host", ollama_server.host], capsys)
    assert code == 1 and "no model 'no-such-model'" in err and "ollama list" in err
    closed = f"127.0.0.1:{free_port()}"
    code, out, err = _main(["doctor", "some-model", "--host", closed, "--json"], capsys)
    assert code == 4
    doc = json.loads(out)
    assert doc["exit_code"] == 4 and "ollama serve" in doc["hint"] and not doc["ok"]
    assert "Hint:" in err
