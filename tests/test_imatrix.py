"""``--imatrix auto|FILE``: IQ types need one, the files equal ``llama-quantize --imatrix``'s,
auto's imatrix is cached by content, and bad input (short text, another model's imatrix,
not an imatrix) fails with one line and no GGUF under a final name.

The oracle is the real ``llama-quantize --imatrix`` of the pinned toolchain run on the 16-bit
GGUF our converter writes; imatrices come from the real ``llama-imatrix``.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.errors import DependencyMissingError, InputError
from deploy_to_ollama.gguf.export import export_gguf
from deploy_to_ollama.gguf.imatrix import (
    MIN_TOKENS,
    ImatrixChoice,
    check_imatrix,
    find_llama_tool,
    parse_imatrix_option,
    read_imatrix_entries,
)
from deploy_to_ollama.gguf.toolchain import Toolchain
from support.cli import run_cli
from support.llama_cpp import gguf_fields
from support.ollama_server import write_tiny_gguf


def _legacy_dat(path: Path, entries: dict[str, int]) -> Path:
    """A legacy-format imatrix (common/imatrix-loader.cpp) with ones as values."""
    blob = struct.pack("<i", len(entries))
    for name, size in entries.items():
        raw = name.encode()
        blob += struct.pack("<i", len(raw)) + raw + struct.pack("<ii", 1, size)
        blob += struct.pack(f"<{size}f", *([1.0] * size))
    path.write_bytes(blob)
    return path


# ------------------------------------------------------------------ flags (no toolchain)


@pytest.mark.parametrize("quant", ["iq4_xs", "q4_k_m,iq3_m", "IQ2_XS"])
def test_iq_type_without_imatrix_is_refused_before_any_work(
    quant: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "missing-model"  # never looked at: the flags fail first
    code, _, err = run_cli(
        ["export", str(source), "--out", str(tmp_path / "out"), "--quant", quant], capsys
    )
    assert code == 2
    assert "needs an importance matrix" in err and "--imatrix auto" in err
    assert not (tmp_path / "out").exists()


def test_calibration_data_alone_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "c.txt"
    text.write_text("some text\n", encoding="utf-8")
    argv = ["export", str(tmp_path), "--out", str(tmp_path / "o"), "--calibration-data", str(text)]
    code, _, err = run_cli(argv, capsys)
    assert code == 2 and "--imatrix auto" in err


@pytest.mark.parametrize(
    ("content", "name", "expected"),
    [
        (b"", "c.txt", "is empty"),
        (b"caf\xe9 au lait", "c.txt", "is not UTF-8"),
        (b'{"text": "ok"}\nnot json\n', "c.jsonl", "line 2 is not JSON"),
    ],
)
def test_bad_calibration_text_fails_in_the_flag_check(
    content: bytes, name: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / name
    text.write_bytes(content)
    argv = ["export", str(tmp_path), "--out", str(tmp_path / "o"), "--quant", "iq4_xs"]
    code, _, err = run_cli([*argv, "--imatrix", "auto", "--calibration-data", str(text)], capsys)
    assert code == 1
    assert expected in err
    assert not (tmp_path / "o").exists()


def test_jsonl_calibration_gives_the_strings_of_each_record(tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text(
        '{"messages": [{"role": "user", "content": "What is two plus two?"}]}\n{"text": "Four."}\n',
        encoding="utf-8",
    )
    choice = parse_imatrix_option("auto", data)
    assert choice == ImatrixChoice(calibration=data)
    from deploy_to_ollama.gguf.imatrix import calibration_text

    assert calibration_text(data) == ("user\nWhat is two plus two?\nFour.", str(data))


@pytest.mark.parametrize(
    ("content", "code_expected", "expected"),
    [(None, 1, "does not exist"), (b"GGUF-ish but not", 1, "is not an imatrix")],
)
def test_imatrix_file_that_is_missing_or_no_imatrix_is_refused(
    content: bytes | None,
    code_expected: int,
    expected: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "weights.dat"
    if content is not None:
        path.write_bytes(content)
    argv = ["export", str(tmp_path), "--out", str(tmp_path / "o"), "--quant", "iq4_xs"]
    code, _, err = run_cli([*argv, "--imatrix", str(path)], capsys)
    assert code == code_expected
    assert expected in err


def test_imatrix_of_another_model_is_refused_by_name_and_by_shape(tmp_path: Path) -> None:
    model = write_tiny_gguf(tmp_path / "m.gguf", n_embd=64, n_head=2)
    right = _legacy_dat(tmp_path / "right.dat", {"blk.0.attn_q.weight": 64})
    assert check_imatrix(right, model) == 1
    other_names = _legacy_dat(tmp_path / "names.dat", {"model.layers.0.q.weight": 64})
    with pytest.raises(InputError, match="none of its 1 entries names a tensor of this model"):
        check_imatrix(other_names, model)
    other_shape = _legacy_dat(tmp_path / "shape.dat", {"blk.0.attn_q.weight": 128})
    with pytest.raises(InputError, match="has 128 values, this model's needs 64"):
        check_imatrix(other_shape, model)


def test_a_toolchain_without_llama_imatrix_is_a_missing_dependency(tmp_path: Path) -> None:
    with pytest.raises(DependencyMissingError, match="no llama-imatrix") as info:
        find_llama_tool(Toolchain(root=tmp_path), "llama-imatrix")
    assert info.value.exit_code == 4
    assert "setup" in (info.value.hint or "")


# ------------------------------------------------------------------ real llama.cpp


def _llama_quantize(toolchain: Toolchain, imatrix: Path, source: Path, target: Path, quant: str):
    subprocess.run(
        [str(toolchain.quantize), "--imatrix", str(imatrix), str(source), str(target), quant, "2"],
        check=True,
        capture_output=True,
    )
    return target


@pytest.fixture(scope="module")
def auto_export(imatrix_toolchain: Toolchain, llama256: Any, tmp_path_factory: Any) -> Any:
    """llama256 exported to iq4_xs + q4_k_m with ``--imatrix auto`` (the packaged text)."""
    out = tmp_path_factory.mktemp("auto")
    return export_gguf(
        llama256.adapter_dir,
        out_dir=out,
        quant="iq4_xs,q4_k_m",
        toolchain=imatrix_toolchain,
        imatrix=ImatrixChoice(),
    )


@pytest.mark.slow
def test_imatrix_quants_are_byte_identical_to_llama_quantize(
    auto_export: Any, imatrix_toolchain: Toolchain, llama256: Any, tmp_path: Path
) -> None:
    """FILE route: each file is what ``llama-quantize --imatrix FILE`` makes of our bf16."""
    computed = auto_export.imatrix
    assert computed is not None and computed.computed and computed.entries > 0
    imatrix = tmp_path / "given.gguf"
    imatrix.write_bytes(computed.path.read_bytes())
    result = export_gguf(
        llama256.adapter_dir,
        out_dir=tmp_path / "ours",
        quant="iq4_xs,q4_k_m,bf16",
        toolchain=imatrix_toolchain,
        imatrix=parse_imatrix_option(str(imatrix)),
    )
    files = {f.quant: f.path for f in result.files}
    for quant in ("iq4_xs", "q4_k_m"):
        reference = _llama_quantize(
            imatrix_toolchain, imatrix, files["bf16"], tmp_path / f"ref.{quant}", quant.upper()
        )
        assert files[quant].read_bytes() == reference.read_bytes(), quant
    # a GGUF source (requantized) takes the same imatrix the same way
    again = export_gguf(
        files["bf16"],
        out_dir=tmp_path / "from-gguf",
        quant="iq4_xs",
        toolchain=imatrix_toolchain,
        imatrix=parse_imatrix_option(str(imatrix)),
    )
    assert again.path.read_bytes() == (tmp_path / "ref.iq4_xs").read_bytes()
    fields = gguf_fields(files["iq4_xs"], imatrix_toolchain)
    assert fields["quantize.imatrix.file"] == str(imatrix)
    assert fields["quantize.imatrix.entries_count"] == computed.entries
    # the imatrix changed the bytes: plain q4_k_m differs from the imatrix one
    plain = export_gguf(
        llama256.adapter_dir,
        out_dir=tmp_path / "plain",
        quant="q4_k_m",
        toolchain=imatrix_toolchain,
    )
    assert plain.path.read_bytes() != files["q4_k_m"].read_bytes()


@pytest.mark.slow
def test_auto_imatrix_is_cached_by_model_and_text(
    auto_export: Any,
    imatrix_toolchain: Toolchain,
    llama256: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The CLI's second export finds the imatrix by content key and says so in --json."""
    out = auto_export.files[0].path.parent
    first = auto_export.imatrix
    assert first.path.parent == out and first.path.suffix == ".imatrix"
    stamp = first.path.stat().st_mtime_ns
    before = {f.quant: f.path.read_bytes() for f in auto_export.files}
    argv = ["export", str(llama256.adapter_dir), "--out", str(out), "--quant", "iq4_xs,q4_k_m"]
    argv += ["--imatrix", "auto", "--force", "--json", "--llama-cpp", str(imatrix_toolchain.root)]
    code, stdout, err = run_cli(argv, capsys)
    assert code == 0, err
    payload = json.loads(stdout)
    assert payload["imatrix"]["computed"] is False
    assert payload["imatrix"]["path"] == str(first.path)
    assert first.path.stat().st_mtime_ns == stamp
    assert {f["quant"]: Path(f["path"]).read_bytes() for f in payload["files"]} == before


@pytest.mark.slow
def test_calibration_text_too_short_names_the_tokens_needed(
    imatrix_toolchain: Toolchain, llama256: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "short.txt"
    text.write_text("The cat sat on the mat. " * 10, encoding="utf-8")
    out = tmp_path / "out"
    argv = ["export", str(llama256.adapter_dir), "--out", str(out), "--quant", "iq4_xs"]
    argv += ["--imatrix", "auto", "--calibration-data", str(text)]
    argv += ["--llama-cpp", str(imatrix_toolchain.root)]
    code, _, err = run_cli(argv, capsys)
    assert code == 1
    assert f"needs at least {MIN_TOKENS} tokens" in err and "the text has" in err
    assert not list(out.glob("*.gguf")) and not list(out.glob("*.imatrix"))


@pytest.mark.slow
def test_imatrix_computed_for_another_model_is_refused(
    auto_export: Any, imatrix_toolchain: Toolchain, taught: Any, tmp_path: Path
) -> None:
    """llama256's imatrix (rows of 256) on the taught model (rows of 128): same names."""
    assert read_imatrix_entries(auto_export.imatrix.path)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"is for another model: blk\.0.*256 values.*needs 128"):
        export_gguf(
            taught.adapter_dir,
            out_dir=out,
            quant="iq4_xs",
            toolchain=imatrix_toolchain,
            imatrix=parse_imatrix_option(str(auto_export.imatrix.path)),
        )
    assert not list(out.glob("*.gguf"))


def test_packaged_calibration_text_is_long_enough_for_two_chunks() -> None:
    """A word is at least one token: the packaged text must hold MIN_TOKENS words."""
    from deploy_to_ollama.gguf.imatrix import calibration_text

    text, origin = calibration_text(None)
    assert origin == "packaged"
    assert len(text.split()) >= MIN_TOKENS
    assert os.sep not in origin


def test_deploy_refuses_an_iq_type_without_imatrix_before_the_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No server runs at this host: the flag check must come first (exit 2, not 4)."""
    argv = ["deploy", str(tmp_path), "--name", "bot", "--quant", "iq3_m"]
    code, _, err = run_cli([*argv, "--host", "127.0.0.1:9"], capsys)
    assert code == 2 and "iq3_m needs an importance matrix" in err


def test_imatrix_fingerprint_follows_the_text_and_the_file(tmp_path: Path) -> None:
    """Export stamps and deploy state key on it: another text or file must not reuse a GGUF."""
    one, two = tmp_path / "one.txt", tmp_path / "two.txt"
    one.write_text("alpha beta", encoding="utf-8")
    two.write_text("alpha gamma", encoding="utf-8")
    assert (
        ImatrixChoice(calibration=one).fingerprint() != ImatrixChoice(calibration=two).fingerprint()
    )
    assert (
        ImatrixChoice(calibration=one).fingerprint() == ImatrixChoice(calibration=one).fingerprint()
    )
    dat = _legacy_dat(tmp_path / "w.dat", {"blk.0.attn_q.weight": 64})
    before = ImatrixChoice(file=dat).fingerprint()
    _legacy_dat(dat, {"blk.0.attn_q.weight": 32})
    assert ImatrixChoice(file=dat).fingerprint() != before


def test_auto_computes_on_calibration_data_else_eval_data_else_the_packaged_text(
    tmp_path: Path,
) -> None:
    calib, held_out = tmp_path / "calib.txt", tmp_path / "eval.txt"
    calib.write_text("calibration words", encoding="utf-8")
    held_out.write_text("evaluation words", encoding="utf-8")
    from deploy_to_ollama.cli.export import check_imatrix_flags

    assert check_imatrix_flags("iq4_xs", "auto", calib, held_out) == ImatrixChoice(
        calibration=calib
    )
    assert check_imatrix_flags("iq4_xs", "auto", None, held_out) == ImatrixChoice(
        calibration=held_out
    )
    assert check_imatrix_flags("iq4_xs", "auto", None) == ImatrixChoice()
    assert check_imatrix_flags("q4_k_m", None, None, held_out) is None


@pytest.mark.slow
def test_auto_with_a_llama_cpp_without_llama_imatrix_fails_before_converting(
    llama_cpp_toolchain: Toolchain,
    llama256: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A user's own llama.cpp (--llama-cpp) that lacks the tool: exit 4, nothing written."""
    theirs = tmp_path / "llama.cpp"
    theirs.mkdir()
    for entry in llama_cpp_toolchain.root.iterdir():
        # A user's own llama.cpp: no tools, and no marker of a toolchain `setup` built.
        if entry.name not in ("llama-imatrix", "llama-perplexity", ".dto-toolchain.json"):
            (theirs / entry.name).symlink_to(entry)
    out = tmp_path / "out"
    argv = ["export", str(llama256.adapter_dir), "--out", str(out), "--quant", "iq4_xs"]
    code, _, err = run_cli([*argv, "--imatrix", "auto", "--llama-cpp", str(theirs)], capsys)
    assert code == 4
    assert "llama-imatrix" in err.splitlines()[0] and str(theirs) in err
    assert "BF16" not in err  # before the conversion, not after it
    assert not out.exists() or not list(out.iterdir())
