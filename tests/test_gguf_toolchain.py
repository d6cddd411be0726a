"""The pinned llama.cpp toolchain: provisioned once, reused, laid out the way Unsloth expects."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deploy_to_ollama.cli import app
from deploy_to_ollama.errors import DependencyMissingError
from deploy_to_ollama.gguf.quantizer import CXX_SYMBOLS
from deploy_to_ollama.gguf.toolchain import (
    KERNEL_LIBRARY,
    MARKER_FILE,
    PROVISIONED_FILES,
    QUANT_LIBRARY,
    find_toolchain,
    missing_parts,
    provision_toolchain,
    toolchain_dir,
)
from deploy_to_ollama.gguf.toolchain_store import release


def test_missing_toolchain_says_run_setup(tmp_path: Path) -> None:
    with pytest.raises(DependencyMissingError) as info:
        find_toolchain(tmp_path)
    assert info.value.exit_code == 4
    assert "deploy-to-ollama setup" in (info.value.hint or "")


def test_external_llama_cpp_missing_parts_are_named(tmp_path: Path) -> None:
    (tmp_path / "convert_hf_to_gguf.py").write_text("")
    with pytest.raises(DependencyMissingError, match="llama-quantize") as info:
        find_toolchain(tmp_path / "cache", tmp_path)
    assert "gguf-py" in str(info.value)


@pytest.mark.slow
def test_provisioned_layout(llama_cpp_toolchain: Any) -> None:
    root = Path(llama_cpp_toolchain.root)
    for rel in (*PROVISIONED_FILES, "conversion/__init__.py", MARKER_FILE):
        assert (root / rel).exists(), rel
    marker = json.loads((root / MARKER_FILE).read_text())
    assert marker["commit"] == "0c1e570"
    run = subprocess.run([root / "llama-quantize"], capture_output=True, text=True, check=False)
    assert "usage" in (run.stdout + run.stderr).lower()
    # Static: the same binary runs on the GPU machine (Unsloth backend).
    ldd = subprocess.run(["ldd", root / "llama-quantize"], capture_output=True, text=True)
    assert "not a dynamic executable" in (ldd.stdout + ldd.stderr)
    # The in-process quantizer library exports llama.cpp's type selection and ggml's quantizer.
    nm = subprocess.run(["nm", "-D", "--defined-only", root / QUANT_LIBRARY], capture_output=True)
    for symbol in (*CXX_SYMBOLS.values(), "ggml_quantize_chunk"):
        assert f" T {symbol}\n".encode() in nm.stdout, symbol
    if platform.machine() == "x86_64":  # the AVX2 Q4_K kernel is compiled where it can run
        assert (root / KERNEL_LIBRARY).is_file()


@pytest.mark.slow
def test_setup_is_idempotent_and_reuses(llama_cpp_toolchain: Any) -> None:
    cache = Path(llama_cpp_toolchain.root).parent
    started = time.monotonic()
    again = provision_toolchain(cache)
    assert again.action == "reused"
    assert again.toolchain.root == Path(llama_cpp_toolchain.root)
    assert time.monotonic() - started < 5


@pytest.mark.slow
def test_setup_cli_uses_an_existing_llama_cpp(llama_cpp_toolchain: Any) -> None:
    result = CliRunner().invoke(
        app, ["setup", "--llama-cpp", str(llama_cpp_toolchain.root), "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["action"] == "external"
    assert payload["llama_cpp_dir"] == str(llama_cpp_toolchain.root)


def test_setup_cli_reports_a_broken_llama_cpp(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["setup", "--llama-cpp", str(tmp_path)])
    assert result.exit_code != 0
    assert isinstance(result.exception, DependencyMissingError)


# ----------------------------------------------------------- lock and atomic replace (issue 11)

#: A child process that provisions (``install``) or uses (``use``) a toolchain in a cache. It
#: prints an event line when something happens and, where told to hold, waits for a line on
#: stdin: the test drives the race with pipes, not with sleeps.
_CHILD = r"""
import json, sys
from pathlib import Path
from deploy_to_ollama.gguf.toolchain import find_toolchain, provision_toolchain

mode, cache, prebuilt = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])

def say(line):
    print(line, flush=True)

class Reporter:
    def start(self, key, description, total=None):
        say(f"start {key} {description}")
        if key == "toolchain-install" and mode == "install-and-hold":
            sys.stdin.readline()
    def advance(self, key, amount=1, *, completed=None):
        pass
    def done(self, key, message=None):
        pass

if mode == "use":
    tool = find_toolchain(cache)
    say(f"using {tool.root}")
    sys.stdin.readline()
    say("still there" if all((tool.root / p).exists() for p in ("llama-quantize", "gguf-py"))
        else "GONE")
else:
    result = provision_toolchain(cache, prebuilt=prebuilt, progress=Reporter())
    say(json.dumps({"action": result.action, "waited": result.waited,
                    "root": str(result.toolchain.root)}))
"""


def _fake_toolchain(root: Path, tag: str = "a") -> Path:
    """A finished toolchain as far as the store is concerned (no real binaries: fast)."""
    for rel in PROVISIONED_FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"#!/bin/sh\necho {tag}\n")
    (root / "llama-quantize").chmod(0o755)
    (root / MARKER_FILE).write_text(json.dumps({"commit": "0c1e570", "format": 2}))
    return root


def _child(mode: str, cache: Path, prebuilt: Path) -> subprocess.Popen[str]:
    import os
    import sys

    import deploy_to_ollama

    src = str(Path(deploy_to_ollama.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, mode, str(cache), str(prebuilt)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def _next_event(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"child exited early: {proc.communicate()[1]}"
    return line.strip()


def _release(proc: subprocess.Popen[str]) -> tuple[str, str]:
    out, err = proc.communicate("go\n", timeout=60)
    assert proc.returncode == 0, err
    return out.strip().splitlines()[-1], err


def test_a_second_setup_waits_for_the_first_and_reuses_its_toolchain(tmp_path: Path) -> None:
    cache, prebuilt = tmp_path / "cache", _fake_toolchain(tmp_path / "built")
    first = _child("install-and-hold", cache, prebuilt)
    assert _next_event(first).startswith("start toolchain-install")  # holds the build lock now
    second = _child("install", cache, prebuilt)
    waiting = _next_event(second)
    assert waiting.startswith("start toolchain-wait waiting for process"), waiting
    assert str(first.pid) in waiting
    first_result, _ = _release(first)
    second_result, second_err = _release(second)
    built, reused = json.loads(first_result), json.loads(second_result)
    assert (built["action"], built["waited"]) == ("installed", False)
    assert (reused["action"], reused["waited"]) == ("reused", True)
    assert reused["root"] == built["root"]
    assert f"waiting for process {first.pid}" in second_err  # shown on stderr as well
    final = toolchain_dir(cache)
    assert final.is_symlink() and final.resolve() == Path(built["root"])
    versions = [p for p in cache.glob(f"{final.name}.*") if p.is_dir() and not p.is_symlink()]
    assert versions == [Path(built["root"])], "exactly one build happened"


def test_a_rebuild_never_removes_a_toolchain_in_use(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    seeded = provision_toolchain(cache, prebuilt=_fake_toolchain(tmp_path / "a", "a"))
    release(seeded.toolchain.root)  # only the child below uses it
    user = _child("use", cache, tmp_path)
    in_use = Path(_next_event(user).removeprefix("using "))
    assert in_use == seeded.toolchain.root
    rebuilt = provision_toolchain(cache, prebuilt=_fake_toolchain(tmp_path / "b", "b"), force=True)
    assert rebuilt.toolchain.root != in_use
    assert toolchain_dir(cache).resolve() == rebuilt.toolchain.root  # switched
    assert (in_use / "llama-quantize").read_text() == "#!/bin/sh\necho a\n"  # and kept
    last, _ = _release(user)
    assert last == "still there"
    # Nobody uses the old version any more: the next build under the lock removes it.
    again = provision_toolchain(cache, prebuilt=tmp_path / "b", force=True)
    assert not in_use.exists()
    assert rebuilt.toolchain.root.exists()  # this process still holds it
    for root in (rebuilt.toolchain.root, again.toolchain.root):
        release(root)


def test_during_a_rebuild_the_toolchain_name_still_names_a_whole_toolchain(
    tmp_path: Path,
) -> None:
    """Even reached through a symlinked cache dir (the store must not mistake the current one)."""
    (tmp_path / "real").mkdir()
    cache = tmp_path / "cache"
    cache.symlink_to(tmp_path / "real")
    first = provision_toolchain(cache, prebuilt=_fake_toolchain(tmp_path / "a", "a"))
    release(first.toolchain.root)  # unused now: only being current protects it
    seen: list[list[str]] = []

    class Watch:
        def start(self, key: str, description: str, total: float | None = None) -> None:
            seen.append(missing_parts(toolchain_dir(cache), PROVISIONED_FILES))

        def advance(self, key: str, amount: float = 1, *, completed: float | None = None) -> None:
            return None

        def done(self, key: str, message: str | None = None) -> None:
            seen.append(missing_parts(toolchain_dir(cache), PROVISIONED_FILES))

    second = provision_toolchain(
        cache, prebuilt=_fake_toolchain(tmp_path / "b", "b"), force=True, progress=Watch()
    )
    assert seen == [[], []]  # whole before and after the copy, while the lock is held
    assert (toolchain_dir(cache) / "llama-quantize").read_text().endswith("echo b\n")
    assert not first.toolchain.root.exists()  # retired and unused: removed after the switch
    release(second.toolchain.root)


def test_a_toolchain_from_before_versions_is_reused_then_replaced_atomically(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    legacy = _fake_toolchain(toolchain_dir(cache), "legacy")  # a real dir, as setup made it
    stale_work = cache / f".{legacy.name}.build-dead"  # a build killed half-way
    (stale_work / "build").mkdir(parents=True)
    reused = provision_toolchain(cache)
    assert (reused.action, reused.toolchain.root) == ("reused", legacy)
    release(legacy)
    replaced = provision_toolchain(cache, prebuilt=_fake_toolchain(tmp_path / "new"), force=True)
    assert replaced.action == "installed"
    assert legacy.is_symlink() and legacy.resolve() == replaced.toolchain.root
    leftovers = sorted(p.name for p in cache.iterdir() if p.name != "src")
    assert leftovers == sorted([legacy.name, f"{legacy.name}.lock", replaced.toolchain.root.name])
    release(replaced.toolchain.root)


def test_setup_upgrades_a_toolchain_from_before_llama_server_and_deploys_keep_it(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    old = _fake_toolchain(tmp_path / "old", "old")
    (old / MARKER_FILE).write_text(json.dumps({"commit": "0c1e570"}))  # format 1: no server
    provision_toolchain(cache, prebuilt=old)
    for_deploy = provision_toolchain(cache)  # deploys need no server: no rebuild for them
    assert for_deploy.action == "reused"
    with pytest.raises(DependencyMissingError, match="predates llama-server") as info:
        for_deploy.toolchain.require_server()
    assert "setup --force" in (info.value.hint or "")
    for_setup = provision_toolchain(
        cache, with_server=True, prebuilt=_fake_toolchain(tmp_path / "new")
    )
    assert for_setup.action == "installed"
    assert provision_toolchain(cache, with_server=True).action == "reused"
    for root in {for_deploy.toolchain.root, for_setup.toolchain.root}:
        release(root)


def test_prebuilt_must_be_a_finished_toolchain(tmp_path: Path) -> None:
    half = tmp_path / "half"
    (half / "gguf-py").mkdir(parents=True)
    with pytest.raises(DependencyMissingError, match="llama-quantize") as info:
        provision_toolchain(tmp_path / "cache", prebuilt=half)
    assert MARKER_FILE in info.value.message
    assert not toolchain_dir(tmp_path / "cache").exists()


# ------------------------------------------------------------------- build progress and logs


_TINY_PROJECT = """cmake_minimum_required(VERSION 3.16)
project(tiny C)
add_executable(tiny a.c b.c c.c d.c)
"""


@pytest.mark.parametrize("generator", ["Unix Makefiles", "Ninja"])
def test_build_progress_is_read_from_real_cmake_output(generator: str, tmp_path: Path) -> None:
    import shutil

    from deploy_to_ollama.gguf.toolchain_build import run_logged

    if shutil.which("cmake") is None or (generator == "Ninja" and shutil.which("ninja") is None):
        pytest.skip(f"cmake with {generator} is not installed")
    src, build, log = tmp_path / "src", tmp_path / "build", tmp_path / "build.log"
    src.mkdir()
    (src / "CMakeLists.txt").write_text(_TINY_PROJECT)
    for name in "abc":
        (src / f"{name}.c").write_text(f"int {name}(void) {{ return 1; }}\n")
    (src / "d.c").write_text("int main(void) { return 0; }\n")
    run_logged(["cmake", "-G", generator, "-S", src, "-B", build], what="configure", log=log)
    seen: list[float] = []
    run_logged(["cmake", "--build", build, "-j", "1"], what="build", log=log,
               on_progress=seen.append)  # fmt: skip
    assert len(seen) >= 4, seen  # one per source file at least
    assert seen == sorted(seen) and seen[-1] == 100.0
    assert "Building C object" in log.read_text()


def test_a_failed_build_names_its_log(tmp_path: Path) -> None:
    from deploy_to_ollama.errors import ConversionError
    from deploy_to_ollama.gguf.toolchain_build import run_logged

    log = tmp_path / "build.log"
    with pytest.raises(ConversionError) as info:
        run_logged(["cmake", "--build", tmp_path / "nothing-configured"], what="building x",
                   log=log)  # fmt: skip
    assert info.value.message.startswith("building x failed: ")
    assert str(log) in (info.value.hint or "")
    assert "nothing-configured" in log.read_text()


def test_a_server_that_fails_to_build_leaves_a_usable_toolchain_and_a_clear_error(
    tmp_path: Path,
) -> None:
    from deploy_to_ollama.gguf.toolchain import SERVER_BINARY, Toolchain
    from deploy_to_ollama.gguf.toolchain_build import BuildReport, build_server, write_marker
    from deploy_to_ollama.progress import NullProgress

    staged = _fake_toolchain(tmp_path / "toolchain")
    report = BuildReport()
    build_server(tmp_path / "unconfigured", staged, jobs=1, log=tmp_path / "build.log",
                 reporter=NullProgress(), report=report)  # fmt: skip
    assert report.server_error and report.server_error.startswith("building llama-server failed")
    write_marker(staged, report)
    toolchain = Toolchain(staged)
    assert toolchain.server is None
    assert not missing_parts(staged, PROVISIONED_FILES)  # deploys keep working
    with pytest.raises(DependencyMissingError, match=f"{SERVER_BINARY} failed to build") as info:
        toolchain.require_server()
    assert info.value.exit_code == 4
    assert "build.log" in (info.value.hint or "")


# ----------------------------------------------------------------------- user-facing output

_OUTPUT_CHILD = r"""
import logging, sys, warnings
from deploy_to_ollama.progress import RichProgress, configure_output
configure_output(int(sys.argv[1]))
warnings.warn("some_arg is deprecated", FutureWarning)
logging.getLogger("transformers.modeling_utils").warning("`torch_dtype` is deprecated")
logging.getLogger("deploy_to_ollama.gguf.toolchain").warning("our own warning")
from huggingface_hub.utils import are_progress_bars_disabled
print("bars disabled" if are_progress_bars_disabled() else "bars enabled", file=sys.stderr)
with RichProgress(lines_when_not_tty=True) as progress:
    progress.start("build", "building llama-quantize", total=100)
    for percent in (5, 25, 60, 100):
        progress.advance("build", completed=percent)
    progress.done("build", "llama.cpp provisioned")
"""


@pytest.mark.parametrize("verbosity", [0, 1])
def test_output_is_quiet_and_has_no_source_paths_unless_verbose(verbosity: int) -> None:
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_HUB_DISABLE", "TRANSF"))}
    run = subprocess.run([sys.executable, "-c", _OUTPUT_CHILD, str(verbosity)],
                         capture_output=True, text=True, env=env, check=True)  # fmt: skip
    err = run.stderr
    assert "our own warning" in err
    assert ".py:" not in err, "a log line shows a source location"
    assert ("deprecated" in err) == (verbosity > 0), err
    assert ("bars disabled" in err) == (verbosity == 0), err
    # Not a terminal: the steps still show, as plain lines with their percentages.
    for line in ("building llama-quantize ...", "building llama-quantize: 20%",
                 "building llama-quantize: 60%", "llama.cpp provisioned"):  # fmt: skip
        assert line in err, err


# ------------------------------------------------------------------ llama-server (issue 13)


@pytest.mark.slow
def test_setup_builds_a_static_llama_server_beside_llama_quantize(
    llama_server_binary: Path,
) -> None:
    root = llama_server_binary.parent
    marker = json.loads((root / MARKER_FILE).read_text())
    assert (marker["server"], marker["server_error"]) == (True, None)
    assert (root / "llama-quantize").is_file()  # the same build tree, one toolchain
    ldd = subprocess.run(["ldd", llama_server_binary], capture_output=True, text=True)
    assert "not a dynamic executable" in (ldd.stdout + ldd.stderr)
    version = subprocess.run([llama_server_binary, "--version"], capture_output=True, text=True)
    assert version.returncode == 0, version.stderr


@pytest.mark.slow
def test_llama_server_renders_the_gguf_chat_template(tiny_llama_server: Any) -> None:
    assert tiny_llama_server.get_json("/health") == {"status": "ok"}
    prompt = tiny_llama_server.apply_template(
        {"messages": [{"role": "user", "content": "Hi there"}]}
    )
    # TINY_CHAT_TEMPLATE (ChatML) rendered by llama.cpp's Jinja engine, generation prompt on.
    assert prompt == "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.slow
def test_llama_server_takes_another_port_when_its_port_is_taken_and_stops(
    llama_server_binary: Path, tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket
    import urllib.error
    import urllib.request

    from deploy_to_ollama.gguf import llama_server as driver
    from support import llama_server
    from support.ollama_server import free_port

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = int(taken.getsockname()[1])
    ports = iter([busy])
    monkeypatch.setattr(driver, "free_port", lambda: next(ports, None) or free_port())
    server = llama_server.start_llama_server(llama_server_binary, tiny_gguf, tmp_path)
    try:
        assert not server.url.endswith(f":{busy}")
        assert server.get_json("/health") == {"status": "ok"}
        assert "couldn't bind" in (tmp_path / f"llama-server-{busy}.log").read_text()
    finally:
        server.stop()
        taken.close()
    assert server.process.returncode is not None
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url + "/health", timeout=5)


@pytest.mark.slow
def test_setup_cli_reports_its_llama_server(
    llama_server_binary: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from support.llama_cpp import shared_cache_dir

    monkeypatch.setenv("DTO_CACHE_DIR", str(shared_cache_dir()))
    result = CliRunner().invoke(app, ["setup", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    import os

    expected = "external" if os.environ.get("DTO_LLAMA_CPP_DIR") else "reused"
    assert (payload["action"], payload["llama_server_error"]) == (expected, None)
    assert payload["llama_server"] == str(llama_server_binary)
