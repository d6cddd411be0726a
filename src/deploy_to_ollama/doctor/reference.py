"""The template the model was trained with: ``--source``'s tokenizer, else the GGUF's Jinja.

The doctor compares Ollama's TEMPLATE against this reference; it says which one it used and
warns when the two disagree (a fine-tune whose GGUF carries the base model's template).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from ..chat_template.source import TemplateSource
from ..errors import DeployError, TemplateError
from ..modelfile import GENERATION_PARAMETERS
from .targets import Target

logger = logging.getLogger(__name__)

ReferenceOrigin = Literal["source", "gguf", "hf_target"]

#: Sampling keys of generation_config.json that Ollama has parameters for.
SAMPLING_KEYS = tuple(key for key, _ in GENERATION_PARAMETERS)


@dataclass(frozen=True, slots=True)
class ReferenceTemplate:
    """The Jinja chat template and tokens the fine-tune was trained with."""

    template: str
    origin: ReferenceOrigin
    location: str
    bos_token: str | None
    eos_token: str | None
    stop_tokens: tuple[str, ...]
    """End-of-generation token texts (eos, eot, generation_config eos ids)."""
    add_bos: bool | None
    variables: tuple[tuple[str, str], ...] = ()
    generation_config: tuple[tuple[str, float], ...] = ()
    """Sampling values of generation_config.json (empty when unknown)."""
    source: TemplateSource | None = None
    """B's loaded source, which the translator takes for ``--fix``."""

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        kwargs: Mapping[str, Any] | None = None,
    ) -> str:
        """Render like ``apply_chat_template(tokenize=False)``.

        Raises:
            TemplateError: the template raised for this conversation.
        """
        from ..chat_template.hf_render import render_hf

        return render_hf(
            self.template,
            messages,
            tokens=dict(self.variables),
            tools=tools,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=False,
            kwargs=kwargs,
        )

    @property
    def mentions_tools(self) -> bool:
        """The Jinja template reads ``tools`` (so the fine-tune can call them)."""
        return "tools" in self.template


@dataclass(frozen=True, slots=True)
class ReferenceChoice:
    """The chosen reference and any disagreement worth a warning."""

    reference: ReferenceTemplate | None
    note: str
    """Which template was used and why (or why none)."""
    disagreement: str | None = None
    """Set when --source and the GGUF carry different templates."""


def _load_source(path: Path) -> TemplateSource:
    """The template the stages used for ``path``: an adapter's own, else its base's."""
    from ..chat_template.source import load_template_source, template_source_for
    from ..errors import TemplateNotFoundError
    from ..inputs import resolve_input, source_kind

    try:
        return load_template_source(path)
    except TemplateNotFoundError as missing:
        if not path.is_dir() or source_kind(path) != "adapter":
            raise
        try:
            return template_source_for(resolve_input(path))
        except DeployError as err:  # base not found, or it has no template either
            logger.info("no base template for %s: %s", path, err)
            raise missing from err


def _from_source_path(path: Path, origin: ReferenceOrigin) -> ReferenceTemplate:
    src = _load_source(path)
    variables = dict(src.special_tokens)
    if src.bos_token is not None:
        variables["bos_token"] = src.bos_token
    if src.eos_token is not None:
        variables["eos_token"] = src.eos_token
    folder = path if path.is_dir() else None
    return ReferenceTemplate(
        template=src.template,
        origin=origin,
        location=str(path),
        bos_token=src.bos_token,
        eos_token=src.eos_token,
        stop_tokens=tuple(src.stop_tokens),
        add_bos=src.add_bos_token,
        variables=tuple(sorted(variables.items())),
        generation_config=read_generation_config(folder) if folder else (),
        source=src,
    )


def _from_gguf_info(target: Target) -> ReferenceTemplate | None:
    info = target.gguf
    if info is None or not info.chat_template:
        return None
    variables = {k: v for k, v in (("bos_token", info.bos_token), ("eos_token", info.eos_token))}
    return ReferenceTemplate(
        template=info.chat_template,
        origin="gguf",
        location=f"tokenizer.chat_template of {target.label}",
        bos_token=info.bos_token,
        eos_token=info.eos_token,
        stop_tokens=info.eog_tokens,
        add_bos=info.add_bos,
        variables=tuple(sorted((k, v) for k, v in variables.items() if v is not None)),
        source=TemplateSource(
            template=info.chat_template,
            origin=Path(target.weights or target.label),
            kind="gguf",
            bos_token=info.bos_token,
            eos_token=info.eos_token,
            stop_tokens=info.eog_tokens,
            add_bos_token=info.add_bos,
            added_tokens=tuple(t for t in (info.bos_token, *info.eog_tokens) if t),
        ),
    )


def read_generation_config(folder: Path) -> tuple[tuple[str, float], ...]:
    """Sampling values from ``generation_config.json`` (only the keys Ollama can set)."""
    path = folder / "generation_config.json"
    if not path.is_file():
        return ()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ()
    if not isinstance(data, dict):
        return ()
    return tuple(
        (key, float(data[key]))
        for key in SAMPLING_KEYS
        if isinstance(data.get(key), int | float) and not isinstance(data.get(key), bool)
    )


def choose_reference(target: Target, source: Path | None) -> ReferenceChoice:
    """Pick the reference template: ``--source`` first, then the target's own HF folder, then
    the GGUF's embedded Jinja.

    Raises:
        TemplateError: ``--source`` was given but holds no usable chat template.
    """
    gguf_ref = _from_gguf_info(target)
    chosen: ReferenceTemplate | None = None
    if source is not None:
        chosen = _from_source_path(source, "source")
        note = f"reference: the chat template of --source {source}"
    elif target.hf_dir is not None:
        try:
            chosen = _from_source_path(target.hf_dir, "hf_target")
            note = f"reference: the chat template of {target.hf_dir}"
        except TemplateError as err:
            logger.info("no template in %s: %s", target.hf_dir, err)
    if chosen is None:
        if gguf_ref is None:
            return ReferenceChoice(
                None,
                "no reference template: the GGUF embeds none and no --source was given; "
                "only checks that need no reference ran",
            )
        return ReferenceChoice(gguf_ref, "reference: the Jinja template embedded in the GGUF")
    if chosen.origin != "gguf" and gguf_ref is not None:
        # Fill tokens the tokenizer folder left implicit from the GGUF (add_bos, eog ids).
        if chosen.add_bos is None:
            chosen = replace(chosen, add_bos=gguf_ref.add_bos)
        if gguf_ref.template.strip() != chosen.template.strip():
            return ReferenceChoice(
                chosen,
                note,
                "the GGUF embeds a different chat template than --source: it was exported from "
                "another tokenizer (often the base model's)",
            )
    return ReferenceChoice(chosen, note)


__all__ = [
    "ReferenceChoice",
    "ReferenceTemplate",
    "choose_reference",
    "read_generation_config",
]
