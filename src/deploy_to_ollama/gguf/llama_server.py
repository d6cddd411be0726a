"""Start the toolchain's ``llama-server`` on 127.0.0.1 and ask it for rendered prompts.

Ollama 0.30+ runs GGUF models on llama-server, and on its "native" chat path the prompt is
rendered by llama.cpp's own Jinja engine, not by Python's jinja2. The only way to know that
prompt is to ask that engine: ``/apply-template`` takes the chat endpoint's body (messages,
tools, ``chat_template_kwargs``) and returns the prompt without generating anything.

One server per GGUF, many requests through it; :class:`LlamaServer` is a context manager so it
is stopped on every exit path (and the child dies with us, see ``kill_with_parent``).
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import DependencyMissingError

logger = logging.getLogger(__name__)

#: A cold start maps the model and warms nothing (``--no-warmup``); seconds even when busy.
START_TIMEOUT_S = 120.0
#: How often a port taken between our look and the server's bind is retried with another one.
BIND_ATTEMPTS = 3
#: What llama.cpp logs when its Jinja engine rejects the GGUF's chat template: it cannot parse
#: it, or cannot derive the tool-call/reasoning parser the chat endpoint needs from it.
TEMPLATE_FAILURES = ("chat template parsing error: ", "failed to initialize chat template")


class LlamaServerError(DependencyMissingError):
    """llama-server did not start or did not answer; the message names its log."""

    def __init__(self, message: str, *, log: Path | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.log = log


class ChatTemplateRejectedError(LlamaServerError):
    """llama.cpp cannot parse the chat template, or derive its tool-call parser from it."""


class ApplyTemplateError(Exception):
    """``/apply-template`` refused one conversation (HTTP 4xx/5xx); the message is its error.

    Not a ``DeployError``: it is a per-probe outcome the caller records, never shown alone.
    """


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LlamaServer:
    """A running llama-server; use it as a context manager so it is always stopped."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def __enter__(self) -> LlamaServer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def post_json(self, path: str, body: dict[str, Any], *, timeout: float = 60.0) -> Any:
        """POST ``body`` to ``path`` and decode the JSON reply.

        Raises:
            ApplyTemplateError: the server answered with an HTTP error (its message).
            LlamaServerError: the server is gone.
        """
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                return json.load(reply)
        except urllib.error.HTTPError as err:
            raise ApplyTemplateError(_error_message(err)) from err
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            raise LlamaServerError(
                f"llama-server stopped answering (see {self.log}): {err}", log=self.log
            ) from err

    def apply_template(self, body: dict[str, Any]) -> str:
        """The prompt llama.cpp renders for a chat-endpoint ``body`` (messages, tools, kwargs)."""
        return str(self.post_json("/apply-template", body)["prompt"])

    def tokenize(self, text: str) -> list[int]:
        """``text`` tokenized by the GGUF's vocabulary (special tokens parsed, none added)."""
        reply = self.post_json(
            "/tokenize", {"content": text, "add_special": False, "parse_special": True}
        )
        return [int(t) for t in reply["tokens"]]

    def stop(self) -> None:
        """Terminate the server and wait for it (kill it if it does not go)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _error_message(err: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(err.read() or b"{}")
    except ValueError:
        return f"HTTP {err.code}"
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or f"HTTP {err.code}")
    return str(error or f"HTTP {err.code}")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False  # refused while starting, 503 while loading


def log_tail(log: Path, lines: int = 5) -> str:
    """The last ``lines`` lines of a log, joined on one line."""
    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    return " | ".join(text.strip().splitlines()[-lines:])


def template_error(log: Path) -> str | None:
    """llama.cpp's own message when its Jinja engine rejected the chat template, else None.

    The engine's error (``init: error: Unknown statement: raw``) comes first when parsing
    failed; when only the parser generation failed, its reason follows on an ``Error:`` line.
    """
    if not log.exists():
        return None
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    if not any(marker in line for line in lines for marker in TEMPLATE_FAILURES):
        return None
    parts: list[str] = []
    for line in lines:
        if "common_chat_templates_init: error: " in line:
            return line.split(": error: ", 1)[1].strip()
        if TEMPLATE_FAILURES[0] in line:
            parts.append(line.split(TEMPLATE_FAILURES[0], 1)[1].strip())
        elif parts and line.startswith("Error: "):
            parts.append(line.removeprefix("Error: ").strip())
    return " ".join(parts) if parts else TEMPLATE_FAILURES[1]


def start_llama_server(
    binary: Path,
    model: Path,
    log_dir: Path,
    *,
    args: Sequence[str] = (),
    threads: int = 1,
    port: int | None = None,
) -> LlamaServer:
    """Start ``binary`` serving ``model`` on 127.0.0.1 and a free port; wait for ``/health``.

    ``--jinja`` as Ollama 0.30+ runs it; a small context, one slot and no warm-up, since we only
    ask for prompts. ``port`` is tried first where given; a port already in use (or taken
    between our look and the server's bind) is replaced by another free one.

    Raises:
        ChatTemplateRejectedError: llama.cpp's Jinja engine cannot parse the GGUF's template.
        LlamaServerError: it exited or did not answer in time (the message names the log).
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    for attempt in range(BIND_ATTEMPTS):
        chosen = port if port is not None and attempt == 0 else free_port()
        server = _spawn(binary, model, log_dir, args=args, threads=threads, port=chosen)
        if _settle(server, model):
            return server
    raise LlamaServerError(f"llama-server found no free port in {BIND_ATTEMPTS} attempts")


def start_llama_servers(
    binary: Path, models: Sequence[tuple[Path, Sequence[str]]], log_dir: Path
) -> list[LlamaServer | LlamaServerError]:
    """Start one server per ``(model, args)`` at once; each, or why it did not start.

    Every process is spawned before any is waited for, all from the calling thread (a child
    dies with the *thread* that spawned it, ``kill_with_parent``); one whose port was taken
    meanwhile is started again by :func:`start_llama_server`. Distinct model paths keep each
    server recognisable by ``/props``.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    results: list[LlamaServer | LlamaServerError] = []
    spawned: list[LlamaServer | LlamaServerError] = []
    try:
        for model, args in models:
            try:
                spawned.append(_spawn(binary, model, log_dir, args=args, port=free_port()))
            except LlamaServerError as err:
                spawned.append(err)
        for (model, args), first in zip(models, spawned, strict=True):
            try:
                if isinstance(first, LlamaServerError):
                    raise first
                ok = _settle(first, model)
                results.append(
                    first if ok else start_llama_server(binary, model, log_dir, args=args)
                )
            except LlamaServerError as err:
                results.append(err)
    except BaseException:
        for started in [*spawned, *results]:
            if isinstance(started, LlamaServer):
                started.stop()
        raise
    return results


def _spawn(
    binary: Path, model: Path, log_dir: Path, *, args: Sequence[str], port: int, threads: int = 1
) -> LlamaServer:
    """The llama-server process on ``port``, not yet waited for."""
    from .._subprocess import kill_with_parent

    log = log_dir / f"llama-server-{port}.log"
    command = [
        str(binary), "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
        "--jinja", "--ctx-size", "512", "--parallel", "1", "--threads", str(threads),
        "--no-warmup", *args,
    ]  # fmt: skip
    logger.debug("starting %s", " ".join(command))
    try:
        with log.open("wb") as sink:
            process = subprocess.Popen(
                command, stdout=sink, stderr=subprocess.STDOUT, preexec_fn=kill_with_parent
            )
    except OSError as err:
        raise LlamaServerError(
            f"cannot run {binary}: {err}", hint="run `deploy-to-ollama setup --force`"
        ) from err
    return LlamaServer(f"http://127.0.0.1:{port}", process, log)


def _settle(server: LlamaServer, model: Path) -> bool:
    """Wait for a spawned server: True when it is up and ours, False (stopped) when its port
    was taken.

    Raises:
        ChatTemplateRejectedError: llama.cpp's Jinja engine cannot parse the GGUF's template.
        LlamaServerError: it exited or did not answer in time (the message names the log).
    """
    healthy = _wait_healthy(server)
    if healthy and _is_ours(server, model):
        return True
    server.stop()
    port, log = server.url.rsplit(":", 1)[1], server.log
    if healthy:  # another server answers on that port
        logger.info("port %s is in use by another server; trying another", port)
        return False
    if (rejected := template_error(log)) is not None:
        raise ChatTemplateRejectedError(
            f"llama-server rejects the chat template: {rejected}",
            log=log,
            hint="the native (llama-server) path cannot serve this template; use the Go TEMPLATE",
        )
    if "couldn't bind" in log_tail(log, 50):
        logger.info("port %s is in use; trying another", port)
        return False
    raise LlamaServerError(
        f"llama-server did not start (see {log}): {log_tail(log, 2)}",
        log=log,
        hint="read the log; `deploy-to-ollama setup --force` rebuilds llama-server",
    )


def _is_ours(server: LlamaServer, model: Path) -> bool:
    """Whether the server answering on our port is the one we started, not another process
    that holds the port (ours then exits with "couldn't bind" a moment later)."""
    try:
        props = _get_json(server.url + "/props")
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
        return False
    same_model = isinstance(props, dict) and props.get("model_path") == str(model)
    return same_model and server.process.poll() is None


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.load(reply)


def _wait_healthy(server: LlamaServer) -> bool:
    """Poll ``/health`` until it answers, the process exits, or the start timeout passes."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if _healthy(server.url):
            return True
        try:  # wait for the process to exit, at most a moment, before asking again
            server.process.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            continue
        return False
    return False
