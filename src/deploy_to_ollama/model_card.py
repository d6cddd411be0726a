"""Model card (the Hub's README.md) for a pushed GGUF, merged model or adapter.

Rendered from ``templates/model_card.md.j2``; states only facts we hold: files with sizes, the
Ollama TEMPLATE with its verification status, and the commands that run the model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import jinja2

from ._resources import template_environment
from .adapter_gate import ADAPTER_CREATE_REFUSED_FROM

PushKind = Literal["gguf", "merged", "adapter"]

#: ``org/name`` as the Hub spells repo ids: the only base_model form its metadata accepts.
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_LIBRARY = {"gguf": "gguf", "merged": "transformers", "adapter": "peft"}


@dataclass(frozen=True, slots=True)
class CardFile:
    """One uploaded file, as the card's table lists it."""

    path: str
    size_bytes: int
    quant: str | None = None
    """Upper-case quant tag for a GGUF (``Q8_0``), the tag ``ollama run hf.co/…:TAG`` takes."""


@dataclass(frozen=True, slots=True)
class ModelCardData:
    """Everything the card shows."""

    repo_id: str
    what: PushKind
    files: tuple[CardFile, ...]
    base_model: str | None = None
    template: str | None = None
    """The Ollama Go TEMPLATE of the Modelfile (GGUF pushes)."""
    system: str | None = None
    parameters: Mapping[str, object] = field(default_factory=dict)
    template_verified: bool | None = None
    """True: matches transformers' rendering; False: checked and different; None: unknown."""
    license: str | None = None
    modelfile_from: str | None = None
    """The GGUF the pushed Modelfile's ``FROM`` names (for the ``ollama create`` recipe)."""
    adapter_files: tuple[str, ...] = ()
    """GGUF LoRA files the Modelfile's ``ADAPTER`` lines name (not runnable on their own)."""
    proof: str | None = None
    """Markdown summary of the pushed ``deploy-report.json`` (``summary_markdown``)."""
    base_ollama_model: str | None = None
    """Adapter pushes whose base GGUF is not in the repository: the Ollama model FROM names."""
    quality: str | None = None
    """Markdown table of ``export --measure`` (``measuring.quality_markdown``)."""
    imatrix: tuple[str, ...] = ()
    """One line per pushed GGUF quantized with an importance matrix (read from its header)."""


def format_size(size: int) -> str:
    """Human file size with binary units.

    >>> format_size(512), format_size(1536), format_size(3 * 1024**3)
    ('512 B', '1.5 KiB', '3.00 GiB')
    """
    if size < 1024:
        return f"{size} B"
    if size < 1024**2:
        return f"{size / 1024:.1f} KiB"
    if size < 1024**3:
        return f"{size / 1024**2:.1f} MiB"
    return f"{size / 1024**3:.2f} GiB"


def code_fence(text: str) -> str:
    """A backtick fence longer than any backtick run inside ``text`` (CommonMark rule).

    >>> code_fence("plain"), code_fence("has ``` inside")
    ('```', '````')
    """
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def quant_use(quant: str | None) -> str:
    """What a quant level is for (from the exporter's table), or empty when unknown."""
    if not quant:
        return ""
    try:
        from .gguf.quants import QUANT_TYPES
    except ImportError:  # the exporter is optional for publishing
        return ""
    known = QUANT_TYPES.get(quant.lower())
    return known.use if known else ""


def hub_base_model(value: str | None) -> str | None:
    """``value`` when it is a Hub repo id (a local path is no valid ``base_model``).

    >>> hub_base_model("unsloth/Llama-3.2-1B"), hub_base_model("/models/base")
    ('unsloth/Llama-3.2-1B', None)
    """
    if value and _REPO_ID_RE.match(value) and not value.startswith((".", "/")):
        return value
    return None


def _yaml_front_matter(data: ModelCardData) -> str:
    # JSON strings are valid YAML scalars, so any value survives quoting.
    lines = ["---"]
    base = hub_base_model(data.base_model)
    if base:
        lines.append(f"base_model: {json.dumps(base)}")
    lines.append(f"library_name: {_LIBRARY[data.what]}")
    if data.license:
        lines.append(f"license: {json.dumps(data.license)}")
    tags = ["deploy-to-ollama", "ollama"] if data.what == "gguf" else ["deploy-to-ollama"]
    tags += {"gguf": ["gguf"], "merged": ["merged"], "adapter": ["peft", "lora"]}[data.what]
    lines.append("tags:")
    lines += [f"- {tag}" for tag in tags]
    lines.append("---")
    return "\n".join(lines)


def _environment() -> jinja2.Environment:
    env = template_environment()
    env.filters["size"] = format_size
    env.filters["fence"] = code_fence
    env.filters["quant_use"] = quant_use
    return env


def render_model_card(data: ModelCardData) -> str:
    """Render the README.md for ``data``.

    Args:
        data: what was pushed and what we know about it.

    Returns:
        Markdown with YAML metadata, ready to upload as ``README.md``.
    """
    ggufs = [f for f in data.files if f.quant]
    default = next((f for f in ggufs if f.quant == "Q4_K_M"), ggufs[0] if ggufs else None)
    return (
        _environment()
        .get_template("model_card.md.j2")
        .render(
            front_matter=_yaml_front_matter(data),
            card=data,
            name=data.repo_id.rpartition("/")[2],
            base_model=data.base_model,
            base_link=hub_base_model(data.base_model),
            ggufs=ggufs,
            default_gguf=default,
            modelfile_from=data.modelfile_from,
            params_json=json.dumps(dict(data.parameters), indent=2, ensure_ascii=False),
            adapter_refused_from=".".join(map(str, ADAPTER_CREATE_REFUSED_FROM)),
        )
    )
