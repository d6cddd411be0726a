"""The CLI's contract (README): exit codes, usage errors before any work, one ``--json``
document for every outcome, one-line errors never wrapped, Ctrl-C → 130.

Everything runs through ``main()`` (the console script's entry) or a real subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy_to_ollama.cli import main
from deploy_to_ollama.cli._common import INTERRUPTED, exit_code_for, handle_exception
from deploy_to_ollama.errors import RoundTripError, TemplateMismatchError, UsageError
from deploy_to_ollama.gguf.quants import QUANT_ALIASES, resolve_quant
from deploy_to_ollama.gguf.unsloth import resolve_unsloth_quants
from support.ollama_server import OllamaServer

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
#: No Go template can upper-case: the translation of this one can never be verified.
UPPER = (
    "{% for m in messages %}[{{ m.role }}] {{ m.content | upper }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant] {% endif %}"
)
HEAVY_MODULES = {"torch", "transformers", "peft", "unsloth"}


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out, captured.err


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A port that accepts connections and never answers: tells whether anything called."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.setblocking(False)
    yield server
    server.close()


def _host(server: socket.socket) -> str:
    return f"127.0.0.1:{server.getsockname()[1]}"


def _contacted(server: socket.socket) -> bool:
    try:
        conn, _ = server.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    adapter = tmp_path / "lora"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "config.json").write_text("{}")
    chatml = tmp_path / "chatml"
    chatml.mkdir()
    (chatml / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": CHATML, "eos_token": "<|im_end|>", "bos_token": None})
    )
    upper = tmp_path / "upper.jinja"
    upper.write_text(UPPER)
    return {"adapter": adapter, "merged": merged, "chatml": chatml, "upper": upper}


@pytest.fixture(scope="module", autouse=True)
def _imports_done() -> None:
    """Import what validation uses once, so the timing below measures work, not imports."""
    import deploy_to_ollama.compare
    import deploy_to_ollama.publish
    import deploy_to_ollama.registrar  # noqa: F401


# --------------------------------------------------------------------------- usage errors

#: (argv, text of the one Error line). {adapter}/{merged}/{out}/{host} are filled in per test.
USAGE_ERRORS: list[tuple[list[str], str]] = [
    (["{adapter}", "--name", "x", "--quant", "q9"], "unknown quant type 'q9'"),
    (["deploy", "{adapter}", "--name", "x", "--quant", ""], "no quant type given"),
    (["deploy", "{adapter}", "--name", "x", "--quant", "q8_0,q4_k_m"], "deploy takes one --quant"),
    (["deploy", "{adapter}", "--name", "x", "-p", "foo"], "--parameter 'foo' is not KEY=VALUE"),
    (["deploy", "{adapter}", "--name", "x", "-p", "bogus=1"], "unknown Ollama parameter 'bogus'"),
    (["deploy", "{adapter}", "--name", "x", "-p", "num_ctx=lots"], "num_ctx takes a whole number"),
    (["deploy", "{adapter}", "--name", "x", "--method", "pigeon"], "unknown --method 'pigeon'"),
    (["deploy", "{adapter}", "--name", "x", "--num-predict", "0"], "--num-predict must be"),
    (["deploy", "{adapter}", "--name", "x", "--no-check", "--expect", "hi"], "--no-check skips"),
    (["deploy", "{adapter}"], "Missing option '--name'"),
    (["deploy", "{adapter}", "--name", "x", "--bogus"], "No such option: --bogus"),
    (["export", "{merged}", "--out", "{out}", "--mode", "adapter"], "needs a LoRA adapter"),
    (["export", "{adapter}", "--out", "{out}", "--what", "gguf"], "need --push-to-hub"),
    (["export", "{adapter}", "--out", "{out}", "--quant", ""], "no quant type given"),
    (["export", "{adapter}", "--out", "{out}", "--quant", "q4_k_m,q9"], "'q9'"),
    (["export", "{adapter}", "--out", "{out}", "--mode", "sideways"], "unknown mode 'sideways'"),
    (["export", "{adapter}", "--out", "{out}", "--backend", "tpu"], "unknown backend 'tpu'"),
    (["export", "{adapter}"], "export needs SOURCE and --out"),
    (
        ["export", "{adapter}", "--out", "{out}", "--load-in-4bit", "--load-in-8bit"],
        "exclude each other",
    ),
    (
        ["export", "{adapter}", "--out", "{out}", "--backend", "llama.cpp", "--load-in-4bit"],
        "need the unsloth backend",
    ),
    (["setup", "--jobs", "0"], "--jobs must be at least 1"),
    (["doctor", "my-model", "--name", "new"], "--name needs --fix"),
    (["doctor", "my-model", "--out", "{out}", "--skip-generation"], "need --fix"),
    (["template", "show", "{adapter}", "--no-such-flag"], "No such option: --no-such-flag"),
    (["template", "diff", "{adapter}"], "Missing option '--against'"),
    (["check", "my-model", "--num-predict", "0"], "--num-predict must be at least 1"),
    (["compare", "{adapter}", "my-model", "--dtype", "float8"], "unknown --dtype 'float8'"),
    (["compare", "{adapter}", "my-model", "--max-tokens", "0"], "--max-tokens must be"),
    (["register", "{out}", "--name", "x", "--method", "pigeon"], "unknown --method 'pigeon'"),
    (["push", "{adapter}", "--repo", "alice/x", "--what", "weights"], "unknown --what 'weights'"),
    (["push", "my-model"], "push needs a target"),
    (["push", "my-model", "--to-ollama", "team/model"], "is not HOST/NAMESPACE/MODEL"),
    (
        ["push", "my-model", "--to-ollama", "registry.example.com/t/m", "--insecure"],
        "only for a registry on this machine",
    ),
    (
        ["push", "{adapter}", "--repo", "alice/x", "--to-ollama", "127.0.0.1:5000/t/m"],
        "exclude each other",
    ),
    (
        ["push", "{adapter}", "--repo", "alice/x", "--report", "r.json"],
        "apply only with --to-ollama",
    ),
]
#: Commands that talk to Ollama: they get the listening port, which must stay uncalled.
HOSTED = {"deploy", "doctor", "check", "compare", "register"}
COMMANDS = HOSTED | {"export", "setup", "template", "push"}


def _fill(argv: list[str], folders: dict[str, Path], out: Path, host: str) -> list[str]:
    names = {"adapter": folders["adapter"], "merged": folders["merged"], "out": out}
    filled = [arg.format(**names) if arg.startswith("{") else arg for arg in argv]
    command = filled[0] if filled[0] in COMMANDS else "deploy"  # deploy is the default
    return [*filled, "--host", host] if command in HOSTED else filled


def _tree(root: Path) -> list[Path]:
    return sorted(root.rglob("*"))


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize(
    ("argv", "needle"), USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS]
)
def test_usage_errors_exit_2_before_any_work(
    argv: list[str],
    needle: str,
    as_json: bool,
    folders: dict[str, Path],
    listener: socket.socket,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DTO_LLAMA_CPP_DIR", raising=False)  # no toolchain, DTO_CACHE_DIR empty
    args = _fill(argv, folders, tmp_path / "out", _host(listener)) + (["--json"] if as_json else [])
    before_tree, before_modules = _tree(tmp_path), set(sys.modules)
    started = time.perf_counter()
    code, out, err = _main(args, capsys)
    elapsed = time.perf_counter() - started

    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith("Error: ") and needle in lines[0]
    assert lines[1].startswith("Hint: ") and len(lines[1]) > len("Hint: ")
    if as_json:
        doc = json.loads(out)
        assert doc["ok"] is False and doc["exit_code"] == 2 and doc["error_type"] == "UsageError"
        assert needle in doc["error"] and doc["hint"]
    else:
        assert out == ""
    # No work: nothing written (cache, output), no server contacted, nothing heavy imported.
    assert _tree(tmp_path) == before_tree
    assert not _contacted(listener)
    assert not HEAVY_MODULES & (set(sys.modules) - before_modules)
    assert elapsed < 1.0, f"{elapsed:.2f}s: validation must not wait for anything"


def test_usage_errors_exit_2_through_the_console_script(tmp_path: Path) -> None:
    """The installed entry point, as a user runs it (``python -m`` takes the same path)."""
    result = subprocess.run(
        [sys.executable, "-m", "deploy_to_ollama", "export", str(tmp_path), "--out", "o",
         "--quant", "q9"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == "Error: unknown quant type 'q9'"
    assert "Traceback" not in result.stderr


def test_one_alias_table_serves_both_backends() -> None:
    """Every alias resolves the same for llama.cpp and Unsloth (``q3_k`` failed for Unsloth)."""
    for alias, target in QUANT_ALIASES.items():
        expected = None if target is None else resolve_quant(alias).name
        assert resolve_unsloth_quants([alias.upper()]) == (expected,), alias


# --------------------------------------------------------------------------- exit codes


def test_exit_code_mapping_is_the_readme_contract(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code_for(TemplateMismatchError("differs")) == 3
    assert exit_code_for(RoundTripError("failed")) == 3
    assert exit_code_for(UsageError("bad flag")) == 2
    assert exit_code_for(KeyboardInterrupt()) == 130
    assert handle_exception(ValueError("a bug")) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "Error: unexpected ValueError: a bug",
        "Hint: rerun with DTO_DEBUG=1 to see the traceback, and report it as a bug",
    ]


def test_template_show_exit_codes(
    folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _main(["template", str(folders["chatml"]), "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["ok"] is True and doc["verified"] is True and "error" not in doc

    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = _main(["template", str(empty), "--json"], capsys)
    assert code == 1
    doc = json.loads(out)
    assert doc["ok"] is False and doc["exit_code"] == 1
    assert doc["error_type"] == "TemplateNotFoundError"

    code, _, err = _main(["template", str(empty), "--bos"], capsys)
    assert code == 2 and "Error: Option '--bos' requires an argument" in err

    # Exit 3 comes from a TemplateMismatchError, with the best TEMPLATE still printed.
    code, out, err = _main(["template", str(folders["upper"])], capsys)
    assert code == 3
    assert out.startswith("TEMPLATE ")
    assert "Error: the Ollama TEMPLATE does not reproduce the chat template" in err
    assert "Traceback" not in err
    code, out, err = _main(["template", str(folders["upper"]), "--json"], capsys)
    assert code == 3
    doc = json.loads(out)  # one document: the translation and why it failed
    assert doc["verified"] is False and doc["template"]
    assert doc["ok"] is False and doc["exit_code"] == 3
    assert doc["error_type"] == "TemplateMismatchError" and "differs at character" in doc["error"]
    assert "template diff" in doc["hint"]


def test_template_diff_exit_codes(
    folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, fragment, _ = _main(["template", str(folders["chatml"])], capsys)
    good = tmp_path / "Modelfile"
    good.write_text("FROM ./model.gguf\n" + fragment)
    code, out, _ = _main(
        ["template", "diff", str(folders["chatml"]), "--against", str(good)], capsys
    )
    assert code == 0 and "[match]" in out

    code, _, err = _main(
        ["template", "diff", str(folders["chatml"]), "--against", str(tmp_path / "nope")], capsys
    )
    assert code == 1 and "does not exist" in err

    wrong = tmp_path / "wrong.gotmpl"
    wrong.write_text("{{ range .Messages }}{{ .Content }}{{ end }}")
    code, out, err = _main(
        ["template", "diff", str(folders["chatml"]), "--against", str(wrong), "--json"], capsys
    )
    assert code == 3
    doc = json.loads(out)
    assert doc["verified"] is False and doc["error_type"] == "TemplateMismatchError"
    assert any(p["status"] == "differs" for p in doc["probes"])
    assert "does not reproduce" in err.splitlines()[0]


def _tiny_merged_model(folder: Path, tokenizer_dir: Path) -> Path:
    """A merged model folder with one real safetensors tensor and a chat template."""
    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    save_file(
        {"model.embed_tokens.weight": np.zeros((4, 4), np.float32)}, folder / "model.safetensors"
    )
    shutil.copy(tokenizer_dir / "tokenizer_config.json", folder / "tokenizer_config.json")
    return folder


def test_export_exit_codes_before_the_toolchain(
    folders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code, _, err = _main(["export", str(tmp_path / "missing"), "--out", str(out)], capsys)
    assert code == 1 and "does not exist" in err
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    code, _, err = _main(["export", str(folders["merged"]), "--out", str(a_file)], capsys)
    assert code == 1 and f"--out {a_file} is a file" in err
    code, _, err = _main(
        ["export", str(folders["adapter"]), "--out", str(out), "--quant", "q9"], capsys
    )
    assert code == 2
    empty = tmp_path / "not-llama-cpp"
    empty.mkdir()
    # A source that passes its own checks (weights, chat template), so the toolchain comes next.
    valid = _tiny_merged_model(tmp_path / "valid-merged", folders["chatml"])
    code, out_text, err = _main(
        [
            "export", str(valid), "--out", str(out), "--backend", "llama.cpp",
            "--llama-cpp", str(empty), "--json",
        ],
        capsys,
    )  # fmt: skip
    assert code == 4, err
    assert json.loads(out_text)["error_type"] == "DependencyMissingError"
    assert not out.exists()


def test_deploy_exit_codes_before_any_work(
    folders: dict[str, Path], listener: socket.socket, capsys: pytest.CaptureFixture[str]
) -> None:
    host = _host(listener)
    code, _, err = _main([str(folders["adapter"]), "--name", "bad name!", "--host", host], capsys)
    assert code == 1 and "invalid model name" in err
    code, _, err = _main(
        [str(folders["adapter"]), "--name", "x", "-p", "x", "--host", host], capsys
    )
    assert code == 2
    missing = folders["adapter"].parent / "missing"
    code, _, err = _main([str(missing), "--name", "x", "--host", host], capsys)
    assert code == 1 and f"source {missing} does not exist" in err
    argv = [str(folders["adapter"]), "--name", "x", "--base", str(missing), "--host", host]
    code, _, err = _main(argv, capsys)
    assert code == 1 and f"--base {missing} does not exist" in err
    a_file = folders["adapter"] / "adapter_config.json"
    argv = [str(folders["adapter"]), "--name", "x", "--keep", str(a_file), "--host", host]
    code, _, err = _main(argv, capsys)
    assert code == 1 and f"--keep {a_file} is a file" in err
    assert not _contacted(listener)


def test_doctor_exit_codes_before_any_work(
    tmp_path: Path, listener: socket.socket, capsys: pytest.CaptureFixture[str]
) -> None:
    host = ["--host", _host(listener)]
    code, _, err = _main(["doctor", "my-model", "--name", "new", *host], capsys)
    assert code == 2 and "--name needs --fix" in err
    code, _, err = _main(["doctor", "my-model", "--fix", "--name", "bad name!", *host], capsys)
    assert code == 1 and "invalid model name 'bad name!'" in err
    code, _, err = _main(["doctor", "my-model", "--source", str(tmp_path / "nope"), *host], capsys)
    assert code == 1 and "does not exist" in err
    code, _, err = _main(["doctor", "my-model", "--fix", *host], capsys)
    assert code == 1 and "--force" in err  # replacing a model needs --force or --name
    assert not _contacted(listener)


@pytest.mark.ollama
def test_deploy_failed_round_trip_is_exit_3_with_one_json_document(
    ollama_server: OllamaServer,
    tiny_gguf: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A GGUF source (no toolchain): the tiny random model cannot answer the expected word."""
    source = tmp_path / "tiny.gguf"
    source.symlink_to(tiny_gguf)
    host = ollama_server.host
    argv = [
        str(source), "--name", "contract-rt", "--host", host, "--keep", str(tmp_path / "keep"),
        "-p", "num_thread=1", "--num-predict", "4", "--expect", "banana", "--json",
    ]  # fmt: skip
    code, out, err = _main(argv, capsys)
    assert code == 3, err
    doc = json.loads(out)
    assert doc["ok"] is False and doc["exit_code"] == 3 and doc["error_type"] == "RoundTripError"
    assert doc["round_trip"]["passed"] is False and doc["round_trip"]["problems"]
    assert doc["round_trip"]["problems"][0] in doc["error"]
    assert "Error: contract-rt:latest failed its round-trip check" in err


# --------------------------------------------------------------------------- --json outcomes


def test_unexpected_error_is_one_line_and_one_json_document(
    folders: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug cannot be produced on demand: a stand-in translator raises one."""
    import deploy_to_ollama.chat_template as engine

    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("the translator\nbroke")

    monkeypatch.setattr(engine, "translate_template", broken)
    code, out, err = _main(["template", str(folders["chatml"]), "--json"], capsys)
    assert code == 1
    doc = json.loads(out)
    assert doc == {
        "ok": False,
        "error": "unexpected RuntimeError: the translator broke",
        "error_type": "RuntimeError",
        "hint": "rerun with DTO_DEBUG=1 to see the traceback, and report it as a bug",
        "exit_code": 1,
    }
    assert err.splitlines() == [f"Error: {doc['error']}", f"Hint: {doc['hint']}"]

    monkeypatch.setenv("DTO_DEBUG", "1")
    code, _, err = _main(["template", str(folders["chatml"])], capsys)
    assert code == 1 and "Traceback" in err and "the translator" in err


# --------------------------------------------------------------------------- terminal output


def test_errors_are_not_wrapped_when_stderr_is_a_pipe(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["a-rather-long-folder-name"] * 6, "missing.jinja")
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    result = subprocess.run(
        [sys.executable, "-m", "deploy_to_ollama", "template", str(deep)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 1
    first = result.stderr.splitlines()[0]
    assert first == f"Error: {deep} does not exist" and len(first) > 120


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_ctrl_c_is_one_line_and_exit_130(as_json: bool, listener: socket.socket) -> None:
    """A real SIGINT while the CLI waits on a server that accepted and never answers."""
    listener.setblocking(True)
    listener.settimeout(120)
    argv = ["check", "my-model", "--host", _host(listener), *(["--json"] if as_json else [])]
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy_to_ollama", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        conn, _ = listener.accept()  # the CLI is now inside its request
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        conn.close()
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err.splitlines() == [INTERRUPTED]
    if as_json:
        doc = json.loads(out)
        assert doc["ok"] is False and doc["exit_code"] == 130
        assert doc["error_type"] == "RunInterruptedError"
    else:
        assert out == ""


# --------------------------------------------------------------------------- hints that work


@pytest.mark.ollama
def test_the_triple_quote_hint_names_a_way_that_works(
    ollama_server: OllamaServer, tiny_gguf: Path
) -> None:
    """No Modelfile quoting carries '\"\"\"' + newline; the HTTP API the hint names does."""
    import hashlib

    import httpx

    from deploy_to_ollama.errors import ModelfileError
    from deploy_to_ollama.modelfile import quote_value

    text = 'Say """\n{{ .Prompt }}'
    with pytest.raises(ModelfileError) as info:
        quote_value(text, what="TEMPLATE", prefer_block=True)
    assert "POST /api/create" in (info.value.hint or "")

    data = tiny_gguf.read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with httpx.Client(base_url=ollama_server.host, timeout=120) as client:
        assert client.post(f"/api/blobs/{digest}", content=data).status_code in (200, 201)
        created = client.post(
            "/api/create",
            json={"model": "triple-quote", "files": {"tiny.gguf": digest}, "template": text},
        )
        assert created.status_code == 200, created.text
        shown = client.post("/api/show", json={"model": "triple-quote"}).json()
    assert shown["template"] == text
