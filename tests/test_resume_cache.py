"""Resume bookkeeping, dead runs' leftovers, ``cache list|clean`` and early output/flag errors.

Everything here runs without a toolchain: the errors must come before any heavy work. The
export/deploy runs that resume for real are in test_export_resume.py (slow).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.cache import clean_cache, list_cache, parse_duration
from deploy_to_ollama.errors import DiskSpaceError, InputError, UsageError
from deploy_to_ollama.inputs import read_gguf_facts
from deploy_to_ollama.pipeline import deploy, real_quant
from deploy_to_ollama.resume import (
    LOCK_FILE,
    STATE_FILE,
    content_key,
    holding,
    remove_stale_temps,
)
from deploy_to_ollama.stages import check_parameters
from support.cli import run_cli as _cli
from support.ollama_server import free_port


def _dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@contextlib.contextmanager
def _live_process() -> Iterator[int]:
    """A live process of ours (not this one), stopped at the end."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------ content key, leftovers


def test_content_key_follows_source_bytes_and_base_identity(tmp_path: Path) -> None:
    source, base = tmp_path / "lora", tmp_path / "base"
    source.mkdir()
    base.mkdir()
    (source / "adapter_model.safetensors").write_bytes(b"\0" * 8)
    (base / "model.safetensors").write_bytes(b"\1" * 8)
    first = content_key(source, base)
    (source / ".dto-export.json").write_text("our own stamp is not content")
    assert content_key(source, base) == first
    (source / "adapter_model.safetensors").write_bytes(b"\0" * 7 + b"\1")
    changed = content_key(source, base)
    assert changed != first
    (base / "model.safetensors").write_bytes(b"\2" * 9)  # a replaced base: another size
    assert content_key(source, base) != changed
    assert content_key(source, None) != content_key(source, base)


def test_stale_temps_of_dead_runs_are_removed_live_and_foreign_ones_kept(tmp_path: Path) -> None:
    dead, mine = _dead_pid(), os.getpid()
    dead_file = tmp_path / f".m.Q8_0.gguf.pid-{dead}.x1.partial"
    dead_dir = tmp_path / f".dto-export-pid-{dead}-abc"
    dead_merge = tmp_path / f".merged.partial-{dead}"
    live_file = tmp_path / f".m.Q4_K_M.gguf.pid-{mine}.x2.partial"
    foreign = tmp_path / ".m.gguf.abc.partial"  # no PID: an older version's, left alone
    final = tmp_path / "m.Q8_0.gguf"
    for path in (dead_file, live_file, foreign, final):
        path.write_bytes(b"x")
    for path in (dead_dir, dead_merge):
        path.mkdir()
        (path / "inside").write_bytes(b"x")
    removed = remove_stale_temps(tmp_path)
    assert sorted(removed) == sorted([dead_file, dead_dir, dead_merge])
    assert live_file.exists() and foreign.exists() and final.exists()


def test_a_folder_held_by_a_live_process_is_refused_a_dead_holder_is_not(tmp_path: Path) -> None:
    with _live_process() as pid:
        (tmp_path / LOCK_FILE).write_text(f"{pid}\n")
        needle = rf"in use by another .* run \(PID {pid}\)"
        with pytest.raises(InputError, match=needle) as info, holding(tmp_path):
            pass
        assert info.value.hint
    (tmp_path / LOCK_FILE).write_text(f"{_dead_pid()}\n")
    with holding(tmp_path):
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
    assert not (tmp_path / LOCK_FILE).exists()


# ------------------------------------------------------------------ cache list | clean


def _fake_cache(root: Path) -> dict[str, Path]:
    deploy_root = root / "deploy"
    done, held = deploy_root / "aaaa", deploy_root / "bbbb"
    for folder in (done, held):
        folder.mkdir(parents=True)
        (folder / STATE_FILE).write_text("{}")
        (folder / "bot.Q4_K_M.gguf").write_bytes(b"\0" * 2000)
    toolchain = root / "llama.cpp-abc123"
    toolchain.mkdir()
    (toolchain / "llama-quantize").write_bytes(b"\0" * 500)
    leftover = root / f".llama.cpp-abc123.pid-{_dead_pid()}.tmp.partial"
    leftover.write_bytes(b"x")
    return {"done": done, "held": held, "toolchain": toolchain, "leftover": leftover}


def test_cache_list_shows_sizes_kinds_and_holders(tmp_path: Path) -> None:
    paths = _fake_cache(tmp_path)
    with _live_process() as pid:
        (paths["held"] / LOCK_FILE).write_text(str(pid))
        entries = {e.path: e for e in list_cache(tmp_path)}
        assert entries[paths["done"]].kind == "deploy"
        assert entries[paths["done"]].size_bytes >= 2000
        assert entries[paths["done"]].in_use_by is None
        assert entries[paths["done"]].detail == "bot.Q4_K_M.gguf"
        assert entries[paths["held"]].in_use_by == pid
        assert entries[paths["toolchain"]].kind == "toolchain"
        assert entries[paths["leftover"]].kind == "temp"


def test_cache_clean_removes_only_what_no_live_process_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = _fake_cache(tmp_path)
    monkeypatch.setenv("DTO_CACHE_DIR", str(tmp_path))
    with _live_process() as pid:
        (paths["held"] / LOCK_FILE).write_text(str(pid))
        code, out, err = _cli(["cache", "clean", "--json"], capsys)
        assert code == 0, err
        doc = json.loads(out)
        assert {e["path"] for e in doc["removed"]} == {str(paths["done"]), str(paths["leftover"])}
        assert [e["path"] for e in doc["kept_in_use"]] == [str(paths["held"])]
        assert doc["freed_bytes"] >= 2000
        assert not paths["done"].exists() and not paths["leftover"].exists()
        assert paths["held"].is_dir() and paths["toolchain"].is_dir()  # --all not given
        # --all takes the toolchain too, still not the held folder.
        result = clean_cache(tmp_path, everything=True)
        assert [e.path for e in result.removed] == [paths["toolchain"]]
        assert paths["held"].is_dir()
    code, out, _ = _cli(["cache", "list"], capsys)
    assert code == 0 and str(paths["held"]) in out and "in use" not in out  # holder exited


def test_cache_clean_older_than(tmp_path: Path) -> None:
    paths = _fake_cache(tmp_path)
    week_ago = 1_000_000_000.0
    for path in paths["done"].rglob("*"):
        os.utime(path, (week_ago, week_ago))
    os.utime(paths["done"], (week_ago, week_ago))
    result = clean_cache(tmp_path, older_than=parse_duration("7d"), now=week_ago + 8 * 86400)
    assert paths["done"] in [e.path for e in result.removed]
    assert not paths["done"].exists()
    assert paths["held"].is_dir()  # written after that clock's "7 days ago": kept


def test_cache_clean_refuses_a_bad_duration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DTO_CACHE_DIR", str(tmp_path))
    with pytest.raises(UsageError, match="not a duration"):
        parse_duration("a week")
    code, _, err = _cli(["cache", "clean", "--older-than", "soon"], capsys)
    assert code != 0 and "not a duration" in err and "7d" in err


# ------------------------------------------------------------------ early errors


@pytest.mark.parametrize(
    ("pair", "needle"),
    [
        (("foo", "1"), "unknown Ollama parameter 'foo'"),
        (("num_ctx", "2k"), "num_ctx takes a whole number"),
        (("temperature", "hot"), "temperature takes a number"),
        (("use_mmap", "maybe"), "use_mmap takes true or false"),
        (("stop", "a\x07b"), "U+0007"),
    ],
)
def test_parameters_ollama_would_refuse_are_usage_errors(
    pair: tuple[str, str], needle: str
) -> None:
    with pytest.raises(UsageError, match=r"^-p") as info:
        check_parameters([pair])
    assert needle in str(info.value)
    assert info.value.hint
    assert check_parameters([("num_ctx", "2048"), ("stop", "<|im_end|>")])


def test_deploy_refuses_a_bad_parameter_before_contacting_the_server(tmp_path: Path) -> None:
    closed = f"127.0.0.1:{free_port()}"
    with pytest.raises(UsageError, match="unknown Ollama parameter 'foo'"):
        deploy(tmp_path, name="x", host=closed, parameters=[("foo", "1")])
    with pytest.raises(UsageError, match="unknown quant"):
        deploy(tmp_path, name="x", host=closed, quant="q3_nope")


def test_export_to_an_output_that_is_a_file_is_one_line_before_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "lora"
    source.mkdir()
    (source / "adapter_config.json").write_text("{}")
    out = tmp_path / "out.txt"
    out.write_text("not a folder")
    code, _, err = _cli(
        ["export", str(source), "--out", str(out), "--backend", "llama.cpp"], capsys
    )
    assert code == 1
    assert "--out" in err and "is a file, not a folder" in err
    assert "Hint: pass a folder for --out" in err
    assert out.read_text() == "not a folder"
    code, _, err = _cli(
        ["export", str(source), "--out", str(out / "sub"), "--backend", "llama.cpp"], capsys
    )
    assert code == 1 and "is a file" in err


@contextlib.contextmanager
def _read_only_dir(path: Path) -> Iterator[Path]:
    """A folder this process cannot write: chmod for a normal user; root ignores modes, so a
    read-only tmpfs mount there."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_read_only_out_and_keep_are_one_line_before_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "lora"
    source.mkdir()
    (source / "adapter_config.json").write_text("{}")
    with _read_only_dir(tmp_path / "ro") as ro:
        code, _, err = _cli(
            ["export", str(source), "--out", str(ro / "out"), "--backend", "llama.cpp"], capsys
        )
        assert code == 1 and "is not writable" in err and "Hint:" in err
        assert not (ro / "out").exists()
        closed = f"127.0.0.1:{free_port()}"
        with pytest.raises(InputError, match=r"--keep .* is not writable"):
            deploy(source, name="x", host=closed, keep=ro / "keep")  # before the server (4)


def test_a_full_disk_is_reported_before_the_export(
    tiny_llama: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DTO_DISK_RESERVE_MB asks for more space than the disk has: the estimate check fires
    before the toolchain or a byte of GGUF (no toolchain is given, none is built)."""
    from deploy_to_ollama.exporting import ExportOptions, export
    from deploy_to_ollama.settings import Settings

    free_mb = shutil.disk_usage(tmp_path).free // 1_000_000
    monkeypatch.setenv("DTO_DISK_RESERVE_MB", str(free_mb + 1000))
    monkeypatch.setenv("DTO_LLAMA_CPP_DIR", str(tmp_path / "no-toolchain-here"))
    out = tmp_path / "out"
    options = ExportOptions(source=tiny_llama.adapter_dir, out=out, quants=("f16",))
    with pytest.raises(DiskSpaceError) as info:
        export(options, settings=Settings.from_env())
    message = str(info.value)
    assert message.startswith("no space left on ") and " MB" in message and "\n" not in message
    assert info.value.exit_code == 1 and "cache clean" in (info.value.hint or "")
    assert not list(out.glob("*.gguf")) and not (out / "Modelfile").exists()


def test_gguf_source_reports_its_own_quant_type(tiny_gguf: Path) -> None:
    from deploy_to_ollama.inputs import resolve_input

    resolved = resolve_input(tiny_gguf)
    assert read_gguf_facts(tiny_gguf)[0] == "f32"  # write_tiny_gguf writes F32 tensors
    assert real_quant("q4_k_m", resolved) == "f32"  # not the --quant flag's value


def test_quant_alias_is_reported_resolved(tiny_llama: Any) -> None:
    from deploy_to_ollama.inputs import resolve_input

    resolved = resolve_input(tiny_llama.adapter_dir)
    assert real_quant("quantized", resolved) == "q4_k_m"
    assert real_quant("Q8_0", resolved) == "q8_0"


def test_a_broken_adapter_config_fails_before_the_toolchain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Today's order was toolchain first (a 10-minute build on a fresh machine), then the input;
    the toolchain named here does not exist, so reaching it would be a DependencyMissingError."""
    from deploy_to_ollama.gguf.export import export_gguf
    from deploy_to_ollama.settings import Settings

    source = tmp_path / "lora"
    source.mkdir()
    (source / "adapter_config.json").write_text("{not json")
    monkeypatch.setenv("DTO_LLAMA_CPP_DIR", str(tmp_path / "no-toolchain-here"))
    with pytest.raises(InputError) as info:
        export_gguf(source, out_dir=tmp_path / "out", settings=Settings.from_env())
    assert "adapter_config.json" in str(info.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.ollama
def test_a_read_only_cache_is_one_line_before_the_export(
    ollama_server: Any, tiny_gguf: Path, tmp_path: Path
) -> None:
    with _read_only_dir(tmp_path / "ro") as ro:
        with pytest.raises(InputError) as info:
            deploy(tiny_gguf, name="ro-cache", host=ollama_server.host, cache_dir=ro / "cache")
        assert "the cache (DTO_CACHE_DIR)" in str(info.value) and "not writable" in str(info.value)
        assert "\n" not in str(info.value) and info.value.hint
        assert not (ro / "cache").exists()
    # Rerun with a writable cache: it deploys (no round trip needed to show it).
    report = deploy(
        tiny_gguf, name="ro-cache", host=ollama_server.host, cache_dir=tmp_path / "c", check=False
    )
    assert report.modelfile.is_file() and dict(report.stages)["register"] == "done"
    assert report.quant == "f32"  # the GGUF source's own type, not the --quant default
