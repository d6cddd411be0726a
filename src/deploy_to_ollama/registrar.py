"""Register a Modelfile's model with an Ollama server: ``ollama create`` or the HTTP API.

With the ``ollama`` CLI on PATH we run ``ollama create NAME -f Modelfile``; without it we upload
each file as a blob and call ``create`` through the official ``ollama`` client. Ollama writes a
model's manifest only once everything is in place, so a failed run leaves no model behind and a
rerun reuses the blobs already uploaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from ._fs import write_text_atomic
from .errors import (
    InvalidModelNameError,
    ModelfileError,
    OllamaUnavailableError,
    OutputExistsError,
    RegistrationError,
    UsageError,
)
from .modelfile import Modelfile, render_modelfile
from .progress import NullProgress, ProgressReporter
from .settings import normalize_host

logger = logging.getLogger(__name__)

Method = Literal["auto", "cli", "api"]

#: Ollama caps a name (without ``http://``) at 128 bytes (types/model/name.go MaxNamePartLen).
MAX_NAME_LEN = 128
_NAME_PART = re.compile(r"[A-Za-z0-9_.-]+")
#: Upload and hashing step: one progress update per MiB.
UPLOAD_CHUNK = 1 << 20
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

#: Typed Ollama options (api/types.go ``Options``): Modelfile values are strings, the API
#: takes JSON numbers and lists, so the API path converts as ``api.FormatParams`` does.
INT_PARAMETERS = frozenset(
    {
        "num_ctx",
        "num_batch",
        "num_gpu",
        "main_gpu",
        "num_thread",
        "num_keep",
        "seed",
        "num_predict",
        "top_k",
        "repeat_last_n",
        "mirostat",
    }
)
FLOAT_PARAMETERS = frozenset(
    {
        "temperature",
        "top_p",
        "min_p",
        "typical_p",
        "repeat_penalty",
        "presence_penalty",
        "frequency_penalty",
        "tfs_z",
        "mirostat_tau",
        "mirostat_eta",
    }
)
BOOL_PARAMETERS = frozenset({"use_mmap", "use_mlock", "numa", "penalize_newline", "low_vram"})
LIST_PARAMETERS = frozenset({"stop"})


@dataclass(frozen=True, slots=True)
class Registration:
    """A model that Ollama now lists."""

    name: str
    """Normalised ``model:tag`` (``:latest`` added when no tag was given)."""
    host: str
    method: Literal["cli", "api"]
    server_version: str
    replaced: bool
    """An existing model of that name was replaced (``force=True``)."""


# --------------------------------------------------------------------------- names and server


def validate_model_name(name: str) -> str:
    """Check ``name`` by Ollama's rules and return it as ``model:tag``.

    Ollama accepts ``[host/][namespace/]model[:tag]`` with parts made of letters, digits, ``_``,
    ``-`` and ``.`` (no ``.`` in the namespace, no ``..``), 128 characters at most
    (ollama/ollama ``types/model/name.go``).

    Raises:
        InvalidModelNameError: the name is not one Ollama would accept (exit 1).

    >>> validate_model_name("my-model"), validate_model_name("me/tiny:q8_0")
    ('my-model:latest', 'me/tiny:q8_0')
    """
    problem = _name_problem(name)
    if problem:
        raise InvalidModelNameError(
            f"invalid model name {name!r}: {problem}",
            hint="use [namespace/]name[:tag] with letters, digits, '_', '-' and '.', "
            "e.g. my-model:q8_0",
        )
    return name if ":" in name.rpartition("/")[2] else f"{name}:latest"


def _name_problem(name: str) -> str | None:
    if not name:
        return "it is empty"
    if len(name) > MAX_NAME_LEN:
        return f"it is longer than {MAX_NAME_LEN} characters"
    if ".." in name:
        return "it contains '..'"
    path, _, tag_part = name.rpartition("/")
    model, colon, tag = tag_part.partition(":")
    segments = path.split("/") if path else []
    if len(segments) > 2:
        return "it has more than host/namespace/model"
    if colon and not tag:
        return "the tag after ':' is empty"
    for label, part in (("model", model), ("tag", tag if colon else "x"), *_path_parts(segments)):
        if not _NAME_PART.fullmatch(part):
            return f"the {label} part {part!r} may hold only letters, digits, '_', '-' and '.'"
    if segments and "." in segments[-1]:
        return "the namespace may not contain '.'"
    return None


def _path_parts(segments: list[str]) -> list[tuple[str, str]]:
    labels = ["host", "namespace"][-len(segments) :] if segments else []
    return list(zip(labels, segments, strict=True))


def _unavailable(host: str, err: BaseException | None = None) -> OllamaUnavailableError:
    detail = f" ({type(err).__name__})" if err is not None else ""
    return OllamaUnavailableError(
        f"cannot reach the Ollama server at {host}{detail}",
        host=host,
        hint="start it with `ollama serve`, or point --host / OLLAMA_HOST at a running server",
    )


def _http(host: str, *, timeout: float = 10.0) -> httpx.Client:
    return httpx.Client(base_url=host, timeout=httpx.Timeout(timeout, connect=5.0))


def server_version(host: str | None = None) -> str:
    """Return the version the server at ``host`` reports (``/api/version``).

    Raises:
        OllamaUnavailableError: nothing answers there (exit code 4).
    """
    url = normalize_host(host)
    try:
        with _http(url) as http:
            response = http.get("/api/version")
            response.raise_for_status()
            return str(response.json()["version"])
    except (httpx.HTTPError, ValueError, KeyError) as err:
        raise _unavailable(url, err) from err


def model_exists(name: str, host: str | None = None) -> bool:
    """Whether the server lists ``name`` (compared as Ollama does: case-insensitive)."""
    return show_model(name, host) is not None


def show_model(
    name: str, host: str | None = None, *, verbose: bool = False, timeout: float = 60
) -> dict[str, Any] | None:
    """The ``/api/show`` document of ``name``, or None when the server has no such model.

    ``verbose`` asks for the full ``model_info`` (token lists), which the doctor needs and
    which can take a while on large vocabularies, hence the ``timeout``.
    """
    url = normalize_host(host)
    payload: dict[str, Any] = {"model": name, "verbose": True} if verbose else {"model": name}
    try:
        with _http(url, timeout=timeout) as http:
            response = http.post("/api/show", json=payload)
    except httpx.HTTPError as err:
        raise _unavailable(url, err) from err
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise RegistrationError(
            f"/api/show {name} answered {response.status_code}: {response.text[:200]}",
            hint="check the server log",
        )
    result: dict[str, Any] = response.json()
    return result


def delete_model(name: str, host: str | None = None) -> bool:
    """Delete ``name``; return whether it existed."""
    url = normalize_host(host)
    try:
        with _http(url) as http:
            response = http.request("DELETE", "/api/delete", json={"model": name})
    except httpx.HTTPError as err:
        raise _unavailable(url, err) from err
    return response.status_code == 200


# --------------------------------------------------------------------------- register


def register_model(
    name: str,
    modelfile: Modelfile,
    *,
    base_dir: Path,
    host: str | None = None,
    force: bool = False,
    method: Method = "auto",
    progress: ProgressReporter | None = None,
) -> Registration:
    """Create (or with ``force`` replace) the Ollama model ``name`` from ``modelfile``.

    Why two paths: ``ollama create`` is what users know and shows Ollama's own progress, but the
    CLI may be missing (remote server, container); the HTTP API needs nothing but the server.
    Modelfiles no quoting can carry (see ``modelfile.quote_value``) go through the API.

    Args:
        name: the model name, checked by Ollama's rules.
        modelfile: what to register; ``FROM``/``ADAPTER`` paths are relative to ``base_dir``.
        base_dir: folder the Modelfile's relative paths start from.
        host: server URL or ``host:port`` (``OLLAMA_HOST`` form); default 127.0.0.1:11434.
        force: replace an existing model of that name.
        method: ``cli``, ``api``, or ``auto`` (the CLI when it is on PATH).
        progress: where to report hashing, uploads and create steps.

    Returns:
        What was registered, where and how.

    Raises:
        UsageError: invalid name, or ``method="cli"`` without the CLI.
        OutputExistsError: the model exists and ``force`` is false.
        OllamaUnavailableError: the server cannot be reached, or went away mid-way.
        RegistrationError: Ollama refused the model (its message is included).
    """
    full_name = validate_model_name(name)
    url = normalize_host(host)
    reporter = progress or NullProgress()
    version = server_version(url)
    existed = model_exists(full_name, url)
    if existed and not force:
        raise OutputExistsError(
            f"model {full_name} already exists on {url}",
            hint="pass --force to replace it, or choose another --name",
        )
    chosen = _choose_method(method, modelfile)
    if chosen == "cli":
        _create_with_cli(full_name, modelfile, base_dir, url, reporter)
    else:
        _create_with_api(full_name, modelfile, base_dir, url, reporter)
    if not model_exists(full_name, url):
        raise RegistrationError(
            f"Ollama reported success but does not list {full_name}", hint="check the server log"
        )
    return Registration(full_name, url, chosen, version, existed)


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
    name: str, modelfile: Modelfile, base_dir: Path, host: str, progress: ProgressReporter
) -> None:
    """``ollama create NAME -f Modelfile``, relaying each status line it prints."""
    path = base_dir / f".{name.replace('/', '_').replace(':', '_')}.Modelfile"
    write_text_atomic(path, render_modelfile(modelfile))
    env = {**os.environ, "OLLAMA_HOST": host}
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
        _raise_cli_failure(name, host, output)


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


def _raise_cli_failure(name: str, host: str, output: list[str]) -> None:
    errors = [line for line in output if line.lower().startswith("error")]
    detail = (errors or output or ["no output"])[-1]
    try:
        server_version(host)
    except OllamaUnavailableError as err:
        raise _unavailable(host) from err
    raise RegistrationError(
        f"ollama create {name} failed: {detail}",
        hint="fix the cause above and rerun; no model was registered",
    )


# --------------------------------------------------------------------------- API path


def _create_with_api(
    name: str, modelfile: Modelfile, base_dir: Path, host: str, progress: ProgressReporter
) -> None:
    """Upload FROM/ADAPTER files as blobs, then ``create`` with the official client."""
    import ollama

    parameters = api_parameters(modelfile.parameters)
    from_path = _local_file(base_dir, modelfile.from_)
    files = {from_path.name: upload_blob(from_path, host, progress)} if from_path else None
    adapters: dict[str, str] | None = None
    if modelfile.adapters:
        adapters = {}
        for adapter in modelfile.adapters:
            path = _local_file(base_dir, adapter)
            if path is None:
                raise RegistrationError(
                    f"ADAPTER {adapter} is not a file under {base_dir}",
                    hint="point ADAPTER at a GGUF LoRA file",
                )
            adapters[path.name] = upload_blob(path, host, progress)
    client = ollama.Client(host=host)
    try:
        stream = client.create(
            model=name,
            from_=None if from_path else modelfile.from_,
            files=files,
            adapters=adapters,
            template=modelfile.template,
            system=modelfile.system,
            license=modelfile.license,
            parameters=parameters or None,
            messages=[{"role": r, "content": c} for r, c in modelfile.messages] or None,
            stream=True,
        )
        _relay_api_progress(stream, progress)
    except (ConnectionError, httpx.HTTPError) as err:
        raise _unavailable(host, err) from err
    except ollama.ResponseError as err:
        raise RegistrationError(
            f"Ollama refused to create {name}: {err.error}",
            hint="fix the cause above and rerun; no model was registered",
        ) from err


def _relay_api_progress(stream: Iterator[Any], progress: ProgressReporter) -> None:
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
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base_dir / path
    return path if path.is_file() else None


def api_parameters(parameters: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """Turn Modelfile parameter strings into the typed JSON the create API stores.

    >>> api_parameters((("stop", "<|im_end|>"), ("stop", "</s>"), ("temperature", "0.5")))
    {'stop': ['<|im_end|>', '</s>'], 'temperature': 0.5}
    """
    out: dict[str, Any] = {}
    for key, value in parameters:
        try:
            if key in LIST_PARAMETERS:
                out.setdefault(key, []).append(value)
            elif key in INT_PARAMETERS:
                out[key] = int(value)
            elif key in FLOAT_PARAMETERS:
                out[key] = float(value)
            elif key in BOOL_PARAMETERS:
                out[key] = _parse_bool(value)
            else:
                raise RegistrationError(
                    f"unknown Ollama parameter {key!r}",
                    hint="see PARAMETER in https://github.com/ollama/ollama/blob/main/docs/modelfile.md",
                )
        except ValueError as err:
            raise RegistrationError(
                f"PARAMETER {key} {value!r} is not a valid value", hint="fix the parameter value"
            ) from err
    return out


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "t", "true"}:
        return True
    if lowered in {"0", "f", "false"}:
        return False
    raise ValueError(value)


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


def upload_blob(path: Path, host: str, progress: ProgressReporter | None = None) -> str:
    """Upload ``path`` as a blob unless the server already has it; return its digest.

    The official client's ``create_blob`` has no progress hook, so we stream the same request
    (``POST /api/blobs/<digest>``) ourselves, one progress step per MiB.

    Raises:
        OllamaUnavailableError: the server is unreachable or went away during the upload.
        RegistrationError: the server rejected the blob.
    """
    reporter = progress or NullProgress()
    digest = file_digest(path, reporter)
    key = f"upload:{path.name}"
    try:
        with _http(host, timeout=600) as http:
            if http.head(f"/api/blobs/{digest}").status_code == 200:
                logger.info("blob %s of %s already on the server", digest[:19], path.name)
                return digest
            reporter.start(key, f"uploading {path.name}", total=path.stat().st_size)
            response = http.post(f"/api/blobs/{digest}", content=_chunks(path, key, reporter))
    except httpx.HTTPError as err:
        raise OllamaUnavailableError(
            f"lost the Ollama server at {host} while uploading {path.name} ({type(err).__name__})",
            host=host,
            hint="check that `ollama serve` is still running, then rerun",
        ) from err
    if response.status_code not in (200, 201):
        raise RegistrationError(
            f"Ollama rejected the upload of {path.name}: {response.status_code} "
            f"{response.text[:200]}",
            hint="check the server log and free disk space",
        )
    reporter.done(key)
    return digest


def _chunks(path: Path, key: str, progress: ProgressReporter) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(UPLOAD_CHUNK):
            yield chunk
            progress.advance(key, len(chunk))


__all__ = [
    "UPLOAD_CHUNK",
    "Registration",
    "api_parameters",
    "delete_model",
    "file_digest",
    "model_exists",
    "register_model",
    "server_version",
    "show_model",
    "upload_blob",
    "validate_model_name",
]
