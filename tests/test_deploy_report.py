"""``deploy-report.json``: written by ``deploy`` beside its Modelfile, carried by ``push``.

The Hub is a stand-in (``support.fake_hub``, the real huggingface_hub client against a local
server: the Hub cannot be reached from here); the deploy runs on the real test Ollama server.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy_to_ollama.deploy_report import REPORT_NAME, report_data, summary_markdown
from deploy_to_ollama.modelfile import Modelfile, render_modelfile
from deploy_to_ollama.pipeline import DeployReport
from deploy_to_ollama.publish import push_to_hub
from deploy_to_ollama.roundtrip.report import GenerationCheck, ProbeCheck, RoundTripReport
from support.fake_hub import FakeHub
from support.ollama_server import TINY_OLLAMA_TEMPLATE, OllamaServer, write_tiny_gguf

TOOLS_TEMPLATE = TINY_OLLAMA_TEMPLATE + "{{ if .Tools }}{{ .Tools }}{{ end }}"


def _report(folder: Path, *, template: str, verified: bool, matched: bool) -> DeployReport:
    """A DeployReport as ``deploy`` returns it, over a real Modelfile in ``folder``."""
    gguf = write_tiny_gguf(folder / "bot.Q8_0.gguf")
    modelfile = folder / "Modelfile"
    modelfile.write_text(render_modelfile(Modelfile(from_="./bot.Q8_0.gguf", template=template)))
    probe = ProbeCheck("two_turns", matched, matched, "a", "a" if matched else "b", None)
    generation = GenerationCheck("Hi?", "Hello.", "stop", 12, 12, (), None, (), ())
    rt = RoundTripReport(
        "bot", "http://127.0.0.1:1", "0.9.3", "go_renderer", None, (probe,), generation,
        require_render=True,
    )  # fmt: skip
    return DeployReport(
        name="bot:latest",
        host="http://127.0.0.1:1",
        quant="q8_0",
        gguf=gguf,
        gguf_bytes=gguf.stat().st_size,
        modelfile=modelfile,
        template_verified=verified,
        stages=(),
        round_trip=rt,
    )


def test_report_copies_the_run_and_derives_capabilities(tmp_path: Path) -> None:
    good = report_data(_report(tmp_path, template=TOOLS_TEMPLATE, verified=True, matched=True))
    assert good["template"] == {"verified": True}
    assert good["probes"] == [{"probe": "two_turns", "matched": True}]
    assert good["ollama_versions_checked"] == ["0.9.3"]
    assert good["round_trip"]["verdict"] == "PASSED" and good["round_trip"]["passed"] is True
    assert good["capabilities"] == ["completion", "tools"]
    summary = summary_markdown(good)
    assert "Chat template: verified (1/1 probe" in summary and "PASSED on Ollama 0.9.3" in summary

    other = tmp_path / "bad"
    other.mkdir()
    bad = report_data(_report(other, template=TINY_OLLAMA_TEMPLATE, verified=False, matched=False))
    assert bad["template"] == {"verified": False}
    assert bad["probes"] == [{"probe": "two_turns", "matched": False}]
    assert bad["round_trip"]["verdict"] == "FAILED" and bad["round_trip"]["passed"] is False
    assert bad["capabilities"] == ["completion"]  # no .Tools in this TEMPLATE
    summary = summary_markdown(bad)
    assert "**NOT verified** (0/1 probe" in summary and "FAILED on Ollama" in summary


def test_hub_push_uploads_the_report_and_summarises_it_in_the_card(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    from deploy_to_ollama.deploy_report import write_deploy_report

    folder = tmp_path / "deployed"
    folder.mkdir()
    path = write_deploy_report(
        _report(folder, template=TOOLS_TEMPLATE, verified=False, matched=False)
    )
    assert path == folder / REPORT_NAME
    push_to_hub(folder, "alice/bot-GGUF", what="gguf")
    assert fake_hub.file_bytes("alice/bot-GGUF", REPORT_NAME) == path.read_bytes()
    card = fake_hub.file_bytes("alice/bot-GGUF", "README.md").decode()
    section = card.partition("## What was verified")[2]
    assert "Chat template: **NOT verified** (0/1 probe" in section
    assert "Round trip: FAILED on Ollama 0.9.3" in section
    assert "Capabilities (from the TEMPLATE): completion, tools" in section

    plain = tmp_path / "plain"
    plain.mkdir()
    _report(plain, template=TINY_OLLAMA_TEMPLATE, verified=True, matched=True)
    push_to_hub(plain, "alice/plain-GGUF", what="gguf")
    assert (
        "## What was verified" not in fake_hub.file_bytes("alice/plain-GGUF", "README.md").decode()
    )


@pytest.mark.ollama
def test_deploy_writes_the_report_beside_its_modelfile(
    ollama_server: OllamaServer, tmp_path: Path
) -> None:
    from deploy_to_ollama.pipeline import deploy

    report = deploy(
        write_tiny_gguf(tmp_path / "tiny.gguf"), name="dto-report", host=ollama_server.host,
        parameters=(("num_thread", "1"),), num_predict=4, keep=tmp_path / "keep",
        keep_failed=True, cache_dir=tmp_path / "cache",
    )  # fmt: skip
    data = json.loads((report.modelfile.parent / REPORT_NAME).read_text())
    assert data["model"] == report.name and data["quant"] == report.quant == "f32"
    assert data["template"] == {"verified": report.template_verified}
    rt = report.round_trip
    assert rt is not None
    assert data["ollama_versions_checked"] == [ollama_server.version()]
    assert data["round_trip"]["verdict"] == rt.verdict
    assert data["probes"] == [{"probe": p.probe, "matched": p.matched} for p in rt.probes]
    assert data["capabilities"][0] == "completion"


def _with_imatrix(gguf: Path, target: Path) -> Path:
    """``gguf``'s header and tensors again, plus the ``quantize.imatrix.*`` keys llama-quantize
    writes (test_imatrix checks that our quantizer writes the same); gguf-py writes the file.
    """
    import gguf as gguf_py

    reader = gguf_py.GGUFReader(str(gguf))
    writer = gguf_py.GGUFWriter(str(target), "llama")
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        value = field.contents()
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf_py.GGUFValueType.ARRAY else None
        writer.add_key_value(name, value, kind, sub_type=sub)
    writer.add_string("quantize.imatrix.file", "/cache/imatrix/bot.imatrix.gguf")
    writer.add_string("quantize.imatrix.dataset", "calibration.txt")
    writer.add_int32("quantize.imatrix.entries_count", 7)
    writer.add_int32("quantize.imatrix.chunks_count", 3)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


def test_report_and_card_summary_carry_the_imatrix_and_measured_quality(tmp_path: Path) -> None:
    """Both read off the deployed file: its GGUF header and the quality.json row of its name
    and size; a plain GGUF, or a quality.json measured on another size, says nothing."""
    from deploy_to_ollama.gguf.quality import Quality, QualityReport
    from deploy_to_ollama.measuring import write_quality_file

    plain = _report(tmp_path, template=TOOLS_TEMPLATE, verified=True, matched=True)
    data = report_data(plain)
    assert "imatrix" not in data and "quality" not in data
    assert "importance matrix" not in summary_markdown(data)

    _with_imatrix(plain.gguf, tmp_path / "iq.gguf").replace(plain.gguf)
    reference = tmp_path / "bot.F16.gguf"
    reference.write_bytes(b"16-bit reference")
    quality = Quality(0.0123, 0.01, 0.2, 0.95, 7.1, 2040, reference.name)
    write_quality_file(
        tmp_path, QualityReport({plain.gguf: quality}, reference, 7.0, "eval.txt", 2040, 1.0)
    )
    data = report_data(plain)
    assert data["imatrix"] == {
        "file": "/cache/imatrix/bot.imatrix.gguf", "dataset": "calibration.txt",
        "entries": 7, "chunks": 3,
    }  # fmt: skip
    assert data["quality"]["kl_mean"] == 0.0123 and data["quality"]["reference"] == reference.name
    summary = summary_markdown(data)
    assert "importance matrix: 7 entries, computed on calibration.txt" in summary
    assert "Quality (measured): KL mean 0.01230, top-1 95.00%" in summary
    assert "2,040 tokens of eval.txt" in summary

    with plain.gguf.open("ab") as grown:  # re-exported since: the numbers are another file's
        grown.write(b"\0" * 32)
    assert "quality" not in report_data(plain)


def test_a_gguf_push_card_names_the_imatrix_of_each_file_that_has_one(tmp_path: Path) -> None:
    from deploy_to_ollama.publish import build_repo_files

    plain = write_tiny_gguf(tmp_path / "bot.Q8_0.gguf")
    iq = _with_imatrix(plain, tmp_path / "bot.IQ4_XS.gguf")
    card = build_repo_files(tmp_path, "alice/bot", "gguf", [plain, iq])["README.md"].decode()
    assert "## Importance matrix" in card
    assert "`bot.IQ4_XS.gguf`: 7 entries, computed on calibration.txt" in card
    assert "`bot.Q8_0.gguf`:" not in card
    card = build_repo_files(tmp_path, "alice/bot", "gguf", [plain])["README.md"].decode()
    assert "Importance matrix" not in card
