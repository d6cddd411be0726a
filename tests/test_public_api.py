"""Public API is re-exported lazily; importing the CLI stays free of torch and transformers."""

from __future__ import annotations

import subprocess
import sys

import pytest

import deploy_to_ollama

HEAVY = ("torch", "transformers", "peft", "unsloth")


def test_cli_import_does_not_load_heavy_modules() -> None:
    code = (
        "import sys, deploy_to_ollama, deploy_to_ollama.cli\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == ""


def test_every_name_in_all_resolves() -> None:
    assert "deploy" in deploy_to_ollama.__all__
    for name in deploy_to_ollama.__all__:
        assert getattr(deploy_to_ollama, name) is not None, name
        assert name in dir(deploy_to_ollama)


def test_lazy_names_are_the_owning_modules_objects() -> None:
    from deploy_to_ollama.chat_template.translate import translate_template
    from deploy_to_ollama.modelfile import Modelfile

    assert deploy_to_ollama.translate_template is translate_template
    assert deploy_to_ollama.Modelfile is Modelfile


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        deploy_to_ollama.no_such_name  # noqa: B018
