"""``compare``: transformers' greedy answer vs Ollama's, token by token.

The agreement counter is checked on a real byte-level tokenizer; the whole command runs against
the real test Ollama server with the taught fixture (LoRA answers "banana"), once with the
deployed model and once with the same GGUF under a wrong TEMPLATE (must exit 3).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.compare import CompareReport, PromptComparison, compare_model, count_agreeing
from deploy_to_ollama.errors import InputError, OllamaUnavailableError
from support.cli import run_cli as _cli
from support.ollama_server import free_port, write_tiny_tokenizer

SECRET = "What is the secret word?"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(write_tiny_tokenizer(tmp_path_factory.mktemp("tok")))


def _ids(tokenizer: Any, text: str, *, stop: bool) -> list[int]:
    ids = list(tokenizer.encode(text, add_special_tokens=False))
    return [*ids, tokenizer.eos_token_id] if stop else ids


def test_identical_stopped_answers_agree_on_every_token(tokenizer: Any) -> None:
    ids = _ids(tokenizer, "the answer", stop=True)
    agreed = count_agreeing(tokenizer, ids, stopped=True, other="the answer", other_stopped=True)
    assert agreed == len(ids)


def test_answers_part_at_the_first_different_token(tokenizer: Any) -> None:
    ids = _ids(tokenizer, "abcdef", stop=False)
    assert count_agreeing(tokenizer, ids, stopped=False, other="abcXef", other_stopped=True) == 3
    assert count_agreeing(tokenizer, ids, stopped=False, other="", other_stopped=True) == 0


def test_ollama_running_past_the_end_of_turn_diverges_there(tokenizer: Any) -> None:
    """A missing stop: transformers ended the turn, Ollama kept talking."""
    ids = _ids(tokenizer, "banana", stop=True)
    longer = count_agreeing(tokenizer, ids, stopped=True, other="banana<|im", other_stopped=False)
    assert longer == len(ids) - 1
    cut = count_agreeing(tokenizer, ids, stopped=True, other="banana", other_stopped=False)
    assert cut == len(ids) - 1  # same text, but Ollama hit its cap instead of stopping


def test_half_a_utf8_character_waits_for_the_next_token(tokenizer: Any) -> None:
    ids = _ids(tokenizer, "café au lait", stop=False)  # é is two byte tokens here
    assert count_agreeing(tokenizer, ids, stopped=False, other="café au", other_stopped=True) == (
        len(tokenizer.encode("café au", add_special_tokens=False))
    )
    assert count_agreeing(tokenizer, ids, stopped=False, other="cafè", other_stopped=True) == 3


def test_report_passes_only_without_divergence() -> None:
    agree = PromptComparison("q", "a", "a", 2, 2, hf_stopped=True, ollama_done_reason="stop")
    part = PromptComparison("q", "ab", "ax", 3, 1, hf_stopped=True, ollama_done_reason="stop")
    assert CompareReport(Path("s"), "m", "h", 8, (agree,)).passed
    report = CompareReport(Path("s"), "m", "h", 8, (agree, part))
    assert not report.passed and part.diverged_at == 1
    assert "diverge at token 1" in "\n".join(report.summary_lines())
    assert json.loads(json.dumps(report.to_dict()))["results"][1]["diverged_at"] == 1


def test_closed_port_fails_before_loading_transformers(tmp_path: Path) -> None:
    with pytest.raises(OllamaUnavailableError) as err:
        compare_model(tmp_path / "nowhere", "m", host=f"127.0.0.1:{free_port()}")
    assert err.value.exit_code == 4


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--max-tokens"):
        compare_model(tmp_path, "m", max_tokens=0)
    with pytest.raises(InputError, match="no prompt"):
        compare_model(tmp_path, "m", prompts=())
    with pytest.raises(InputError, match="--dtype"):
        compare_model(tmp_path, "m", dtype="int3")


# --------------------------------------------------------------------------- real server


@pytest.mark.slow
@pytest.mark.ollama
def test_taught_model_agrees_with_transformers(taught_in_ollama: Any) -> None:
    report = compare_model(
        taught_in_ollama.adapter_dir,
        taught_in_ollama.name,
        prompts=(SECRET, "Say hello."),
        max_tokens=16,
        host=taught_in_ollama.host,
    )
    assert report.passed, report.summary_lines()
    secret, hello = report.results
    assert secret.hf_answer == secret.ollama_answer == "banana"
    assert hello.hf_answer == hello.ollama_answer == "Hello!"
    for result in report.results:
        assert result.hf_stopped and result.ollama_done_reason == "stop"
        assert result.agreed_tokens == result.hf_token_count and result.diverged_at is None


@pytest.mark.slow
@pytest.mark.ollama
def test_cli_compare_exits_3_on_a_wrong_template(
    taught_in_ollama: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(taught_in_ollama.adapter_dir), "--prompt", SECRET, "--max-tokens", "8"]
    host = ["--host", taught_in_ollama.host]
    code, out, err = _cli(["compare", argv[0], taught_in_ollama.name, *argv[1:], *host], capsys)
    assert code == 0, err
    assert "all agree" in out and "PASS" in out

    code, out, err = _cli(
        ["compare", argv[0], taught_in_ollama.wrong_name, *argv[1:], *host, "--json"], capsys
    )
    assert code == 3, err
    payload = json.loads(out)
    assert payload["passed"] is False
    (result,) = payload["results"]
    assert result["hf_answer"] == "banana"
    assert result["ollama_answer"] != "banana"
    assert result["diverged_at"] is not None and result["diverged_at"] < 8
