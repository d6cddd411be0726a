"""A ``.gguf`` source reports its real quant type and its embedded template (real GGUF files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy_to_ollama.inputs import resolve_input
from support.ollama_server import TINY_CHAT_TEMPLATE, OllamaServer, write_tiny_gguf


def _f16_without_file_type(path: Path) -> Path:
    """A GGUF whose writer left out general.file_type: the tensor types must tell."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("no-file-type")
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), np.float16))
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((4, 4), np.float16))
    writer.add_tensor("output_norm.weight", np.ones(4, np.float32))  # 1-D: not counted
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_source_reports_its_quant_and_template(tmp_path: Path) -> None:
    resolved = resolve_input(write_tiny_gguf(tmp_path / "tiny.gguf"))
    assert (resolved.kind, resolved.gguf_quant) == ("gguf", "f32")  # general.file_type ALL_F32
    assert resolved.chat_template == TINY_CHAT_TEMPLATE
    assert resolved.chat_template_file == tmp_path / "tiny.gguf"
    assert resolved.tokenizer_dir is None
    assert resolve_input(_f16_without_file_type(tmp_path / "f16.gguf")).gguf_quant == "f16"


def test_other_inputs_have_no_gguf_quant(tiny_llama: object) -> None:
    assert resolve_input(tiny_llama.base_dir).gguf_quant is None  # type: ignore[attr-defined]


@pytest.mark.ollama
def test_deploy_report_names_the_quant_of_a_gguf_source(
    ollama_server: OllamaServer, tmp_path: Path
) -> None:
    from deploy_to_ollama.pipeline import deploy

    source = write_tiny_gguf(tmp_path / "tiny.gguf")
    report = deploy(
        source, name="dto-gguf-quant", host=ollama_server.host, quant="q4_k_m", check=False,
        cache_dir=tmp_path / "cache",
    )  # fmt: skip
    assert report.quant == "f32"  # not the q4_k_m flag: a GGUF source is not requantized
    assert report.to_dict()["quant"] == "f32"


def test_every_stage_agrees_on_what_a_source_is(tmp_path: Path) -> None:
    """One function decides the kind: a GGUF named ``.bin`` is a GGUF everywhere, a text file
    named ``.gguf`` is refused everywhere (deploy's pre-check and resolve_input used to differ).
    """
    import shutil

    from deploy_to_ollama.compare import merged_model_dir
    from deploy_to_ollama.errors import InputError
    from deploy_to_ollama.inputs import source_kind
    from deploy_to_ollama.pipeline import ensure_source_kind

    renamed = Path(shutil.copy(write_tiny_gguf(tmp_path / "t.gguf"), tmp_path / "model.bin"))
    assert source_kind(renamed) == "gguf"
    ensure_source_kind(renamed)
    assert resolve_input(renamed).kind == "gguf"
    with pytest.raises(InputError, match="GGUF"), merged_model_dir(renamed):
        pass
    fake = tmp_path / "fake.gguf"
    fake.write_text("not a model\n")
    for check in (source_kind, ensure_source_kind, resolve_input):
        with pytest.raises(InputError, match="not a GGUF file"):
            check(fake)
