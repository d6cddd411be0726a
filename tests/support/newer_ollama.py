"""A stand-in for an Ollama newer than our 0.9.3 test server, in front of the real one.

Ollama 0.30+ cannot run here, so this proxy answers ``/api/version`` with a newer version and
forwards every other request, byte for byte, to the real 0.9.3 server: models are created,
stored and shown by real Ollama. What the stand-in adds, when given a llama-server, is 0.30+'s
``_debug_render_only`` for a model on the native path: the prompt llama-server's Jinja engine
builds (``/apply-template``, the engine Ollama 0.30+ hands the chat to), and the RENDERER/PARSER
lines a newer ``/api/show`` prints. Tests that use it say so.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from deploy_to_ollama.chat_template.native_request import native_body
from deploy_to_ollama.gguf.llama_server import LlamaServer


class _Proxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        upstream: str,
        version: str,
        renderer: LlamaServer | None,
        show_extra: str,
        library_template: str = "",
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.show_extra = show_extra
        self.library_template = library_template
        self.upstream = upstream.rstrip("/")
        self.fake_version = version
        self.renderer = renderer
        self.debug_renders = 0


class _Handler(BaseHTTPRequestHandler):
    server: _Proxy

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test output is the report."""

    def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _forward(self) -> None:
        if self.path.rstrip("/") == "/api/version":
            self._reply(200, json.dumps({"version": self.server.fake_version}).encode())
            return
        body = self._body()
        if self.path == "/api/chat" and body and self._debug_render(body):
            return
        request = urllib.request.Request(
            self.server.upstream + self.path, data=body, method=self.command
        )
        for key in ("Content-Type", "Authorization"):
            if self.headers.get(key):
                request.add_header(key, self.headers[key])
        try:
            with urllib.request.urlopen(request, timeout=600) as reply:
                status, data = reply.status, reply.read()
                kind = reply.headers.get("Content-Type", "application/json")
        except urllib.error.HTTPError as err:
            status, data = err.code, err.read()
            kind = err.headers.get("Content-Type", "application/json")
        if self.path == "/api/show" and status == 200:
            data = self._show(data)
        self._reply(status, data, kind)

    def _show(self, data: bytes) -> bytes:
        """``/api/show`` as the newer Ollama answers: RENDERER/PARSER lines, and the library
        TEMPLATE its ``detectChatTemplate`` attached to a model created without one."""
        if not self.server.show_extra and not self.server.library_template:
            return data
        shown = json.loads(data)
        shown["modelfile"] = str(shown.get("modelfile") or "") + self.server.show_extra
        no_layer = str(shown.get("template") or "").strip() in ("", "{{ .Prompt }}")
        if self.server.library_template and no_layer:
            shown["template"] = self.server.library_template
        return json.dumps(shown).encode()

    def _body(self) -> bytes | None:
        """The request body, also when streamed in chunks (blob uploads are)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()  # the empty line after the last chunk
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    def _debug_render(self, body: bytes) -> bool:
        request = json.loads(body)
        if not request.get("_debug_render_only") or self.server.renderer is None:
            return False
        # The body Ollama 0.30+ builds from the request (no thinking of earlier messages,
        # think as enable_thinking: native_request).
        payload = native_body(
            request.get("messages") or [], request.get("tools"), think=request.get("think")
        )
        prompt = self.server.renderer.apply_template(payload)
        self.server.debug_renders += 1
        answer = {"model": request.get("model"), "_debug_info": {"rendered_template": prompt}}
        self._reply(200, json.dumps(answer).encode())
        return True

    do_GET = do_POST = do_HEAD = do_DELETE = do_PUT = _forward  # noqa: N815


@contextmanager
def newer_ollama(
    upstream: str,
    version: str = "0.33.0",
    *,
    renderer: LlamaServer | None = None,
    show_extra: str = "",
    library_template: str = "",
) -> Iterator[_Proxy]:
    """Serve the stand-in on 127.0.0.1:<free port>; ``.server_address`` gives the port.

    ``show_extra`` is appended to ``/api/show``'s modelfile text: the RENDERER/PARSER lines a
    newer Ollama prints for a model that has them (0.9.3 has no such commands).
    ``library_template`` is what a newer Ollama's template library attaches to a model created
    without a TEMPLATE (0.9.3's library attaches only when the Jinja is near one of its own).
    """
    proxy = _Proxy(upstream, version, renderer, show_extra, library_template)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()


def host_of(proxy: _Proxy) -> str:
    """``http://127.0.0.1:PORT`` of the stand-in."""
    return f"http://127.0.0.1:{proxy.server_address[1]}"
