"""Register a Modelfile's model with an Ollama server, by Ollama's naming rules.

Creating goes through ``ollama_client.create_model`` (the ``ollama create`` CLI or the HTTP
API). A registration made by ``deploy`` is provisional until its round trip passed: when it
replaced a model, that model is copied aside first (a manifest copy, no blob is duplicated), so
``undo_registration`` can put it back; ``settle_registration`` drops the copy.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import (
    InvalidModelNameError,
    OllamaUnavailableError,
    OutputExistsError,
    RegistrationError,
)
from .modelfile import Modelfile
from .ollama_client import Method, OllamaClient, create_model
from .progress import NullProgress, ProgressReporter

logger = logging.getLogger(__name__)

#: Ollama caps a name (without ``http://``) at 128 bytes (types/model/name.go MaxNamePartLen).
MAX_NAME_LEN = 128
_NAME_PART = re.compile(r"[A-Za-z0-9_.-]+")
#: Suffix of the copy a provisional registration keeps of the model it replaced.
BACKUP_SUFFIX = "-dto-replaced"

Undo = Literal["removed", "restored"]


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
    backup: str | None = None
    """The copy of the replaced model, kept until the registration is settled or undone."""


# --------------------------------------------------------------------------- names


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


def backup_name(name: str) -> str:
    """The name a replaced model is kept under while its successor is on probation.

    >>> backup_name("me/tiny:q8_0")
    'me/tiny-dto-replaced:q8_0'
    """
    head, _, tag = name.rpartition(":")
    return f"{head}{BACKUP_SUFFIX}:{tag}"


# --------------------------------------------------------------------------- register


def register_model(
    name: str,
    modelfile: Modelfile,
    *,
    base_dir: Path,
    host: str | None = None,
    force: bool = False,
    method: Method = "auto",
    keep_replaced: bool = False,
    progress: ProgressReporter | None = None,
) -> Registration:
    """Create (or with ``force`` replace) the Ollama model ``name`` from ``modelfile``.

    Args:
        name: the model name, checked by Ollama's rules.
        modelfile: what to register; ``FROM``/``ADAPTER`` paths are relative to ``base_dir``.
        base_dir: folder the Modelfile's relative paths start from.
        host: server URL or ``host:port`` (``OLLAMA_HOST`` form); default 127.0.0.1:11434.
        force: replace an existing model of that name.
        method: ``cli``, ``api``, or ``auto`` (the CLI when it is on PATH).
        keep_replaced: copy a model this replaces aside (``Registration.backup``), so that
            ``undo_registration`` can restore it.
        progress: where to report hashing, uploads and create steps.

    Returns:
        What was registered, where and how.

    Raises:
        UsageError: invalid name, or ``method="cli"`` without the CLI.
        InputNotFoundError: a FROM/ADAPTER file does not exist.
        OutputExistsError: the model exists and ``force`` is false.
        OllamaUnavailableError: the server cannot be reached, or went away mid-way (exit 4).
        RegistrationError: Ollama refused the model (its message is included).
    """
    full_name = validate_model_name(name)
    client = OllamaClient(host)
    reporter = progress or NullProgress()
    version = client.version()
    existed = client.exists(full_name)
    if existed and not force:
        raise OutputExistsError(
            f"model {full_name} already exists on {client.host}",
            hint="pass --force to replace it, or choose another --name",
        )
    backup = None
    if existed and keep_replaced:
        backup = backup_name(full_name)
        client.copy(full_name, backup)
    try:
        chosen = create_model(
            client, full_name, modelfile, base_dir=base_dir, method=method, progress=reporter
        )
        if not client.exists(full_name):
            raise RegistrationError(
                f"Ollama reported success but does not list {full_name}",
                hint="check the server log",
            )
    except BaseException:
        if backup is not None:
            _drop(client, backup)
        raise
    return Registration(full_name, client.host, chosen, version, existed, backup)


def settle_registration(registration: Registration) -> None:
    """The registration stays: drop the copy of the model it replaced, if one was kept."""
    if registration.backup is not None:
        _drop(OllamaClient(registration.host), registration.backup)


def undo_registration(registration: Registration) -> Undo:
    """Remove what ``registration`` created; put back the model it replaced, if kept.

    Returns:
        ``"restored"`` when the earlier model is back under the name, else ``"removed"``.

    Raises:
        OllamaUnavailableError: the server went away (the name may still be registered).
    """
    client = OllamaClient(registration.host)
    client.delete(registration.name)
    if registration.backup is None:
        return "removed"
    client.copy(registration.backup, registration.name)
    client.delete(registration.backup)
    return "restored"


def discard_registration(registration: Registration) -> str:
    """Undo a registration whose round trip failed; return one line saying what happened."""
    try:
        done = undo_registration(registration)
    except OllamaUnavailableError:
        logger.warning("could not remove %s: the server went away", registration.name)
        return f"{registration.name} may still be registered (the server went away)"
    if done == "restored":
        return (
            f"{registration.name} failed its round trip; the model it replaced is restored "
            "(--keep-failed keeps the new one)"
        )
    return f"{registration.name} failed its round trip and was removed (--keep-failed keeps it)"


def _drop(client: OllamaClient, name: str) -> None:
    try:
        client.delete(name)
    except OllamaUnavailableError:
        logger.warning("could not delete %s on %s; remove it with `ollama rm`", name, client.host)


__all__ = [
    "Registration",
    "backup_name",
    "discard_registration",
    "register_model",
    "settle_registration",
    "undo_registration",
    "validate_model_name",
]
