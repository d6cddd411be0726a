"""A real OCI distribution registry on 127.0.0.1 for the push/pull tests.

Debian's ``docker-registry`` package is the CNCF distribution registry (``docker-registry
serve CONFIG.yml``, no Docker). ``.ci/run`` installs it with apt; locally a missing binary skips.

Why a second server beside it: Ollama 0.9.3 pulls a blob only through a redirect. Its
``blobDownload.run`` (server/download.go) GETs ``/v2/<repo>/blobs/<digest>``, follows redirects
to the same host name only, and then returns ``resp.Location()``: a registry that answers the
GET with the blob itself (status 200, no Location) fails every pull with "http: no Location
header in response". registry.ollama.ai redirects to its storage CDN; distribution's filesystem
driver cannot, but its ``redirect`` storage middleware can: it answers 307 to ``baseurl`` +
the blob's path in the storage folder. ``BlobFiles`` serves that folder read-only (with byte
ranges, which Ollama's downloader asks for) under the name ``localhost``, a host name other
than the registry's ``127.0.0.1``, so Ollama stops at the redirect as it does on ollama.com.
The registry (manifests, uploads, HEAD checks, catalog, auth) is the real one; only the CDN
and, for ``auth="bearer"``, the token endpoint (a static ``/token`` file) are ours.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from support.ollama_server import free_port
from support.policy import skip_or_fail

REGISTRY_BINARY = Path("/usr/bin/docker-registry")
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


class _RangeFiles(http.server.SimpleHTTPRequestHandler):
    """GET/HEAD of files under ``directory``, honouring one ``Range: bytes=a-b``."""

    def log_message(self, format: str, *args: object) -> None:
        del format, args

    def send_head(self) -> object:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return None
        size = path.stat().st_size
        start, end = 0, size - 1
        match = _RANGE.fullmatch(self.headers.get("Range", ""))
        handle = path.open("rb")
        if match:
            start = int(match[1])
            end = min(int(match[2]) if match[2] else size - 1, size - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        handle.seek(start)
        return _Limited(handle, end - start + 1)


class _Limited:
    """A file object that reads at most ``left`` bytes (what ``copyfile`` sends)."""

    def __init__(self, handle: object, left: int) -> None:
        self.handle = handle
        self.left = left

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        want = self.left if size < 0 else min(size, self.left)
        data: bytes = self.handle.read(want)  # type: ignore[attr-defined]
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.handle.close()  # type: ignore[attr-defined]


@dataclass
class Registry:
    """One ``docker-registry serve`` with filesystem storage in ``workdir``."""

    workdir: Path
    port: int = field(default_factory=free_port)
    files_port: int = field(default_factory=free_port)
    auth: str | None = None
    """``"basic"``: htpasswd (user alice); ``"bearer"``: distribution's ``silly`` token auth
    (any ``Authorization`` header passes) whose realm hands out a token (``BlobFiles``
    serves ``/token``); ``"bearer-refused"``: the same, but the realm answers 404."""
    read_only: bool = False
    broken_storage: bool = False
    redirect: bool = True
    """Serve blob downloads by redirect to ``BlobFiles`` (False: inline, as distribution does)."""
    """Storage root under a regular file: reads of /v2/ work, every write fails (HTTP 500)."""
    """Maintenance read-only mode: reads work, every upload is refused."""
    process: subprocess.Popen[bytes] | None = None
    _files: http.server.ThreadingHTTPServer | None = None

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``: the HOST part of an Ollama registry name."""
        return f"127.0.0.1:{self.port}"

    @property
    def storage(self) -> Path:
        if self.broken_storage:
            return self.workdir / "not-a-folder" / "storage"
        return self.workdir / "storage"

    def config(self) -> str:
        """The registry's YAML (JSON is YAML): filesystem storage, redirects to BlobFiles."""
        config: dict[str, object] = {
            "version": 0.1,
            "log": {"level": "info"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.address},
        }
        if self.redirect:
            baseurl = f"http://localhost:{self.files_port}"
            redirect = {"name": "redirect", "options": {"baseurl": baseurl}}
            config["middleware"] = {"storage": [redirect]}
        if self.auth == "basic":
            path = self.workdir / "htpasswd"
            path.write_text(f"alice:{_bcrypt('secret')}\n")
            config["auth"] = {"htpasswd": {"realm": "dto", "path": str(path)}}
        elif self.auth in ("bearer", "bearer-refused"):
            name = "token" if self.auth == "bearer" else "no-token"
            realm = f"http://localhost:{self.files_port}/{name}"
            config["auth"] = {"silly": {"realm": realm, "service": "dto"}}
        if self.read_only:
            storage = config["storage"]
            assert isinstance(storage, dict)
            storage["maintenance"] = {"readonly": {"enabled": True}}
        return json.dumps(config, indent=1)

    def start(self, timeout: float = 30) -> None:
        """Start the registry and the blob file server; wait until ``/v2/`` answers."""
        if self.broken_storage:
            self.storage.parent.write_text("a file where the storage folder should be")
        else:
            self.storage.mkdir(parents=True, exist_ok=True)
            (self.storage / "token").write_text('{"token": "dto-test-token"}')
        path = self.workdir / "config.yml"
        path.write_text(self.config())
        handler = _handler(self.storage)
        self._files = http.server.ThreadingHTTPServer(("127.0.0.1", self.files_port), handler)
        threading.Thread(target=self._files.serve_forever, daemon=True).start()
        with (self.workdir / "registry.log").open("ab") as log:
            self.process = subprocess.Popen(
                [str(REGISTRY_BINARY), "serve", str(path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log_tail()}")
            if self.status("/v2/") is not None:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"docker-registry did not answer in {timeout:.0f}s")

    def stop(self) -> None:
        if self._files is not None:
            self._files.shutdown()
            self._files.server_close()
            self._files = None
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def status(self, path: str) -> int | None:
        """HTTP status of ``GET path``, or None when nothing answers."""
        try:
            with urllib.request.urlopen(f"http://{self.address}{path}", timeout=5) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as err:
            return int(err.code)
        except OSError:
            return None

    def get_json(self, path: str, accept: str | None = None) -> dict[str, object]:
        request = urllib.request.Request(f"http://{self.address}{path}")
        if accept:
            request.add_header("Accept", accept)
        with urllib.request.urlopen(request, timeout=10) as resp:
            body = json.load(resp)
        assert isinstance(body, dict)
        return body

    def catalog(self) -> list[str]:
        """Repositories the registry lists (``/v2/_catalog``)."""
        return [str(r) for r in self.get_json("/v2/_catalog").get("repositories") or []]

    def tags(self, repository: str) -> list[str]:
        """Tags of ``repository`` with a complete manifest (``/v2/<repo>/tags/list``)."""
        try:
            body = self.get_json(f"/v2/{repository}/tags/list")
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return []
            raise
        return [str(t) for t in body.get("tags") or []]

    def log_tail(self, lines: int = 10) -> str:
        path = self.workdir / "registry.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return " | ".join(text.splitlines()[-lines:])


def _bcrypt(password: str) -> str:
    """A bcrypt hash (what distribution's htpasswd accepts) from libxcrypt via ``crypt``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # crypt: deprecated, in 3.11-3.12
        import crypt

        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))


def _handler(root: Path) -> type[_RangeFiles]:
    class Handler(_RangeFiles):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

    return Handler


def registry_available() -> bool:
    return REGISTRY_BINARY.is_file() and os.access(REGISTRY_BINARY, os.X_OK)


@contextlib.contextmanager
def running_registry(
    workdir: Path,
    *,
    auth: str | None = None,
    read_only: bool = False,
    broken_storage: bool = False,
    redirect: bool = True,
) -> Iterator[Registry]:
    """A started registry in ``workdir``, stopped afterwards (fail in CI when missing)."""
    if not registry_available():
        skip_or_fail("docker-registry is not installed (apt-get install -y docker-registry)")
    workdir.mkdir(parents=True, exist_ok=True)
    registry = Registry(
        workdir=workdir,
        auth=auth,
        read_only=read_only,
        broken_storage=broken_storage,
        redirect=redirect,
    )
    registry.start()
    try:
        yield registry
    finally:
        registry.stop()
        shutil.rmtree(workdir / "storage", ignore_errors=True)
