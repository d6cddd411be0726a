"""llama.cpp's prompts at a render's cost: the server Ollama runs, plus one that only renders.

In llama.cpp 0c1e570 every ``/apply-template`` request runs ``common_chat_templates_apply``:
where no specialised handler matches the template (``common_chat_try_specialized_template``),
the differential auto-parser analyses the whole template again and builds a tool-call parser
(``common/chat.cpp``, ``chat-auto-parser-generator.cpp``), 30-100 ms a request for large
templates, though it depends only on the template, and the prompt it returns is the plain
render (``common_chat_template_direct_apply``) of the same inputs. A second server started with
``--skip-chat-parsing`` renders exactly that and skips the analysis (``force_pure_content``).
Its prompt equals the first one's only where llama.cpp would take the auto-parser path, so:

- the second server says at start-up, in its debug log, which path the template takes and
  whether thinking is on by default (the same start-up code as the first server's, which stays
  at the default log level: the trace level also renders an example conversation, which may
  fail);
- a case goes to the render-only server only when that path is the auto-parser, the
  conversation does not end with an assistant message (a continued message is appended by the
  parser generator, not by the render), and its tools go to the default template (no
  ``tool_use`` variant); it is sent with the ``enable_thinking`` default of that start-up code
  as a kwarg (the render-only server would take the same; stated, nothing depends on that);
- every other case, every case the render-only server refuses (so that the refusal is the
  first server's, word for word), and every case when anything above is unknown, goes to the
  first server.

``tests/test_native_servers.py`` renders every case of the corpus templates both ways and
requires the same prompt (or the same refusal).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from ..gguf.llama_server import (
    ApplyTemplateError,
    LlamaServer,
    LlamaServerError,
    start_llama_server,
    start_llama_servers,
)

logger = logging.getLogger(__name__)

#: The render-only server: a pure-content parser, so no per-request template analysis.
RENDER_ONLY_ARGS = ("--skip-chat-parsing",)
#: The render-only server logs the chat path at start-up (LOG_DBG, level 5) and its thinking
#: default (trace): both come from the template, not from the pure-content flag.
PATH_LOG_ARGS = ("--verbosity", "5")
#: ``common_chat_templates_apply_jinja``'s debug line when no specialised handler matched.
AUTOPARSER_LINE = "common_chat_templates_apply_jinja: using differential autoparser"
#: The server's start-up trace of its ``enable_thinking`` default (``server-context.cpp``).
THINKING_LINE = "init: chat template, thinking = "
#: How long the start-up lines may lag behind ``/health`` in the log (written by a thread).
LOG_WAIT_S = 2.0


@dataclass(frozen=True, slots=True)
class ChatPath:
    """What a server's start-up log says about the template (its own, not the request's)."""

    autoparser: bool
    """The default template takes the differential auto-parser (no specialised handler)."""
    thinking: bool
    """The server's ``enable_thinking`` default for requests that do not set it."""


def parse_chat_path(log_text: str) -> ChatPath | None:
    """The chat path from a server's start-up log (level 5); None until its thinking line is in.

    >>> parse_chat_path("D x: " + AUTOPARSER_LINE + "\\nI srv init: " + THINKING_LINE + "1\\n")
    ChatPath(autoparser=True, thinking=True)
    >>> parse_chat_path(f"I srv init: {THINKING_LINE}0")
    ChatPath(autoparser=False, thinking=False)
    >>> parse_chat_path("D x: " + AUTOPARSER_LINE) is None
    True
    """
    thinking: bool | None = None
    for line in log_text.splitlines():
        if THINKING_LINE in line:
            value = line.split(THINKING_LINE, 1)[1].strip()
            if value not in ("0", "1"):
                return None
            thinking = value == "1"
            break
    if thinking is None:
        return None
    return ChatPath(autoparser=AUTOPARSER_LINE in log_text, thinking=thinking)


def read_chat_path(log: Path, *, timeout: float = LOG_WAIT_S) -> ChatPath | None:
    """:func:`parse_chat_path` of ``log``, waiting at most ``timeout`` for the line to land."""
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
        if (path := parse_chat_path(text)) is not None or time.monotonic() >= deadline:
            return path
        time.sleep(0.01)  # the log thread flushes on its own; nothing to wait on but the file


@dataclass
class NativeRenderer:
    """The exact server, and a render-only one where it renders the same prompts."""

    exact: LlamaServer
    render_only: LlamaServer | None = None
    thinking: bool = False
    """The servers' ``enable_thinking`` default, stated to the render-only one."""
    tool_use_template: bool = False
    """The GGUF has a ``tool_use`` template: requests with tools render with it."""
    link: Path | None = None
    """The model link the render-only server serves (removed on stop)."""

    def __enter__(self) -> NativeRenderer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def log(self) -> Path:
        """The exact server's log (the one an error names)."""
        return self.exact.log

    def renders_alike(self, body: Mapping[str, Any]) -> bool:
        """Whether the render-only server gives ``body`` the exact server's prompt."""
        if self.render_only is None:
            return False
        last = (body.get("messages") or [{}])[-1]
        if isinstance(last, Mapping) and last.get("role") == "assistant":
            return False  # continued: the parser generator appends the message
        return not (body.get("tools") and self.tool_use_template)

    def apply_template(self, body: dict[str, Any]) -> str:
        """llama.cpp's prompt for a chat-endpoint ``body``, as the exact server renders it."""
        if not self.renders_alike(body):
            return self.exact.apply_template(body)
        assert self.render_only is not None  # renders_alike said so
        kwargs = {"enable_thinking": self.thinking, **(body.get("chat_template_kwargs") or {})}
        try:
            return self.render_only.apply_template({**body, "chat_template_kwargs": kwargs})
        except ApplyTemplateError:
            # A refusal is reported in the exact server's words (its parser wraps the message).
            return self.exact.apply_template(body)

    def tokenize(self, text: str) -> list[int]:
        """``text`` tokenized by the exact server's vocabulary."""
        return self.exact.tokenize(text)

    def stop(self) -> None:
        """Stop both servers."""
        try:
            if self.render_only is not None:
                self.render_only.stop()
        finally:
            self.exact.stop()
            if self.link is not None:
                self.link.unlink(missing_ok=True)

    def remove_logs(self) -> None:
        """Remove both logs (after a good run; a failed start keeps its log)."""
        for server in (self.exact, self.render_only):
            if server is not None:
                server.log.unlink(missing_ok=True)


def start_native_renderer(
    binary: Path, model: Path, log_dir: Path, *, render_only: bool = True
) -> NativeRenderer:
    """Start the exact server on ``model`` (``--jinja``, default log level) and, at the same
    time, the render-only one, kept where its start-up log says the template takes the
    auto-parser. A render-only server that does not start, or says nothing, only costs the
    speed-up. The render-only server serves a link beside ``model`` (removed on stop), so that
    each start knows its own server by ``/props`` even on a port both happened to pick.

    Raises:
        ChatTemplateRejectedError: llama.cpp cannot parse the template or derive its parser.
        LlamaServerError: the exact server did not start (the message names its log).
    """
    if not render_only:
        return NativeRenderer(start_llama_server(binary, model, log_dir))
    link = model.with_name(f"{model.stem}.render-only{model.suffix}")
    try:
        link.unlink(missing_ok=True)
        link.symlink_to(model.name)
    except OSError as err:
        logger.info("no render-only llama-server (%s): exact server only", err)
        return NativeRenderer(start_llama_server(binary, model, log_dir))
    # The render-only server's own start-up log tells the path: the exact server stays at the
    # default log level, since the trace level also renders an example conversation that may
    # fail.
    exact, fast = start_llama_servers(
        binary, [(model, ()), (link, RENDER_ONLY_ARGS + PATH_LOG_ARGS)], log_dir
    )
    renderer = NativeRenderer(exact, link=link) if isinstance(exact, LlamaServer) else None
    if renderer is None or isinstance(fast, LlamaServerError):
        _stop(fast, link)
        if isinstance(exact, LlamaServerError):
            raise exact
        logger.info("render-only llama-server unavailable (%s): exact server only", fast)
        assert renderer is not None
        return renderer
    path = read_chat_path(fast.log)
    if path is None or not path.autoparser:
        logger.info("%s: not the auto-parser path, exact server only", model.name)
        _stop(fast, None)
        fast.log.unlink(missing_ok=True)
        return renderer
    renderer.render_only, renderer.thinking = fast, path.thinking
    try:
        renderer.tool_use_template = _has_tool_use_template(fast)
    except BaseException:
        renderer.stop()
        raise
    return renderer


def _stop(server: LlamaServer | LlamaServerError, link: Path | None) -> None:
    """Stop a render-only server, or forget one that did not start (its log is no error of
    the user's), and remove the link."""
    if isinstance(server, LlamaServer):
        server.stop()
    elif server.log is not None:
        server.log.unlink(missing_ok=True)
    if link is not None:
        link.unlink(missing_ok=True)


def _has_tool_use_template(server: LlamaServer) -> bool:
    """Whether ``/props`` names a ``tool_use`` template (unknown counts as yes)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(server.url + "/props", timeout=30) as reply:
            props = json.load(reply)
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
        return True
    return not isinstance(props, dict) or bool(props.get("chat_template_tool_use"))
