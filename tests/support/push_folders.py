"""Folders as ``export`` or ``deploy --keep`` leave them, for the tests that push them.

The push tests (to the Hub stand-in ``support.fake_hub``) need the files a real run writes,
not the run itself: tiny random GGUFs, the Modelfile(s) naming them and, for a deploy, its
``deploy-report.json``. The ``push_folder`` fixture writes one such folder under tmp.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import pytest

from deploy_to_ollama.modelfile import Modelfile, render_modelfile
from support.ollama_server import write_tiny_gguf

#: The header a Modelfile gets when its TEMPLATE was verified.
VERIFIED_HEADER = "Written by deploy-to-ollama.\nTemplate verified against transformers' rendering."


class PushFolder(Protocol):
    """Writes ``tmp_path/name`` and returns it (see ``push_folder``)."""

    def __call__(
        self,
        name: str,
        ggufs: Mapping[str, int],
        modelfiles: Mapping[str, Modelfile],
        *,
        report: Mapping[str, Any] | None = None,
    ) -> Path: ...


@pytest.fixture
def push_folder(tmp_path: Path) -> PushFolder:
    """A writer of folders to push: GGUF name → seed, file name → Modelfile, optional report."""

    def write(
        name: str,
        ggufs: Mapping[str, int],
        modelfiles: Mapping[str, Modelfile],
        *,
        report: Mapping[str, Any] | None = None,
    ) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        for gguf, seed in ggufs.items():
            write_tiny_gguf(folder / gguf, seed=seed)
        for file, modelfile in modelfiles.items():
            (folder / file).write_text(render_modelfile(modelfile), encoding="utf-8")
        if report is not None:
            (folder / "deploy-report.json").write_text(json.dumps(report))
        return folder

    return write
