"""deploy-to-ollama: deploy Unsloth / PEFT fine-tunes to Ollama with a proven chat template."""

from __future__ import annotations

from .errors import DeployError

__version__ = "0.1.0"

__all__ = ["DeployError", "__version__"]
