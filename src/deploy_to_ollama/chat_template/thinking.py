"""Reasoning that shares an assistant header with plain turns, and switches that replace text.

``infer_thinking`` reads the Qwen3 pattern: an assistant turn opens the same way with or
without reasoning, and ``enable_thinking=false`` appends text to the generation prompt. Many
templates differ from it in two ways this module reads off sentinel renders instead:

* the reasoning block replaces part of the assistant opening: GLM writes ``<think>R</think>``
  where a turn without reasoning has ``</think>``, Nemotron ``<think>\\nR\\n</think>\\n`` for
  ``<think></think>``; reasoning dropped from an earlier turn may leave its own trace;
* thinking off *replaces* the end of the generation prompt (``<think>`` by ``</think>``)
  instead of appending to it.

Ollama treats a request without ``think`` as ``think: true`` for a TEMPLATE with thinking
tags (ollama/ollama ``server/routes.go`` since v0.12.4), so there such a request is compared
with the Jinja's thinking-on setting (``verify.UNSET_ON``); a Jinja whose default is off gets
one TEMPLATE per setting (``switched.py``, ``think_generations.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..errors import TemplateRenderError
from .final_user import view_off
from .gotext import Act, Lit, Piece
from .shape import (
    A1,
    MARKER_RE,
    R1,
    TOOL_RESULT,
    U1,
    U2,
    TemplateShape,
    ThinkShape,
    _between,
    _common_prefix,
    _message,
)
from .source import TemplateSource


def infer_thinking(source: TemplateSource, shape: TemplateShape) -> ThinkShape | None:
    """Reasoning wrappers and the thinking switch, read off sentinel renders (None: the
    template prints no reasoning, or not in a way this reading covers)."""
    from .hf_render import render_hf

    tokens = source.template_variables()

    def render(messages: list[dict[str, Any]], **kwargs: Any) -> str | None:
        try:
            return render_hf(source.template, messages, tokens=tokens, kwargs=kwargs)
        except TemplateRenderError:
            return None

    user = {"role": "user", "content": U1}
    reasoned = {"role": "assistant", "content": A1, "reasoning_content": R1}
    prefill = render([user, reasoned])
    split = _between(prefill, U1, R1, A1) if prefill else None
    if split is None:
        return None
    lead = shape.user_suffix + shape.assistant_prefix
    if not split[1].startswith(lead) or split[3]:
        return None
    earlier_text = render([user, reasoned, {"role": "user", "content": U2}])
    if earlier_text is None:
        return None
    on, off = render([user], enable_thinking=True), render([user], enable_thinking=False)
    default = render([user])
    switch = ""
    if on is not None and off is not None and default == on and off.startswith(on):
        switch = off[len(on) :]
    earlier = R1 in earlier_text
    last_only = not earlier and _last_only(render, user, reasoned)
    return ThinkShape(split[1][len(lead) :], split[2], earlier, switch, last_only)


def _last_only(
    render: Callable[[list[dict[str, Any]]], str | None],
    user: dict[str, Any],
    reasoned: dict[str, Any],
) -> bool:
    """Whether a reasoned turn that is followed by another message (a tool result, else a
    second assistant turn) but no user message loses its reasoning: ``loop.last`` templates."""
    for follow in (_message("tool", TOOL_RESULT), {"role": "assistant", "content": U2}):
        text = render([user, reasoned, follow])
        if text is not None and A1 in text:
            return R1 not in text
    return False


def renders_reasoning(source: TemplateSource) -> bool:
    """Whether the Jinja template prints a message's reasoning or has a thinking switch."""
    from .hf_render import render_hf

    tokens = source.template_variables()
    user = {"role": "user", "content": U1}
    reasoned = {"role": "assistant", "content": A1, "reasoning_content": R1}
    texts = []
    for messages, kwargs in (
        ([user, reasoned], {}),
        ([user], {"enable_thinking": True}),
        ([user], {"enable_thinking": False}),
    ):
        try:
            texts.append(render_hf(source.template, messages, tokens=tokens, kwargs=kwargs))
        except TemplateRenderError:
            texts.append("")
    return R1 in texts[0] or texts[1] != texts[2]


Render = Callable[..., str | None]

#: The action that opens what a request with thinking switched off gets: an explicit
#: ``think: false`` (an unset ``think`` is the template's default, on).
OFF = "if and $.IsThinkSet (not $.Think)"

#: Template variables that switch thinking on and off, in the order they are tried: the first
#: one that changes a rendering is the template's switch (Command-A reads ``reasoning``).
SWITCHES = ("enable_thinking", "reasoning", "thinking", "enable_reasoning")


def switch_name(source: TemplateSource) -> str:
    """The template variable a request's ``think`` maps onto: the first of :data:`SWITCHES`
    whose false value changes the generation prompt (``enable_thinking`` when none does)."""
    tokens = tuple(sorted(source.template_variables().items()))
    return _switch_name(source.template, tokens)


@functools.lru_cache(maxsize=512)
def _switch_name(template: str, tokens: tuple[tuple[str, str], ...]) -> str:
    from .hf_render import render_hf

    user = [{"role": "user", "content": U1}]

    def render(**kwargs: Any) -> str | None:
        try:
            return render_hf(
                template, user, tokens=dict(tokens), add_generation_prompt=True, kwargs=kwargs
            )
        except TemplateRenderError:
            return None

    with view_off():  # a fact about the template, cached for inference and proof alike
        default = render()
        for name in SWITCHES:
            if render(**{name: False}) != default or render(**{name: True}) != default:
                return name
    return SWITCHES[0]


def think_kwargs(source: TemplateSource, *, think: bool | None) -> dict[str, Any]:
    """The Jinja variables for a request's ``think`` (none when the request leaves it unset)."""
    return {} if think is None else {switch_name(source): think}


def infer_reasoning(source: TemplateSource, shape: TemplateShape) -> ThinkShape | None:
    """How the template prints reasoning and switches thinking, Qwen3-style or with a shared
    header (None: no reading fits, or the template's default is thinking off)."""
    render = _renderer(source)
    switch = generation_switch(render, shape, switch_name(source))
    think = infer_thinking(source, shape)
    if think is not None:
        if switch is not None and not think.off and switch != ("", ""):
            think = replace(think, on=switch[0], off=switch[1])
        return think
    if switch is None:
        return None
    return _shared_header(render, shape, switch)


def reasoning_readings(think: ThinkShape) -> list[ThinkShape]:
    """``think``, then the other reading of whitespace between the reasoning and tool calls:
    a turn with tool calls and no content may print ``after`` less its trailing whitespace
    (Nemotron 3 trims the reasoning block with the content). Sentinel renders cannot tell
    the two apart without the tool-call text, so verification decides."""
    cut = think.after.rstrip()
    if think.head is None or cut == think.after:
        return [think]
    return [think, replace(think, after_calls=cut)]


def _renderer(source: TemplateSource) -> Render:
    from .hf_render import render_hf

    tokens = source.template_variables()

    def render(messages: list[dict[str, Any]], *, gen: bool = False, **kwargs: Any) -> str | None:
        try:
            return render_hf(
                source.template, messages, tokens=tokens, add_generation_prompt=gen, kwargs=kwargs
            )
        except TemplateRenderError:
            return None

    return render


def generation_switch(
    render: Render, shape: TemplateShape, name: str = SWITCHES[0]
) -> tuple[str, str] | None:
    """(end of the generation prompt with thinking on, what thinking off puts there instead);
    ``("", "")`` for a template without a switch; None when the default is not thinking on
    (Ollama's unset ``think`` is on) or the switch changes more than the generation prompt."""
    user = {"role": "user", "content": U1}
    default = render([user], gen=True)
    on = render([user], gen=True, **{name: True})
    off = render([user], gen=True, **{name: False})
    if default is None or on is None or off is None:
        return None
    if on == off:
        return ("", "") if default == on else None
    if default != on:
        return None
    cut = _snap(on, _common_prefix(on, off))
    on_tail, off_tail = on[cut:], off[cut:]
    if len(on_tail) > len(shape.generation_prompt) or not on.endswith(shape.generation_prompt):
        return None
    return on_tail, off_tail


def _snap(text: str, cut: int) -> int:
    """Move a cut point back to the start of a marker it falls inside."""
    for match in MARKER_RE.finditer(text):
        if match.start() < cut < match.end():
            return match.start()
    return cut


def _shared_header(
    render: Render, shape: TemplateShape, switch: tuple[str, str]
) -> ThinkShape | None:
    user = {"role": "user", "content": U1}
    reasoned = {"role": "assistant", "content": A1, "reasoning_content": R1}
    last = render([user, reasoned])
    split = _between(last, U1, R1, A1) if last else None
    if split is None or split[3] or not split[1].startswith(shape.user_suffix):
        return None
    opening, after = split[1][len(shape.user_suffix) :], split[2]
    plain, plain_last = shape.assistant_prefix, shape.assistant_prefix_last
    head = _head(opening, min(_common_prefix(opening, plain), _common_prefix(opening, plain_last)))
    if head is None:
        return None
    earlier = render([user, reasoned, {"role": "user", "content": U2}])
    mid = _between(earlier, U1, A1) if earlier else None
    if mid is None or not mid[1].startswith(shape.user_suffix + opening[:head]):
        return None
    kept = R1 in mid[1]
    if kept and mid[1] != shape.user_suffix + opening + R1 + after:
        return None
    dropped = mid[1][len(shape.user_suffix) + head :]
    return ThinkShape(
        before=opening[head:],
        after=after,
        earlier=kept,
        off=switch[1],
        last_only=not kept and _last_only(render, user, reasoned),
        on=switch[0],
        head=opening[:head],
        dropped=None if kept or dropped == plain[head:] else dropped,
    )


def _head(opening: str, common: int) -> int | None:
    """Length of the assistant opening shared with turns without reasoning, cut so that the
    reasoning's own opening starts with a marker Ollama can take as its thinking tag."""
    cut = _snap(opening, common)
    while not opening[cut:].strip():
        starts = [m.start() for m in MARKER_RE.finditer(opening) if m.end() <= cut]
        if not starts:
            return None
        cut = starts[-1]
    return cut


def reasoning_pieces(shape: TemplateShape, cond: str, prefix: list[Piece]) -> list[Piece]:
    """An assistant turn's opening with its reasoning where the reasoning replaces part of it:
    the shared header, then the reasoning block, the trace of dropped reasoning, or the rest
    of the plain opening (``prefix``, built from the shape without the header)."""
    think = shape.think
    assert think is not None and think.head is not None
    pieces: list[Piece] = [Lit(think.head), Act(f"if {cond}")]
    if think.after_calls is None:
        pieces += [Lit(think.before), Act(".Thinking"), Lit(think.after)]
    else:
        # $tw, a variable: Ollama takes its tool-call tag from the first `if` on .ToolCalls;
        # its thinking tags are the texts that open and close the innermost list around
        # .Thinking (thinking/template.go), so each branch is text, .Thinking, text.
        pieces += [Act("$tw := .ToolCalls"), Act("if and $tw (not .Content)")]
        pieces += [Lit(think.before), Act(".Thinking"), Lit(think.after_calls), Act("else")]
        pieces += [Lit(think.before), Act(".Thinking"), Lit(think.after), Act("end")]
    if think.dropped is not None:
        pieces += [Act("else if .Thinking"), Lit(think.dropped)]
    return [*pieces, Act("else"), *prefix, Act("end")]


def without_head(shape: TemplateShape) -> TemplateShape:
    """The shape of what follows the shared header in a turn without reasoning."""
    think = shape.think
    assert think is not None and think.head is not None
    cut = len(think.head)
    return replace(
        shape,
        assistant_prefix=shape.assistant_prefix[cut:],
        assistant_prefix_last=shape.assistant_prefix_last[cut:],
        think=None,
    )


def switch_pieces(shape: TemplateShape) -> list[Piece]:
    """After the generation prompt (less its switched end): what thinking on and off print.

    Ollama >= 0.12.4 gives a thinking TEMPLATE ``.Think`` true when a request leaves
    ``think`` unset; older servers leave it false with ``.IsThinkSet`` false, hence the test
    of both (the template's default is on either way).
    """
    think = shape.think
    if think is None or not think.off:
        return []
    pieces: list[Piece] = [Act(OFF), Lit(think.off)]
    if think.on:
        pieces += [Act("else"), Lit(think.on)]
    return [*pieces, Act("end")]


def generation_text(shape: TemplateShape, text: str) -> str:
    """``text`` (ending with the generation prompt) less the end that thinking off replaces."""
    think = shape.think
    if think is None or not think.off or not think.on or not text.endswith(think.on):
        return text
    return text[: len(text) - len(think.on)]


__all__ = [
    "OFF",
    "SWITCHES",
    "generation_switch",
    "generation_text",
    "infer_reasoning",
    "reasoning_pieces",
    "reasoning_readings",
    "switch_name",
    "switch_pieces",
    "think_kwargs",
    "without_head",
]
