"""A local stand-in for the Hugging Face Hub: the Hub itself cannot be reached from here.

It serves, on 127.0.0.1, the few endpoints huggingface_hub 2.x calls for ``create_repo`` and
``create_commit`` over the LFS protocol (Xet is switched off with its documented
``HF_HUB_DISABLE_XET``): repo creation, repo info, README metadata validation, preupload, the
LFS batch API with basic PUT uploads and verify, and the ndjson commit. It checks bearer
tokens and namespace permissions like the Hub (401 unknown token, 403 foreign namespace) and
stores repos, commits and LFS objects in memory so tests can assert what arrived.

The pytest fixture ``fake_hub`` starts one per test and points HF_ENDPOINT at it (both the
environment, for subprocesses, and ``huggingface_hub.constants``, which reads it at import).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

#: Files the real Hub stores in LFS through the default .gitattributes.
LFS_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".pth", ".onnx")
LFS_MIN_SIZE = 10 * 1024 * 1024


@dataclass
class FakeRepo:
    """One repository: its owner, visibility, commits and current files."""

    repo_id: str
    private: bool = False
    files: dict[str, bytes] = field(default_factory=dict)
    """Regular files by path (their content)."""
    lfs_files: dict[str, str] = field(default_factory=dict)
    """LFS files by path (their sha256 oid; content in ``FakeHub.lfs``)."""
    commits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sha(self) -> str:
        return self.commits[-1]["oid"] if self.commits else "0" * 40

    def paths(self) -> list[str]:
        return sorted({*self.files, *self.lfs_files})


@dataclass
class FakeHub:
    """State of the stand-in Hub; ``endpoint`` is its base URL."""

    endpoint: str = ""
    users: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    """token → (user name, organizations it may write to)."""
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    lfs: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    """(method, path) of every request, in order."""
    fail_commits: int = 0
    """Answer this many commit calls with 500 (to test resuming)."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_user(self, token: str, name: str, orgs: tuple[str, ...] = ()) -> None:
        self.users[token] = (name, orgs)

    def lfs_puts(self) -> list[str]:
        """Oids uploaded with PUT, in order (a resumed push must not repeat one)."""
        return [p.rsplit("/", 1)[1] for m, p in self.requests if m == "PUT"]

    def file_bytes(self, repo_id: str, path: str) -> bytes:
        repo = self.repos[repo_id]
        if path in repo.files:
            return repo.files[path]
        return self.lfs[repo.lfs_files[path]]


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub  # set on the subclass made per server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return None

    # ------------------------------------------------------------------ plumbing

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(
        self, status: int, payload: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        body = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, code: str | None = None) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, {"error": message}, headers)

    def _user(self) -> tuple[str, tuple[str, ...]] | None:
        auth = self.headers.get("Authorization", "")
        return self.hub.users.get(auth.removeprefix("Bearer ").strip())

    def _can_write(self, repo_id: str) -> bool:
        user = self._user()
        if user is None:
            return False
        namespace = repo_id.split("/")[0]
        return namespace == user[0] or namespace in user[1]

    # ------------------------------------------------------------------ routing

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def _route(self, method: str) -> None:
        path = self.path.split("?")[0]
        with self.hub.lock:
            self.hub.requests.append((method, path))
        body = self._body()
        routes = [
            ("POST", r"/api/repos/create", self._create_repo),
            ("POST", r"/api/validate-yaml", self._validate_yaml),
            ("GET", r"/api/models/([^/]+/[^/]+)(?:/revision/[^/]+)?", self._repo_info),
            ("POST", r"/api/models/([^/]+/[^/]+)/preupload/[^/]+", self._preupload),
            ("POST", r"/api/models/([^/]+/[^/]+)/commit/[^/]+", self._commit),
            ("POST", r"/([^/]+/[^/]+)\.git/info/lfs/objects/batch", self._lfs_batch),
            ("PUT", r"/__lfs/([0-9a-f]{64})", self._lfs_put),
            ("POST", r"/__lfs/([0-9a-f]{64})/verify", self._lfs_verify),
        ]
        for verb, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if verb == method and match:
                handler(body, *match.groups())
                return
        self._error(404, f"no route {method} {path}")

    # ------------------------------------------------------------------ endpoints

    def _create_repo(self, body: bytes) -> None:
        payload = json.loads(body)
        user = self._user()
        if user is None:
            self._error(401, "Invalid credentials in Authorization header")
            return
        repo_id = f"{payload.get('organization') or user[0]}/{payload['name']}"
        if repo_id in self.hub.repos:
            # Like the Hub, a 409 still carries the repo URL (huggingface_hub reads it).
            message = "You already created this model repo"
            url = f"{self.hub.endpoint}/{repo_id}"
            self._send(409, {"error": message, "url": url}, {"X-Error-Message": message})
            return
        if not self._can_write(repo_id):
            self._error(403, "You don't have the rights to create a model under this namespace")
            return
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        self.hub.repos[repo_id] = FakeRepo(repo_id, private=private)
        self._send(200, {"url": f"{self.hub.endpoint}/{repo_id}", "name": repo_id})

    def _validate_yaml(self, body: bytes) -> None:
        self._send(200, {"errors": [], "warnings": []})

    def _repo_info(self, body: bytes, repo_id: str) -> None:
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and not self._can_write(repo_id)):
            self._error(404, "Repository not found", "RepoNotFound")
            return
        siblings = [{"rfilename": p} for p in repo.paths()]
        self._send(
            200,
            {"id": repo_id, "sha": repo.sha, "private": repo.private, "siblings": siblings},
        )

    def _writable(self, repo_id: str) -> FakeRepo | None:
        if self._user() is None:
            self._error(401, "Invalid credentials in Authorization header")
            return None
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "Repository not found", "RepoNotFound")
            return None
        if not self._can_write(repo_id):
            self._error(403, f"You don't have write access to {repo_id}")
            return None
        return repo

    def _preupload(self, body: bytes, repo_id: str) -> None:
        repo = self._writable(repo_id)
        if repo is None:
            return
        files = []
        for item in json.loads(body)["files"]:
            path, size = item["path"], int(item["size"])
            lfs = path.endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE
            if path in repo.lfs_files:
                oid: str | None = repo.lfs_files[path]
            elif path in repo.files:
                oid = _git_sha1(repo.files[path])
            else:
                oid = None
            files.append(
                {
                    "path": path,
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": oid,
                }
            )
        self._send(200, {"files": files, "commitOid": repo.sha})

    def _lfs_batch(self, body: bytes, repo_id: str) -> None:
        if self._writable(repo_id) is None:
            return
        objects = []
        for obj in json.loads(body)["objects"]:
            entry: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.hub.lfs:
                base = f"{self.hub.endpoint}/__lfs/{obj['oid']}"
                entry["actions"] = {"upload": {"href": base}, "verify": {"href": f"{base}/verify"}}
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects})

    def _lfs_put(self, body: bytes, oid: str) -> None:
        if hashlib.sha256(body).hexdigest() != oid:
            self._error(400, "content does not match its sha256 oid")
            return
        with self.hub.lock:
            self.hub.lfs[oid] = body
        self._send(200)

    def _lfs_verify(self, body: bytes, oid: str) -> None:
        stored = self.hub.lfs.get(oid)
        if stored is None or len(stored) != json.loads(body)["size"]:
            self._error(404, "object not found")
            return
        self._send(200, {})

    def _commit(self, body: bytes, repo_id: str) -> None:
        repo = self._writable(repo_id)
        if repo is None:
            return
        if self.hub.fail_commits > 0:
            self.hub.fail_commits -= 1
            self._error(500, "Internal Error - We're working hard to fix this as soon as possible!")
            return
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next(item["value"] for item in lines if item["key"] == "header")
        files: dict[str, bytes] = {}
        lfs_files: dict[str, str] = {}
        for item in lines:
            value = item["value"]
            if item["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "lfsFile":
                if value["oid"] not in self.hub.lfs:
                    self._error(422, f"LFS object {value['oid']} was not uploaded")
                    return
                lfs_files[value["path"]] = value["oid"]
        oid = hashlib.sha1(body + repo.sha.encode()).hexdigest()
        for path in files:
            repo.lfs_files.pop(path, None)
        for path in lfs_files:
            repo.files.pop(path, None)
        repo.files.update(files)
        repo.lfs_files.update(lfs_files)
        repo.commits.append(
            {"oid": oid, "summary": header["summary"], "paths": sorted({*files, *lfs_files})}
        )
        self._send(
            200,
            {
                "commitUrl": f"{self.hub.endpoint}/{repo_id}/commit/{oid}",
                "commitOid": oid,
                "pullRequestUrl": None,
            },
        )


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@contextlib.contextmanager
def serve_fake_hub() -> Iterator[FakeHub]:
    """Run a FakeHub on a free 127.0.0.1 port for the duration of the block."""
    hub = FakeHub()
    handler = type("Handler", (_Handler,), {"hub": hub})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    hub.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()


def point_hub_client_at(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """Make huggingface_hub use ``endpoint`` over LFS, online, in this process and children."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A stand-in Hub (the real one is unreachable here) with user ``alice`` (token in HF_TOKEN).

    ``alice`` may write to her namespace and the org ``alice-org``; ``bob/shared`` exists and is
    readable but not writable by her.
    """
    with serve_fake_hub() as hub:
        hub.add_user("hf_alice_token", "alice", ("alice-org",))
        hub.add_user("hf_bob_token", "bob")
        hub.repos["bob/shared"] = FakeRepo("bob/shared")
        point_hub_client_at(monkeypatch, hub.endpoint)
        monkeypatch.setenv("HF_TOKEN", "hf_alice_token")
        yield hub
