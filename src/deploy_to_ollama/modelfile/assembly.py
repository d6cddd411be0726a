"""Modelfile assembly: what deploy, export and ``doctor --fix`` put into a Modelfile.

One place decides the commands (FROM, ADAPTER, TEMPLATE, SYSTEM, stops, sampling from
``generation_config.json``, ``num_ctx`` from the training length, user ``PARAMETER`` lines,
the header comment), so every command writes the same file for the same input. How values are
quoted is ``syntax``'s business.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .._fs import read_json_object
from .._version import __version__
from ..errors import ModelfileError
from .syntax import Modelfile

#: generation_config.json key -> Ollama PARAMETER name, in the order they are written.
GENERATION_PARAMETERS: tuple[tuple[str, str], ...] = (
    ("temperature", "temperature"),
    ("top_p", "top_p"),
    ("top_k", "top_k"),
    ("min_p", "min_p"),
    ("repetition_penalty", "repeat_penalty"),
)
#: The Ollama parameters ``generation_config.json`` can set (what ``doctor --fix`` rewrites).
SAMPLING_PARAMETERS = frozenset(name for _, name in GENERATION_PARAMETERS)
#: tokenizer_config ``model_max_length`` above this is transformers' "unset" sentinel, not a
#: training length (Unsloth writes the real ``max_seq_length`` there).
MAX_SENSIBLE_CONTEXT = 1 << 20


@dataclass(frozen=True, slots=True)
class TemplateResult:
    """What the template stage produced for the Modelfile."""

    template: str
    stops: tuple[str, ...]
    system: str | None
    verified: bool
    note: str | None = None
    capabilities_lost: tuple[str, ...] = ()
    """``capabilities_lost: …`` lines: what Ollama derives from the Jinja but not the TEMPLATE."""
    differs: tuple[str, ...] = ()
    """The probes whose prompt differs from transformers' (the go route's proof)."""
    thinking_holds_for: tuple[str, ...] = ()
    """The Ollama generations where the TEMPLATE's thinking is verified (empty: it is not)."""
    thinking_note: str | None = None
    """Where the thinking claim does not hold on every generation, the one line that says so."""


def format_number(value: float | int) -> str:
    """Write a number the way Go's ``strconv.ParseFloat``/``Atoi`` reads it back.

    >>> format_number(0.7), format_number(40), format_number(1.0), format_number(1e-05)
    ('0.7', '40', '1', '1e-05')
    """
    if isinstance(value, bool):
        raise ModelfileError(f"expected a number, got {value!r}", hint="check generation_config")
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    if not math.isfinite(value):
        raise ModelfileError(f"expected a finite number, got {value!r}", hint="fix the value")
    return repr(float(value))


def parameters_from_generation_config(config: Mapping[str, object]) -> tuple[tuple[str, str], ...]:
    """Map a ``generation_config.json`` to Ollama sampling parameters.

    Only keys present in the file are written, so Ollama's defaults stay in force for the rest.
    ``do_sample: false`` means greedy decoding in transformers, so it becomes ``temperature 0``.

    Args:
        config: the parsed ``generation_config.json``.

    Returns:
        ``(name, value)`` pairs in a stable order.

    >>> parameters_from_generation_config({"temperature": 0.6, "repetition_penalty": 1.1})
    (('temperature', '0.6'), ('repeat_penalty', '1.1'))
    >>> parameters_from_generation_config({"do_sample": False, "temperature": 0.6, "top_k": 20})
    (('temperature', '0'), ('top_k', '20'))
    """
    greedy = config.get("do_sample") is False
    out: list[tuple[str, str]] = []
    for key, name in GENERATION_PARAMETERS:
        if greedy and key == "temperature":
            out.append((name, "0"))
            continue
        value = config.get(key)
        if value is None:
            continue
        if not isinstance(value, int | float):
            raise ModelfileError(
                f"generation_config {key} is {value!r}, not a number",
                hint="fix generation_config.json",
            )
        out.append((name, format_number(value)))
    return tuple(out)


def num_ctx_parameter(max_length: int) -> tuple[str, str]:
    """The ``num_ctx`` parameter for a fine-tune trained up to ``max_length`` tokens.

    >>> num_ctx_parameter(2048)
    ('num_ctx', '2048')
    """
    if max_length <= 0:
        raise ModelfileError(
            f"context length must be positive, got {max_length}", hint="pass the training length"
        )
    return ("num_ctx", str(int(max_length)))


def stop_parameters(stops: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """One ``stop`` parameter per distinct stop string, in order.

    >>> stop_parameters(["<|im_end|>", "<|endoftext|>", "<|im_end|>"])
    (('stop', '<|im_end|>'), ('stop', '<|endoftext|>'))
    """
    return tuple(("stop", stop) for stop in dict.fromkeys(s for s in stops if s))


def model_parameters(folder: Path, base_dir: Path | None) -> tuple[tuple[str, str], ...]:
    """Sampling parameters from generation_config.json and num_ctx from the training length.

    The fine-tune's own ``generation_config.json`` wins; an adapter without one uses its base's.
    """
    params: list[tuple[str, str]] = []
    for candidate in (folder, base_dir):
        if candidate is not None and (candidate / "generation_config.json").is_file():
            config = read_json_object(candidate / "generation_config.json")
            params += parameters_from_generation_config(config)
            break
    max_length = read_json_object(folder / "tokenizer_config.json").get("model_max_length")
    if isinstance(max_length, int | float) and 0 < max_length <= MAX_SENSIBLE_CONTEXT:
        params.append(num_ctx_parameter(int(max_length)))
    return tuple(params)


def header_comment(source_name: str, *, verified: bool | None, by: str = "") -> str:
    """The comment block on top of every Modelfile we write (Ollama ignores it).

    >>> header_comment("lora", verified=False).splitlines()[1]
    "Template NOT verified against transformers' rendering."
    """
    tool = f"deploy-to-ollama {__version__}{f' {by}' if by else ''}"
    lines = [f"Written by {tool} from {source_name}."]
    if verified is not None:
        word = "verified" if verified else "NOT verified"
        lines.append(f"Template {word} against transformers' rendering.")
    return "\n".join(lines)


def assemble_modelfile(
    *,
    from_: str,
    adapters: Sequence[str] = (),
    template: TemplateResult | None,
    model_params: Sequence[tuple[str, str]] = (),
    extra: Sequence[tuple[str, str]] = (),
    header: str | None = None,
    system: str | None = None,
) -> Modelfile:
    """The one Modelfile layout: stops, then the model's parameters, then the user's.

    A user parameter (``-p``) replaces the model's value of that name; stops always add up.

    Args:
        from_: the FROM value (``./name.gguf`` beside the Modelfile, or a path / model name).
        adapters: ADAPTER values.
        template: the translated TEMPLATE, stops and SYSTEM (None: no template was found).
        model_params: parameters read from the model (``model_parameters``).
        extra: the user's parameters, which win.
        header: the header comment (``header_comment``).
        system: a SYSTEM that overrides the template's (``doctor --fix`` keeps a user's own).

    Returns:
        The Modelfile (render it with ``render_modelfile``).
    """
    params = list(stop_parameters(template.stops if template else ()))
    overridden = {k for k, _ in extra}
    params += [(k, v) for k, v in model_params if k not in overridden or k == "stop"]
    params += list(extra)
    return Modelfile(
        from_=from_,
        adapters=tuple(adapters),
        template=template.template if template else None,
        system=system if system is not None else (template.system if template else None),
        parameters=tuple(params),
        header_comment=header,
    )


def relative_from(path: Path, folder: Path) -> str:
    """``./name`` for a file under the Modelfile's folder (Ollama resolves it from there),
    the absolute path otherwise.

    >>> relative_from(Path("/w/m.gguf"), Path("/w")), relative_from(Path("/x/m.gguf"), Path("/w"))
    ('./m.gguf', '/x/m.gguf')
    """
    try:
        return f"./{path.relative_to(folder).as_posix()}"
    except ValueError:
        return str(path)


__all__ = [
    "GENERATION_PARAMETERS",
    "MAX_SENSIBLE_CONTEXT",
    "SAMPLING_PARAMETERS",
    "TemplateResult",
    "assemble_modelfile",
    "format_number",
    "header_comment",
    "model_parameters",
    "num_ctx_parameter",
    "parameters_from_generation_config",
    "relative_from",
    "stop_parameters",
]
