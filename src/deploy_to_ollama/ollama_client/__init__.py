"""The one home of Ollama access: every request to a server goes through this package.

``OllamaClient`` (version, show, list, delete, copy, blobs, create, chat, generate and the
debug render) answers with the ``ollama`` package's own reply models; ``create_model`` puts the
``ollama create`` CLI path and the HTTP API path behind one entry; ``_transport`` maps every
transport and HTTP error to our exceptions once. No other module imports ``httpx`` or ``ollama``.
"""

from __future__ import annotations

from ollama import ChatResponse, GenerateResponse, ListResponse, ProgressResponse

from ._transport import parse_host
from .client import DEBUG_RENDER_MIN_VERSION, OllamaClient, ShownModel, parse_version
from .create import (
    UPLOAD_CHUNK,
    Method,
    check_local_files,
    create_model,
    file_digest,
    upload_blob,
)
from .parameters import api_parameters
from .push import RegistryPush, push_to_registry
from .registry import RegistryProbe, RegistryTarget, parse_target


def server_version(host: str | None = None) -> str:
    """The version the server at ``host`` reports (``/api/version``).

    Raises:
        OllamaUnavailableError: nothing answers there, or not an Ollama server (exit 4).
    """
    return OllamaClient(host).version()


def show_model(name: str, host: str | None = None, *, verbose: bool = False) -> ShownModel | None:
    """``/api/show`` of ``name`` on ``host``, or None when there is no such model."""
    return OllamaClient(host).show(name, verbose=verbose)


def model_exists(name: str, host: str | None = None) -> bool:
    """Whether the server at ``host`` has ``name``."""
    return OllamaClient(host).exists(name)


__all__ = [
    "DEBUG_RENDER_MIN_VERSION",
    "UPLOAD_CHUNK",
    "ChatResponse",
    "GenerateResponse",
    "ListResponse",
    "Method",
    "OllamaClient",
    "ProgressResponse",
    "RegistryProbe",
    "RegistryPush",
    "RegistryTarget",
    "ShownModel",
    "api_parameters",
    "check_local_files",
    "create_model",
    "file_digest",
    "model_exists",
    "parse_host",
    "parse_target",
    "parse_version",
    "push_to_registry",
    "server_version",
    "show_model",
    "upload_blob",
]
