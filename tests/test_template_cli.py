"""`deploy-to-ollama template show|diff` through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deploy_to_ollama.cli import app, main, rewrite_default_commands
from deploy_to_ollama.modelfile import parse_modelfile

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _invoke(*args: str) -> tuple[int, str, str]:
    runner = CliRunner()
    result = runner.invoke(app, rewrite_default_commands(list(args)))
    return result.exit_code, result.stdout, result.stderr


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Through ``main()``, which turns our errors into ``Error:``/``Hint:`` and exit codes."""
    with pytest.raises(SystemExit) as info:
        main(list(args))
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out, captured.err


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": CHATML, "eos_token": "<|im_end|>", "bos_token": None})
    )
    return folder


def test_show_prints_a_modelfile_fragment_ollama_can_parse(model_dir: Path) -> None:
    code, out, err = _invoke("template", str(model_dir))
    assert code == 0, err
    parsed = parse_modelfile("FROM ./model.gguf\n" + out)
    assert parsed.template is not None and ".Messages" in parsed.template
    assert parsed.parameter_values("stop") == ["<|im_end|>", "<|im_start|>"]
    assert "verified" in err


def test_show_json_document(model_dir: Path) -> None:
    code, out, _ = _invoke("template", "show", str(model_dir), "--json")
    doc = json.loads(out)
    assert code == 0
    assert set(doc) >= {"template", "stop", "system", "verified", "probes"}
    assert doc["verified"] is True and doc["system"] is None
    assert {p["status"] for p in doc["probes"]} <= {"match", "skipped"}


def test_show_exits_3_and_still_prints_when_not_verified(tmp_path: Path) -> None:
    # Content is upper-cased: no Go template can do that, so verification must fail.
    path = tmp_path / "upper.jinja"
    path.write_text(
        "{% for m in messages %}[{{ m.role }}] {{ m.content | upper }}\n{% endfor %}"
        "{% if add_generation_prompt %}[assistant] {% endif %}"
    )
    code, out, _ = _invoke("template", str(path), "--json")
    doc = json.loads(out)
    assert code == 3 and doc["verified"] is False and doc["template"]
    assert any(p["status"] == "differs" for p in doc["probes"])


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"\xff\xfe{{ x }}", "not UTF-8"),
        (b"{% for m in messages %}{{ m.content }", "line 1"),
        (b"{{ raise_exception('nope') }}", "every probe"),
    ],
)
def test_bad_input_exits_1_with_one_line_error(
    tmp_path: Path, content: bytes, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.jinja"
    path.write_bytes(content)
    code, out, err = _main(capsys, "template", str(path), "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["ok"] is False and needle in doc["error"] and "\n" not in doc["error"]
    assert doc["hint"]
    assert "Error:" in err and "Hint:" in err


def test_missing_template_exits_1_naming_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _main(capsys, "template", str(tmp_path))
    assert code == 1
    assert "chat_template.jinja" in err and "Hint:" in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_diff_against_a_good_modelfile_exits_0(model_dir: Path, tmp_path: Path) -> None:
    _, fragment, _ = _invoke("template", str(model_dir))
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text("FROM ./model.gguf\n" + fragment)
    code, out, _ = _invoke("template", "diff", str(model_dir), "--against", str(modelfile))
    assert code == 0
    assert "[match]   single_user" in out


def test_diff_against_a_wrong_template_shows_both_sides(model_dir: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.gotmpl"
    wrong.write_text("{{ range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}{{ end }}")
    code, out, _ = _invoke("template", "diff", str(model_dir), "--against", str(wrong))
    assert code == 3
    assert "[differs] single_user at character" in out
    assert "transformers (Jinja)" in out and "Ollama (TEMPLATE)" in out
    code, out, _ = _invoke("template", "diff", str(model_dir), "--against", str(wrong), "--json")
    doc = json.loads(out)
    first = next(p for p in doc["probes"] if p["status"] == "differs")
    assert first["expected_text"] != first["actual_text"]
    assert first["position"] == len("<|im_start|>user\nWhat is the capital of France?")


def test_template_needing_tokens_hints_at_bos_eos(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "llama2.jinja"
    path.write_text("{% for m in messages %}{{ bos_token + '[INST] ' + m.content }}{% endfor %}")
    code, _, err = _main(capsys, "template", str(path))
    assert code == 1 and "--bos" in err
    code, out, _ = _main(capsys, "template", str(path), "--bos", "<s>", "--eos", "</s>", "--json")
    assert code in (0, 3) and json.loads(out)["template"]
