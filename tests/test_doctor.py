"""Doctor diagnosis logic on GGUF and Modelfile targets (no Ollama server needed).

The reference side is real transformers rendering of real tokenizer folders; the Ollama side is
the Go-template port of Ollama's prompt building. Each broken Modelfile must get exactly the
diagnosis that explains it, the healthy one none, and ``--fix`` must produce a healthy file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deploy_to_ollama.chat_template.source import TemplateSource
from deploy_to_ollama.chat_template.translate import translate_template
from deploy_to_ollama.cli import app, main
from deploy_to_ollama.doctor import examine
from deploy_to_ollama.doctor.diagnoses import default_system_prompt, diagnose, summarize_difference
from deploy_to_ollama.doctor.reference import ReferenceChoice, ReferenceTemplate, choose_reference
from deploy_to_ollama.doctor.targets import Target
from deploy_to_ollama.errors import DeployError
from deploy_to_ollama.modelfile import Modelfile, parse_modelfile, render_modelfile
from support.doctor_models import (
    CHATML_TEMPLATE,
    DEFAULT_SYSTEM,
    DEFAULT_SYSTEM_TEMPLATE,
    LLAMA3_TEMPLATE,
    copy_gguf,
    write_reference_dir,
)
from support.ollama_server import TINY_CHAT_TEMPLATE
from support.shared import corpus_records

runner = CliRunner()


def _modelfile(
    folder: Path,
    gguf_dir: Path,
    *,
    variant: str = "plain",
    template: str | None = CHATML_TEMPLATE,
    system: str | None = None,
    parameters: tuple[tuple[str, str], ...] = (("stop", "<|im_end|>"),),
) -> Path:
    gguf = copy_gguf(gguf_dir, variant, folder)
    path = folder / "Modelfile"
    text = render_modelfile(
        Modelfile(from_=f"./{gguf.name}", template=template, system=system, parameters=parameters)
    )
    path.write_text(text, encoding="utf-8")
    return path


def _codes(path: Path, source: Path | None) -> list[str]:
    return [d.code for d in examine(str(path), source=source).diagnoses]


def test_healthy_modelfile_has_no_diagnoses(
    tmp_path: Path, doctor_gguf_dir: Path, chatml_reference: Path
) -> None:
    path = _modelfile(tmp_path, doctor_gguf_dir)
    report = examine(str(path), source=chatml_reference)
    assert report.diagnoses == ()
    assert report.healthy
    assert report.target.kind == "modelfile"
    assert report.choice.reference is not None and report.choice.reference.origin == "source"


def test_missing_template_is_the_prompt_fallback(
    tmp_path: Path, doctor_gguf_dir: Path, chatml_reference: Path
) -> None:
    path = _modelfile(tmp_path, doctor_gguf_dir, template=None)
    report = examine(str(path), source=chatml_reference)
    (diag,) = report.diagnoses
    assert diag.code == "no_template" and diag.severity == "error" and diag.fixable
    assert "raw" in diag.title and "{{ .Prompt }}" in diag.evidence[0]


def test_template_of_another_family_is_named(
    tmp_path: Path, doctor_gguf_dir: Path, chatml_reference: Path
) -> None:
    path = _modelfile(tmp_path, doctor_gguf_dir, template=LLAMA3_TEMPLATE)
    report = examine(str(path), source=chatml_reference)
    codes = [d.code for d in report.diagnoses]
    assert codes[0] == "template_mismatch"
    mismatch = report.diagnoses[0]
    assert "another model family" in mismatch.evidence[0]
    assert "<|start_header_id|>" in mismatch.evidence[0]
    assert {p.probe for p in mismatch.probes} == {"single_user", "system_user", "multi_turn"}
    assert mismatch.probes[0].first_difference == 0
    assert "generation_prompt_missing" in codes


def test_assistant_header_missing_after_the_user_turn(
    tmp_path: Path, doctor_gguf_dir: Path, chatml_reference: Path
) -> None:
    no_header = CHATML_TEMPLATE.removesuffix("<|im_start|>assistant\n")
    path = _modelfile(tmp_path, doctor_gguf_dir, template=no_header)
    report = examine(str(path), source=chatml_reference)
    codes = [d.code for d in report.diagnoses]
    assert codes == ["template_mismatch", "generation_prompt_missing"]
    single = next(p for p in report.diagnoses[0].probes if p.probe == "single_user")
    assert single.summary == "'<|im_start|>assistant\\n' missing at the end of the prompt"
    assert "continues your text" in report.diagnoses[1].symptom


def test_end_of_turn_marker_that_is_not_a_stop(
    tmp_path: Path, doctor_gguf_dir: Path, chatml_reference: Path
) -> None:
    # <|im_end|> ends each turn, but this GGUF's EOS is <|endoftext|> and no stop is set.
    path = _modelfile(tmp_path, doctor_gguf_dir, variant="eos_endoftext", parameters=())
    diag = examine(str(path), source=chatml_reference).diagnoses
    assert [d.code for d in diag] == ["eot_not_stop"]
    assert "never stops" in diag[0].symptom and "<|im_end|>" in diag[0].symptom
    # The same GGUF with the stop set is fine; so is the plain GGUF whose EOS is <|im_end|>.
    ok = _modelfile(tmp_path / "ok", doctor_gguf_dir, variant="eos_endoftext")
    assert _codes(ok, chatml_reference) == []
    eos = _modelfile(tmp_path / "eos", doctor_gguf_dir, parameters=())
    assert _codes(eos, chatml_reference) == []


def test_stop_strings_that_answers_contain(
    tmp_path: Path, doctor_gguf_dir: Path, chatml_reference: Path
) -> None:
    params = (
        ("stop", "<|im_end|>"),
        ("stop", "\n"),
        ("stop", "the"),
        ("stop", "<|im_start|>"),
        ("stop", "### Instruction:"),
    )
    path = _modelfile(tmp_path, doctor_gguf_dir, parameters=params)
    diags = examine(str(path), source=chatml_reference).diagnoses
    flagged = {d.title: d.severity for d in diags if d.code == "stop_in_answers"}
    assert flagged == {
        "stop string '\\n' appears in normal answers": "error",
        "stop string 'the' appears in normal answers": "warning",
    }


def test_double_bos(tmp_path: Path, doctor_gguf_dir: Path, chatml_reference: Path) -> None:
    path = _modelfile(
        tmp_path, doctor_gguf_dir, variant="add_bos", template="<|endoftext|>" + CHATML_TEMPLATE
    )
    codes = _codes(path, chatml_reference)
    assert "double_bos" in codes
    # Without BOS in the TEMPLATE, the one llama.cpp adds is no difference at all.
    single = _modelfile(tmp_path / "one", doctor_gguf_dir, variant="add_bos")
    assert _codes(single, chatml_reference) == []


def test_default_system_prompt_lost_and_duplicated(
    tmp_path: Path, doctor_gguf_dir: Path, system_reference: Path
) -> None:
    params = (("stop", "<|im_end|>"), ("temperature", "0.7"), ("top_p", "0.8"))
    lost = _modelfile(tmp_path / "lost", doctor_gguf_dir, parameters=params)
    codes = _codes(lost, system_reference)
    assert codes[:2] == ["template_mismatch", "default_system_lost"]
    # Restoring it through SYSTEM is exactly right.
    kept = _modelfile(tmp_path / "kept", doctor_gguf_dir, system=DEFAULT_SYSTEM, parameters=params)
    assert _codes(kept, system_reference) == []
    hard = f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n" + CHATML_TEMPLATE
    dup = _modelfile(
        tmp_path / "dup", doctor_gguf_dir, template=hard, system=DEFAULT_SYSTEM, parameters=params
    )
    assert "system_duplicated" in _codes(dup, system_reference)


def test_default_system_prompt_is_found_by_rendering(system_reference: Path) -> None:
    target = Target("modelfile", "Modelfile", CHATML_TEMPLATE, None, (), None, None)
    ref = choose_reference(target, system_reference).reference
    assert ref is not None
    assert default_system_prompt(ref) == DEFAULT_SYSTEM


def test_unsloth_sampling_is_a_warning(
    tmp_path: Path, doctor_gguf_dir: Path, chatml_reference: Path, system_reference: Path
) -> None:
    params = (("stop", "<|im_end|>"), ("temperature", "1.5"), ("min_p", "0.1"))
    path = _modelfile(tmp_path, doctor_gguf_dir, parameters=params)
    report = examine(str(path), source=chatml_reference)
    assert [(d.code, d.severity) for d in report.diagnoses] == [("sampling_conflict", "warning")]
    assert report.healthy  # a warning alone keeps exit 0
    # With a generation_config, the trained values are the yardstick.
    path2 = _modelfile(
        tmp_path / "g",
        doctor_gguf_dir,
        system=DEFAULT_SYSTEM,
        parameters=(("stop", "<|im_end|>"), ("temperature", "1.5")),
    )
    diag = [d for d in examine(str(path2), source=system_reference).diagnoses]
    assert [d.code for d in diag] == ["sampling_conflict"]
    assert diag[0].evidence == ("temperature is 1.5, generation_config.json says 0.7",)


def test_tools_on_one_side_only(
    tmp_path: Path, doctor_gguf_dir: Path, chatml_reference: Path
) -> None:
    tools_template = "{{- if .Tools }}<tools>{{ json .Tools }}</tools>{{ end }}" + CHATML_TEMPLATE
    path = _modelfile(tmp_path, doctor_gguf_dir, template=tools_template)
    assert "tools_extra" in _codes(path, chatml_reference)


def test_gguf_target_uses_its_embedded_template(doctor_gguf_dir: Path) -> None:
    report = examine(str(doctor_gguf_dir / "embedded.gguf"))
    assert report.target.kind == "gguf"
    assert report.choice.reference is not None and report.choice.reference.origin == "gguf"
    assert [d.code for d in report.diagnoses] == ["no_template"]
    # A GGUF with no Jinja and no --source: nothing to compare against, and it says so.
    bare = examine(str(doctor_gguf_dir / "plain.gguf"))
    assert bare.choice.reference is None and "no reference" in bare.choice.note


def test_source_and_gguf_disagreeing_is_a_warning(
    tmp_path: Path, doctor_gguf_dir: Path, system_reference: Path
) -> None:
    report = examine(str(doctor_gguf_dir / "embedded.gguf"), source=system_reference)
    assert "reference_disagreement" in [d.code for d in report.diagnoses]
    assert report.choice.reference is not None and report.choice.reference.origin == "source"


def test_summaries_read_like_symptoms() -> None:
    assert summarize_difference("<s>a", "<s>a") == "identical"
    assert (
        summarize_difference(
            "x<|im_start|>user\nWhat is the secret word?<|im_end|>",
            "x<|im_start|>user\nWhat is the secret word?",
        )
        == "'<|im_end|>' missing at the end of the prompt"
    )
    text = summarize_difference(
        "<|im_start|>user\nWhat is the secret word?<|im_end|>\n<|im_start|>assistant\n",
        "<|im_start|>user\nWhat is the secret word?<|im_end|>\nassistant\n",
    )
    assert text == "'<|im_start|>' missing after the user turn"


# --------------------------------------------------------------------------- CLI


def test_cli_exit_codes_and_json(
    tmp_path: Path, doctor_gguf_dir: Path, chatml_reference: Path
) -> None:
    good = _modelfile(tmp_path / "good", doctor_gguf_dir)
    result = runner.invoke(app, ["doctor", str(good), "--source", str(chatml_reference), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] and doc["healthy"] and doc["diagnoses"] == [] and doc["exit_code"] == 0
    assert doc["schema_version"] == 1 and doc["reference"]["origin"] == "source"

    bad = _modelfile(tmp_path / "bad", doctor_gguf_dir, template=LLAMA3_TEMPLATE)
    result = runner.invoke(app, ["doctor", str(bad), "--source", str(chatml_reference), "--json"])
    assert result.exit_code == 3
    doc = json.loads(result.stdout)
    first = doc["diagnoses"][0]
    assert first["code"] == "template_mismatch" and first["probes"][0]["first_difference"] == 0
    assert set(first) == {
        "code",
        "severity",
        "title",
        "symptom",
        "evidence",
        "fix",
        "fixable",
        "probes",
    }


def test_cli_human_report_fits_100_columns(
    tmp_path: Path, doctor_gguf_dir: Path, chatml_reference: Path
) -> None:
    bad = _modelfile(tmp_path, doctor_gguf_dir, template=LLAMA3_TEMPLATE, parameters=())
    result = runner.invoke(app, ["doctor", str(bad), "--source", str(chatml_reference)])
    assert result.exit_code == 3
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert "Symptom:" in result.stdout and "Fix:" in result.stdout
    assert "problem(s) found" in lines[-1]


def test_cli_bad_input_is_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.txt"
    junk.write_text("FROM\n")
    for argv in (
        ["doctor", str(junk)],
        ["doctor", str(tmp_path / "nope.gguf")],
        ["doctor", str(tmp_path), "--json"],
        ["doctor", str(write_reference_dir(tmp_path / "bare"))],
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        err = capsys.readouterr().err
        assert info.value.code == 1, argv
        assert "Error:" in err and "Hint:" in err


def test_fix_writes_a_healthy_modelfile(
    tmp_path: Path, doctor_gguf_dir: Path, system_reference: Path
) -> None:
    params = (("stop", "\n"), ("temperature", "1.5"), ("min_p", "0.1"))
    broken = _modelfile(tmp_path, doctor_gguf_dir, template=LLAMA3_TEMPLATE, parameters=params)
    before = broken.read_text()
    result = runner.invoke(
        app, ["doctor", str(broken), "--source", str(system_reference), "--fix", "--json"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    fixed = Path(doc["fix"]["modelfile"])
    assert fixed == broken.with_name("Modelfile.fixed")
    assert broken.read_text() == before  # not overwritten without --force
    parsed = parse_modelfile(fixed.read_text())
    assert parsed.from_ == "./plain.gguf"
    assert "\n" not in parsed.parameter_values("stop")
    assert "<|im_end|>" in parsed.parameter_values("stop")
    assert parsed.parameter_values("temperature") == ["0.7"]
    assert parsed.parameter_values("min_p") == []
    assert examine(str(fixed), source=system_reference).diagnoses == ()


def test_fine_tune_folder_with_unsloth_modelfile(tmp_path: Path, doctor_gguf_dir: Path) -> None:
    # Unsloth leaves a Modelfile next to the tokenizer; the folder is its own reference.
    folder = write_reference_dir(
        tmp_path / "lora_model",
        chat_template=DEFAULT_SYSTEM_TEMPLATE,
        generation_config={"temperature": 0.7},
    )
    _modelfile(
        folder,
        doctor_gguf_dir,
        template=CHATML_TEMPLATE,
        parameters=(("stop", "<|im_end|>"), ("temperature", "1.5"), ("min_p", "0.1")),
    )
    report = examine(str(folder))
    assert report.target.kind == "hf"
    assert report.choice.reference is not None
    assert report.choice.reference.origin == "hf_target"
    codes = [d.code for d in report.diagnoses]
    assert codes == ["template_mismatch", "default_system_lost", "sampling_conflict"]


def test_tools_supported_by_the_reference_only(tmp_path: Path, doctor_gguf_dir: Path) -> None:
    tools_jinja = (
        "{% if tools %}{{ '<|im_start|>system\\n' + (tools | tojson) + '<|im_end|>\\n' }}"
        "{% endif %}" + TINY_CHAT_TEMPLATE
    )
    ref = write_reference_dir(tmp_path / "ref", chat_template=tools_jinja)
    path = _modelfile(tmp_path / "m", doctor_gguf_dir)
    diags = examine(str(path), source=ref).diagnoses
    assert [(d.code, d.severity) for d in diags] == [("tools_missing", "warning")]


def test_missing_stop_is_found_without_a_reference(tmp_path: Path, doctor_gguf_dir: Path) -> None:
    path = _modelfile(tmp_path, doctor_gguf_dir, variant="eos_endoftext", parameters=())
    codes = _codes(path, None)
    assert codes == ["eot_not_stop", "no_reference"]


def _corpus_choice(record: dict[str, Any]) -> ReferenceChoice:
    bos, eos = record.get("bos_token"), record.get("eos_token")
    source = TemplateSource(
        template=record["jinja"],
        origin=Path(record["_file"]),
        kind="jinja",
        bos_token=bos,
        eos_token=eos,
        stop_tokens=(eos,) if eos else (),
    )
    variables = tuple((k, v) for k, v in (("bos_token", bos), ("eos_token", eos)) if v)
    ref = ReferenceTemplate(
        template=record["jinja"],
        origin="source",
        location=record["_file"],
        bos_token=bos,
        eos_token=eos,
        stop_tokens=source.stop_tokens,
        add_bos=None,
        variables=variables,
        source=source,
    )
    return ReferenceChoice(ref, "corpus record")


def test_no_false_alarms_on_verified_translations_of_real_templates() -> None:
    # Every 8th corpus record: when the template engine verified its translation, the doctor
    # must find nothing wrong with a Modelfile that uses it.
    records = corpus_records()[::8]
    if not records:
        pytest.skip("../shared/chat_templates is absent")
    checked = 0
    for record in records:
        choice = _corpus_choice(record)
        assert choice.reference is not None and choice.reference.source is not None
        try:
            translated = translate_template(choice.reference.source)
        except DeployError:
            continue
        if not translated.report.verified:
            continue
        stops = tuple(("stop", s) for s in translated.stop)
        target = Target(
            "modelfile", record["_file"], translated.template, translated.system, stops, None, None
        )
        errors = [d for d in diagnose(target, choice) if d.severity == "error"]
        assert errors == [], (record["_file"], [d.evidence for d in errors])
        checked += 1
    assert checked >= 10


def test_fix_keeps_adapters_and_other_parameters(
    tmp_path: Path, doctor_gguf_dir: Path, chatml_reference: Path
) -> None:
    gguf = copy_gguf(doctor_gguf_dir, "plain", tmp_path)
    adapter = copy_gguf(doctor_gguf_dir, "eos_endoftext", tmp_path / "lora")
    path = tmp_path / "Modelfile"
    path.write_text(
        render_modelfile(
            Modelfile(
                from_=f"./{gguf.name}",
                adapters=(f"./lora/{adapter.name}",),
                template=LLAMA3_TEMPLATE,
                parameters=(("num_ctx", "2048"), ("stop", "\n")),
            )
        )
    )
    result = runner.invoke(
        app, ["doctor", str(path), "--source", str(chatml_reference), "--fix", "--force"]
    )
    assert result.exit_code == 0, result.output
    fixed = parse_modelfile(path.read_text())  # --force: rewritten in place
    assert fixed.from_ == "./plain.gguf"
    assert fixed.adapters == ("./lora/eos_endoftext.gguf",)
    assert fixed.parameter_values("num_ctx") == ["2048"]
    assert fixed.parameter_values("stop") == ["<|im_end|>", "<|im_start|>"]
