"""Whether a deploy can take the adapter route: an adapter a GGUF LoRA can carry, and a server
that still registers ``FROM base`` + ``ADAPTER``.

Why one module: both are checked before any export, and both turn ``--mode auto`` into a merged
deploy with the reason as a warning, and ``--mode adapter`` into one line with the fix.

On the server side, a third-party report (generative-computing/mellea#1651, 2026-09-18) says
Ollama v0.34.1 stopped creating models with ``ADAPTER`` (ollama/ollama#14969, merged
2026-09-15): ``ollama create`` refuses such a Modelfile; models built before keep serving. The
newest ollama/ollama source readable here (main of 2026-08-21, tags up to v0.33.0-rc2) still
parses ``ADAPTER`` (``parser/parser.go``) and turns it into adapter layers
(``server/create.go``), so the change is after it and cannot be read; the test server is 0.9.3.
Until a newer Ollama can be run, ``--mode adapter`` refuses a server from that version on rather
than half-register a fine-tune (base created, adapter refused), and ``--mode auto`` deploys
merged.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .errors import AdapterRouteUnavailableError
from .ollama_client import parse_version

logger = logging.getLogger(__name__)

#: The first Ollama release reported to refuse ``ADAPTER`` in ``ollama create``.
ADAPTER_CREATE_REFUSED_FROM = (0, 34, 1)
_FROM_TEXT = ".".join(map(str, ADAPTER_CREATE_REFUSED_FROM))


def adapter_refusal(version: str, host: str) -> str | None:
    """Why the Ollama ``version`` at ``host`` cannot take the adapter route, or None.

    A version that does not parse (a source build says ``0.0.0``) is let through: the server
    then answers for itself.

    >>> adapter_refusal("0.9.3", "h") is None, adapter_refusal("0.34.0", "h") is None
    (True, True)
    >>> adapter_refusal("0.34.1", "http://h:1")
    'Ollama 0.34.1 on http://h:1 no longer creates models with ADAPTER (from 0.34.1)'
    >>> adapter_refusal("0.35.0-rc1", "h") is not None
    True
    """
    if parse_version(version) < ADAPTER_CREATE_REFUSED_FROM:
        return None
    return f"Ollama {version} on {host} no longer creates models with ADAPTER (from {_FROM_TEXT})"


def gate_adapter_route(mode: str, version: str, host: str) -> str:
    """``--mode auto``'s reason to deploy merged on this server, or "" for the adapter route.

    Raises:
        AdapterRouteUnavailableError: ``--mode adapter`` on a server from 0.34.1 on.

    >>> gate_adapter_route("adapter", "0.9.3", "h")
    ''
    >>> gate_adapter_route("auto", "0.34.1", "h").endswith("merged instead (--mode auto)")
    True
    """
    why = adapter_refusal(version, host)
    if why is None:
        return ""
    if mode == "auto":
        logger.warning("%s; deploying merged instead (--mode auto)", why)
        return f"{why}; deployed merged instead (--mode auto)"
    raise AdapterRouteUnavailableError(
        why,
        hint=f"pass --mode auto (or merged) to deploy it merged, or use an Ollama "
        f"before {_FROM_TEXT} for the adapter route",
    )


#: Adapter tensor name parts llama.cpp's ``convert_lora_to_gguf.py`` (``get_tensors``) takes:
#: LoRA A/B factors, and the norms mergekit-extract-lora adds; it exits on anything else.
_CONVERTIBLE_PARTS = (".lora_A.", ".lora_B.", ".lora_embedding_A", ".lora_embedding_B")
_KEPT_PARTS = (".base_layer.weight", "_layernorm", ".norm")


def not_convertible(source: Path) -> str | None:
    """Why ``source`` cannot be a GGUF LoRA (full embedding / lm_head weights, DoRA
    magnitudes: what llama.cpp's LoRA converter refuses), or None.
    """
    from .gguf.adapter import scale_problem
    from .peft_keys import ADAPTER_WEIGHTS
    from .safetensors_io import read_safetensors_header

    problem = scale_problem(source)
    if problem:
        return f"the adapter {problem}"
    path = source / ADAPTER_WEIGHTS
    if not path.is_file():
        return None
    refused = [
        key
        for key in read_safetensors_header(path)
        if not any(part in key for part in (*_CONVERTIBLE_PARTS, *_KEPT_PARTS))
    ]
    if not refused:
        return None
    more = f" and {len(refused) - 1} more" if len(refused) > 1 else ""
    what = "DoRA magnitudes" if "lora_magnitude_vector" in refused[0] else "full weights"
    return (
        f"the adapter carries {what} ({refused[0]}{more}), which llama.cpp's LoRA converter refuses"
    )
