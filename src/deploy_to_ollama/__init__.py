"""deploy-to-ollama: deploy Unsloth / PEFT fine-tunes to Ollama with a proven chat template."""

from __future__ import annotations

from .errors import DeployError

__version__ = "0.1.0"

__all__ = ["DeployError", "__version__", "deploy"]


def __getattr__(name: str) -> object:
    """``deploy_to_ollama.deploy`` without importing the pipeline at package import (fast CLI)."""
    if name == "deploy":
        from .pipeline import deploy

        return deploy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
