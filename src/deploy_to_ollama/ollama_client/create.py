"""Create an Ollama model from a ``Modelfile``: ``ollama create`` or the HTTP API, one entry.

With the ``ollama`` CLI on PATH we run ``ollama create NAME -f Modelfile``; without it we upload
each file as a blob and call ``/api/create`` by digest. Ollama writes a model's manifest only
once everything is in place, so a failed run leaves no model behind and a rerun reuses the
blobs already uploaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from .._fs import write_text_atomic
from ..errors import (
    InputNotFoundError,
    ModelfileError,
    OllamaUnavailableError,
    RegistrationError,
    UsageError,
)
from ..modelfile import Modelfile, render_modelfile
from ..progress import NullProgress, ProgressReporter
from ._transport import unavailable
from .client import OllamaClient
from .parameters import api_parameters

logger = logging.getLogger(__name__)

Method = Literal["auto", "cli", "api"]

#: Upload and hashing step: one progress update per MiB.
UPLOAD_CHUNK = 1 << 20
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: A FROM/ADAPTER value that names a file, not a model: Ollama would take a missing file for a
#: model name and answer "invalid model name" (parser/parser.go ``CreateRequest``).
_PATH_LIKE = re.compile(r"^(\.{1,2}/|/|~)|\.(gguf|bin|safetensors)$|\\", re.IGNORECASE)


def create_model(
    client: OllamaClient,
    name: str,
    modelfile: Modelfile,
    *,
    base_dir: Path,
    method: Method = "auto",
    progress: ProgressReporter | None = None,
) -> Literal["cli", "api"]:
    """Create ``name`` from ``modelfile`` and return the path taken.

    Why two paths: ``ollama create`` is what users know and shows Ollama's own progress, but the
    CLI may be missing (remote server, container); the HTTP API needs nothing but the server.
    Modelfiles no quoting can carry (see ``modelfile.quote_value``) go through the API.

    Raises:
        InputNotFoundError: FROM or ADAPTER names a file that does not exist.
        UsageError: ``method="cli"`` without the CLI on PATH.
        OllamaUnavailableError: the server cannot be reached, or went away mid-way.
        RegistrationError: Ollama refused the model (its message is included).
    """
    reporter = progress or NullProgress()
    check_local_files(modelfile, base_dir)
    chosen = _choose_method(method, modelfile)
    if chosen == "cli":
        _create_with_cli(client, name, modelfile, base_dir, reporter)
    else:
        _create_with_api(client, name, modelfile, base_dir, reporter)
    return chosen


def check_local_files(modelfile: Modelfile, base_dir: Path) -> None:
    """Refuse a FROM/ADAPTER path that does not exist, naming it (not "invalid model name").

    Raises:
        InputNotFoundError: the file is missing.
    """
    lines = [("FROM", modelfile.from_), *(("ADAPTER", a) for a in modelfile.adapters)]
    for keyword, value in lines:
        path = _resolve(base_dir, value)
        if (keyword == "ADAPTER" or _PATH_LIKE.search(value)) and not path.exists():
            raise InputNotFoundError(
                f"{keyword} {value}: the file {path} does not exist",
                path=path,
                hint=f"fix the {keyword} line, or create the file (e.g. with deploy-to-ollama "
                "export) next to the Modelfile",
            )


def _resolve(base_dir: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


def _choose_method(method: Method, modelfile: Modelfile) -> Literal["cli", "api"]:
    cli = shutil.which("ollama")
    if method == "cli" and cli is None:
        raise UsageError(
            "the ollama CLI is not on PATH", hint="install Ollama, or register with the API method"
        )
    if method == "api" or (method == "auto" and cli is None):
        return "api"
    try:
        render_modelfile(modelfile)
    except ModelfileError:
        if method == "cli":
            raise
        logger.info("Modelfile cannot carry this content; registering through the API")
        return "api"
    return "cli"


# --------------------------------------------------------------------------- CLI path


def _create_with_cli(
    client: OllamaClient,
    name: str,
    modelfile: Modelfile,
    base_dir: Path,
    progress: ProgressReporter,
) -> None:
    """``ollama create NAME -f Modelfile``, relaying each status line it prints."""
    client.version()
    path = base_dir / f".{name.replace('/', '_').replace(':', '_')}.Modelfile"
    write_text_atomic(path, render_modelfile(modelfile))
    env = {**os.environ, "OLLAMA_HOST": client.host}
    command = ["ollama", "create", name, "-f", str(path)]
    logger.info("running %s", " ".join(command))
    try:
        proc = subprocess.Popen(
            command,
            cwd=base_dir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        output = _relay_cli_progress(proc, progress)
        returncode = proc.wait()
    finally:
        path.unlink(missing_ok=True)
    if returncode != 0:
        _raise_cli_failure(client, name, output)


def _relay_cli_progress(proc: subprocess.Popen[bytes], progress: ProgressReporter) -> list[str]:
    lines: list[str] = []
    current: str | None = None
    assert proc.stdout is not None
    for raw in _status_lines(proc.stdout):
        line = _ANSI.sub("", raw).strip()
        if not line:
            continue
        status = re.sub(r"\s+\d+%.*$", "", line)
        if status != current:
            if current is not None:
                progress.done(f"create:{current}")
            progress.start(f"create:{status}", status)
            current = status
        if not lines or lines[-1] != line:
            lines.append(line)
    if current is not None:
        progress.done(f"create:{current}")
    return lines


def _status_lines(stream: Any) -> Iterator[str]:
    """Split the CLI's output on both line feeds and carriage returns (its progress redraws)."""
    buffer = b""
    while chunk := stream.read1(4096):
        buffer += chunk
        parts = re.split(rb"[\r\n]", buffer)
        buffer = parts.pop()
        for part in parts:
            yield part.decode("utf-8", errors="replace")
    if buffer:
        yield buffer.decode("utf-8", errors="replace")


def _raise_cli_failure(client: OllamaClient, name: str, output: list[str]) -> None:
    errors = [line for line in output if line.lower().startswith("error")]
    detail = (errors or output or ["no output"])[-1]
    try:
        OllamaClient(client.host).version()
    except OllamaUnavailableError as err:
        raise unavailable(client.host) from err
    raise RegistrationError(
        f"ollama create {name} failed: {detail}",
        hint="fix the cause above and rerun; no model was registered",
    )


# --------------------------------------------------------------------------- API path


def _create_with_api(
    client: OllamaClient,
    name: str,
    modelfile: Modelfile,
    base_dir: Path,
    progress: ProgressReporter,
) -> None:
    """Upload FROM/ADAPTER files as blobs, then ``/api/create`` by digest."""
    parameters = api_parameters(modelfile.parameters)
    from_path = _local_file(base_dir, modelfile.from_)
    files = {from_path.name: upload_blob(client, from_path, progress)} if from_path else None
    adapters: dict[str, str] = {}
    for adapter in modelfile.adapters:
        path = _local_file(base_dir, adapter)
        if path is None:
            raise RegistrationError(
                f"ADAPTER {adapter} is not a file under {base_dir}",
                hint="point ADAPTER at a GGUF LoRA file",
            )
        adapters[path.name] = upload_blob(client, path, progress)
    stream = client.create(
        name,
        from_=None if from_path else modelfile.from_,
        files=files,
        adapters=adapters,
        template=modelfile.template,
        system=modelfile.system,
        license=modelfile.license,
        parameters=parameters,
        messages=[{"role": r, "content": c} for r, c in modelfile.messages],
    )
    relay_create_progress(stream, progress)


def relay_create_progress(stream: Iterator[Any], progress: ProgressReporter) -> None:
    """One progress task per status line Ollama streams while it creates."""
    current: str | None = None
    for update in stream:
        status = str(update.status or "")
        if status and status != current:
            if current is not None:
                progress.done(f"create:{current}")
            progress.start(f"create:{status}", status)
            current = status
    if current is not None:
        progress.done(f"create:{current}")


def _local_file(base_dir: Path, value: str) -> Path | None:
    """The file ``value`` names relative to ``base_dir`` (``~`` expanded), or None."""
    path = _resolve(base_dir, value)
    return path if path.is_file() else None


# --------------------------------------------------------------------------- blobs


def file_digest(path: Path, progress: ProgressReporter | None = None) -> str:
    """``sha256:<hex>`` of ``path``, the name Ollama gives the blob."""
    reporter = progress or NullProgress()
    size = path.stat().st_size
    key = f"hash:{path.name}"
    reporter.start(key, f"hashing {path.name}", total=size)
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(UPLOAD_CHUNK):
            digest.update(chunk)
            reporter.advance(key, len(chunk))
    reporter.done(key)
    return f"sha256:{digest.hexdigest()}"


def upload_blob(client: OllamaClient, path: Path, progress: ProgressReporter | None = None) -> str:
    """Upload ``path`` as a blob unless the server already has it; return its digest.

    One progress step per MiB (the ``ollama`` package's ``create_blob`` has no progress hook).

    Raises:
        OllamaUnavailableError: the server is unreachable or went away during the upload.
        RegistrationError: the server rejected the blob.
    """
    reporter = progress or NullProgress()
    digest = file_digest(path, reporter)
    if client.has_blob(digest):
        logger.info("blob %s of %s already on the server", digest[:19], path.name)
        return digest
    key = f"upload:{path.name}"
    reporter.start(key, f"uploading {path.name}", total=path.stat().st_size)
    client.push_blob(digest, _chunks(path, key, reporter), label=path.name)
    reporter.done(key)
    return digest


def _chunks(path: Path, key: str, progress: ProgressReporter) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(UPLOAD_CHUNK):
            yield chunk
            progress.advance(key, len(chunk))


__all__ = [
    "UPLOAD_CHUNK",
    "Method",
    "check_local_files",
    "create_model",
    "file_digest",
    "relay_create_progress",
    "upload_blob",
]
