"""Per-route part of the round trip: which path the server takes and what it reports.

On any server, ``/api/show`` lists the capabilities Ollama grants the model (0.30+: from the
TEMPLATE or from the GGUF's Jinja, whichever path ``ollama_route.select_route`` gives it;
0.9.x: from the TEMPLATE alone). A capability the Jinja has and the model lacks means a client
sending tools (or ``think``) is refused, so the check fails on it, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..capabilities import jinja_capabilities
from ..ollama_client import ShownModel
from ..ollama_route import ModelFacts, select_route

__all__ = [
    "DEFAULT_TEMPLATE",
    "CapabilityCheck",
    "check_capabilities",
    "config_value",
    "facts_from_show",
    "shown_go_template",
]


@dataclass(frozen=True, slots=True)
class CapabilityCheck:
    """The route the server takes for the model and the capabilities it reports."""

    route: str
    """``go`` (Ollama renders a Go TEMPLATE, RENDERER or harmony) or ``native``."""
    reason: str
    reported: tuple[str, ...]
    """``/api/show``'s ``capabilities`` (the selection's when the server lists none)."""
    jinja: tuple[str, ...]
    """What the fine-tune's Jinja gives (tools, thinking)."""
    required: bool = True
    """A lost capability fails the check (``check``; ``deploy`` only with ``--strict``)."""

    @property
    def lost(self) -> tuple[str, ...]:
        return tuple(c for c in self.jinja if c not in self.reported)

    @property
    def problem(self) -> str | None:
        """``capabilities_lost: ...`` when the model lacks what the Jinja has, else None."""
        if not self.lost:
            return None
        return (
            f"capabilities_lost: the model lacks {', '.join(self.lost)} that its Jinja chat "
            f"template has (route {self.route}: {self.reason}); clients sending them are refused"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "template_route": self.route,
            "route_reason": self.reason,
            "capabilities": list(self.reported),
            "jinja_capabilities": list(self.jinja),
            "capabilities_lost": list(self.lost),
        }


#: What ``/api/show`` reports for a model without a template layer (``template.DefaultTemplate``,
#: server/images.go ``GetModel``, both in 0.9.3 and 0.33).
DEFAULT_TEMPLATE = "{{ .Prompt }}"


def shown_go_template(shown: ShownModel, jinja: str | None) -> str | None:
    """The Go TEMPLATE layer behind ``/api/show``'s ``template``, None when there is none.

    ``/api/show`` prints the default ``{{ .Prompt }}`` for a model without a template layer
    and, on 0.30+, the GGUF's Jinja itself for a model on the native path
    (server/routes.go ``selectedModelTemplate``); neither is a Go TEMPLATE.

    >>> shown_go_template(ShownModel(template="{{ .Prompt }}"), None) is None
    True
    >>> shown_go_template(ShownModel(template="{{ messages }}"), "{{ messages }}") is None
    True
    """
    text = str(shown.template or "")
    if text.strip() in ("", DEFAULT_TEMPLATE) or (jinja is not None and text == jinja):
        return None
    return text


def facts_from_show(shown: ShownModel, jinja: str | None) -> ModelFacts:
    """The selection's view of a registered model (``/api/show`` plus the fine-tune's Jinja)."""
    details = shown.details
    return ModelFacts(
        template=shown_go_template(shown, jinja),
        jinja=jinja,
        renderer=config_value(shown, "renderer"),
        parser=config_value(shown, "parser"),
        model_family=str(getattr(details, "family", "") or "") if details else "",
    )


def config_value(shown: ShownModel, command: str) -> str:
    """RENDERER/PARSER of the model: ``/api/show`` prints them as Modelfile commands in its
    ``modelfile`` text (server/images.go ``Model.String``); the ollama package has no field.

    >>> config_value(ShownModel(modelfile="FROM x\\nRENDERER qwen3-coder"), "renderer")
    'qwen3-coder'
    """
    for line in str(shown.modelfile or "").splitlines():
        name, _, value = line.strip().partition(" ")
        if name.lower() == command and value.strip():
            return value.strip().strip('"')
    return ""


def check_capabilities(
    shown: ShownModel, version: str, jinja: str | None, *, required: bool = True
) -> CapabilityCheck:
    """What the server at ``version`` does with the model and whether a capability is lost."""
    decision = select_route(facts_from_show(shown, jinja), version)
    listed = getattr(shown, "capabilities", None)
    reported = tuple(str(c) for c in listed) if listed is not None else decision.capabilities
    return CapabilityCheck(
        route="native" if decision.path == "native" else "go",
        reason=decision.reason,
        reported=reported,
        jinja=jinja_capabilities(jinja),
        required=required,
    )
