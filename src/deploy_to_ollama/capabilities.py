"""The capabilities Ollama derives from a Go TEMPLATE and from a Jinja chat template.

Reproduces ollama/ollama ``server/images.go`` (``goTemplateCapabilities``,
``chatTemplateHasToolSupport``, ``chatTemplateHasToolRoundTrip``,
``chatTemplateHasThinkingSupport``, ``goTemplateHasToolRoundTrip``; read at commit
fb30760996871fa9460115c753afd2c60d4ab0f7, v0.33.0-rc2) and ``thinking/template.go``
(``InferTags``). The Go-template rules are the same in v0.9.3 (``Model.Capabilities``).
Pure: text in, capability names out, so ``template``, ``deploy`` and ``doctor`` share them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .chat_template.go_template import GoTemplate, parse_template
from .chat_template.ollama_prompt import infer_thinking_tags
from .errors import TemplateSyntaxError

__all__ = [
    "AUDIO",
    "COMPLETION",
    "EMBEDDING",
    "INSERT",
    "LOST_CODE",
    "ORDER",
    "TEMPLATE_CAPABILITIES",
    "THINKING",
    "TOOLS",
    "VISION",
    "CapabilityParity",
    "capability_warnings",
    "compare_capabilities",
    "go_template_capabilities",
    "go_template_has_tool_round_trip",
    "jinja_capabilities",
    "jinja_has_thinking_support",
    "jinja_has_tool_round_trip",
    "jinja_has_tool_support",
    "ordered",
]

logger = logging.getLogger(__name__)

COMPLETION = "completion"
TOOLS = "tools"
INSERT = "insert"
VISION = "vision"
EMBEDDING = "embedding"
THINKING = "thinking"
AUDIO = "audio"

#: The code of a capability the TEMPLATE lost (doctor diagnosis, deploy warning prefix).
LOST_CODE = "capabilities_lost"

#: Ollama's order of ``model.Capability`` constants, used to print lists stably.
ORDER: tuple[str, ...] = (COMPLETION, TOOLS, INSERT, VISION, EMBEDDING, THINKING, AUDIO)
#: What a chat template (Go or Jinja) decides; the rest comes from the GGUF itself.
TEMPLATE_CAPABILITIES: tuple[str, ...] = (TOOLS, THINKING, INSERT)

# server/images.go chatTemplateHasToolRoundTrip: the markers of a tool *result* turn.
_JINJA_TOOL_RESULT_MARKERS = (
    "tool_response",
    "tool_results",
    "role'] == 'tool'",
    'role\'] == "tool"',
    "role\"] == 'tool'",
    'role"] == "tool"',
    "message.role == 'tool'",
    'message.role == "tool"',
    "ipython",
)
# server/images.go goTemplateHasToolRoundTrip: the markers of a tool result in a Go TEMPLATE.
_GO_TOOL_RESULT_MARKERS = ('eq .Role "tool"', "tool_response", "TOOL_RESULTS")


def ordered(capabilities: set[str] | frozenset[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Capabilities in Ollama's order, unknown names last (sorted).

    >>> ordered({"thinking", "completion", "tools"})
    ('completion', 'tools', 'thinking')
    """
    known = tuple(c for c in ORDER if c in capabilities)
    return known + tuple(sorted(set(capabilities) - set(ORDER)))


# --------------------------------------------------------------------------- Jinja


def jinja_has_tool_support(jinja: str) -> bool:
    """Ollama's substring test: the Jinja mentions ``tools`` or ``tool_call``.

    >>> jinja_has_tool_support("{% if tools %}{{ tools }}{% endif %}")
    True
    >>> jinja_has_tool_support("{{ messages[0]['content'] }}")
    False
    """
    return "tools" in jinja or "tool_call" in jinja


def jinja_has_tool_round_trip(jinja: str) -> bool:
    """Tools, assistant tool calls and a tool-result turn, by Ollama's substring markers."""
    if not jinja_has_tool_support(jinja):
        return False
    calls = "tool_calls" in jinja or "assistant_tool_call" in jinja
    return calls and any(marker in jinja for marker in _JINJA_TOOL_RESULT_MARKERS)


def jinja_has_thinking_support(jinja: str) -> bool:
    """``<think>`` and ``</think>`` both present, or Qwen/DeepSeek's reasoning split.

    >>> jinja_has_thinking_support("<think>{{ x }}</think>")
    True
    >>> jinja_has_thinking_support("{% set c = content.split('</think>')|last %}")
    True
    >>> jinja_has_thinking_support("{{ reasoning_content }}{{ content.split('</think>') }}")
    False
    """
    if "<think>" in jinja and "</think>" in jinja:
        return True
    # Templates that only strip earlier reasoning at </think> still let llama.cpp extract it.
    splits = "content.split('</think>')" in jinja or 'content.split("</think>")' in jinja
    return splits and "reasoning_content" not in jinja and "<SPECIAL_12>" not in jinja


def jinja_capabilities(jinja: str | None) -> tuple[str, ...]:
    """What Ollama 0.30+ reports from a GGUF's ``tokenizer.chat_template`` (tools, thinking).

    >>> jinja_capabilities("{% if tools %}<tool_call>{% endif %}<think>x</think>")
    ('tools', 'thinking')
    >>> jinja_capabilities(None)
    ()
    """
    if not jinja:
        return ()
    found = set()
    if jinja_has_tool_support(jinja):
        found.add(TOOLS)
    if jinja_has_thinking_support(jinja):
        found.add(THINKING)
    return ordered(found)


# --------------------------------------------------------------------------- Go TEMPLATE


def _parse(template: str) -> GoTemplate | None:
    try:
        return parse_template(template)
    except TemplateSyntaxError as err:
        logger.info("TEMPLATE does not parse, so Ollama gives it no capabilities: %s", err)
        return None


def _template_vars(tmpl: GoTemplate) -> frozenset[str] | None:
    """Ollama's ``Template.Vars``: lower-cased identifiers; None where Ollama's walk fails."""
    try:
        return frozenset(name.lower() for name in tmpl.identifiers())
    except TemplateSyntaxError as err:
        logger.info("Ollama cannot list this TEMPLATE's variables: %s", err)
        return None


def go_template_capabilities(template: str | None) -> tuple[str, ...]:
    """What Ollama derives from a Go TEMPLATE: tools (``.Tools``), insert (``.Suffix``),
    thinking (``InferTags`` finds text around ``.Thinking`` in ``range .Messages``).

    A TEMPLATE whose variables Ollama cannot list gets nothing (Ollama logs "model template
    contains errors"). Same rules in v0.9.3 and v0.33.

    >>> go_template_capabilities("{{ .Prompt }}{{ if .Tools }}{{ .Tools }}{{ end }}{{ .Suffix }}")
    ('tools', 'insert')
    >>> go_template_capabilities(
    ...     "{{ range .Messages }}{{ if .Thinking }}<think>{{ .Thinking }}</think>"
    ...     "{{ end }}{{ end }}"
    ... )
    ('thinking',)
    """
    if not template:
        return ()
    tmpl = _parse(template)
    if tmpl is None:
        return ()
    names = _template_vars(tmpl)
    if names is None:
        return ()
    found = set()
    if "tools" in names:
        found.add(TOOLS)
    if "suffix" in names:
        found.add(INSERT)
    opening, closing = infer_thinking_tags(tmpl)
    if opening and closing:
        found.add(THINKING)
    return ordered(found)


def go_template_has_tool_round_trip(template: str | None) -> bool:
    """``.Tools`` and ``.ToolCalls`` referenced, and a tool-result turn by Ollama's markers.

    >>> go_template_has_tool_round_trip(
    ...     '{{ if .Tools }}t{{ end }}{{ range .Messages }}{{ if eq .Role "tool" }}r{{ end }}'
    ...     "{{ range .ToolCalls }}{{ .Function.Name }}{{ end }}{{ end }}"
    ... )
    True
    """
    if not template:
        return False
    tmpl = _parse(template)
    if tmpl is None:
        return False
    names = _template_vars(tmpl)
    if names is None or "tools" not in names or "toolcalls" not in names:
        return False
    return any(marker in template for marker in _GO_TOOL_RESULT_MARKERS)


# --------------------------------------------------------------------------- parity


@dataclass(frozen=True, slots=True)
class CapabilityParity:
    """The template-derived capabilities of the Jinja and of our TEMPLATE, side by side."""

    jinja: tuple[str, ...]
    template: tuple[str, ...]
    jinja_tool_round_trip: bool
    template_tool_round_trip: bool

    @property
    def lost(self) -> tuple[str, ...]:
        """What the Jinja gives that the TEMPLATE does not (a client asking for it is refused)."""
        return ordered(set(self.jinja) - set(self.template))

    @property
    def gained(self) -> tuple[str, ...]:
        """What the TEMPLATE claims that the Jinja does not give (insert aside: no Jinja has it)."""
        return ordered(set(self.template) - set(self.jinja) - {INSERT})

    @property
    def round_trip_lost(self) -> bool:
        """The Jinja renders tool calls and results, the TEMPLATE does not (by Ollama's test)."""
        return self.jinja_tool_round_trip and not self.template_tool_round_trip

    @property
    def parity(self) -> bool:
        """Same tools/thinking, and a tool round trip wherever the Jinja has one."""
        return not self.lost and not self.gained and not self.round_trip_lost

    def problems(self) -> list[str]:
        """One line per difference, for reports and the doctor (empty at parity)."""
        lines = []
        if self.lost:
            lines.append(
                f"the TEMPLATE lacks {', '.join(self.lost)} that the Jinja chat template has"
            )
        if self.gained:
            lines.append(f"the TEMPLATE claims {', '.join(self.gained)} the Jinja does not have")
        if self.round_trip_lost:
            lines.append(
                "the Jinja renders tool calls and tool results; the TEMPLATE has no tool round "
                "trip (.ToolCalls and a tool-result turn)"
            )
        return lines

    def to_json(self) -> dict[str, object]:
        return {
            "jinja": list(self.jinja),
            "template": list(self.template),
            "lost": list(self.lost),
            "parity": self.parity,
        }


def compare_capabilities(jinja: str | None, template: str | None) -> CapabilityParity:
    """Capabilities Ollama derives from the Jinja and from the TEMPLATE, and their difference.

    >>> p = compare_capabilities("{% if tools %}{{ tools }}{% endif %}", "{{ .Prompt }}")
    >>> p.lost, p.parity
    (('tools',), False)
    """
    return CapabilityParity(
        jinja=jinja_capabilities(jinja),
        template=go_template_capabilities(template),
        jinja_tool_round_trip=bool(jinja) and jinja_has_tool_round_trip(jinja or ""),
        template_tool_round_trip=go_template_has_tool_round_trip(template),
    )


def capability_warnings(jinja: str | None, template: str | None) -> list[str]:
    """``capabilities_lost: …`` lines for a deploy report; empty when nothing is lost.

    Only losses warn: a TEMPLATE claiming more than the Jinja is the doctor's business.

    >>> capability_warnings("{% if tools %}{{ tools }}{% endif %}", "{{ .Prompt }}")
    ['capabilities_lost: the TEMPLATE lacks tools that the Jinja chat template has']
    """
    parity = compare_capabilities(jinja, template)
    lines = [line for line in parity.problems() if "claims" not in line]
    return [f"{LOST_CODE}: {line}" for line in lines]
