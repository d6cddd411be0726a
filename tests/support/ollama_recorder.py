"""A recording stand-in for the Ollama API, for the GPU machine only.

Why a stand-in: the real test server (tests/support/ollama_server.py) is a 516 MB install that
cannot travel to the lent GPU machine (64 MiB per call, no registry there), yet ``deploy`` needs
a server to register with. This one accepts what ``deploy`` sends (``/api/version``, blob
uploads checked against their sha256, ``/api/create``, ``/api/show``) and records it; it runs
no model. The recorded GGUF and Modelfile are registered and round-tripped on the CPU
machine's real Ollama 0.9.3 afterwards (tests/support/gpu_replay.py), which is the proof.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

#: The version of the real server that registers the recorded artefacts afterwards.
STANDS_IN_FOR = "0.9.3"


def _key(name: object) -> str:
    """Ollama compares names case-insensitively, with ``:latest`` implied."""
    text = str(name or "").lower()
    return text if ":" in text.rsplit("/", 1)[-1] else text + ":latest"


class OllamaRecorder:
    """Serve the recording API on 127.0.0.1 in a thread; ``records`` holds each create."""

    def __init__(self, blob_dir: Path) -> None:
        self.blob_dir = blob_dir
        blob_dir.mkdir(parents=True, exist_ok=True)
        self.records: list[dict[str, Any]] = []
        self.models: dict[str, dict[str, Any]] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> OllamaRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _send(self, status: int, body: bytes = b"", kind: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _json(self) -> dict[str, Any]:
                length = int(self.headers.get("Content-Length") or 0)
                data: dict[str, Any] = json.loads(self.rfile.read(length) or b"{}")
                return data

            def _body_bytes(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self.rfile.readline().strip(), 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    self.rfile.readline()
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_GET(self) -> None:
                if self.path == "/api/version":
                    self._send(200, json.dumps({"version": STANDS_IN_FOR}).encode())
                else:
                    self._send(404, b'{"error":"not found"}')

            def do_HEAD(self) -> None:
                digest = self.path.rsplit("/", 1)[-1]
                found = (recorder.blob_dir / digest.replace(":", "-")).is_file()
                self._send(200 if found else 404)

            def do_POST(self) -> None:
                if self.path.startswith("/api/blobs/"):
                    digest = self.path.rsplit("/", 1)[-1]
                    data = self._body_bytes()
                    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
                        self._send(400, b'{"error":"digest mismatch"}')
                        return
                    (recorder.blob_dir / digest.replace(":", "-")).write_bytes(data)
                    self._send(201)
                elif self.path == "/api/create":
                    request = self._json()
                    recorder.records.append(request)
                    recorder.models[_key(request.get("model"))] = request
                    lines = [{"status": "recorded by the stand-in"}, {"status": "success"}]
                    body = "".join(json.dumps(x) + "\n" for x in lines).encode()
                    self._send(200, body, "application/x-ndjson")
                elif self.path == "/api/show":
                    model = recorder.models.get(_key(self._json().get("model")))
                    if model is None:
                        self._send(404, b'{"error":"model not found"}')
                    else:
                        shown = {"template": model.get("template", ""), "details": {}}
                        self._send(200, json.dumps(shown).encode())
                else:
                    self._send(404, b'{"error":"not found"}')

            def do_DELETE(self) -> None:
                found = recorder.models.pop(_key(self._json().get("model")), None)
                self._send(200 if found else 404)

        return Handler
