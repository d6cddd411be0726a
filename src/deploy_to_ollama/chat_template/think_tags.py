"""Thinking tags a Jinja names in the prompt it prints, not around any message's reasoning.

Granite 3.3 prints no reasoning; its ``thinking`` switch adds a system line "Write your
thoughts between <think></think> and ...". Phi-4-reasoning prints none either, but its
fixed system prompt asks for "<think> {Thought section} </think> {Solution section}". Ollama
0.30+ gives such a Jinja the thinking capability (``<think>`` and ``</think>`` both in it,
ollama/ollama ``server/images.go`` ``chatTemplateHasThinkingSupport``), so a TEMPLATE without
``.Thinking`` loses to the native route. Ollama infers a TEMPLATE's tags from the text around
``.Thinking`` in the messages loop (``thinking/template.go``), so we declare the pair the
rendering names, in a branch that prints nothing (``switched.declaration``).

Only the pair Ollama itself reads the Jinja's capability from is taken: a rendering may name
other pairs (Granite's ``<response></response>``, a citation or answer format), and which of
them is the model's reasoning would be a guess.

Ministral 3 reasoning prints reasoning only from typed content blocks (``{"type": "thinking",
"thinking": R}`` gives ``[THINK]R[/THINK]`` before the text block): the special tokens right
around R there are the tags its model writes (:func:`list_block_tags`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import TemplateRenderError
from .shape import A1, R1, U1, U2
from .source import TemplateSource

if TYPE_CHECKING:
    from .translate import TranslatedTemplate

#: The pair Ollama's Jinja test reads (``chatTemplateHasThinkingSupport``).
OLLAMA_PAIR = ("<think>", "</think>")

#: A tag pair named in prose: ``<think></think>``, ``<think> {Thought section} </think>``.
NAMED_PAIR_RE = re.compile(r"<([A-Za-z_]{1,20})>[^<>]{0,80}</\1>")


def named_pairs(text: str) -> list[tuple[str, str]]:
    """The tag pairs ``text`` names, in order, each once.

    >>> named_pairs("thoughts between <think></think> and answer between <response></response>")
    [('<think>', '</think>'), ('<response>', '</response>')]
    >>> named_pairs("format: <think> {Thought section} </think> {Solution}")
    [('<think>', '</think>')]
    >>> named_pairs("<think> then <b>bold</b> later </think>")
    [('<b>', '</b>')]
    """
    pairs: list[tuple[str, str]] = []
    for found in NAMED_PAIR_RE.finditer(text):
        pair = (f"<{found.group(1)}>", f"</{found.group(1)}>")
        if pair not in pairs:
            pairs.append(pair)
    return pairs


def named_tags(source: TemplateSource, name: str) -> tuple[str, str] | None:
    """Ollama's thinking pair where the Jinja's prompt names it: in what thinking on adds
    (``name`` true against false), or, without a switch, in the prompt every request gets;
    None where the Jinja lacks Ollama's thinking capability or its rendering names no pair."""
    from ..capabilities import jinja_has_thinking_support

    if not jinja_has_thinking_support(source.template):
        return None
    on, off = _prompt(source, {name: True}), _prompt(source, {name: False})
    if on is None or off is None:
        return None
    named = named_pairs(on)
    if on != off:
        named = [pair for pair in named if pair not in named_pairs(off)]
    return OLLAMA_PAIR if OLLAMA_PAIR in named else None


def _prompt(source: TemplateSource, kwargs: dict[str, Any]) -> str | None:
    from .hf_render import render_hf

    try:
        return render_hf(
            source.template,
            [{"role": "user", "content": U1}],
            tokens=source.template_variables(),
            add_generation_prompt=True,
            kwargs=kwargs,
        )
    except TemplateRenderError:
        return None


#: Assistant content as a list of typed blocks, reasoning first (mistral-common's ThinkChunk).
THINKING_BLOCKS = ({"type": "thinking", "thinking": R1}, {"type": "text", "text": A1})


def list_block_tags(source: TemplateSource) -> tuple[str, str] | None:
    """The special tokens right around a turn's reasoning given as a typed content block,
    where the text block follows the closing one (None: the Jinja prints such blocks
    otherwise, or not at all). Ollama's messages never arrive in that form; the rendering
    only shows which tags the model writes."""
    from .call_reasoning import tags_around
    from .hf_render import render_hf

    turns: list[dict[str, Any]] = [
        {"role": "user", "content": U1},
        {"role": "assistant", "content": [dict(block) for block in THINKING_BLOCKS]},
        {"role": "user", "content": U2},
    ]
    try:
        text = render_hf(source.template, turns, tokens=source.template_variables())
    except TemplateRenderError:
        return None
    return tags_around(text, R1, A1)


def with_named_tags(
    source: TemplateSource, result: TranslatedTemplate, refs: Mapping[str, Any]
) -> TranslatedTemplate | None:
    """A Jinja without a thinking switch whose every prompt names the pair (Phi-4-reasoning)
    or whose content blocks show its tags (Ministral 3 reasoning): ``result``'s TEMPLATE with
    the tags declared, kept where it verifies (None: no tags, or a probe would be lost)."""
    from .switched import accept_thinking, declaration
    from .thinking import switch_name

    tags = named_tags(source, switch_name(source)) or list_block_tags(source)
    if tags is None:
        return None
    template = result.template + declaration(*tags)
    return accept_thinking(source, result, template, result.system, refs)


__all__ = [
    "NAMED_PAIR_RE",
    "OLLAMA_PAIR",
    "THINKING_BLOCKS",
    "list_block_tags",
    "named_pairs",
    "named_tags",
    "with_named_tags",
]
