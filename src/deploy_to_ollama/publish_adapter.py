"""The adapter route's files for a Hub push: GGUF LoRA, base GGUF and a portable Modelfile.

``deploy --mode adapter`` keeps ``Modelfile`` (``FROM <base model>`` + ``ADAPTER``) and
``Modelfile.base`` (``FROM ./<base>.gguf``) beside the GGUFs; ``export --mode adapter`` keeps one
``Modelfile`` with ``FROM ./<base>.gguf`` + ``ADAPTER``. On the Hub the Modelfile must name
files of the repository, so the base model's name is replaced by its GGUF when the folder has it.
Ollama's Hub integration (``ollama run hf.co/USER/REPO:QUANT``) serves one GGUF with the
``template``/``system``/``params`` files and no ADAPTER layer (huggingface.co/docs/hub/ollama),
so it runs the base there, never the fine-tune.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from .adapter_deploy import BASE_MODELFILE_NAME as BASE_MODELFILE
from .modelfile import Modelfile, parse_modelfile, render_modelfile


@dataclass(frozen=True, slots=True)
class AdapterRoute:
    """A folder's adapter-route files, as the Hub repository will hold them."""

    modelfile: Modelfile
    """The Modelfile to upload: FROM the base GGUF of the folder when it has one."""
    loras: tuple[Path, ...]
    base_gguf: Path | None
    """None when the base is an Ollama model the folder does not hold (``--base-model``)."""

    @property
    def files(self) -> list[Path]:
        """The folder's files this route uploads (the Modelfile is generated)."""
        return [*([self.base_gguf] if self.base_gguf else []), *self.loras]

    @property
    def base_model_name(self) -> str | None:
        """The Ollama model ``FROM`` names when the base GGUF is not in the repository."""
        return None if self.base_gguf else self.modelfile.from_

    def modelfile_text(self) -> str:
        return render_modelfile(self.modelfile)


def find_adapter_route(folder: Path) -> AdapterRoute | None:
    """The adapter route in ``folder``: a Modelfile whose ADAPTER files lie beside it, or None."""
    path = folder / "Modelfile"
    if not path.is_file():
        return None
    modelfile = parse_modelfile(path.read_text(encoding="utf-8"))
    loras = tuple(_local(folder, a) for a in modelfile.adapters)
    if not loras or not all(p is not None and p.is_file() for p in loras):
        return None
    base = _local(folder, modelfile.from_)
    if (base is None or not base.is_file()) and (folder / BASE_MODELFILE).is_file():
        base_file = parse_modelfile((folder / BASE_MODELFILE).read_text(encoding="utf-8"))
        base = _local(folder, base_file.from_)
    if base is not None and base.is_file():
        modelfile = replace(modelfile, from_=f"./{base.name}")
    else:
        base = None
    adapters = tuple(f"./{p.name}" for p in loras if p is not None)
    modelfile = replace(modelfile, adapters=adapters)
    return AdapterRoute(modelfile, tuple(p for p in loras if p is not None), base)


def _local(folder: Path, value: str) -> Path | None:
    """The file of ``folder`` a FROM/ADAPTER value names (``./x.gguf``), else None."""
    if not value.startswith("./") or "/" in value[2:]:
        return None
    return folder / value[2:]


__all__ = ["BASE_MODELFILE", "AdapterRoute", "find_adapter_route"]
