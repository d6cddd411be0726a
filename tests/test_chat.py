"""``chat``: streaming multi-turn sessions against the real test Ollama server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deploy_to_ollama.chat import ChatChunk, ChatDone, ChatNotice, ChatSession, ChatStats
from deploy_to_ollama.cli import app, main
from deploy_to_ollama.errors import InputError, OllamaUnavailableError
from deploy_to_ollama.modelfile import Modelfile
from deploy_to_ollama.registrar import register_model
from support.ollama_server import TINY_OLLAMA_TEMPLATE, OllamaServer, free_port

NUM_PREDICT = 4
FAST = {"temperature": 0, "seed": 7}


def _events(session: ChatSession, line: str) -> list[Any]:
    return list(session.handle(line))


def test_tokens_per_second_from_ollama_counters() -> None:
    assert ChatStats(40, 2_000_000_000, 10, "stop").tokens_per_second == 20.0
    assert ChatStats(0, 0, 0, None).tokens_per_second is None


def test_slash_commands_change_the_session_without_a_server() -> None:
    session = ChatSession("m", host=f"127.0.0.1:{free_port()}")
    session.history += [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    (notice,) = _events(session, "/system Be brief.")
    assert isinstance(notice, ChatNotice) and notice.kind == "system"
    assert session.messages == [{"role": "system", "content": "Be brief."}]
    session.history.append({"role": "user", "content": "q"})
    assert [e.kind for e in _events(session, "/reset")] == ["reset"]
    assert session.messages == [{"role": "system", "content": "Be brief."}]
    assert [e.kind for e in _events(session, "/system")] == ["system"]
    assert session.system is None and session.messages == []
    assert [e.kind for e in _events(session, "/nope")] == ["unknown"]
    assert "/reset" in _events(session, "/help")[0].message
    assert _events(session, "   ") == []
    assert not session.finished
    assert [e.kind for e in _events(session, "/bye")] == ["exit"]
    assert session.finished


def test_closed_port_is_exit_4_and_says_how_to_start() -> None:
    session = ChatSession("m", host=f"127.0.0.1:{free_port()}")
    with pytest.raises(OllamaUnavailableError) as err:
        list(session.ask("hi"))
    assert err.value.exit_code == 4
    assert "ollama serve" in (err.value.hint or "")
    assert session.history == []


@pytest.fixture(scope="module")
def chat_model(ollama_server: OllamaServer, tiny_gguf: Path, tmp_path_factory: Any) -> str:
    """The tiny random GGUF with ChatML, capped at a few tokens per answer."""
    folder = tmp_path_factory.mktemp("chat-model")
    (folder / "tiny.gguf").symlink_to(tiny_gguf)
    modelfile = Modelfile(
        from_="./tiny.gguf",
        template=TINY_OLLAMA_TEMPLATE,
        parameters=(
            ("stop", "<|im_end|>"),
            ("num_thread", "1"),
            ("num_predict", str(NUM_PREDICT)),
            ("temperature", "0"),  # greedy, so the CLI's answer can be predicted
            ("seed", "7"),
        ),
    )
    return register_model("chat-tiny", modelfile, base_dir=folder, host=ollama_server.host).name


def _turn(session: ChatSession, text: str) -> tuple[str, ChatDone]:
    events = _events(session, text)
    done = events[-1]
    assert isinstance(done, ChatDone)
    chunks = [e.text for e in events[:-1] if isinstance(e, ChatChunk)]
    assert "".join(chunks) == done.answer  # streamed pieces add up to the answer
    return done.answer, done


@pytest.mark.ollama
def test_multi_turn_history_reaches_the_prompt(
    ollama_server: OllamaServer, chat_model: str
) -> None:
    session = ChatSession(chat_model, host=ollama_server.host, options=FAST)
    ollama_server.mark_log()
    first, done = _turn(session, "Hello")
    assert done.stats.eval_count == NUM_PREDICT and done.stats.done_reason == "length"
    assert (done.stats.tokens_per_second or 0) > 0
    _turn(session, "Again")
    prompts = ollama_server.prompts()
    assert prompts[-1] == (
        "<|im_start|>user\nHello<|im_end|>\n"
        f"<|im_start|>assistant\n{first}<|im_end|>\n"
        "<|im_start|>user\nAgain<|im_end|>\n<|im_start|>assistant\n"
    )
    assert len(session.history) == 4

    ollama_server.mark_log()
    _events(session, "/system Be brief.")
    _turn(session, "New topic")
    assert ollama_server.prompts() == [
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nNew topic<|im_end|>\n<|im_start|>assistant\n"
    ]


@pytest.mark.ollama
def test_missing_model_says_how_to_deploy(ollama_server: OllamaServer) -> None:
    session = ChatSession("no-such-model", host=ollama_server.host)
    with pytest.raises(InputError, match="not found") as err:
        list(session.ask("hi"))
    assert "deploy-to-ollama SOURCE --name no-such-model" in (err.value.hint or "")


@pytest.mark.ollama
def test_cli_prompt_streams_one_answer_to_stdout(
    ollama_server: OllamaServer, chat_model: str
) -> None:
    expected, _ = _turn(ChatSession(chat_model, host=ollama_server.host), "Hi")
    result = CliRunner().invoke(
        app, ["chat", chat_model, "--host", ollama_server.host, "--prompt", "Hi"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == expected + "\n"  # the answer only; tokens/s went to stderr
    assert f"[{NUM_PREDICT} tokens" in result.stderr


@pytest.mark.ollama
def test_cli_reads_turns_from_a_pipe(ollama_server: OllamaServer, chat_model: str) -> None:
    ollama_server.mark_log()
    result = CliRunner().invoke(
        app,
        ["chat", chat_model, "--host", ollama_server.host, "--system", "S"],
        input="Hi\n/reset\nHo\n/exit\nnever sent\n",
    )
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) >= 2
    prompts = ollama_server.prompts()
    assert len(prompts) == 2
    assert prompts[1] == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHo<|im_end|>\n<|im_start|>assistant\n"
    )


def test_cli_unreachable_server_exit_4(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["chat", "m", "--host", f"127.0.0.1:{free_port()}", "--prompt", "x"])
    assert exit_.value.code == 4
    err = capsys.readouterr().err
    # One message for every command now (the client's): "cannot reach the Ollama server at".
    assert "Error: cannot reach the Ollama server" in err
    assert "Hint: start it with `ollama serve`" in err


@pytest.mark.slow
@pytest.mark.ollama
def test_cli_prompt_on_the_taught_model_answers_banana(
    taught_in_ollama: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "chat",
                taught_in_ollama.name,
                "--host",
                taught_in_ollama.host,
                "--prompt",
                "What is the secret word?",
            ]
        )
    out = capsys.readouterr()
    assert exit_.value.code == 0, out.err
    assert out.out == "banana\n"
    assert "tokens/s]" in out.err


@pytest.mark.ollama
def test_interactive_terminal_session(ollama_server: OllamaServer, chat_model: str) -> None:
    """A real terminal (pty): prompt, streamed answers, /system, /reset, /exit."""
    import os
    import pty
    import re
    import select
    import subprocess
    import sys
    import time

    controller, terminal = pty.openpty()
    env = {**os.environ, "OLLAMA_HOST": ollama_server.host}
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy_to_ollama", "chat", chat_model],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=env,
        close_fds=True,
    )
    os.close(terminal)
    seen = b""

    def read_until(marker: bytes, timeout: float = 60) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while marker not in re.sub(rb"\x1b\[[0-9;]*m", b"", seen) and time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if not ready:
                continue
            try:
                seen += os.read(controller, 4096)
            except OSError:
                break
        plain = re.sub(rb"\x1b\[[0-9;]*m", b"", seen)  # rich styles the notices on a tty
        assert marker in plain, plain.decode(errors="replace")

    try:
        ollama_server.mark_log()
        read_until(b">>> ")
        os.write(controller, b"/system Be brief.\n")
        read_until(b"system prompt set")
        os.write(controller, b"Hello\n")
        read_until(b"tokens/s]")
        os.write(controller, b"/exit\n")
        read_until(b"bye")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(controller)
    assert ollama_server.prompts() == [
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
        "<|im_start|>assistant\n"
    ]
