"""``OllamaClient``: every call this package makes to an Ollama server, with typed replies.

Replies are the ``ollama`` package's own models (``ShowResponse``, ``ChatResponse``,
``GenerateResponse``, ``ListResponse``, ``ProgressResponse``); ``ShownModel`` only adds the
``/api/show`` fields that model leaves out (``system``, ``messages``). Requests go through
``_transport.Transport``, the one place that maps errors.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

from ollama import (
    ChatResponse,
    GenerateResponse,
    ListResponse,
    Message,
    ProgressResponse,
    ShowResponse,
)
from pydantic import BaseModel, Field, ValidationError

from ..errors import DeployError, RegistrationError, RegistryError
from ._transport import Transport, not_ollama

#: First Ollama release whose /api/chat honours ``_debug_render_only`` (api/types.go).
DEBUG_RENDER_MIN_VERSION = (0, 11, 5)
#: Seconds a chat or generate call may take (a cold model load on a slow CPU included).
GENERATE_TIMEOUT = 900.0
#: Seconds a blob upload or a create may take (hashing a multi-GB GGUF on the server).
CREATE_TIMEOUT = 3600.0

_Reply = TypeVar("_Reply", bound=BaseModel)


class ShownModel(ShowResponse):
    """``/api/show``: ollama's ``ShowResponse`` plus the SYSTEM and MESSAGES it omits."""

    modelinfo: Mapping[str, Any] | None = Field(default=None, alias="model_info")
    """Required by ``ShowResponse``, but Ollama omits it when empty (``omitempty``)."""
    system: str | None = None
    messages: Sequence[Message] | None = None
    tensors: Sequence[Mapping[str, Any]] | None = None
    """``verbose`` only: each weight's ``name``, ``type`` and ``shape`` (GGUF order)."""


def parse_version(text: str) -> tuple[int, ...]:
    """``"0.11.5-rc1"`` -> ``(0, 11, 5)``; unknown parts count as 0.

    >>> parse_version("0.9.3"), parse_version("0.11.5-rc1"), parse_version("dev")
    ((0, 9, 3), (0, 11, 5), (0,))
    """
    parts: list[int] = []
    for piece in text.split("-")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


class OllamaClient:
    """One Ollama server. Cheap to create; each call opens its own connection.

    Args:
        host: ``--host`` / ``OLLAMA_HOST`` value; default ``127.0.0.1:11434``.

    Raises:
        InvalidHostError: ``host`` is not an address (exit 2).
    """

    def __init__(self, host: str | None = None) -> None:
        self.transport = Transport(host)
        self._version: str | None = None

    @property
    def host(self) -> str:
        """The normalised base URL."""
        return self.transport.host

    # ----------------------------------------------------------------------- server

    def version(self) -> str:
        """The server's version; also proves that an Ollama server answers there.

        Raises:
            OllamaUnavailableError: nothing answers (exit 4).
            NotOllamaServerError: something answers, but not as Ollama does (exit 4).
        """
        if self._version is None:
            response = self.transport.request("GET", "/api/version", doing="asking its version")
            if not response.is_success:
                raise not_ollama(self.host, f"/api/version answered HTTP {response.status_code}")
            try:
                body = response.json()
            except ValueError:
                body = None
            if not isinstance(body, dict) or not isinstance(body.get("version"), str):
                raise not_ollama(self.host, "/api/version did not answer with a version")
            self._version = str(body["version"])
        return self._version

    def supports_debug_render(self) -> bool:
        """Whether /api/chat honours ``_debug_render_only`` (Ollama >= 0.11.5)."""
        return parse_version(self.version()) >= DEBUG_RENDER_MIN_VERSION

    # ----------------------------------------------------------------------- models

    def show(self, name: str, *, verbose: bool = False, timeout: float = 60) -> ShownModel | None:
        """``/api/show`` of ``name``, or None when the server has no such model.

        ``verbose`` asks for the full ``model_info`` (token lists), which the doctor needs and
        which can take a while on large vocabularies, hence the ``timeout``.
        """
        self.version()
        body = {"model": name, "verbose": True} if verbose else {"model": name}
        response = self.transport.request(
            "POST", "/api/show", doing=f"showing {name}", body=body, timeout=timeout
        )
        if response.status_code == 404 and "json" in response.headers.get("content-type", ""):
            return None
        self.transport.raise_for_status(response, doing=f"showing {name}")
        return self._parse(ShownModel, response.json(), f"showing {name}")

    def require(self, name: str, *, verbose: bool = False, timeout: float = 60) -> ShownModel:
        """``/api/show`` of ``name``.

        Raises:
            ModelNotFoundError: the server has no such model (exit 1).
        """
        self.version()
        body = {"model": name, "verbose": True} if verbose else {"model": name}
        data = self.transport.json(
            "POST", "/api/show", doing=f"showing {name}", body=body, model=name, timeout=timeout
        )
        return self._parse(ShownModel, data, f"showing {name}")

    def exists(self, name: str) -> bool:
        """Whether the server has ``name`` (compared as Ollama does: case-insensitive)."""
        return self.show(name) is not None

    def list(self) -> ListResponse:
        """Every model the server has (``/api/tags``)."""
        self.version()
        data = self.transport.json("GET", "/api/tags", doing="listing models")
        return self._parse(ListResponse, data, "listing models")

    def delete(self, name: str) -> bool:
        """Delete ``name``; return whether it existed."""
        self.version()
        response = self.transport.request(
            "DELETE", "/api/delete", doing=f"deleting {name}", body={"model": name}
        )
        if response.status_code == 404:
            return False
        self.transport.raise_for_status(response, doing=f"deleting {name}")
        return True

    def copy(self, source: str, destination: str) -> None:
        """Copy ``source`` to ``destination`` (a new manifest over the same blobs)."""
        self.version()
        response = self.transport.request(
            "POST",
            "/api/copy",
            doing=f"copying {source}",
            body={"source": source, "destination": destination},
        )
        self.transport.raise_for_status(response, doing=f"copying {source}", model=source)

    # ----------------------------------------------------------------------- create

    def has_blob(self, digest: str) -> bool:
        """Whether the server already stores the blob ``sha256:…``."""
        self.version()
        response = self.transport.request(
            "HEAD", f"/api/blobs/{digest}", doing=f"looking up blob {digest[:19]}"
        )
        return response.status_code == 200

    def push_blob(self, digest: str, chunks: Iterator[bytes], *, label: str) -> None:
        """Upload a blob from ``chunks`` (``POST /api/blobs/<digest>``).

        Raises:
            OllamaUnavailableError: the server went away during the upload (exit 4).
            RegistrationError: the server rejected the blob.
        """
        self.version()
        doing = f"uploading {label}"
        response = self.transport.request(
            "POST", f"/api/blobs/{digest}", doing=doing, content=chunks, timeout=CREATE_TIMEOUT
        )
        self.transport.raise_for_status(response, doing=doing, error=RegistrationError)

    def create(
        self,
        name: str,
        *,
        from_: str | None = None,
        files: Mapping[str, str] | None = None,
        adapters: Mapping[str, str] | None = None,
        template: str | None = None,
        system: str | None = None,
        license: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        messages: Sequence[Mapping[str, str]] | None = None,
    ) -> Iterator[ProgressResponse]:
        """``/api/create`` (files by digest, see ``push_blob``), streaming Ollama's steps.

        Raises:
            OllamaUnavailableError: the server cannot be reached or went away (exit 4).
            RegistrationError: Ollama refused the model (its message is included).
        """
        self.version()
        fields = {
            "from": from_,
            "files": dict(files) if files else None,
            "adapters": dict(adapters) if adapters else None,
            "template": template,
            "system": system,
            "license": license,
            "parameters": dict(parameters) if parameters else None,
            "messages": [dict(m) for m in messages] if messages else None,
        }
        body = {"model": name, "stream": True} | {k: v for k, v in fields.items() if v is not None}
        doing = f"creating {name}"
        for item in self.transport.stream(
            "/api/create", body, doing=doing, error=RegistrationError, timeout=CREATE_TIMEOUT
        ):
            yield self._parse(ProgressResponse, item, doing)

    # ----------------------------------------------------------------------- registry

    def push(self, name: str, *, insecure: bool = False) -> Iterator[ProgressResponse]:
        """``/api/push`` of ``name`` (HOST/NAMESPACE/MODEL:TAG), streaming Ollama's steps.

        Raises:
            OllamaUnavailableError: the server cannot be reached or went away (exit 4).
            RegistryError: the push failed (Ollama's message, e.g. the registry's refusal).
        """
        yield from self._registry_stream(
            "/api/push", name, insecure=insecure, doing=f"pushing {name}"
        )

    def pull(self, name: str, *, insecure: bool = False) -> Iterator[ProgressResponse]:
        """``/api/pull`` of ``name``, streaming Ollama's steps (see ``push``)."""
        yield from self._registry_stream(
            "/api/pull", name, insecure=insecure, doing=f"pulling {name}"
        )

    def _registry_stream(
        self, path: str, name: str, *, insecure: bool, doing: str
    ) -> Iterator[ProgressResponse]:
        self.version()
        body = {"model": name, "insecure": insecure, "stream": True}
        for item in self.transport.stream(
            path, body, doing=doing, error=RegistryError, timeout=CREATE_TIMEOUT
        ):
            yield self._parse(ProgressResponse, item, doing)

    # ----------------------------------------------------------------------- inference

    def chat(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        options: Mapping[str, Any] | None = None,
        timeout: float = GENERATE_TIMEOUT,
    ) -> ChatResponse:
        """One whole chat answer (``stream: false``).

        Raises:
            ModelNotFoundError: no such model (exit 1).
            OllamaUnavailableError: the server cannot be reached or went away (exit 4).
            DeployError: the server refused the request (exit 1).
        """
        self.version()
        data = self.transport.json(
            "POST",
            "/api/chat",
            doing=f"chatting with {model}",
            body=_chat_body(model, messages, options, stream=False),
            model=model,
            timeout=timeout,
        )
        return self._parse(ChatResponse, data, f"chatting with {model}")

    def chat_stream(
        self,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        options: Mapping[str, Any] | None = None,
        timeout: float = GENERATE_TIMEOUT,
    ) -> Iterator[ChatResponse]:
        """A chat answer as it streams, one ``ChatResponse`` per chunk (the last ``done``)."""
        self.version()
        doing = f"chatting with {model}"
        for item in self.transport.stream(
            "/api/chat",
            _chat_body(model, messages, options, stream=True),
            doing=doing,
            model=model,
            timeout=timeout,
        ):
            yield self._parse(ChatResponse, item, doing)

    def generate(
        self,
        model: str,
        prompt: str,
        *,
        raw: bool = False,
        options: Mapping[str, Any] | None = None,
        timeout: float = GENERATE_TIMEOUT,
    ) -> GenerateResponse:
        """One whole completion of ``prompt`` (``raw`` skips the model's TEMPLATE)."""
        self.version()
        body: dict[str, Any] = {"model": model, "prompt": prompt, "stream": False, "raw": raw}
        if options:
            body["options"] = dict(options)
        data = self.transport.json(
            "POST",
            "/api/generate",
            doing=f"generating with {model}",
            body=body,
            model=model,
            timeout=timeout,
        )
        return self._parse(GenerateResponse, data, f"generating with {model}")

    def debug_render(self, model: str, messages: Sequence[Mapping[str, Any]]) -> str:
        """The prompt a server >= 0.11.5 would build for ``messages`` (no generation).

        The ``ollama`` package does not expose ``_debug_render_only``; the answer carries
        ``_debug_info.rendered_template`` (ollama/ollama api/types.go ``DebugInfo``).

        Raises:
            DeployError: the server ignored the flag (it predates 0.11.5).
        """
        self.version()
        body = _chat_body(model, messages, None, stream=False) | {"_debug_render_only": True}
        data = self.transport.json(
            "POST",
            "/api/chat",
            doing=f"rendering a prompt of {model}",
            body=body,
            model=model,
            timeout=120,
        )
        info = data.get("_debug_info") or data.get("debug_info") or {}
        if not isinstance(info, dict) or "rendered_template" not in info:
            raise DeployError(
                f"{self.host} ignored _debug_render_only (no _debug_info in its answer)",
                hint="upgrade Ollama to 0.11.5 or later, or rely on the Go-renderer fallback",
            )
        return str(info["rendered_template"])

    # ----------------------------------------------------------------------- helpers

    def _parse(self, model: type[_Reply], data: Any, doing: str) -> _Reply:
        try:
            return model.model_validate(data)
        except ValidationError as err:
            raise not_ollama(self.host, f"{doing} gave an answer Ollama would not") from err


def _chat_body(
    model: str,
    messages: Sequence[Mapping[str, Any]],
    options: Mapping[str, Any] | None,
    *,
    stream: bool,
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [dict(m) for m in messages]}
    body["stream"] = stream
    if options:
        body["options"] = dict(options)
    return body


__all__ = ["DEBUG_RENDER_MIN_VERSION", "OllamaClient", "ShownModel", "parse_version"]
