"""HTTP to one Ollama server, and the one place where transport and HTTP errors become ours.

Every request of the package goes through ``Transport``: a malformed host is a usage error
(exit 2), nothing listening or a dropped connection is ``OllamaUnavailableError`` (exit 4), a
server that answers but is not Ollama is ``NotOllamaServerError`` (exit 4), a missing model is
``ModelNotFoundError`` (exit 1) and any other refusal a ``DeployError`` (exit 1) of the caller's
choosing. ``httpx`` errors never leave this module.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..errors import (
    DeployError,
    InvalidHostError,
    ModelNotFoundError,
    NotOllamaServerError,
    OllamaUnavailableError,
)
from ..settings import normalize_host

#: Seconds to wait for a TCP connection; the read timeout is per request.
CONNECT_TIMEOUT = 5.0
START_HINT = "start it with `ollama serve`, or point --host / OLLAMA_HOST at a running server"
_TAG = re.compile(r"<[^>]*>")


def parse_host(host: str | None) -> str:
    """Turn ``--host`` / ``OLLAMA_HOST`` into a base URL, refusing what is no address.

    Raises:
        InvalidHostError: the value cannot be an HTTP address (exit 2).

    >>> parse_host("127.0.0.1:5000"), parse_host("[::1]")
    ('http://127.0.0.1:5000', 'http://[::1]:11434')
    >>> parse_host("http://[::1")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    deploy_to_ollama.errors.InvalidHostError: Ollama host 'http://[::1' is not an address: ...
    """
    url = normalize_host(host)
    try:
        parts = urlsplit(url)
        port = parts.port
        problem = None
        if parts.scheme not in ("http", "https"):
            problem = f"scheme {parts.scheme!r} is not http or https"
        elif not parts.hostname or port is None:
            problem = "it has no host name"
        elif url.count("[") != url.count("]"):
            problem = "its brackets do not match"
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL) as err:
        problem = str(err) or type(err).__name__
    if problem:
        raise InvalidHostError(
            f"Ollama host {host!r} is not an address: {problem}",
            hint="set --host / OLLAMA_HOST to host:port, e.g. 127.0.0.1:11434 or "
            "http://[::1]:11434",
        )
    return url


def unavailable(host: str, err: BaseException | None = None) -> OllamaUnavailableError:
    """Nothing answers at ``host`` (exit 4), with the hint that starts a server."""
    detail = f" ({type(err).__name__})" if err is not None else ""
    return OllamaUnavailableError(
        f"cannot reach the Ollama server at {host}{detail}", host=host, hint=START_HINT
    )


def _lost(host: str, doing: str, err: httpx.TransportError) -> OllamaUnavailableError:
    if isinstance(err, httpx.TimeoutException):
        message = f"the Ollama server at {host} did not answer in time while {doing}"
    else:
        message = f"lost the Ollama server at {host} while {doing} ({type(err).__name__})"
    return OllamaUnavailableError(
        message, host=host, hint="check that `ollama serve` is still running, then rerun"
    )


def not_ollama(host: str, why: str) -> NotOllamaServerError:
    """Something answers HTTP at ``host``, but not as Ollama does (exit 4)."""
    return NotOllamaServerError(
        f"{host} is not an Ollama server ({why})",
        host=host,
        hint="point --host / OLLAMA_HOST at the Ollama server (default 127.0.0.1:11434)",
    )


def error_text(response: httpx.Response) -> str:
    """Ollama's ``{"error": ...}`` text, else the body as one short line without markup."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    text = " ".join(_TAG.sub(" ", response.text).split())
    return text[:200] or f"HTTP {response.status_code}"


def _is_json(response: httpx.Response) -> bool:
    return "json" in response.headers.get("content-type", "")


class Transport:
    """One server's base URL and the request helpers every client call uses."""

    def __init__(self, host: str | None) -> None:
        self.host = parse_host(host)

    def _client(self, timeout: float | None) -> httpx.Client:
        return httpx.Client(
            base_url=self.host, timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT)
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        doing: str,
        body: Mapping[str, Any] | None = None,
        content: Iterator[bytes] | None = None,
        timeout: float | None = 60,
    ) -> httpx.Response:
        """Send one request; transport failures become ``OllamaUnavailableError``."""
        try:
            with self._client(timeout) as http:
                return http.request(
                    method, path, json=dict(body) if body is not None else None, content=content
                )
        except httpx.ConnectError as err:
            raise unavailable(self.host, err) from err
        except httpx.TransportError as err:
            raise _lost(self.host, doing, err) from err

    def json(
        self,
        method: str,
        path: str,
        *,
        doing: str,
        body: Mapping[str, Any] | None = None,
        model: str | None = None,
        error: type[DeployError] = DeployError,
        timeout: float | None = 60,
    ) -> dict[str, Any]:
        """A JSON object answer; any other status is mapped by ``raise_for_status``."""
        response = self.request(method, path, doing=doing, body=body, timeout=timeout)
        self.raise_for_status(response, doing=doing, model=model, error=error)
        return self._object(response, doing)

    def stream(
        self,
        path: str,
        body: Mapping[str, Any],
        *,
        doing: str,
        model: str | None = None,
        error: type[DeployError] = DeployError,
        timeout: float | None = 900,
    ) -> Iterator[dict[str, Any]]:
        """POST ``body`` and yield each NDJSON object; an ``error`` line raises ``error``."""
        try:
            with (
                self._client(timeout) as http,
                http.stream("POST", path, json=dict(body)) as response,
            ):
                if response.status_code != 200:
                    response.read()
                    self.raise_for_status(response, doing=doing, model=model, error=error)
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    item = self._line(line, doing)
                    if "error" in item:
                        raise error(
                            f"Ollama failed while {doing}: {item['error']}",
                            hint="check the server log (OLLAMA_DEBUG=1 ollama serve)",
                        )
                    yield item
        except httpx.ConnectError as err:
            raise unavailable(self.host, err) from err
        except httpx.TransportError as err:
            raise _lost(self.host, doing, err) from err

    def raise_for_status(
        self,
        response: httpx.Response,
        *,
        doing: str,
        model: str | None = None,
        error: type[DeployError] = DeployError,
    ) -> None:
        """Map a non-2xx answer: 404 on a model → ``ModelNotFoundError``, else ``error``."""
        if response.is_success:
            return
        text = error_text(response)
        if response.status_code == 404 and model is not None and _is_json(response):
            raise ModelNotFoundError(
                f"model not found: Ollama at {self.host} has no model {model!r}",
                model=model,
                host=self.host,
                hint="check the name with `ollama list`, or deploy it first "
                f"(deploy-to-ollama SOURCE --name {model})",
            )
        if not _is_json(response) and response.status_code in (404, 405):
            raise not_ollama(self.host, f"{doing} answered HTTP {response.status_code}")
        raise error(
            f"Ollama answered HTTP {response.status_code} while {doing}: {text}",
            hint="check the server log (OLLAMA_DEBUG=1 ollama serve)",
        )

    def _object(self, response: httpx.Response, doing: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise not_ollama(self.host, f"{doing} did not answer with JSON")
        return body

    def _line(self, line: str, doing: str) -> dict[str, Any]:
        try:
            item = json.loads(line)
        except ValueError:
            item = None
        if not isinstance(item, dict):
            raise not_ollama(self.host, f"{doing} streamed something other than JSON lines")
        return item


__all__ = ["START_HINT", "Transport", "error_text", "not_ollama", "parse_host", "unavailable"]
