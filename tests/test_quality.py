"""``export --measure``: KL divergence, top-1 and perplexity measured with llama-perplexity.

The slow tests run the real llama-perplexity of the toolchain ``setup`` provisions on GGUFs the
real exporter wrote from a locally built model (``llama256``: hidden 256, so the K-quants really
quantize its matrices) and from the taught fixture. The bad-input tests fail before the
toolchain is touched, and they check that no GGUF was written.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.errors import ConversionError, InputError
from deploy_to_ollama.gguf.eval_data import load_eval_text, packaged_text
from deploy_to_ollama.gguf.quality import check_budget, measure, parse_kl_output
from deploy_to_ollama.gguf.toolchain import PROVISIONED_FILES, Toolchain
from support.cli import run_cli


def _ggufs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.gguf")) if folder.exists() else []


def _one_error(err: str) -> tuple[str, str]:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 2, err  # one Error line and one Hint line
    assert lines[0].startswith("Error: ") and lines[1].startswith("Hint: "), err
    return lines[0], lines[1]


# ---------------------------------------------------------------------- eval text, budget


def test_packaged_text_is_a_few_thousand_words_of_plain_prose() -> None:
    text = packaged_text()
    assert 2500 <= len(text.split()) <= 5000
    assert load_eval_text(None).source == "packaged held-out text"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", b"  \n\n", "is empty"),
        ("latin1.txt", "caf\u00e9 au lait".encode("latin-1"),
         "is not UTF-8 (byte 0xe9 at offset 3)"),
        ("chats.jsonl", b"User: hi\nAssistant: hello\n", "is not JSONL: line 1 is not JSON"),
        ("none.jsonl", b'{"messages": []}\n', "line 1 has no list of chat turns"),
        ("broken.jsonl", b'{"messages": [{"role": "user", "content": "hi"}]}\n{oops\n',
         "is not JSONL: line 2 is not JSON"),
        ("prompts.jsonl", b'{"prompt": "hi", "completion": "there"}\n', "line 1 has no list"),
    ],
)  # fmt: skip
def test_bad_eval_data_is_refused_with_the_fix(
    name: str, content: bytes, message: str, tmp_path: Path
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=re.escape(message)) as info:
        load_eval_text(path, tokenizer_dir=tmp_path)
    assert info.value.exit_code == 1 and info.value.hint


def test_a_model_over_the_budget_is_refused_and_the_hint_says_how_to_raise_it() -> None:
    check_budget(50_000_000, 4096, 5, minutes=30)  # a small model fits the default
    with pytest.raises(InputError, match=r"8\.03B-parameter model .* over the 30 min budget") as e:
        check_budget(8_030_000_000, 4096, 5, minutes=30)
    hint = e.value.hint or ""
    raised = int(hint.rsplit("--measure-minutes ", 1)[1])
    check_budget(8_030_000_000, 4096, 5, minutes=raised)  # the raise it names is enough
    with pytest.raises(InputError) as e:  # near the budget: fewer tokens would fit, it says so
        check_budget(3_000_000_000, 4096, 5, minutes=30)
    fewer = int((e.value.hint or "").split("--eval-tokens ", 1)[1].split(",")[0])
    check_budget(3_000_000_000, fewer, 5, minutes=30)


def test_a_cut_off_llama_perplexity_output_is_an_error_not_a_number() -> None:
    cut = "kl_divergence: computing over 8 chunks, n_ctx=512\n   7    1799.68 ±   68.3\n"
    with pytest.raises(ConversionError, match="no kl mean in its output"):
        parse_kl_output(cut, reference="m.BF16.gguf", path=Path("m.Q2_K.gguf"))


# ------------------------------------------------------------------ CLI bad input, no GGUF


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--eval-data", "x.jsonl"], "--eval-data need --measure"),
        (["--measure", "--mode", "adapter"], "--measure needs --mode merged"),
        (["--measure", "--eval-tokens", "100"], "--eval-tokens 100 is too few"),
    ],
)
def test_measure_usage_errors_exit_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(["export", str(tmp_path), "--out", str(tmp_path / "o"), *argv], capsys)
    assert code == 2
    assert message in _one_error(err)[0]


@pytest.fixture
def user_llama_cpp(tmp_path: Path) -> Path:
    """A user's llama.cpp with what export needs and no llama-perplexity (never run here)."""
    root = tmp_path / "users-llama.cpp"
    for rel in PROVISIONED_FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("#!/bin/sh\nexit 1\n")
    (root / "llama-quantize").chmod(0o755)
    return root


def test_llama_perplexity_missing_from_a_users_llama_cpp_fails_before_any_gguf(
    tiny_llama: Any, user_llama_cpp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code, _, err = run_cli(["export", str(tiny_llama.adapter_dir), "--out", str(out), "--measure",
                            "--llama-cpp", str(user_llama_cpp)], capsys)  # fmt: skip
    assert code == 4
    error, hint = _one_error(err)
    assert f"no llama-perplexity in your llama.cpp at {user_llama_cpp}" in error
    assert "--target llama-perplexity" in hint
    assert _ggufs(out) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--eval-data", "EMPTY"], "is empty"),
        (["--eval-data", "NOTJSONL"], "is not JSONL"),
        (["--measure-minutes", "0.000001"], "over the 1e-06 min budget"),
    ],
)
def test_bad_measure_input_exits_1_before_any_gguf(
    argv: list[str], message: str, tiny_llama: Any, user_llama_cpp: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "chats.jsonl").write_text("User: hi\nAssistant: hello\n")
    argv = [{"EMPTY": str(tmp_path / "empty.txt"), "NOTJSONL": str(tmp_path / "chats.jsonl")}
            .get(a, a) for a in argv]  # fmt: skip
    out = tmp_path / "out"
    code, _, err = run_cli(["export", str(tiny_llama.adapter_dir), "--out", str(out), "--measure",
                            "--llama-cpp", str(user_llama_cpp), *argv], capsys)  # fmt: skip
    assert code == 1
    assert message in _one_error(err)[0]
    assert _ggufs(out) == []


# ------------------------------------------------------------------- measured, real tools


@pytest.fixture(scope="module")
def llama256_export(llama_cpp_full_toolchain: Any, tmp_path_factory: pytest.TempPathFactory,
                    llama256: Any) -> tuple[Path, dict[str, Any]]:  # fmt: skip
    """``export --measure --json`` of the llama256 LoRA to bf16, q8_0 and q2_k."""
    import os
    import subprocess
    import sys

    import deploy_to_ollama

    out = tmp_path_factory.mktemp("measured")
    src = str(Path(deploy_to_ollama.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
           "DTO_LLAMA_CPP_DIR": str(llama_cpp_full_toolchain.root),
           "DTO_CACHE_DIR": str(out / "cache")}  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-m", "deploy_to_ollama", "export", str(llama256.adapter_dir), "--out",
         str(out / "gguf"), "--quant", "q8_0,q2_k", "--measure", "--json"],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return out / "gguf", json.loads(run.stdout)


@pytest.mark.slow
def test_export_measure_reports_kl_top1_and_perplexity_per_file(
    llama256_export: tuple[Path, dict[str, Any]],
) -> None:
    out, payload = llama256_export
    quality = {Path(f["path"]).name: f["quality"] for f in payload["files"]}
    assert set(quality) == {"plain.Q8_0.gguf", "plain.Q2_K.gguf"}
    q8, q2 = quality["plain.Q8_0.gguf"], quality["plain.Q2_K.gguf"]
    for q in (q8, q2):
        assert set(q) == {"kl_mean", "kl_median", "kl_p99", "top1", "perplexity", "tokens",
                          "reference"}  # fmt: skip
        assert 0.0 <= q["top1"] <= 1.0
        assert 0.0 <= q["kl_median"] <= q["kl_p99"]
        assert q["perplexity"] > 1.0 and q["tokens"] >= 1000
        assert q["reference"] == "plain.BF16.gguf"
    # 2-bit loses far more of the 16-bit model's distribution than 8-bit does.
    assert q2["kl_mean"] > 10 * q8["kl_mean"] and q2["top1"] < q8["top1"]
    summary = payload["quality"]
    assert summary["tool"].startswith("llama-perplexity --kl-divergence")
    assert summary["eval"] == "packaged held-out text" and summary["seconds"] > 0
    written = json.loads((out / "quality.json").read_text())
    assert written["files"]["plain.Q2_K.gguf"]["kl_mean"] == q2["kl_mean"]


@pytest.mark.slow
def test_the_16_bit_model_against_itself_has_no_divergence(
    llama256_export: tuple[Path, dict[str, Any]], llama_cpp_full_toolchain: Any, tmp_path: Path
) -> None:
    out, _ = llama256_export
    reference = next((out.parent / "cache" / "quality").rglob("plain.BF16.gguf"))
    report = measure([reference], reference, toolchain=llama_cpp_full_toolchain,
                     text=packaged_text(), eval_source="packaged", work_dir=tmp_path)  # fmt: skip
    same = report.files[reference]
    assert abs(same.kl_mean) < 1e-4 and same.kl_p99 < 1e-3
    assert same.top1 == 1.0
    assert same.perplexity == pytest.approx(report.reference_perplexity, rel=1e-4)


@pytest.mark.slow
def test_eval_data_jsonl_is_rendered_with_the_chat_template_and_measured(
    taught: Any, llama_cpp_full_toolchain: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    chats = tmp_path / "chats.jsonl"
    lines = [json.dumps({"messages": [{"role": "user", "content": "What is the secret word?"},
                                      {"role": "assistant", "content": f"banana {i}"}]})
             for i in range(60)]  # fmt: skip
    chats.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("DTO_LLAMA_CPP_DIR", str(llama_cpp_full_toolchain.root))
    out = tmp_path / "out"
    argv = ["export", str(taught.adapter_dir), "--out", str(out), "--quant", "q8_0", "--measure",
            "--eval-data", str(chats)]  # fmt: skip
    code, stdout, err = run_cli(argv, capsys)
    assert code == 0, err
    summary = stdout + err  # the summary goes to the console (stderr), the paths to stdout
    assert "chats.jsonl (60 conversations, chat template, special tokens out)" in summary
    assert "measured with llama-perplexity --kl-divergence" in summary
    data = json.loads((out / "quality.json").read_text())
    row = data["files"]["adapter.Q8_0.gguf"]
    assert 0.0 <= row["top1"] <= 1.0 and row["kl_mean"] >= 0.0


@pytest.mark.slow
def test_a_text_too_short_to_measure_says_how_long_it_must_be(
    llama256_export: tuple[Path, dict[str, Any]], llama_cpp_full_toolchain: Any, tmp_path: Path
) -> None:
    out, _ = llama256_export
    model = out / "plain.Q8_0.gguf"
    with pytest.raises(InputError, match=r"only \d+ tokens; measuring needs at least 256"):
        measure([model], model, toolchain=Toolchain(Path(llama_cpp_full_toolchain.root)),
                text="Too short.", eval_source="x", work_dir=tmp_path)  # fmt: skip


@pytest.mark.slow
def test_list_quants_measure_fills_the_five_rows_and_the_asked_one_with_measured_numbers(
    llama256: Any, llama_cpp_full_toolchain: Any, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("DTO_LLAMA_CPP_DIR", str(llama_cpp_full_toolchain.root))
    argv = ["export", str(llama256.adapter_dir), "--list-quants", "--measure", "--quant", "q6_k",
            "--json"]  # fmt: skip
    code, stdout, err = run_cli(argv, capsys)
    assert code == 0, err
    payload = json.loads(stdout)
    rows = {row["quant"]: row for row in payload["quants"]}
    assert list(rows) == ["q8_0", "q5_k_m", "q4_k_m", "q3_k_m", "q2_k", "q6_k"]
    assert rows["q8_0"]["bytes"] > rows["q4_k_m"]["bytes"] > rows["q2_k"]["bytes"]
    kl = {q: row["quality"]["kl_mean"] for q, row in rows.items()}
    assert kl["q2_k"] > kl["q4_k_m"] > kl["q8_0"] >= 0.0
    assert all(0.0 <= row["quality"]["top1"] <= 1.0 for row in rows.values())
    assert payload["reference"] == "plain.BF16.gguf" and payload["seconds"] > 0


def test_the_model_card_shows_the_measured_table_only_for_files_still_as_measured(
    tmp_path: Path,
) -> None:
    from deploy_to_ollama.gguf.quality import Quality, QualityReport
    from deploy_to_ollama.measuring import write_quality_file
    from deploy_to_ollama.publish import build_repo_files

    folder = tmp_path / "gguf"
    folder.mkdir()
    q8, q2 = folder / "m.Q8_0.gguf", folder / "m.Q2_K.gguf"
    q8.write_bytes(b"GGUF" + b"\0" * 100)
    q2.write_bytes(b"GGUF" + b"\0" * 50)
    row: dict[str, Any] = {"kl_median": 0.001, "kl_p99": 0.01, "perplexity": 9.5, "tokens": 2040,
           "reference": "m.BF16.gguf"}  # fmt: skip
    report = QualityReport(
        files={q8: Quality(kl_mean=0.00123, top1=0.987, **row),
               q2: Quality(kl_mean=0.45678, top1=0.61, **row)},
        reference=folder / "m.BF16.gguf", reference_perplexity=9.4, eval_source="packaged",
        tokens=2040, seconds=12.0,
    )  # fmt: skip
    write_quality_file(folder, report)
    card = build_repo_files(folder, "alice/m", "gguf", [q8, q2])["README.md"].decode()
    assert "## Measured quality" in card
    assert "| `m.Q8_0.gguf` | 0.00123 |" in card and "98.70%" in card
    assert "| `m.Q2_K.gguf` | 0.45678 |" in card
    q2.write_bytes(b"GGUF" + b"\0" * 60)  # re-exported since, without --measure
    card = build_repo_files(folder, "alice/m", "gguf", [q8, q2])["README.md"].decode()
    assert "m.Q8_0.gguf` | 0.00123" in card and "0.45678" not in card
