"""Reasoning printed in a pair every assistant turn prints, filled only in the running tool loop.

Kimi K2 Thinking prints ``<think></think>`` in every assistant turn and fills it with the
turn's ``reasoning_content`` only after the last assistant turn without tool calls: the model
reads its reasoning while its tool loop runs and loses it once it has answered. The TEMPLATE
the plain translation writes prints the empty pair as text, so Ollama sees no ``.Thinking``
and gives it no thinking capability, while Ollama 0.30+ gives the Jinja one (``<think>`` in
it): the native route wins. We read the pair and where a tool loop ends (the last user
message, or the last answer) off sentinel renders, make the TEMPLATE's own pair print
``.Thinking`` under that condition (Ollama infers its tags from the text around it,
ollama/ollama ``thinking/template.go``) and keep the result only where it verifies, with
conversations that tell the two loop ends apart.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .call_reasoning import (
    ASSISTANT_RE,
    RANGE_RE,
    REASONING,
    _render,
    call_reasoning_probes,
    read_call_reasoning,
)
from .probes import Probe
from .source import TemplateSource

if TYPE_CHECKING:
    from .translate import TranslatedTemplate

logger = logging.getLogger(__name__)

#: Where a tool loop ends: at the last user message, or at the last assistant answer (a turn
#: without tool calls), the Go test of each for the index before the messages loop.
ENDS: dict[str, str] = {
    "user": 'eq $m.Role "user"',
    "answer": 'and (eq $m.Role "assistant") (not $m.ToolCalls)',
}

#: An answer that closes the tool loop of the sentinel conversation, with its own reasoning.
_ANSWER = {"role": "assistant", "content": "It is -3 in Oslo.", "reasoning_content": "Zqsecond."}


@dataclass(frozen=True, slots=True)
class LoopReasoning:
    """The pair a tool-calling turn's reasoning fills, and where the loop that keeps it ends."""

    before: str
    after: str
    end: str
    """A key of :data:`ENDS`."""


def read_loop_reasoning(source: TemplateSource) -> LoopReasoning | None:
    """How ``source`` fills its empty pair with a tool loop's reasoning (None: it prints
    reasoning otherwise, or keeps it in earlier loops too)."""
    from .call_reasoning import _loop

    reading = read_call_reasoning(source)
    if reading is None or not reading.filled or reading.earlier:
        return None
    answered = _render(source, [*_loop(reasoning=True), _ANSWER])
    if answered is None:
        return None
    # An answer after the loop, no user message since: does the loop's reasoning stay?
    end = "user" if REASONING in answered else "answer"
    return LoopReasoning(before=reading.before, after=reading.after, end=end)


def with_loop_reasoning(template: str, reading: LoopReasoning) -> str | None:
    """``template`` whose assistant turns print ``reading``'s pair with ``.Thinking`` in the
    running tool loop, in each copy of its messages loop; None when a copy's assistant
    branch does not open with the pair as text."""
    pair = reading.before + reading.after
    branches = list(ASSISTANT_RE.finditer(template))
    if not branches:
        return None
    out = template
    for branch in reversed(branches):  # from the end: earlier offsets stay valid
        opening = re.match(r"[^{]*", out[branch.end() :])
        at = out.find(pair, branch.end())
        headers = [m for m in RANGE_RE.finditer(out) if m.start() < branch.start()]
        if opening is None or at < 0 or at + len(pair) > branch.end() + opening.end():
            return None
        if not headers:
            return None
        index = headers[-1].group(1)
        block = (
            "{{ if gt " + index + " $loopAt }}"
            + reading.before + "{{ .Thinking }}" + reading.after
            + "{{ else }}" + pair + "{{ end }}"
        )  # fmt: skip
        out = out[:at] + block + out[at + len(pair) :]
        scan = (
            "{{- $loopAt := -1 }}{{- range $k, $m := $.Messages }}"
            "{{- if " + ENDS[reading.end] + " }}{{- $loopAt = $k }}{{- end }}{{- end }}"
        )
        out = out[: headers[-1].start()] + scan + out[headers[-1].start() :]
    return out


def loop_end_probes() -> list[Probe]:
    """Conversations whose reasoning tells the loop ends apart (think on): an answer after a
    tool loop (continued); two answered tool loops, where only the last answer, the last user
    message and the first answer each keep other turns' reasoning; an earlier tool loop
    before a new question."""
    from .call_reasoning import _TOOL, _loop

    first = [*_loop(reasoning=True), _ANSWER]
    second = [{**m, "reasoning_content": "Zqthird."} if "reasoning_content" in m else m
              for m in _loop(reasoning=True)]  # fmt: skip
    second[0] = {"role": "user", "content": "And in Bergen?"}
    conversations = {
        "answered_tool_loop_reasoning": ("a tool loop's reasoning, then its answer", first),
        "two_answered_tool_loops": (
            "two tool loops, each answered, with reasoning in every turn",
            [*first, *second, {**_ANSWER, "reasoning_content": "Zqfourth."}],
        ),
    }
    probes = [
        Probe(
            id=key,
            description=text,
            messages=tuple(messages),
            tools=(_TOOL,),
            needs_tools=True,
            think=True,
        )
        for key, (text, messages) in conversations.items()
    ]
    return [*probes, *call_reasoning_probes()]


def loop_reasoning_holds(source: TemplateSource, template: str, system: str | None) -> bool:
    """:func:`loop_end_probes`, rendered on both sides, match."""
    from .call_reasoning import probes_hold

    return probes_hold(source, template, system, loop_end_probes())


def with_loop_thinking(
    source: TemplateSource, result: TranslatedTemplate, refs: Mapping[str, Any]
) -> TranslatedTemplate | None:
    """``result`` with its pair filled in the running tool loop, where that verifies the
    thinking probes, loses no probe and holds on :func:`loop_end_probes`; else None."""
    from .switched import accept_thinking

    reading = read_loop_reasoning(source)
    template = None if reading is None else with_loop_reasoning(result.template, reading)
    if template is None:
        return None
    accepted = accept_thinking(source, result, template, result.system, refs)
    if accepted is None or not loop_reasoning_holds(source, template, result.system):
        logger.info("tool-loop reasoning not translated")
        return None
    return accepted


__all__ = [
    "ENDS",
    "LoopReasoning",
    "loop_end_probes",
    "loop_reasoning_holds",
    "read_loop_reasoning",
    "with_loop_reasoning",
    "with_loop_thinking",
]
