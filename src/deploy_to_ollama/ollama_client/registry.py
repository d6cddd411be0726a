"""The registry side of ``ollama push``: target names and the OCI distribution API we check.

Ollama pushes to any registry that speaks the distribution API (``/v2/``). We ask the registry
ourselves, before and after a push, what it stores: whether it answers at all (an unreachable
or refusing registry fails in one line before anything moves), which blobs it already has (the
bytes a push reuses), and, afterwards, the manifest it now serves (what was really published).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any

import httpx

from ..errors import RegistryError, RegistryUnavailableError, UsageError

#: Accept header for the manifest Ollama writes (a Docker image manifest v2, schema 2).
MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
_TARGET = re.compile(
    r"^(?P<host>(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?)/"
    r"(?P<namespace>[A-Za-z0-9][\w.-]{0,79})/(?P<model>[A-Za-z0-9][\w.-]{0,79})"
    r"(?::(?P<tag>[A-Za-z0-9][\w.-]{0,79}))?$"
)


@dataclass(frozen=True, slots=True)
class RegistryTarget:
    """``HOST[:PORT]/NAMESPACE/MODEL[:TAG]``: where a model is published."""

    host: str
    namespace: str
    model: str
    tag: str

    @property
    def name(self) -> str:
        """The full Ollama model name (what ``ollama push`` and ``ollama pull`` take)."""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def repository(self) -> str:
        """The registry repository (``NAMESPACE/MODEL``), as ``/v2/_catalog`` lists it."""
        return f"{self.namespace}/{self.model}"

    @property
    def hostname(self) -> str:
        """The host without port or brackets."""
        host = self.host
        if host.startswith("["):
            return host[1 : host.index("]")]
        return host.rsplit(":", 1)[0] if ":" in host else host

    @property
    def is_loopback(self) -> bool:
        """Whether the registry is on this machine (the only place plain HTTP is allowed)."""
        if self.hostname.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.hostname).is_loopback
        except ValueError:
            return False


def parse_target(value: str) -> RegistryTarget:
    """Parse ``--to-ollama``; the tag defaults to ``latest`` as in Ollama.

    Raises:
        UsageError: not of the form HOST/NAMESPACE/MODEL[:TAG] (exit 2).

    >>> parse_target("127.0.0.1:5000/team/tiny").name
    '127.0.0.1:5000/team/tiny:latest'
    >>> parse_target("tiny:v1")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    deploy_to_ollama.errors.UsageError: --to-ollama 'tiny:v1' is not HOST/NAMESPACE/MODEL[:TAG]
    """
    match = _TARGET.match(value)
    if match is None:
        raise UsageError(
            f"--to-ollama {value!r} is not HOST/NAMESPACE/MODEL[:TAG]",
            hint="e.g. --to-ollama registry.example.com/team/my-model:v1",
        )
    return RegistryTarget(
        host=match["host"],
        namespace=match["namespace"],
        model=match["model"],
        tag=match["tag"] or "latest",
    )


class RegistryProbe:
    """Read-only questions to the registry behind a ``RegistryTarget`` (``/v2/`` API)."""

    def __init__(self, target: RegistryTarget, *, insecure: bool) -> None:
        self.target = target
        self.base = f"{'http' if insecure else 'https'}://{target.host}"

    def _get(self, method: str, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
        try:
            with httpx.Client(base_url=self.base, timeout=httpx.Timeout(30, connect=5)) as http:
                return http.request(method, path, headers=headers)
        except httpx.TransportError as err:
            raise RegistryUnavailableError(
                f"cannot reach the registry at {self.base} ({type(err).__name__})",
                hint="start the registry or fix HOST in --to-ollama, then rerun",
            ) from err

    def ping(self) -> bool:
        """``GET /v2/``: whether the registry answers us without a token.

        True: open, we can check blobs and the manifest ourselves. False: it wants a bearer
        token, which only Ollama can get (its key-signed flow, ollama/ollama server/auth.go;
        ollama.com works this way), so the push goes ahead unchecked by us.

        Raises:
            RegistryUnavailableError: nothing answers there (exit 4).
            RegistryError: it wants Basic auth or refuses outright (Ollama cannot push there),
                or it is no distribution registry (exit 1).
        """
        response = self._get("GET", "/v2/")
        scheme = response.headers.get("www-authenticate", "").split(" ", 1)[0]
        if response.status_code == 401 and scheme.lower() == "bearer":
            return False
        if response.status_code in (401, 403):
            raise RegistryError(
                f"the registry at {self.base} refused access (HTTP {response.status_code}, "
                f"auth scheme {scheme or 'none'})",
                hint="Ollama signs in only with its own bearer tokens (ollama/ollama "
                "server/auth.go), never with a password: give this machine push access "
                "without Basic auth",
            )
        if not response.is_success:
            raise RegistryError(
                f"the registry at {self.base} answered HTTP {response.status_code} on /v2/",
                hint="point --to-ollama at an OCI distribution registry (it answers /v2/)",
            )
        return True

    def has_blob(self, digest: str) -> bool:
        """Whether the target repository already stores blob ``digest``.

        A redirect counts as present: registries that serve blobs from storage (ollama.com,
        distribution with a ``redirect`` middleware) answer ``HEAD`` with 307 to it.
        """
        response = self._get("HEAD", f"/v2/{self.target.repository}/blobs/{digest}")
        if response.status_code == 200 or response.is_redirect:
            return True
        if response.status_code == 404:
            return False
        raise RegistryError(
            f"the registry at {self.base} answered HTTP {response.status_code} "
            f"for blob {digest[:19]}",
            hint="check the registry's log",
        )

    def manifest(self) -> tuple[str, dict[str, Any]] | None:
        """``(digest, manifest)`` the registry serves for the target's tag, or None.

        The digest is the SHA-256 of the bytes served: the digest ``ollama list`` shows on a
        machine that pulls the tag (the pushing machine's own manifest carries local paths).
        """
        response = self._get(
            "GET",
            f"/v2/{self.target.repository}/manifests/{self.target.tag}",
            headers={"Accept": MANIFEST_V2},
        )
        if response.status_code == 404:
            return None
        if not response.is_success:
            raise RegistryError(
                f"the registry at {self.base} answered HTTP {response.status_code} "
                f"for the manifest of {self.target.name}",
                hint="check the registry's log",
            )
        body = response.json()
        if not isinstance(body, dict):
            raise RegistryError(f"{self.base} served a manifest that is not a JSON object")
        return f"sha256:{hashlib.sha256(response.content).hexdigest()}", body


#: Media types of the ``deploy-report.json`` artifact stored beside a pushed tag.
REPORT_CONFIG_TYPE = "application/vnd.deploy-to-ollama.report.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
#: Tag suffix of that artifact: tag ``v1`` has its proof at ``v1.deploy-report``.
REPORT_TAG_SUFFIX = ".deploy-report"


class RegistryWriter(RegistryProbe):
    """The two writes we make ourselves: a blob and a manifest (Ollama pushes the model)."""

    def put_blob(self, data: bytes) -> str:
        """Upload ``data`` in one request (``POST`` then ``PUT ?digest=``); return its digest."""
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        if self.has_blob(digest):
            return digest
        started = self._send("POST", f"/v2/{self.target.repository}/blobs/uploads/", b"", {})
        location = started.headers.get("location", "")
        if started.status_code != 202 or not location:
            raise self._refused(started, "starting a blob upload")
        separator = "&" if "?" in location else "?"
        done = self._send(
            "PUT",
            f"{location}{separator}digest={digest}",
            data,
            {"Content-Type": "application/octet-stream"},
        )
        if done.status_code != 201:
            raise self._refused(done, "finishing a blob upload")
        return digest

    def put_report(self, report: bytes) -> str:
        """Store ``report`` as an OCI artifact under ``<tag>.deploy-report``; return that tag.

        Why beside the model, not in it: a layer added to the Ollama model would change the
        model's digest, which is what was verified. The artifact sits in the same repository,
        so whoever can pull the model can read its proof (``GET /v2/<repo>/manifests/<tag>``).
        """
        digest = self.put_blob(report)
        descriptor = {"mediaType": REPORT_CONFIG_TYPE, "digest": digest, "size": len(report)}
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor,
            "layers": [descriptor | {"mediaType": "application/json"}],
        }
        tag = f"{self.target.tag}{REPORT_TAG_SUFFIX}"
        body = json.dumps(manifest, separators=(",", ":")).encode()
        response = self._send(
            "PUT",
            f"/v2/{self.target.repository}/manifests/{tag}",
            body,
            {"Content-Type": OCI_MANIFEST},
        )
        if response.status_code != 201:
            raise self._refused(response, "storing the deploy report")
        return tag

    def read_report(self) -> dict[str, Any] | None:
        """The ``deploy-report.json`` stored beside the target's tag, or None."""
        tag = f"{self.target.tag}{REPORT_TAG_SUFFIX}"
        response = self._get(
            "GET", f"/v2/{self.target.repository}/manifests/{tag}", headers={"Accept": OCI_MANIFEST}
        )
        if response.status_code == 404:
            return None
        if not response.is_success:
            raise self._refused(response, "reading the deploy report")
        digest = response.json()["config"]["digest"]
        blob = self._send("GET", f"/v2/{self.target.repository}/blobs/{digest}", None, {})
        if not blob.is_success:
            raise self._refused(blob, "reading the deploy report")
        data = json.loads(blob.content)
        return data if isinstance(data, dict) else None

    def _send(
        self, method: str, url: str, content: bytes | None, headers: dict[str, str]
    ) -> httpx.Response:
        try:
            with httpx.Client(
                base_url=self.base, timeout=httpx.Timeout(60, connect=5), follow_redirects=True
            ) as http:
                return http.request(method, url, content=content, headers=headers)
        except httpx.TransportError as err:
            raise RegistryUnavailableError(
                f"cannot reach the registry at {self.base} ({type(err).__name__})",
                hint="start the registry or fix HOST in --to-ollama, then rerun",
            ) from err

    def _refused(self, response: httpx.Response, doing: str) -> RegistryError:
        text = " ".join(response.text.split())[:160]
        return RegistryError(
            f"the registry at {self.base} answered HTTP {response.status_code} while {doing}"
            + (f": {text}" if text else ""),
            hint="check the registry's log and its write permissions, then rerun",
        )


def manifest_layers(manifest: dict[str, Any]) -> dict[str, int]:
    """``digest -> size`` of a manifest's config and layers (what a pull downloads).

    >>> manifest_layers({"config": {"digest": "sha256:a", "size": 3},
    ...                  "layers": [{"digest": "sha256:b", "size": 5}]})
    {'sha256:a': 3, 'sha256:b': 5}
    """
    items = [manifest.get("config") or {}, *(manifest.get("layers") or [])]
    return {str(item["digest"]): int(item["size"]) for item in items if "digest" in item}


__all__ = [
    "MANIFEST_V2",
    "REPORT_TAG_SUFFIX",
    "RegistryProbe",
    "RegistryTarget",
    "RegistryWriter",
    "manifest_layers",
    "parse_target",
]
