"""Native-path verification (issue 13 item 2): llama.cpp's Jinja engine vs transformers.

The server-backed tests run the real llama-server of the shared toolchain (``setup`` builds it)
on stub GGUFs; the bad-input tests use a toolchain without one, or a llama-server that dies.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from deploy_to_ollama.chat_template.native import (
    NativeCase,
    NativeReport,
    NativeUnavailable,
    compare_prompts,
    native_cases,
    render_reference,
    request_body,
    verify_native,
)
from deploy_to_ollama.chat_template.probes import load_probes
from deploy_to_ollama.chat_template.source import TemplateSource
from deploy_to_ollama.cli import main
from deploy_to_ollama.gguf.llama_server import LlamaServerError
from support.ollama_server import TINY_CHAT_TEMPLATE, write_tiny_gguf

CHATML = TINY_CHAT_TEMPLATE
#: Renders tools as JSON the way Qwen/Hermes templates do.
TOOLS_TEMPLATE = (
    "{% if tools %}<tools>{% for t in tools %}{{ t | tojson }}\n{% endfor %}</tools>\n{% endif %}"
    + CHATML
)
#: llama.cpp always passes ``enable_thinking``; transformers leaves it undefined.
READS_THINKING = CHATML + "{% if enable_thinking is defined %}<think>\n{% endif %}"
#: ``{% raw %}`` parses in jinja2, not in llama.cpp's engine.
RAW_BLOCK = CHATML + "{% raw %}{{ literal }}{% endraw %}"


def _source(
    template: str, *, bos: str | None = "<|endoftext|>", add_bos: bool = False
) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token=bos,
        eos_token="<|im_end|>", add_bos_token=add_bos,
    )  # fmt: skip


# ---------------------------------------------------------------------- pure comparison


def _case(probe_id: str) -> NativeCase:
    return next(c for c in native_cases(TOOLS_TEMPLATE) if c.id == probe_id)


def test_tiers_never_call_a_json_difference_exact() -> None:
    source, case = _source(TOOLS_TEMPLATE), _case("tools_available")
    python = render_reference(source, case)  # the tools printed by tojson, Python's layout
    tool = json.dumps(case.probe.tools[0])
    assert tool in python
    compact = python.replace(tool, json.dumps(case.probe.tools[0], separators=(",", ":")))
    assert compare_prompts(source, case, python, compact)[0] == "json_equivalent"
    assert compare_prompts(source, case, python, compact.replace("city", "town"))[0] is None
    assert compare_prompts(source, case, python, python + " ") == (None, False, len(python))
    # One leading BOS on one side only: exact, and said so.
    plain, single = _source(CHATML, bos="<s>"), native_cases(CHATML)[0]
    assert compare_prompts(plain, single, "<s>hi", "hi") == ("exact", True, None)
    assert compare_prompts(plain, single, "<s><s>hi", "hi")[0] is None


def test_json_the_template_wrote_as_text_must_match_byte_for_byte() -> None:
    """One rule with the Go path: only ``tojson`` output may change layout. A JSON-looking
    literal in the Jinja is text; printed otherwise it differs (the old rule, which parsed
    every JSON span of both prompts, called this json_equivalent)."""
    literal = '{"mode": "chat", "v": 1}\n'
    source = _source(literal + CHATML)
    case = native_cases(source.template)[0]
    expected = render_reference(source, case)
    actual = expected.replace(literal, '{"mode":"chat","v":1}\n')
    assert compare_prompts(source, case, expected, actual) == (None, False, 8)
    # The same change inside a tojson value is json_equivalent (the case above).


def test_thinking_cases_only_where_the_jinja_reads_enable_thinking() -> None:
    assert not [c for c in native_cases(CHATML) if c.kwargs]
    thinking = [c for c in native_cases(READS_THINKING) if c.kwargs]
    packaged = [(p.id, {"enable_thinking": p.think}) for p in load_probes() if p.think is not None]
    assert [(c.id, dict(c.kwargs)) for c in thinking] == [
        *packaged,
        ("think_true", {"enable_thinking": True}), ("think_false", {"enable_thinking": False}),
    ]  # fmt: skip


def test_thinking_cases_use_the_switch_the_go_path_maps_think_onto() -> None:
    """Command-A reads ``reasoning``: the native cases send ``think`` under that name (as
    ``verify_native`` passes ``switch_name``), and transformers gets the same setting back."""
    from deploy_to_ollama.chat_template.thinking import switch_name

    template = CHATML + "{% if reasoning is defined and not reasoning %}</think>{% endif %}"
    source = TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )
    assert switch_name(source) == "reasoning"
    cases = native_cases(template, switch=switch_name(source))
    thinking = [c for c in cases if c.kwargs]
    packaged = [(p.id, {"reasoning": p.think}) for p in load_probes() if p.think is not None]
    assert [(c.id, dict(c.kwargs)) for c in thinking] == [
        *packaged,
        ("think_true", {"reasoning": True}), ("think_false", {"reasoning": False}),
    ]  # fmt: skip
    assert [c.reference_probe.think for c in thinking[-2:]] == [True, False]
    # Ollama's native path sends think as enable_thinking only (native_request).
    assert request_body(thinking[-1])["chat_template_kwargs"] == {"enable_thinking": False}
    # The old fixed name finds nothing to switch in this template.
    assert not [c for c in native_cases(template) if c.kwargs]


# ------------------------------------------------------------ real llama-server (slow)


@pytest.mark.slow
def test_chatml_is_verified_on_llama_cpp_every_probe_exact(llama_server_binary: Path) -> None:
    report = verify_native(_source(CHATML), llama_server_binary)
    assert isinstance(report, NativeReport) and report.verified
    ran = [p for p in report.probes if p.status != "skipped"]
    assert ran and all(p.tier == "exact" and not p.bos_stripped for p in ran)
    assert report.exact == len(ran)


@pytest.mark.slow
def test_a_template_llama_cpp_renders_differently_is_not_verified(
    llama_server_binary: Path,
) -> None:
    report = verify_native(_source(READS_THINKING), llama_server_binary)
    assert isinstance(report, NativeReport) and not report.verified
    failure = report.first_failure()
    assert failure is not None and failure.probe == "single_user"
    assert failure.actual is not None and failure.actual.endswith("<think>\n")
    assert failure.expected is not None and not failure.expected.endswith("<think>\n")
    assert failure.position == len(failure.expected)
    assert report.to_json()["probes"][0]["tier"] is None


@pytest.mark.slow
def test_bos_the_vocabulary_adds_is_dropped_by_llama_cpp_and_reported(
    llama_server_binary: Path,
) -> None:
    report = verify_native(_source("{{ bos_token }}" + CHATML, add_bos=True), llama_server_binary)
    assert isinstance(report, NativeReport) and report.verified
    single = next(p for p in report.probes if p.probe == "single_user")
    assert (single.tier, single.bos_stripped) == ("exact", True)
    assert single.expected is not None and single.expected.startswith("<|endoftext|>")


@pytest.mark.slow
def test_tool_probes_reach_both_engines(llama_server_binary: Path) -> None:
    report = verify_native(_source(TOOLS_TEMPLATE), llama_server_binary)
    assert isinstance(report, NativeReport)
    tools = next(p for p in report.probes if p.probe == "tools_available")
    assert tools.actual is not None and '"get_weather"' in tools.actual
    assert tools.status == "match" and tools.tier in {"exact", "json_equivalent"}


@pytest.mark.slow
def test_a_jinja_llama_cpp_cannot_parse_is_unavailable_with_its_message(
    llama_server_binary: Path, tmp_path: Path
) -> None:
    result = verify_native(_source(RAW_BLOCK), llama_server_binary, log_dir=tmp_path)
    assert isinstance(result, NativeUnavailable) and not result.verified
    assert "Unknown statement: raw" in result.reason
    assert result.to_json() == {"available": False, "verified": False, "reason": result.reason}


@pytest.mark.slow
def test_a_gguf_without_jinja_is_unavailable_and_the_written_gguf_is_served(
    llama_server_binary: Path, tmp_path: Path
) -> None:
    bare = write_tiny_gguf(tmp_path / "bare.gguf", chat_template="")
    result = verify_native(_source(CHATML), llama_server_binary, gguf=bare)
    assert isinstance(result, NativeUnavailable) and "no tokenizer.chat_template" in result.reason
    served = write_tiny_gguf(tmp_path / "chatml.gguf")  # ChatML, BOS <|im_start|>
    report = verify_native(_source(CHATML, bos="<|im_start|>"), llama_server_binary, gguf=served)
    assert isinstance(report, NativeReport) and report.verified and report.token_level
    # Tokens by llama.cpp's tokenizer of that GGUF: the special tokens are single tokens.
    single = next(p for p in report.probes if p.probe == "single_user")
    assert single.token_match is True and single.token_delta == 0


@pytest.mark.slow
def test_the_vocabulary_stub_tokenizes_like_the_model(
    llama_server_binary: Path, tmp_path: Path
) -> None:
    """verify_native serves a GGUF we wrote as its tokenizer keys only: same tokens."""
    from deploy_to_ollama.gguf.llama_server import start_llama_server
    from deploy_to_ollama.gguf.template_gguf import write_vocabulary_stub

    model = write_tiny_gguf(tmp_path / "m.gguf")
    stub = write_vocabulary_stub(tmp_path / "stub.gguf", model)
    text = "<|im_start|>user\nHéllo, wörld! 12345<|im_end|>\n<|im_start|>assistant\n"
    ids = []
    for path in (model, stub):
        with start_llama_server(llama_server_binary, path, tmp_path / "logs") as server:
            ids.append(server.tokenize(text))
    assert ids[0] == ids[1] and 0 < len(ids[0]) < len(text)


# ------------------------------------------------------------------------------- CLI


def _jinja(tmp_path: Path, template: str) -> Path:
    path = tmp_path / "chat_template.jinja"
    path.write_text(template, encoding="utf-8")
    return path


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Through ``main()``, which maps our errors to exit codes and ``Error:`` lines."""
    with pytest.raises(SystemExit) as info:
        main(list(args))
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out, captured.err


def _with_shared_toolchain(monkeypatch: pytest.MonkeyPatch) -> None:
    from support.llama_cpp import _START_ENV, shared_cache_dir

    monkeypatch.setenv("DTO_CACHE_DIR", str(shared_cache_dir()))
    if _START_ENV.get("DTO_LLAMA_CPP_DIR"):
        monkeypatch.setenv("DTO_LLAMA_CPP_DIR", _START_ENV["DTO_LLAMA_CPP_DIR"])


@pytest.mark.slow
def test_template_json_carries_the_native_result(
    llama_server_binary: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _with_shared_toolchain(monkeypatch)
    code, out, err = _main(capsys, "template", "show", str(_jinja(tmp_path, CHATML)), "--json")
    assert code == 0, err
    native = json.loads(out)["native"]
    assert (native["available"], native["verified"]) == (True, True)
    assert {p["tier"] for p in native["probes"] if p["status"] == "match"} == {"exact"}


@pytest.mark.slow
def test_template_diff_native_shows_the_first_difference_and_exits_3(
    llama_server_binary: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _with_shared_toolchain(monkeypatch)
    source = str(_jinja(tmp_path, READS_THINKING))
    code, out, err = _main(capsys, "template", "diff", source, "--native")
    assert code == 3, err
    assert "llama.cpp (native Jinja)" in out and "[differs] single_user" in out
    assert "probe single_user differs at character" in err
    ok_code, _, ok_err = _main(
        capsys, "template", "diff", str(_jinja(tmp_path, CHATML)), "--native"
    )
    assert ok_code == 0, ok_err
    assert "native verified" in ok_err


def test_template_json_without_llama_server_says_native_unavailable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # DTO_CACHE_DIR is an empty tmp dir here: no toolchain, so no llama-server.
    code, out, err = _main(capsys, "template", "show", str(_jinja(tmp_path, CHATML)), "--json")
    assert code == 0, err  # the Go TEMPLATE decides the exit code
    native = json.loads(out)["native"]
    assert (native["available"], native["verified"]) == (False, False)
    assert "not provisioned" in native["reason"]


def test_template_diff_native_without_llama_server_exits_4(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = _main(capsys, "template", "diff", str(_jinja(tmp_path, CHATML)), "--native")
    assert code == 4, err
    assert "toolchain not provisioned" in err


@pytest.mark.parametrize(
    ("flags", "needle"),
    [([], "Missing option '--against' (or --native)"),
     (["--native", "--against", "Modelfile"], "--against and --native exclude each other")],
)  # fmt: skip
def test_template_diff_needs_exactly_one_of_against_and_native(
    tmp_path: Path, flags: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = _main(capsys, "template", "diff", str(_jinja(tmp_path, CHATML)), *flags)
    assert code == 2, err
    assert needle in err


def test_a_llama_server_that_dies_is_one_line_naming_its_log_exit_4(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user's llama.cpp (DTO_LLAMA_CPP_DIR) whose llama-server exits at once."""
    from deploy_to_ollama.gguf.toolchain import REQUIRED_FILES

    root = tmp_path / "llama.cpp"
    for name in REQUIRED_FILES:  # the checks look for the parts, not their contents
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("#!/bin/sh\nexit 0\n")
    server = root / "llama-server"
    server.write_text("#!/bin/sh\necho 'error: cannot load the model' >&2\nexit 1\n")
    for path in (server, root / "llama-quantize"):
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("DTO_LLAMA_CPP_DIR", str(root))
    code, _out, err = _main(capsys, "template", "diff", str(_jinja(tmp_path, CHATML)), "--native")
    assert code == 4, err
    error_line = next(line for line in err.splitlines() if "did not start" in line)
    log = Path(error_line.split("(see ", 1)[1].split(")", 1)[0])
    assert log.is_file() and "cannot load the model" in log.read_text()
    with pytest.raises(LlamaServerError):  # the library raises it too (exit 4)
        verify_native(_source(CHATML), server, log_dir=tmp_path)
