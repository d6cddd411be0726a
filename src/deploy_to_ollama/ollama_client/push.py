"""Publish a local Ollama model to a registry: ``ollama push`` or ``/api/push``, one entry.

The model is first copied to the target name (a new manifest over the same blobs), then pushed.
Ollama checks every blob with ``HEAD`` before uploading it, so a rerun after an interrupted push
(kill -9 included) sends only what the registry lacks, and the registry writes the manifest last:
a push that dies leaves blobs, never a tag that points at missing ones. We ask the registry
ourselves which blobs it had before the push (bytes reused) and which manifest it serves after
(the proof that what is there is what we have).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import (
    DeployError,
    OllamaUnavailableError,
    RegistryError,
    RegistryUnavailableError,
    UsageError,
)
from ..progress import NullProgress, ProgressReporter
from ._transport import unavailable
from .client import OllamaClient
from .create import _ANSI, Method, _status_lines
from .registry import RegistryTarget, RegistryWriter, manifest_layers

logger = logging.getLogger(__name__)

#: Ollama's words when the registry cannot be reached (Go's net errors in its message).
#: The CLI's progress lines worth relaying: one step per blob, the manifest, success.
_CLI_STEP = re.compile(r"^(retrieving manifest|pushing [0-9a-f]{12}|pushing manifest|success)\b")
_UNREACHABLE = ("connection refused", "no such host", "i/o timeout", "dial tcp", "EOF")


@dataclass(frozen=True, slots=True)
class RegistryPush:
    """What a push published, and how many bytes moved."""

    name: str
    target: str
    method: Literal["cli", "api"]
    manifest_digest: str | None
    """SHA-256 of the manifest the registry serves (what ``ollama list`` shows after a pull);
    None when the registry wants a token only Ollama holds, so we could not read it back."""
    layers: dict[str, int]
    """``digest -> size`` of every blob the manifest names (config included)."""
    bytes_reused: int | None
    """Bytes of blobs the registry already had before this push (skipped by digest); None
    when the registry wants a token only Ollama holds."""
    report_tag: str | None = None
    """Tag of the ``deploy-report.json`` artifact stored beside the model, when one was given."""

    @property
    def bytes_total(self) -> int:
        """Bytes of every blob the manifest names."""
        return sum(self.layers.values())

    @property
    def bytes_uploaded(self) -> int | None:
        """Bytes this push sent (total minus reused); None when unknown."""
        return None if self.bytes_reused is None else self.bytes_total - self.bytes_reused

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for ``--json``."""
        return {
            "name": self.name,
            "target": self.target,
            "method": self.method,
            "manifest_digest": self.manifest_digest,
            "layers": dict(self.layers),
            "upload": {"bytes_uploaded": self.bytes_uploaded, "bytes_reused": self.bytes_reused},
            "report_tag": self.report_tag,
        }


def push_to_registry(
    client: OllamaClient,
    name: str,
    target: RegistryTarget,
    *,
    insecure: bool = False,
    method: Method = "auto",
    report: bytes | None = None,
    progress: ProgressReporter | None = None,
) -> RegistryPush:
    """Copy ``name`` to ``target`` and push it; return what the registry now serves.

    ``report`` (a ``deploy-report.json`` of this model) is stored beside the tag as an OCI
    artifact ``<tag>.deploy-report`` once the model's manifest is verified.

    Raises:
        UsageError: ``insecure`` for a registry that is not on this machine (exit 2).
        ModelNotFoundError: the server has no ``name`` (exit 1).
        RegistryUnavailableError: nothing answers at the registry (exit 4).
        RegistryError: the registry refused, or serves another manifest than ours (exit 1).
        OllamaUnavailableError: the Ollama server cannot be reached (exit 4).
    """
    reporter = progress or NullProgress()
    if insecure and not target.is_loopback:
        raise UsageError(
            f"--insecure is allowed only for a registry on this machine, not {target.host}",
            hint="serve the registry over HTTPS and drop --insecure",
        )
    client.require(name)
    probe = RegistryWriter(target, insecure=insecure)
    readable = probe.ping()
    if report is not None and not readable:
        raise RegistryError(
            f"the registry at {probe.base} wants a token only Ollama can get: "
            "the deploy report cannot be stored beside the tag",
            hint="push without --report, and publish deploy-report.json with the model's docs",
        )
    created = name.lower() != target.name.lower() and not client.exists(target.name)
    if name.lower() != target.name.lower():
        client.copy(name, target.name)
    try:
        served, manifest_digest, reused, chosen = _push_and_verify(
            client, probe if readable else None, target, method=method, insecure=insecure,
            progress=reporter,
        )  # fmt: skip
    except (DeployError, KeyboardInterrupt):
        if created:  # leave no local alias behind a push that did not happen
            with contextlib.suppress(DeployError):
                client.delete(target.name)
        raise
    report_tag = probe.put_report(report) if report is not None else None
    return RegistryPush(
        report_tag=report_tag,
        name=name,
        target=target.name,
        method=chosen,
        manifest_digest=manifest_digest,
        layers=served,
        bytes_reused=reused,
    )


def _push_and_verify(
    client: OllamaClient,
    probe: RegistryWriter | None,
    target: RegistryTarget,
    *,
    method: Method,
    insecure: bool,
    progress: ProgressReporter,
) -> tuple[dict[str, int], str | None, int | None, Literal["cli", "api"]]:
    """Push, then check the registry serves our manifest: (layers, digest, bytes reused, path).

    Without a ``probe`` (a registry we cannot read) only the push happens; the layers are the
    local manifest's and the digest and the bytes reused are unknown.
    """
    local = _local_layers(client, target)
    before = {digest: probe.has_blob(digest) for digest in local} if probe else {}
    chosen = _choose(method)
    if chosen == "cli":
        _push_with_cli(client, target, progress, insecure=insecure)
    else:
        _push_with_api(client, target, progress, insecure=insecure)
    if probe is None:
        return local, None, None, chosen
    served_manifest = probe.manifest()
    if served_manifest is None:
        raise RegistryError(
            f"the push of {target.name} finished, but the registry serves no manifest for it",
            hint="check the registry's log; rerun to complete the push",
        )
    manifest_digest, manifest = served_manifest
    served = manifest_layers(manifest)
    if local and served != local:
        raise RegistryError(
            f"the registry serves another manifest for {target.name} than the local model's",
            hint="another push to the same tag raced this one; rerun",
        )
    reused = sum(size for digest, size in served.items() if before.get(digest))
    return served, manifest_digest, reused, chosen


def _choose(method: Method) -> Literal["cli", "api"]:
    cli = shutil.which("ollama")
    if method == "cli" and cli is None:
        raise UsageError(
            "the ollama CLI is not on PATH", hint="install Ollama, or push with the API method"
        )
    return "api" if method == "api" or cli is None else "cli"


def _tags_digest(client: OllamaClient, target: RegistryTarget) -> str | None:
    """The manifest digest ``/api/tags`` reports for the target name."""
    for model in client.list().models:
        if (model.model or "").lower() == target.name.lower() and model.digest:
            return f"sha256:{model.digest}"
    return None


def _local_layers(client: OllamaClient, target: RegistryTarget) -> dict[str, int]:
    """``digest -> size`` of the local manifest of ``target``, read from the server's store.

    Why from disk: Ollama's API names no layers. The store is found through the FROM path that
    ``/api/show`` prints; the manifest is accepted only when its SHA-256 is the digest that
    ``/api/tags`` reports. A remote server (store not readable here) gives ``{}``: the push
    still runs and the layers come from the registry's manifest, with nothing counted as reused.
    """
    shown = client.require(target.name)
    digest = _tags_digest(client, target)
    for line in (shown.modelfile or "").splitlines():
        if not line.startswith("FROM ") or "/blobs/sha256-" not in line:
            continue
        store = Path(line[5:].strip()).parent.parent
        path = store / "manifests" / target.host / target.namespace / target.model / target.tag
        try:
            raw = path.read_bytes()
        except OSError:
            return {}
        if digest is None or hashlib.sha256(raw).hexdigest() != digest.removeprefix("sha256:"):
            return {}
        return manifest_layers(json.loads(raw))
    return {}


# --------------------------------------------------------------------------- CLI path


def _push_with_cli(
    client: OllamaClient,
    target: RegistryTarget,
    progress: ProgressReporter,
    *,
    insecure: bool,
) -> None:
    """``ollama push [--insecure] NAME``, relaying its status lines (one per blob)."""
    command = ["ollama", "push", *(["--insecure"] if insecure else []), target.name]
    env = {**os.environ, "OLLAMA_HOST": client.host}
    logger.info("running %s", " ".join(command))
    proc = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    lines: deque[str] = deque(maxlen=50)  # the CLI redraws its bars: keep the tail only
    current: str | None = None
    for raw in _status_lines(proc.stdout):
        line = _ANSI.sub("", raw).strip()
        if not line:
            continue
        lines.append(line)
        step = _CLI_STEP.match(line)
        if step is None:  # "Error: …" (raised below), "You can find your model at: …"
            continue
        status = step[1]
        if status != current:
            if current is not None:
                progress.done(f"push:{current}")
            progress.start(f"push:{status}", status)
            current = status
    if current is not None:
        progress.done(f"push:{current}")
    if proc.wait() != 0:
        errors = [line for line in lines if line.lower().startswith("error")]
        detail = (errors or lines or ["no output"])[-1].removeprefix("Error: ")
        _raise_push_failure(client, target, detail)


# --------------------------------------------------------------------------- API path


def _push_with_api(
    client: OllamaClient,
    target: RegistryTarget,
    progress: ProgressReporter,
    *,
    insecure: bool,
) -> None:
    """``/api/push``: one progress bar per blob digest, a line per other status."""
    current: str | None = None
    try:
        for step in client.push(target.name, insecure=insecure):
            key = f"push:{step.digest or step.status}"
            if key != current:
                if current is not None:
                    progress.done(current)
                label = f"pushing {step.digest[7:19]}" if step.digest else str(step.status)
                progress.start(key, label, total=step.total)
                current = key
            if step.completed is not None:
                progress.advance(key, completed=step.completed)
    except RegistryError as err:
        _raise_push_failure(client, target, str(err).split(": ", 1)[-1])
    if current is not None:
        progress.done(current)


def _raise_push_failure(client: OllamaClient, target: RegistryTarget, detail: str) -> None:
    """One line that says whose fault it was: Ollama's, the registry's address, or a refusal."""
    try:
        OllamaClient(client.host).version()
    except OllamaUnavailableError as err:
        raise unavailable(client.host) from err
    error: type[DeployError] = RegistryError
    if any(word in detail for word in _UNREACHABLE):
        error = RegistryUnavailableError
    raise error(
        f"pushing {target.name} failed: {detail}",
        hint="fix the cause and rerun: blobs already in the registry are not sent again",
    )


__all__ = ["RegistryPush", "push_to_registry"]
