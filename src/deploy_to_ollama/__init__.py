"""deploy-to-ollama: deploy Unsloth / PEFT fine-tunes to Ollama with a proven chat template.

The public API is re-exported lazily (PEP 562) so that ``import deploy_to_ollama`` and the
CLI start without importing torch, transformers or the heavier stages.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import DeployError

if TYPE_CHECKING:
    from .chat_template.hf_render import render_hf
    from .chat_template.ollama_prompt import render_ollama_prompt
    from .chat_template.source import load_template_source
    from .chat_template.translate import translate_template
    from .chat_template.verify import verify_template
    from .doctor import examine
    from .exporting import ExportOptions, export
    from .gguf.export import export_gguf
    from .inputs import resolve_input
    from .merge import iter_merged_tensors, save_merged
    from .modelfile import Modelfile, parse_modelfile, render_modelfile
    from .pipeline import deploy
    from .publish import push_to_hub
    from .registrar import register_model
    from .roundtrip import check_round_trip

from ._version import __version__

# name -> submodule that owns it; imported on first attribute access.
_LAZY: dict[str, str] = {
    "deploy": ".pipeline",
    "export_gguf": ".gguf.export",
    "export": ".exporting",
    "ExportOptions": ".exporting",
    "translate_template": ".chat_template.translate",
    "verify_template": ".chat_template.verify",
    "load_template_source": ".chat_template.source",
    "render_hf": ".chat_template.hf_render",
    "render_ollama_prompt": ".chat_template.ollama_prompt",
    "parse_modelfile": ".modelfile",
    "render_modelfile": ".modelfile",
    "Modelfile": ".modelfile",
    "register_model": ".registrar",
    "check_round_trip": ".roundtrip",
    "resolve_input": ".inputs",
    "iter_merged_tensors": ".merge",
    "save_merged": ".merge",
    "push_to_hub": ".publish",
    "examine": ".doctor",
}

__all__ = [
    "DeployError",
    "ExportOptions",
    "Modelfile",
    "__version__",
    "check_round_trip",
    "deploy",
    "examine",
    "export",
    "export_gguf",
    "iter_merged_tensors",
    "load_template_source",
    "parse_modelfile",
    "push_to_hub",
    "register_model",
    "render_hf",
    "render_modelfile",
    "render_ollama_prompt",
    "resolve_input",
    "save_merged",
    "translate_template",
    "verify_template",
]


def __getattr__(name: str) -> object:
    """Import the owning submodule on first use, keeping package import (and the CLI) fast."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """List the lazy names too, so tab completion and ``dir()`` show the public API."""
    return sorted(set(globals()) | set(_LAZY))
