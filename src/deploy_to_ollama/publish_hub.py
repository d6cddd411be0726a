"""The Hugging Face Hub side of a push: the token, and the Hub's failures as our errors.

Why apart from ``publish``: what a push uploads (files, Modelfile, card) is one concept; how
huggingface_hub fails (HTTP status, offline mode, the transport of its HTTP stack, which differs
between huggingface_hub releases) is another, and each changes for its own reasons.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Any

from .errors import HubError, HubUnavailableError


def resolve_token(token: str | None) -> str:
    """``token``, else HF_TOKEN, else the huggingface_hub login; a HubError when none."""
    from huggingface_hub import get_token

    found = token or get_token()
    if not found:
        raise HubError(
            "no Hugging Face token: pushing needs one with write access",
            hint="set HF_TOKEN=hf_… or run `hf auth login`",
        )
    return found


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Network failures of huggingface_hub's HTTP stack (httpx2 in 2.x, httpx before)."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError, AttributeError):
            found.append(importlib.import_module(module).TransportError)
    return tuple(found)


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def translate_hub_error(err: BaseException, repo_id: str, endpoint: str) -> HubError | None:
    """Turn a huggingface_hub / network error into one HubError with a hint (None: not ours)."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    namespace = repo_id.partition("/")[0]
    transport = _transport_errors()
    for cause in _chain(err):
        if isinstance(cause, OfflineModeIsEnabled):
            return HubError(
                "huggingface_hub is in offline mode (HF_HUB_OFFLINE)",
                hint="unset HF_HUB_OFFLINE (or set it to 0) to push",
            )
        if isinstance(cause, HfHubHTTPError):
            status = cause.response.status_code if cause.response is not None else 0
            return _http_error(status, repo_id, namespace, cause)
        if isinstance(cause, transport) and not isinstance(cause, HubError):
            return HubUnavailableError(
                f"cannot reach the Hub at {endpoint}: {cause}",
                hint="check the network (or HF_ENDPOINT) and rerun: stored files are not resent",
            )
    return None


def _http_error(status: int, repo_id: str, namespace: str, cause: Any) -> HubError:
    if status == 401:
        return HubError(
            f"the Hub rejected the token (401) for {repo_id}",
            hint="set HF_TOKEN to a valid token with write access, or run `hf auth login`",
        )
    if status == 403:
        return HubError(
            f"no write permission on {repo_id} (403)",
            hint=f"use a token with write access to '{namespace}' "
            "(fine-grained tokens must list it), or push to your own namespace",
        )
    if status == 404:
        return HubError(
            f"repository {repo_id} not found or not visible to this token (404)",
            hint="check USER/REPO and that the token can see it",
        )
    detail = getattr(cause, "server_message", None) or str(cause).splitlines()[0]
    return HubError(
        f"the Hub answered {status} for {repo_id}: {detail}",
        hint="rerun the push: files already uploaded are not sent again",
    )


@contextlib.contextmanager
def hub_errors(repo_id: str, endpoint: str) -> Iterator[None]:
    """Inside: any huggingface_hub / network failure leaves as one HubError with a hint."""
    try:
        yield
    except HubError:
        raise
    except Exception as err:
        translated = translate_hub_error(err, repo_id, endpoint)
        if translated is None:
            raise
        raise translated from err


__all__ = ["hub_errors", "resolve_token", "translate_hub_error"]
