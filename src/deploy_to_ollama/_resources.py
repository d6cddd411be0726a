"""Locate the data files shipped with the package (the top-level ``templates/`` folder)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def templates_dir() -> Path:
    """Return the ``templates/`` folder: packaged in a wheel, at the repo root when editable."""
    packaged = Path(str(resources.files("deploy_to_ollama"))) / "templates"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "templates"
