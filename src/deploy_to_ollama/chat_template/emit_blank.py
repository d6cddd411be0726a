"""An assistant turn whose stripped content is blank prints less than its wrapper
(``TemplateShape.blank_turn``).

Seed-OSS prints ``bos + 'assistant'`` and only then ``'\\n' + content|trim + eos`` where the
trimmed content is not empty; GLM 4.6 prints ``'\\n' + content.strip()`` only where there is
one. Ollama prints the wrapper as text, so the TEMPLATE prints the end of the opening (the
*lead*) and the start of the closing (the *dropped* part) only beside non-blank content.
"""

from __future__ import annotations

from dataclasses import replace

from .shape import PAD, U1, U2, TemplateShape, _between, _Renderer
from .source import TemplateSource


def observe_blank_turn(source: TemplateSource, shape: TemplateShape) -> tuple[str, str] | None:
    """(lead, dropped): what a non-blank turn prints that a blank one does not, the end of the
    assistant prefix and the start of its suffix; None where a blank turn prints the whole
    wrapper, or prints something this reading cannot split so.

    Observed between two user turns, with whitespace-only content and with empty content (the
    two must agree: the Jinja tests the stripped content), where the template strips it.
    """
    if shape.trim("assistant") != ("ws", "ws"):
        return None
    render = _Renderer(source)
    inner: set[str] = set()
    for content in (PAD, ""):
        text = render([("user", U1), ("assistant", content), ("user", U2)], gen=False)
        split = _between(text, U1, U2) if text else None
        if split is None:
            return None
        mid = split[1]
        if not mid.startswith(shape.user_suffix) or not mid.endswith(shape.user_prefix):
            return None
        inner.add(mid[len(shape.user_suffix) : len(mid) - len(shape.user_prefix)])
    if len(inner) != 1:
        return None
    return _split(shape, inner.pop())


def _split(shape: TemplateShape, blank: str) -> tuple[str, str] | None:
    """The longest opening start ``blank`` begins with whose rest ends the assistant suffix.

    >>> s = TemplateShape("", "", "</s>", "</s>", "", "<s>assistant\\n", "<s>assistant\\n",
    ...                   "</s>", "block", trims=(("assistant", "ws", "ws"),))
    >>> _split(s, "<s>assistant")
    ('\\n', '</s>')
    >>> _split(s, "<s>assistant\\n</s>") is None
    True
    """
    prefix, suffix = shape.assistant_prefix, shape.assistant_suffix
    for cut in range(len(prefix), -1, -1):
        rest = blank[cut:]
        if blank.startswith(prefix[:cut]) and suffix.endswith(rest):
            lead, dropped = prefix[cut:], suffix[: len(suffix) - len(rest)]
            if not lead and not dropped:
                return None
            if not shape.assistant_prefix_last.endswith(lead):
                return None
            return lead, dropped
    return None


def blank_opening(shape: TemplateShape) -> tuple[TemplateShape, str, str]:
    """(the shape whose assistant openings stop before the lead, the lead, the dropped part of
    the suffix): the lead goes before non-blank content (``emit_trim.trimmed``'s ``lead``),
    the dropped part after it; ``shape`` itself and two empty texts without the reading."""
    if shape.blank_turn is None:
        return shape, "", ""
    lead, dropped = shape.blank_turn
    cut = len(lead)
    opened = replace(
        shape,
        assistant_prefix=shape.assistant_prefix[: len(shape.assistant_prefix) - cut],
        assistant_prefix_last=shape.assistant_prefix_last[: len(shape.assistant_prefix_last) - cut],
    )
    return opened, lead, dropped


def rotated_opening(shape: TemplateShape) -> tuple[TemplateShape, str, str] | None:
    """``blank_opening`` for a turn that may carry reasoning: the lead moves from the end of
    the reasoning block to its start (Seed-OSS prints ``assistant`` + ``'\\n<seed:think>'`` +
    reasoning + ``'</seed:think>'``, then ``'\\n' + content`` only where the content is not
    blank). None where the reasoning block does not end with the lead, so the lead is not one
    text printed before content whatever precedes it."""
    if shape.blank_turn is None:
        return None
    opened, lead, dropped = blank_opening(shape)
    think = shape.think
    if think is None:
        return opened, lead, dropped
    if not lead or not think.after.endswith(lead):
        return None
    after = think.after[: len(think.after) - len(lead)]
    if think.head is None:
        moved = replace(think, before=lead + think.before, after=after)
        return replace(opened, think=moved), lead, dropped
    # GLM 4.6: the block replaces the opening after its header; the header keeps its text.
    if len(opened.assistant_prefix) < len(think.head) or think.after_calls is not None:
        return None
    if think.dropped is not None and not think.dropped.endswith(lead):
        return None
    dropped_trace = think.dropped[: len(think.dropped) - len(lead)] if think.dropped else None
    moved = replace(think, after=after, dropped=dropped_trace)
    return replace(opened, think=moved), lead, dropped


__all__ = ["blank_opening", "observe_blank_turn", "rotated_opening"]
