"""Reasoning that a Jinja keeps only in tool-calling turns (Gemma 4's interleaved thinking).

Gemma 4 prints an assistant turn's reasoning (``<|channel>thought\\nR\\n<channel|>``) only
when the turn calls tools and comes after the last user message: the model reads its own
reasoning while a tool loop runs, and loses it once the user speaks again. Each thinking
setting's TEMPLATE (``switched.py``) prints no reasoning at all, so the tool-loop probe
differs. We read the block off two renders (the same tool-calling turn with and without
reasoning), insert it before the TEMPLATE's tool calls under the same condition, and keep
the result only when it verifies, including a conversation where the reasoning of an earlier
tool loop must be dropped.

Ollama takes its tool-call tag from the first ``if`` on ``.ToolCalls`` (tools/template.go),
so the inserted test reads the calls through a variable and leaves that ``if`` first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import TemplateRenderError
from .probes import Probe
from .source import TemplateSource

#: Sentinel reasoning, and a tool call the renders share.
REASONING = "Zqreason about the call."
_CALL = {
    "id": "call00001",
    "type": "function",
    "function": {"name": "get_weather", "arguments": {"city": "Oslo"}},
}
_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}

#: The messages loop of an emitted TEMPLATE, with its index variable.
RANGE_RE = re.compile(r"\{\{-? range (\$\w+), \$\w+ := \.Messages \}\}")
#: Where an emitted TEMPLATE starts printing an assistant turn's tool calls.
CALLS = "{{- if .ToolCalls }}"
#: Where an emitted TEMPLATE prints an assistant turn (with or without trimming before it).
ASSISTANT_RE = re.compile(r'\{\{-? else if eq \.Role "assistant" \}\}')
#: The index of the last user message, before the messages loop.
SCAN = (
    "{{- $lastUser := -1 }}{{- range $k, $m := $.Messages }}"
    '{{- if eq $m.Role "user" }}{{- $lastUser = $k }}{{- end }}{{- end }}'
)


@dataclass(frozen=True, slots=True)
class CallReasoning:
    """The block around a tool-calling turn's reasoning, and whether an earlier tool loop
    (before the last user message) keeps it too."""

    before: str
    after: str
    earlier: bool
    filled: bool = False
    """The Jinja prints ``before`` and ``after`` around an empty reasoning too (Command R7B:
    ``<|START_THINKING|><|END_THINKING|>`` in every tool-calling turn): the TEMPLATE's own
    copy of that pair gives way to the block."""


def _loop(*, reasoning: bool, later_user: bool = False) -> list[dict[str, Any]]:
    call: dict[str, Any] = {"role": "assistant", "content": "", "tool_calls": [_CALL]}
    if reasoning:
        call["reasoning_content"] = REASONING
    messages = [
        {"role": "user", "content": "Weather in Oslo?"},
        call,
        {"role": "tool", "tool_call_id": "call00001", "name": "get_weather", "content": "-3"},
    ]
    if later_user:
        messages += [
            {"role": "assistant", "content": "It is -3 in Oslo."},
            {"role": "user", "content": "Thanks."},
        ]
    return messages


def _render(source: TemplateSource, messages: list[dict[str, Any]]) -> str | None:
    from .hf_render import render_hf

    try:
        return render_hf(
            source.template,
            messages,
            tokens=source.template_variables(),
            tools=[_TOOL],
            add_generation_prompt=True,
        )
    except TemplateRenderError:
        return None


def prints_call_reasoning(source: TemplateSource) -> bool:
    """Whether a tool-calling turn's reasoning shows in the Jinja's rendering at all (in any
    form, Command R7B's ``<|START_THINKING|>R<|END_THINKING|>`` too)."""
    reasoned = _render(source, _loop(reasoning=True))
    return reasoned is not None and REASONING in reasoned


def read_call_reasoning(source: TemplateSource) -> CallReasoning | None:
    """How ``source`` prints a tool-calling turn's reasoning (None: it prints none, or not
    as one block inserted where nothing else changes)."""
    plain = _render(source, _loop(reasoning=False))
    reasoned = _render(source, _loop(reasoning=True))
    if plain is None or reasoned is None or reasoned.count(REASONING) != 1:
        return None
    start = _common_prefix(plain, reasoned)
    end = len(reasoned) - _common_suffix(plain[start:], reasoned[start:])
    while start > 0 and reasoned[start - 1] == reasoned[end - 1]:
        start, end = (
            start - 1,
            end - 1,
        )  # leftmost: "<|channel>", not "|channel><"
    block = reasoned[start:end]
    if plain != reasoned[:start] + reasoned[end:] or REASONING not in block:
        return None
    before, after = block.split(REASONING)
    filled = not before and not after
    if filled:
        pair = surrounding_markers(reasoned, start, end)
        if pair is None:
            return None
        before, after = pair
    if not before.strip() or not after.strip() or "{{" in block or "}}" in block:
        return None  # Ollama needs literal text on both sides to infer the tags
    later = _render(source, _loop(reasoning=True, later_user=True))
    if later is None:
        return None
    return CallReasoning(before=before, after=after, earlier=REASONING in later, filled=filled)


def tags_around(text: str, reasoning: str, answer: str) -> tuple[str, str] | None:
    """The marker pair around the one occurrence of ``reasoning`` in ``text``, where the closing
    marker is followed directly by ``answer``; None otherwise."""
    if text.count(reasoning) != 1:
        return None
    start = text.index(reasoning)
    tags = surrounding_markers(text, start, start + len(reasoning))
    if tags is None or not text.startswith(tags[1] + answer, start + len(reasoning)):
        return None
    return tags


def surrounding_markers(text: str, start: int, end: int) -> tuple[str, str] | None:
    """The special tokens right before ``start`` and right after ``end`` in ``text`` (the
    empty pair the reasoning fills), or None."""
    from .shape import MARKER_RE

    before = [m for m in MARKER_RE.finditer(text, 0, start) if m.end() == start]
    after = MARKER_RE.match(text, end)
    if not before or after is None:
        return None
    return before[-1].group(0), after.group(0)


def _common_prefix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _common_suffix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def with_call_reasoning(template: str, reading: CallReasoning) -> str | None:
    """``template`` (one setting's emitted TEMPLATE) printing tool-calling turns' reasoning
    as the Jinja does, in each copy of its messages loop (with and without tools); None when
    a copy has not the assistant branch and tool calls this rewrites."""
    branches = [m.start() for m in ASSISTANT_RE.finditer(template)]
    if not branches or (reading.filled and not reading.earlier):
        return None  # a filled pair prints in every turn: no condition can sit inside it
    out = template
    for branch in reversed(branches):  # from the end: earlier offsets stay valid
        calls = out.find(CALLS, branch)
        headers = [m for m in RANGE_RE.finditer(out) if m.start() < branch]
        if calls < 0 or not headers:
            return None
        header = headers[-1]  # the loop this assistant branch is in
        if reading.filled:
            pair = reading.before + reading.after
            if not out.startswith(pair, calls + len(CALLS)):
                return None
            out = out[: calls + len(CALLS)] + out[calls + len(CALLS) + len(pair) :]
            block = (
                "{{- $rt := .ToolCalls }}{{- if $rt }}"
                + reading.before + "{{ .Thinking }}" + reading.after + "{{- end }}"
            )  # fmt: skip
            out = out[:calls] + block + out[calls:]
            continue
        cond = "and $rt .Thinking"
        if not reading.earlier:
            cond += f" (gt {header.group(1)} $lastUser)"
        block = (
            "{{- $rt := .ToolCalls }}{{- if " + cond + " }}"
            + reading.before + "{{ .Thinking }}" + reading.after + "{{- end }}"
        )  # fmt: skip
        at = header.start()
        out = out[:at] + SCAN + out[at:calls] + block + out[calls:]
    return out


def call_reasoning_probes() -> list[Probe]:
    """An earlier tool loop with reasoning, then a new question (think on): whether the
    TEMPLATE drops or keeps that reasoning as the Jinja does. Not a packaged probe."""
    messages = tuple(_loop(reasoning=True, later_user=True))
    return [
        Probe(
            id="earlier_tool_loop_reasoning",
            description="reasoning of a tool loop before the last user message",
            messages=messages,
            tools=(_TOOL,),
            needs_tools=True,
            think=True,
        )
    ]


def earlier_loops_hold(source: TemplateSource, template: str, system: str | None) -> bool:
    """The reasoning of a tool loop before the last user message is kept or dropped as the
    Jinja does (:func:`call_reasoning_probes`, rendered on both sides)."""
    return probes_hold(source, template, system, call_reasoning_probes())


def probes_hold(
    source: TemplateSource, template: str, system: str | None, probes: list[Probe]
) -> bool:
    """Every one of ``probes`` ran (tools offered) and matched, rendered on both sides."""
    from .verify import reference_renders, verify_template

    refs = reference_renders(source, probes)
    report = verify_template(
        source, template, system=system, tools=True, references=refs, probes=probes
    )
    ran = [p for p in report.probes if p.status != "skipped"]
    return len(ran) == len(probes) and all(p.status == "match" for p in ran)


__all__ = [
    "CallReasoning",
    "call_reasoning_probes",
    "earlier_loops_hold",
    "prints_call_reasoning",
    "probes_hold",
    "read_call_reasoning",
    "surrounding_markers",
    "tags_around",
    "with_call_reasoning",
]
