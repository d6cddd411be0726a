"""The header-only GGUF reader the native-path proof uses (issue 13: read only the metadata it
needs, not the whole file): the same values as gguf-py's reader, from files gguf-py writes."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from deploy_to_ollama.chat_template.native import gguf_lacks_template
from deploy_to_ollama.errors import InputError, InputNotFoundError
from deploy_to_ollama.gguf.metadata import read_gguf_fields
from deploy_to_ollama.route_proof import _gguf_jinja

TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
)


def _write(path: Path, *, template: str | None = TEMPLATE) -> Path:
    """A GGUF with every value kind before the template, and a tensor after the header."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_uint32("test.u32", 7)
    writer.add_int64("test.i64", -5)
    writer.add_float32("test.f32", 0.5)
    writer.add_bool("test.bool", True)
    writer.add_token_list(["<s>", "</s>", "héllo", ""])
    writer.add_token_types([3, 3, 1, 1])
    writer.add_array("test.nested", [[1, 2], [3]])
    if template is not None:
        writer.add_chat_template(template)
    writer.add_tensor("blob", np.ones((64, 64), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_values_equal_gguf_py(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.gguf")
    fields = gguf.GGUFReader(str(path)).fields
    keys = [k for k in fields if not k.startswith("GGUF.")]
    ours = read_gguf_fields(path, [*keys, "absent.key"])
    assert set(ours) == set(keys)  # an absent key is left out
    for key in keys:
        if key != "test.nested":  # gguf-py's contents() flattens nested arrays
            assert ours[key] == fields[key].contents(), key
    assert ours["test.nested"] == [[1, 2], [3]]
    assert ours["tokenizer.chat_template"] == TEMPLATE
    assert ours["tokenizer.ggml.tokens"] == ["<s>", "</s>", "héllo", ""]


def test_reads_the_header_only(tmp_path: Path) -> None:
    """Tensor data cut off: gguf-py's reader fails, the header is still read whole."""
    path = _write(tmp_path / "m.gguf")
    data = path.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) - 64 * 64 * 4])
    with pytest.raises(ValueError):
        gguf.GGUFReader(str(cut))
    assert _gguf_jinja(cut) == TEMPLATE
    assert gguf_lacks_template(cut) is None


def test_no_template(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.gguf", template=None)
    assert _gguf_jinja(path) is None
    reason = gguf_lacks_template(path)
    assert reason is not None and "no tokenizer.chat_template" in reason


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError):
        read_gguf_fields(tmp_path / "missing.gguf", ["x"])
    text = tmp_path / "not.gguf"
    text.write_text("hello, not a GGUF")
    with pytest.raises(InputError, match="not a readable GGUF"):
        read_gguf_fields(text, ["x"])
    header = _write(tmp_path / "m.gguf").read_bytes()
    start = header.index(b"tokenizer.chat_template")
    short = tmp_path / "short.gguf"
    short.write_bytes(header[: start + 40])  # the template's length says more than is there
    with pytest.raises(InputError, match="past the end"):
        read_gguf_fields(short, ["tokenizer.chat_template"])


def test_the_vocabulary_stub_keeps_every_tokenizer_key_and_no_weight(tmp_path: Path) -> None:
    from deploy_to_ollama.gguf.metadata import read_gguf_prefixed
    from deploy_to_ollama.gguf.template_gguf import write_vocabulary_stub

    model = _write(tmp_path / "m.gguf")
    stub = write_vocabulary_stub(tmp_path / "stub.gguf", model)
    assert read_gguf_prefixed(stub, "tokenizer.") == read_gguf_prefixed(model, "tokenizer.")
    assert read_gguf_prefixed(stub, "test.") == {}  # only the tokenizer's keys travel
    tensors = {t.name for t in gguf.GGUFReader(str(stub)).tensors}
    assert "blob" not in tensors and "token_embd.weight" in tensors
    assert not list(tmp_path.glob(".*partial"))  # written atomically
