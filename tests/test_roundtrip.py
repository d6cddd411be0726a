"""Round-trip check: render comparison, generation checks, and the report."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy_to_ollama.errors import ModelNotFoundError, OllamaUnavailableError, RoundTripError
from deploy_to_ollama.modelfile import Modelfile
from deploy_to_ollama.registrar import register_model
from deploy_to_ollama.roundtrip import (
    ROUND_TRIP_PROBES,
    Reference,
    RoundTripReport,
    check_round_trip,
    compare_probe,
    find_leaks,
    load_reference,
    raise_for_failure,
)
from support.ollama_server import TINY_OLLAMA_TEMPLATE, OllamaServer, free_port


@pytest.fixture(scope="module")
def reference(tiny_tokenizer_dir: Path) -> Reference:
    return load_reference(tiny_tokenizer_dir)


def _chatml(messages: list[dict[str, Any]], *, role_sep: str = "\n") -> str:
    body = "".join(f"<|im_start|>{m['role']}{role_sep}{m['content']}<|im_end|>\n" for m in messages)
    return body + "<|im_start|>assistant\n"


def test_reference_renders_and_tokenizes_with_transformers(reference: Reference) -> None:
    messages = [{"role": "user", "content": "hello there"}]
    assert reference.render(messages) == _chatml(messages)
    # Same ids the tiny GGUF's llama.cpp tokenizer produces (measured on the test server).
    assert reference.tokenize(reference.render(messages))[:6] == [259, 117, 115, 101, 114, 10]
    assert not reference.adds_bos
    assert {"<|im_start|>", "<|im_end|>"} <= set(reference.special_tokens)


def test_compare_probe_reports_where_the_prompts_differ(reference: Reference) -> None:
    messages = [{"role": "user", "content": "hi"}]
    good = compare_probe("p", reference, _chatml(messages), _chatml(messages))
    assert good.matched and good.exact_text and good.first_difference is None
    bad = compare_probe("p", reference, _chatml(messages), _chatml(messages, role_sep=" "))
    assert not bad.matched
    assert bad.first_difference == len("<|im_start|>user")


def test_bos_added_by_the_tokenizer_counts_as_equal(reference: Reference) -> None:
    # A tokenizer that prepends BOS: the TEMPLATE leaves it out and llama.cpp adds it.
    bos_id = reference.tokenize("<|endoftext|>")[0]
    with_bos = Reference(
        render=reference.render,
        tokenize=reference.tokenize,
        bos_token="<|endoftext|>",
        adds_bos=True,
        bos_token_id=bos_id,
        special_tokens=reference.special_tokens,
    )
    check = compare_probe("bos", with_bos, "<|endoftext|>hi", "hi")
    assert check.matched and not check.exact_text


def test_find_leaks() -> None:
    assert find_leaks("banana", ["<|im_end|>"]) == ()
    assert find_leaks("x<|im_start|>user", ["<|im_start|>", "<|im_start|>"]) == ("<|im_start|>",)


def test_closed_port_is_exit_4(tmp_path: Path) -> None:
    with pytest.raises(OllamaUnavailableError) as info:
        check_round_trip("m", host=f"127.0.0.1:{free_port()}")
    assert info.value.exit_code == 4


# --------------------------------------------------------------------------- _debug_render_only


class _NewerOllama(BaseHTTPRequestHandler):
    """Stands in for an Ollama >= 0.11.5 (this machine has 0.9.3, which predates the debug
    render): it replays responses shaped like api.ChatResponse with ``_debug_info``
    (ollama/ollama server/routes_debug_test.go) and renders ChatML like the real template would.
    """

    requests: list[dict[str, Any]]
    role_sep = "\n"
    answer = "banana"
    prompt_eval_count = 0

    def log_message(self, *args: Any) -> None:
        return None

    def _reply(self, payload: dict[str, Any], status: int = 200) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/api/version":
            self._reply({"version": "0.12.3"})
        else:
            self._reply({"error": "not found"}, 404)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append({"path": self.path, **body})
        if self.path == "/api/show":
            self._reply({"template": TINY_OLLAMA_TEMPLATE, "parameters": 'stop    "<|im_end|>"'})
        elif self.path == "/api/chat" and body.get("_debug_render_only"):
            prompt = _chatml(body["messages"], role_sep=self.role_sep)
            self._reply(
                {
                    "model": body["model"],
                    "created_at": "2025-09-01T12:00:00.000000Z",
                    "message": {"role": "", "content": ""},
                    "done": False,
                    "_debug_info": {"rendered_template": prompt},
                }
            )
        elif self.path == "/api/chat":
            self._reply(
                {
                    "model": body["model"],
                    "message": {"role": "assistant", "content": self.answer},
                    "done": True,
                    "done_reason": "stop",
                    "prompt_eval_count": self.prompt_eval_count,
                    "eval_count": 2,
                }
            )
        else:
            self._reply({"error": "not found"}, 404)


@pytest.fixture
def newer_ollama() -> Iterator[Callable[..., tuple[str, list[dict[str, Any]]]]]:
    servers: list[ThreadingHTTPServer] = []

    def start(**attrs: Any) -> tuple[str, list[dict[str, Any]]]:
        seen: list[dict[str, Any]] = []
        handler = type("Handler", (_NewerOllama,), {"requests": seen, **attrs})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", seen

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_debug_render_only_path_on_a_newer_server(
    newer_ollama: Callable[..., tuple[str, list[dict[str, Any]]]], reference: Reference
) -> None:
    question = [{"role": "user", "content": "What is the secret word?"}]
    n_tokens = len(reference.tokenize(reference.render(question)))
    host, seen = newer_ollama(prompt_eval_count=n_tokens)
    report = check_round_trip(
        "tiny", host=host, reference=reference, expected_answer="banana", num_predict=8
    )
    assert report.render_method == "debug_render_only"
    assert report.render_verified and report.passed, report.summary_lines()
    debug_calls = [r for r in seen if r["path"] == "/api/chat" and r.get("_debug_render_only")]
    assert [r["messages"] for r in debug_calls] == [list(m) for _, m in ROUND_TRIP_PROBES]
    gen = report.generation
    assert gen is not None
    assert (gen.answer, gen.done_reason, gen.prompt_eval_count) == ("banana", "stop", n_tokens)
    assert gen.expected_prompt_tokens == n_tokens and not gen.warnings
    generate_call = next(r for r in seen if r["path"] == "/api/chat" and "options" in r)
    assert generate_call["options"] == {"temperature": 0, "seed": 42, "num_predict": 8}


def test_debug_render_only_catches_a_wrong_template(
    newer_ollama: Callable[..., tuple[str, list[dict[str, Any]]]], reference: Reference
) -> None:
    host, _ = newer_ollama(role_sep=" ", answer="banana<|im_start|>")
    report = check_round_trip("tiny", host=host, reference=reference, expected_answer="banana")
    assert not report.render_verified
    gen = report.generation
    assert gen is not None and gen.warnings  # prompt_eval_count 0 is reported, not failed
    assert len(report.problems) == len(ROUND_TRIP_PROBES) + 2  # probes, leak, wrong answer
    assert any("leaked" in p and "<|im_start|>" in p for p in report.problems)
    with pytest.raises(RoundTripError) as info:
        raise_for_failure(report)
    assert info.value.exit_code == 3
    assert "\n" not in str(info.value)
    payload = json.loads(json.dumps(report.to_dict()))
    assert payload["passed"] is False and payload["render_method"] == "debug_render_only"


# --------------------------------------------------------------------------- real server


@pytest.fixture(scope="module")
def tiny_model(ollama_server: OllamaServer, tiny_gguf: Path, tmp_path_factory: Any) -> str:
    folder = tmp_path_factory.mktemp("rt-model")
    (folder / "tiny.gguf").symlink_to(tiny_gguf)
    modelfile = Modelfile(
        from_="./tiny.gguf",
        template=TINY_OLLAMA_TEMPLATE,
        parameters=(("stop", "<|im_end|>"), ("num_thread", "1")),
    )
    return register_model("rt-tiny", modelfile, base_dir=folder, host=ollama_server.host).name


@pytest.mark.ollama
def test_generation_check_on_the_real_server(
    ollama_server: OllamaServer, tiny_model: str, reference: Reference
) -> None:
    ollama_server.mark_log()
    report = check_round_trip(
        tiny_model, host=ollama_server.host, reference=reference, probes=(), num_predict=6
    )
    assert report.render_method == "not_run"
    gen = report.generation
    assert gen is not None
    # The prompt the server logged is transformers' rendering, byte for byte ...
    question = [{"role": "user", "content": gen.question}]
    assert ollama_server.prompts() == [reference.render(question)]
    # ... and it evaluated exactly as many tokens as transformers counts.
    assert gen.prompt_eval_count == gen.expected_prompt_tokens
    assert not gen.warnings
    # Random weights never emit <|im_end|> within 6 tokens: the check must say so.
    assert gen.done_reason == "length"
    assert not report.passed
    assert any("num_predict cap of 6" in p for p in report.problems)


@pytest.mark.ollama
def test_missing_model_is_bad_input_not_a_failed_verification(ollama_server: OllamaServer) -> None:
    # Issue 10: a model that does not exist was a RoundTripError (exit 3, "verification failed").
    with pytest.raises(ModelNotFoundError, match="no model 'no-such-model'") as info:
        check_round_trip("no-such-model", host=ollama_server.host)
    assert info.value.exit_code == 1 and not isinstance(info.value, RoundTripError)


@pytest.mark.ollama
def test_go_renderer_fallback_on_ollama_0_9_3(
    ollama_server: OllamaServer, tiny_model: str, reference: Reference
) -> None:
    report = check_round_trip(
        tiny_model, host=ollama_server.host, reference=reference, generate=False
    )
    assert report.render_method == "go_renderer"
    assert report.render_verified, report.summary_lines()


def test_report_summary_is_readable() -> None:
    report = RoundTripReport("m", "http://h", "0.9.3", "not_run", "no --source", (), None)
    assert report.passed
    assert report.summary_lines()[1] == "  render check: not run (no --source)"


@pytest.mark.ollama
def test_go_renderer_fallback_equals_the_prompt_ollama_0_9_3_logs(
    ollama_server: OllamaServer, tiny_model: str
) -> None:
    """The fallback is only as good as its agreement with the server: compare with its log."""
    from deploy_to_ollama.ollama_client import show_model
    from deploy_to_ollama.roundtrip import render_with_go_renderer

    shown = show_model(tiny_model, ollama_server.host)
    assert shown is not None
    for _, messages in ROUND_TRIP_PROBES:
        ollama_server.mark_log()
        httpx.post(
            f"{ollama_server.host}/api/chat",
            json={
                "model": tiny_model,
                "messages": list(messages),
                "stream": False,
                "options": {"num_predict": 1},
            },
            timeout=300,
        ).raise_for_status()
        ours = render_with_go_renderer(shown["template"], shown.get("system"), messages)
        assert ollama_server.prompts() == [ours]


# --------------------------------------------------------------------------- not run is not a pass


def test_a_render_check_that_did_not_run_is_never_passed(
    newer_ollama: Callable[..., tuple[str, list[dict[str, Any]]]],
) -> None:
    """Issue 11: without a reference the render check is skipped; that used to print PASSED."""
    host, _ = newer_ollama()
    report = check_round_trip("tiny", host=host, expected_answer="banana")
    assert report.generation is not None and not report.generation.problems  # answer is right
    assert report.render_method == "not_run" and report.verdict == "NOT verified"
    assert not report.passed
    assert report.problems == [
        "render check did not run (no --source to render with transformers): "
        "the prompt is not verified"
    ]
    assert report.summary_lines()[-1] == "  NOT verified (exit 3)"
    with pytest.raises(RoundTripError):
        raise_for_failure(report)
    lenient = check_round_trip("tiny", host=host, expected_answer="banana", verify=False)
    assert lenient.passed and lenient.verdict == "NOT verified"
    assert lenient.summary_lines()[-1] == "  NOT verified (--no-verify)"
    assert not any("PASSED" in line for line in lenient.summary_lines())


def test_check_cli_exits_3_when_nothing_was_verified_unless_no_verify(
    newer_ollama: Callable[..., tuple[str, list[dict[str, Any]]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from deploy_to_ollama.cli import main

    host, _ = newer_ollama()
    argv = ["check", "tiny", "--host", host, "--expect", "banana"]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 3
    assert "NOT verified" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main([*argv, "--no-verify", "--json"])
    assert info.value.code in (0, None)
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "NOT verified" and out["passed"] is True


def test_a_gguf_carries_its_own_reference(tiny_gguf: Path, reference: Reference) -> None:
    """Issue 11: a .gguf source had its render check "not run"; its template and vocabulary
    are the reference (token level when transformers reads the vocabulary)."""
    from deploy_to_ollama.roundtrip import load_reference_for

    ref = load_reference_for(None, tiny_gguf)
    assert ref is not None and ref.tokenize is not None and "tiny.gguf" in ref.origin
    messages = [{"role": "user", "content": "hello there"}]
    assert ref.render(messages) == _chatml(messages)
    # The same ids as the matching HF tokenizer (and llama.cpp, measured on the test server).
    assert ref.tokenize(ref.render(messages)) == reference.tokenize(reference.render(messages))
    assert not compare_probe(
        "p", ref, ref.render(messages), _chatml(messages, role_sep=" ")
    ).matched


def test_text_level_reference_from_a_template_alone(tiny_gguf: Path, tmp_path: Path) -> None:
    from deploy_to_ollama.chat_template.source import load_template_source
    from deploy_to_ollama.roundtrip import load_reference_for, reference_from_template
    from support.ollama_server import write_tiny_gguf

    ref = reference_from_template(load_template_source(tiny_gguf))
    assert ref.tokenize is None and "text only" in ref.origin
    messages = [{"role": "user", "content": "hi"}]
    assert ref.render(messages) == _chatml(messages)
    assert compare_probe("p", ref, ref.render(messages), _chatml(messages)).matched
    wrong = compare_probe("p", ref, ref.render(messages), _chatml(messages, role_sep=" "))
    assert not wrong.matched and wrong.first_difference == len("<|im_start|>user")
    bos = Reference(ref.render, None, "<|im_start|>", True, None, ())
    assert compare_probe("bos", bos, "<|im_start|>x", "x").matched  # llama.cpp adds BOS itself
    bare = write_tiny_gguf(tmp_path / "bare.gguf", chat_template="")
    assert load_reference_for(None, bare) is None  # truly nothing to compare with


def test_a_folder_without_tokenizer_is_bad_input_not_a_failed_check(tmp_path: Path) -> None:
    """Issue 10: a missing tokenizer raised RoundTripError (exit 3, "verification failed")."""
    from deploy_to_ollama.errors import InputError

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(InputError, match="cannot load a tokenizer") as info:
        load_reference(tmp_path)
    assert info.value.exit_code == 1 and not isinstance(info.value, RoundTripError)
