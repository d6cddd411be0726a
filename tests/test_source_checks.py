"""The source is checked like peft checks it, before any toolchain or export work.

One parametrized table of bad adapters: each is refused by ``resolve_input``/``check_source``
with its own error class, by ``deploy-to-ollama export`` with exit code 1, with the toolchain
pointed at a folder that does not exist (reaching it would exit 4) and in well under a second.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from deploy_to_ollama.chat_template.source import check_chat_template, check_source
from deploy_to_ollama.cli import main
from deploy_to_ollama.errors import (
    InputError,
    InputNotFoundError,
    TemplateSyntaxError,
)
from deploy_to_ollama.inputs import resolve_input
from support.models import LoraFixture


def _edit_config(adapter: Path, **changes: object) -> None:
    path = adapter / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def _rank_high(adapter: Path) -> None:
    _edit_config(adapter, r=16)  # the tensors are rank 8


def _rank_low(adapter: Path) -> None:
    _edit_config(adapter, r=4)


def _rank_pattern_wrong(adapter: Path) -> None:
    _edit_config(adapter, rank_pattern={"q_proj": 4})


def _unknown_target(adapter: Path) -> None:
    _edit_config(adapter, target_modules=["nonexistent_proj"])


def _untargeted_tensors(adapter: Path) -> None:
    _edit_config(adapter, target_modules=["q_proj"])  # the tensors also cover v_proj, ...


def _invalid_json(adapter: Path) -> None:
    path = adapter / "adapter_config.json"
    path.write_text(path.read_text()[:-20])


def _missing_weights(adapter: Path) -> None:
    (adapter / "adapter_model.safetensors").unlink()


def _jinja_syntax_error(adapter: Path) -> None:
    (adapter / "chat_template.jinja").write_text("{% for m in messages %}{{ m.content }}")


BAD_SOURCES: dict[str, tuple[Callable[[Path], None], type[Exception], str]] = {
    "rank-high": (_rank_high, InputError, r"size mismatch .*r=16"),
    "rank-low": (_rank_low, InputError, r"size mismatch .*r=4"),
    "rank-pattern": (_rank_pattern_wrong, InputError, r"q_proj.*r=4"),
    "unknown-target-module": (_unknown_target, InputError, "not found in the base model"),
    "untargeted-tensors": (_untargeted_tensors, InputError, "does not name"),
    "invalid-json": (_invalid_json, InputError, "not valid JSON"),
    "missing-weights": (_missing_weights, InputNotFoundError, "missing"),
    "jinja-syntax-error": (_jinja_syntax_error, TemplateSyntaxError, "Jinja syntax error"),
}


@pytest.fixture
def adapter_copy(tiny_llama: LoraFixture, tmp_path: Path) -> Path:
    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_llama.adapter_dir, adapter)
    return adapter


def test_the_good_adapter_passes(adapter_copy: Path, tiny_llama: LoraFixture) -> None:
    resolved = check_source(adapter_copy)
    assert resolved.base_dir == tiny_llama.base_dir


@pytest.mark.parametrize("case", list(BAD_SOURCES))
def test_bad_source_is_refused_before_any_work(
    case: str, adapter_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spoil, error, message = BAD_SOURCES[case]
    spoil(adapter_copy)
    with pytest.raises(error, match=message) as info:
        check_source(adapter_copy)
    assert "\n" not in str(info.value) and info.value.hint  # type: ignore[attr-defined]

    out = tmp_path / "out"
    argv = ["export", str(adapter_copy), "--out", str(out), "--backend", "llama.cpp"]
    argv += ["--llama-cpp", str(tmp_path / "no-llama-cpp")]  # reaching the toolchain = exit 4
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert exit_info.value.code == 1, err
    assert "no-llama-cpp" not in err
    assert elapsed < 1.0, f"{case} took {elapsed:.2f} s"
    assert not out.exists()
    dto_cache = Path(str(tmp_path / "dto_cache"))
    assert not dto_cache.exists() or not any(dto_cache.iterdir())


def test_shape_mismatch_with_another_base(
    adapter_copy: Path, llama256: LoraFixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(InputError, match="shape mismatches"):
        check_source(adapter_copy, base=llama256.base_dir)
    argv = ["export", str(adapter_copy), "--out", str(tmp_path / "out"), "--backend", "llama.cpp"]
    argv += ["--base", str(llama256.base_dir), "--llama-cpp", str(tmp_path / "no-llama-cpp")]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 1, capsys.readouterr().err


def test_rank_pattern_that_matches_the_tensors_passes(adapter_copy: Path) -> None:
    # r says 16, but every adapted module is named by rank_pattern with its real rank 8.
    _edit_config(adapter_copy, r=16, rank_pattern={"proj": 8, ".*_proj": 8})
    assert resolve_input(adapter_copy).adapter_config is not None


def test_target_modules_as_regex_and_all_linear(adapter_copy: Path) -> None:
    _edit_config(adapter_copy, target_modules=r".*\.(q|k|v|o|gate|up|down)_proj")
    resolve_input(adapter_copy)
    _edit_config(adapter_copy, target_modules=r".*\.q_proj")
    with pytest.raises(InputError, match="does not name"):
        resolve_input(adapter_copy)
    _edit_config(adapter_copy, target_modules="all-linear")
    resolve_input(adapter_copy)


def test_template_that_raises_on_a_user_turn_is_refused(adapter_copy: Path) -> None:
    from deploy_to_ollama.errors import TemplateRenderError

    (adapter_copy / "chat_template.jinja").write_text(
        "{{ raise_exception('no conversations here') }}"
    )
    with pytest.raises(TemplateRenderError, match="no conversations here"):
        check_chat_template(resolve_input(adapter_copy))
