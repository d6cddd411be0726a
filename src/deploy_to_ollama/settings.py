"""Configuration read once from the environment at CLI start (flag > env > default)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

TRUTHY = frozenset({"1", "ON", "YES", "TRUE"})
DEFAULT_OLLAMA_HOST = "http://127.0.0.1:11434"


def is_true(value: str | None) -> bool:
    """Return whether an environment value means "on".

    >>> is_true("yes"), is_true("0"), is_true(None)
    (True, False, False)
    """
    return value is not None and value.strip().upper() in TRUTHY


def normalize_host(host: str | None) -> str:
    """Turn an OLLAMA_HOST value into a base URL, the way the ollama client reads it.

    >>> normalize_host(None)
    'http://127.0.0.1:11434'
    >>> normalize_host("127.0.0.1:5000")
    'http://127.0.0.1:5000'
    >>> normalize_host("https://example.com")
    'https://example.com:443'
    >>> normalize_host("0.0.0.0")
    'http://127.0.0.1:11434'
    """
    if not host:
        return DEFAULT_OLLAMA_HOST
    scheme, _, rest = host.rpartition("://")
    scheme = scheme or "http"
    rest = rest.rstrip("/")
    hostname, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        hostname, port = rest, "443" if scheme == "https" else "11434"
    if hostname in ("", "0.0.0.0"):
        hostname = "127.0.0.1"
    return f"{scheme}://{hostname}:{port}"


def _default_cache_dir(environ: Mapping[str, str]) -> Path:
    xdg = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "deploy-to-ollama"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the environment can configure."""

    cache_dir: Path
    llama_cpp_dir: Path | None
    ollama_host: str
    debug: bool
    log_level: str
    quantizer: str = "auto"
    """``auto``: quantize in-process when the toolchain has the library; ``llama-quantize``:
    always convert to a 16-bit GGUF first and run the llama-quantize binary on it."""
    disk_reserve_bytes: int = 0
    """``DTO_DISK_RESERVE_MB``: free space an export or merge must leave on its filesystem
    (on top of its own estimate); 0 by default."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read our ``DTO_*`` variables (and OLLAMA_HOST) from ``environ``."""
        env = os.environ if environ is None else environ
        cache = env.get("DTO_CACHE_DIR")
        llama = env.get("DTO_LLAMA_CPP_DIR")
        return cls(
            cache_dir=Path(cache).expanduser() if cache else _default_cache_dir(env),
            llama_cpp_dir=Path(llama).expanduser() if llama else None,
            ollama_host=normalize_host(env.get("OLLAMA_HOST")),
            debug=is_true(env.get("DTO_DEBUG")),
            log_level=env.get("DTO_LOG_LEVEL", "WARNING").upper(),
            quantizer=env.get("DTO_QUANTIZER", "auto").strip().lower() or "auto",
            disk_reserve_bytes=_megabytes(env.get("DTO_DISK_RESERVE_MB")),
        )


def _megabytes(value: str | None) -> int:
    """A whole number of MB from the environment, in bytes (0 when unset or not a number).

    >>> _megabytes("2"), _megabytes(None), _megabytes("lots")
    (2000000, 0, 0)
    """
    try:
        return max(0, int((value or "0").strip())) * 1_000_000
    except ValueError:
        return 0
