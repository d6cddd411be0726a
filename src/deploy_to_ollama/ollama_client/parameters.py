"""Modelfile ``PARAMETER`` strings → the typed JSON ``/api/create`` stores.

Modelfile values are strings; the API takes JSON numbers, booleans and lists, so the API path
converts them as Ollama's ``api.FormatParams`` does (api/types.go ``Options``).
"""

from __future__ import annotations

from typing import Any

from ..errors import RegistrationError

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


def api_parameters(parameters: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """Turn Modelfile parameter strings into the typed JSON the create API stores.

    Raises:
        RegistrationError: an unknown parameter, or a value of the wrong type.

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


__all__ = [
    "BOOL_PARAMETERS",
    "FLOAT_PARAMETERS",
    "INT_PARAMETERS",
    "LIST_PARAMETERS",
    "api_parameters",
]
