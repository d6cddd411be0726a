"""Locate the data files shipped with the package (the top-level ``templates/`` folder)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import jinja2


def templates_dir() -> Path:
    """Return the ``templates/`` folder: packaged in a wheel, at the repo root when editable."""
    packaged = Path(str(resources.files("deploy_to_ollama"))) / "templates"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "templates"


def template_environment() -> jinja2.Environment:
    """A strict Jinja environment over ``templates/`` (Modelfile and model card renderers).

    StrictUndefined so a missing field fails instead of leaving a hole in a shipped file.
    """
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
