"""One chat-template reader: the GGUF metadata, the Modelfile, the reference and the doctor agree.

Each layout below once made the GGUF side (``gguf/llama_cpp.read_chat_template``) and the
Modelfile side (``chat_template/source``) pick different templates.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.chat_template.source import load_template_source, template_source_for
from deploy_to_ollama.gguf.llama_cpp import read_chat_template
from deploy_to_ollama.inputs import resolve_input
from support.models import LoraFixture

FROM_JSON = "{% for m in messages %}json:{{ m.content }}\n{% endfor %}"
FROM_CONFIG = "{% for m in messages %}config:{{ m.content }}\n{% endfor %}"
FROM_JINJA = "{% for m in messages %}jinja:{{ m.content }}\n{% endfor %}"
TOOL_USE = "{% for m in messages %}tool_use:{{ m.content }}\n{% endfor %}"
RAG = "{% for m in messages %}rag:{{ m.content }}\n{% endfor %}"


def _set_config_template(folder: Path, value: object) -> None:
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config["chat_template"] = value
    path.write_text(json.dumps(config))


def _json_over_config(folder: Path) -> str:
    _set_config_template(folder, FROM_CONFIG)
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": FROM_JSON}))
    return FROM_JSON


def _jinja_over_json(folder: Path) -> str:
    _json_over_config(folder)
    (folder / "chat_template.jinja").write_text(FROM_JINJA)
    return FROM_JINJA


def _named_without_default(folder: Path) -> str:
    _set_config_template(
        folder, [{"name": "tool_use", "template": TOOL_USE}, {"name": "rag", "template": RAG}]
    )
    return TOOL_USE


def _named_with_default(folder: Path) -> str:
    _set_config_template(
        folder, [{"name": "tool_use", "template": TOOL_USE}, {"name": "default", "template": RAG}]
    )
    return RAG


def _named_list_in_chat_template_json(folder: Path) -> str:
    _set_config_template(folder, FROM_CONFIG)
    (folder / "chat_template.json").write_text(
        json.dumps({"chat_template": [{"name": "rag", "template": RAG}]})
    )
    return RAG


LAYOUTS: dict[str, Callable[[Path], str]] = {
    "chat_template.json": _json_over_config,
    "chat_template.jinja": _jinja_over_json,
    "named-without-default": _named_without_default,
    "named-with-default": _named_with_default,
    "named-in-chat_template.json": _named_list_in_chat_template_json,
}


@pytest.fixture
def model_copy(tiny_llama: LoraFixture, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_llama.base_dir, tmp_path / "model"))


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_gguf_and_modelfile_sides_read_the_same_template(layout: str, model_copy: Path) -> None:
    expected = LAYOUTS[layout](model_copy)
    modelfile_side = load_template_source(model_copy).template
    assert read_chat_template(model_copy) == modelfile_side == expected
    resolved = resolve_input(model_copy)
    assert resolved.chat_template == expected
    assert template_source_for(resolved).template == expected


def test_adapter_without_template_uses_its_base(tiny_llama: LoraFixture, tmp_path: Path) -> None:
    base = Path(shutil.copytree(tiny_llama.base_dir, tmp_path / "base"))
    expected = _json_over_config(base)
    adapter = Path(shutil.copytree(tiny_llama.adapter_dir, tmp_path / "adapter"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (adapter / name).unlink()
    resolved = resolve_input(adapter, base=base)
    assert resolved.tokenizer_dir == base  # the one tokenizer locator
    assert resolved.chat_template == expected
    assert resolved.chat_template_file == base / "chat_template.json"
    assert read_chat_template(adapter, base) == expected
    source = template_source_for(resolved)
    assert source.template == expected and source.eos_token is not None


def test_adapter_template_wins_over_its_base(tiny_llama: LoraFixture, tmp_path: Path) -> None:
    adapter = Path(shutil.copytree(tiny_llama.adapter_dir, tmp_path / "adapter"))
    (adapter / "chat_template.jinja").write_text(FROM_JINJA)
    resolved = resolve_input(adapter)
    assert resolved.chat_template == FROM_JINJA
    assert resolved.tokenizer_dir == adapter


def test_doctor_reference_reads_the_same_template(
    model_copy: Path, tiny_llama: LoraFixture, tmp_path: Path
) -> None:
    from deploy_to_ollama.doctor.reference import choose_reference
    from deploy_to_ollama.doctor.targets import load_target
    from support.ollama_server import write_tiny_gguf

    target = load_target(str(write_tiny_gguf(tmp_path / "t.gguf", chat_template=FROM_CONFIG)))
    expected = _named_without_default(model_copy)
    choice = choose_reference(target, model_copy)
    assert choice.reference is not None and choice.reference.template == expected
    # An adapter without a template of its own: the doctor takes its base's, as the stages do.
    adapter = Path(shutil.copytree(tiny_llama.adapter_dir, tmp_path / "adapter"))
    _set_config_template(adapter, None)
    base_template = load_template_source(tiny_llama.base_dir).template
    choice = choose_reference(target, adapter)
    assert choice.reference is not None and choice.reference.template == base_template


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["chat_template.json", "named-without-default"])
def test_exported_gguf_carries_the_modelfile_template(
    layout: str, model_copy: Path, tmp_path: Path, llama_cpp_toolchain: Any
) -> None:
    """End to end: the GGUF's tokenizer.chat_template is the Modelfile's source template.

    llama.cpp's converter reads tokenizer_config.json's template before chat_template.json, and
    writes no tokenizer.chat_template for a named list without "default"; ours is written over it.
    """
    from deploy_to_ollama.gguf.export import export_gguf
    from support.llama_cpp import gguf_fields

    expected = LAYOUTS[layout](model_copy)
    result = export_gguf(
        model_copy, out_dir=tmp_path / "out", quant="q8_0", toolchain=llama_cpp_toolchain
    )
    fields = gguf_fields(result.path, llama_cpp_toolchain)
    assert fields["tokenizer.chat_template"] == load_template_source(model_copy).template
    assert fields["tokenizer.chat_template"] == expected
    # The exported file, given back as a source, reports what llama.cpp wrote.
    assert resolve_input(result.path).gguf_quant == "q8_0"
    assert resolve_input(result.path).chat_template == expected


@pytest.mark.slow
def test_export_of_an_adapter_without_tokenizer_writes_its_base_template_twice(
    tiny_llama: LoraFixture, tmp_path: Path, llama_cpp_toolchain: Any
) -> None:
    """GGUF and Modelfile of ``export`` both carry the base's template when the adapter has none."""
    from typer.testing import CliRunner

    from deploy_to_ollama.cli import app
    from deploy_to_ollama.modelfile import parse_modelfile
    from support.llama_cpp import gguf_fields

    adapter = Path(shutil.copytree(tiny_llama.adapter_dir, tmp_path / "adapter"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (adapter / name).unlink()
    out = tmp_path / "out"
    args = ["export", str(adapter), "--out", str(out), "--quant", "q8_0", "--backend", "llama.cpp"]
    args += ["--base", str(tiny_llama.base_dir), "--llama-cpp", str(llama_cpp_toolchain.root)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    base_template = load_template_source(tiny_llama.base_dir).template
    gguf = next(out.glob("*.gguf"))
    assert gguf_fields(gguf, llama_cpp_toolchain)["tokenizer.chat_template"] == base_template
    modelfile = parse_modelfile((out / "Modelfile").read_text())
    assert modelfile.template, "the Modelfile lost the template the GGUF carries"
