"""Access to the read-only ``../shared`` folder beside the checkout (skip when absent)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DIR = REPO_ROOT.parent / "shared"
CHAT_TEMPLATES_DIR = SHARED_DIR / "chat_templates"
PROBES_FILE = SHARED_DIR / "probes" / "conversations.json"


def record_source(record: dict[str, Any]) -> Any:
    """A corpus record as a ``TemplateSource``; records without BOS/EOS get ``<s>``/``</s>``,
    as every real GGUF has some."""
    from deploy_to_ollama.chat_template.source import TemplateSource

    return TemplateSource(
        template=record["jinja"],
        origin=Path(record["_file"]),
        kind="jinja",
        bos_token=record.get("bos_token") or "<s>",
        eos_token=record.get("eos_token") or "</s>",
    )


def require_shared(path: Path) -> Path:
    """Return ``path`` or skip the test with the reason that ../shared is absent."""
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared is only present in the dev workplace)")
    return path


def corpus_records() -> list[dict[str, Any]]:
    """All chat-template corpus records (empty when ../shared is absent)."""
    if not CHAT_TEMPLATES_DIR.is_dir():
        return []
    return [
        json.loads(path.read_text(encoding="utf-8")) | {"_file": path.name}
        for path in sorted(CHAT_TEMPLATES_DIR.glob("*.json"))
    ]
