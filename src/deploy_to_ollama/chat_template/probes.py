"""The probe conversations both renderers must agree on (shipped as package data)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any


@dataclass(frozen=True, slots=True)
class Probe:
    """One conversation rendered through both the Jinja and the Ollama template."""

    id: str
    description: str
    messages: tuple[dict[str, Any], ...]
    tools: tuple[dict[str, Any], ...] = ()
    public: bool = False
    """One of the 12 public probes the corpus targets are measured on."""
    ollama_limit: str | None = None
    """Why no Ollama TEMPLATE can reproduce this probe, if that is the case."""
    needs_tools: bool = False
    think: bool | None = None
    """The request's ``think`` (None: not sent); the Jinja side gets ``enable_thinking``."""
    needs_thinking: bool = False
    """A thinking probe: it counts only where the Jinja template renders reasoning."""

    @property
    def template_kwargs(self) -> dict[str, Any]:
        """Extra ``apply_chat_template`` variables for the Jinja side."""
        return {} if self.think is None else {"enable_thinking": self.think}


@cache
def load_probes() -> tuple[Probe, ...]:
    """All probes: the public ones first, then ours (unicode, tools, template syntax ...)."""
    raw = resources.files(__package__).joinpath("probes.json").read_text(encoding="utf-8")
    data = json.loads(raw)
    return tuple(_probe(item) for item in data["probes"])


def _probe(item: dict[str, Any]) -> Probe:
    return Probe(
        id=item["id"],
        description=item.get("description", ""),
        messages=tuple(item["messages"]),
        tools=tuple(item.get("tools") or ()),
        public=bool(item.get("public")),
        ollama_limit=item.get("ollama_limit"),
        needs_tools=bool(item.get("needs_tools")),
        think=item.get("think"),
        needs_thinking=bool(item.get("needs_thinking")),
    )
