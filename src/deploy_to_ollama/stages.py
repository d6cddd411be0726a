"""The stages ``deploy`` and ``export`` share after the GGUF: the chat template translated for
Ollama, and the Modelfile assembled from it, so both commands write the same file.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from .errors import ModelfileError, TemplateNotFoundError, UsageError
from .modelfile import (
    Modelfile,
    TemplateResult,
    assemble_modelfile,
    header_comment,
    model_parameters,
    render_modelfile,
)

logger = logging.getLogger(__name__)

MODELFILE_NAME = "Modelfile"


def translate_stage(
    source: Path, base_dir: Path | None, *, server_version: str | None = None
) -> TemplateResult:
    """Ollama TEMPLATE, stops and SYSTEM translated from the fine-tune's chat template.

    An adapter folder normally carries the tokenizer (Unsloth and PEFT save it there); when it
    does not, the base model's chat template is the one the fine-tune was trained with.
    ``server_version``: verify with that Ollama release's prompt building (None: the newest).

    Raises:
        TemplateError: no chat template, or it does not parse or translate.
    """
    from .capabilities import capability_warnings
    from .chat_template import load_template_source, translate_template
    from .chat_template.think_generations import thinking_note

    try:
        template_source = load_template_source(source)
    except TemplateNotFoundError:
        if base_dir is None:
            raise
        template_source = load_template_source(base_dir)
    translated = translate_template(template_source, server_version=server_version)
    failure = translated.report.first_failure()
    note = f"probe {failure.probe} differs at {failure.position}" if failure else None
    return TemplateResult(
        template=translated.template,
        stops=tuple(translated.stop),
        system=translated.system,
        verified=translated.verified,
        note=note or "; ".join(translated.warnings) or None,
        capabilities_lost=tuple(capability_warnings(template_source.template, translated.template)),
        differs=tuple(p.probe for p in translated.report.probes if p.status == "differs"),
        thinking_holds_for=translated.report.thinking_holds_for,
        thinking_note=thinking_note(
            translated.report.thinking_holds_for,
            default_off=translated.report.thinking_default_off,
        ),
    )


def build_modelfile(
    *,
    from_: str,
    source: Path,
    template: TemplateResult | None,
    base_dir: Path | None = None,
    adapters: Sequence[str] = (),
    extra: Sequence[tuple[str, str]] = (),
) -> Modelfile:
    """The Modelfile ``deploy`` registers and ``export`` writes for ``source``.

    Sampling parameters come from the fine-tune's (else its base's) generation_config.json,
    ``num_ctx`` from its training length, the user's ``extra`` parameters win.
    """
    params = model_parameters(source, base_dir) if source.is_dir() else ()
    return assemble_modelfile(
        from_=from_,
        adapters=adapters,
        template=template,
        model_params=params,
        extra=extra,
        header=header_comment(source.name, verified=template.verified if template else None),
    )


def check_parameters(parameters: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Refuse ``-p KEY=VALUE`` pairs Ollama would refuse, before any heavy work.

    Checks that the name is an Ollama option, that the value has its type, and that a
    Modelfile can carry both.

    Raises:
        UsageError: the first bad pair, with what would work.
    """
    from .ollama_client.parameters import (
        BOOL_PARAMETERS,
        FLOAT_PARAMETERS,
        INT_PARAMETERS,
        LIST_PARAMETERS,
    )

    known = INT_PARAMETERS | FLOAT_PARAMETERS | BOOL_PARAMETERS | LIST_PARAMETERS
    for name, value in parameters:
        if name not in known:
            raise UsageError(
                f"-p {name}={value}: unknown Ollama parameter {name!r}",
                hint="use one of " + ", ".join(sorted(known)),
            )
        problem = _type_problem(name, value, INT_PARAMETERS, FLOAT_PARAMETERS, BOOL_PARAMETERS)
        if problem:
            raise UsageError(f"-p {name}={value}: {problem}", hint=f"e.g. -p {_example(name)}")
    try:
        render_modelfile(Modelfile(from_="model.gguf", parameters=tuple(parameters)))
    except ModelfileError as err:
        raise UsageError(f"-p: {err.message}", hint=err.hint) from err
    return tuple(parameters)


def _type_problem(
    name: str,
    value: str,
    ints: frozenset[str],
    floats: frozenset[str],
    bools: frozenset[str],
) -> str | None:
    """What Ollama's ``api.FormatParams`` would say about ``value``, or None.

    >>> _type_problem("num_ctx", "2k", frozenset({"num_ctx"}), frozenset(), frozenset())
    'num_ctx takes a whole number'
    """
    try:
        if name in ints:
            int(value)
        elif name in floats:
            float(value)
    except ValueError:
        return f"{name} takes {'a whole number' if name in ints else 'a number'}"
    if name in bools and value.strip().lower() not in {"true", "false", "1", "0"}:
        return f"{name} takes true or false"
    return None


def _example(name: str) -> str:
    from .ollama_client.parameters import BOOL_PARAMETERS, INT_PARAMETERS

    if name in INT_PARAMETERS:
        return f"{name}=4"
    if name in BOOL_PARAMETERS:
        return f"{name}=true"
    return f"{name}=0.7"


__all__ = ["MODELFILE_NAME", "build_modelfile", "check_parameters", "translate_stage"]
