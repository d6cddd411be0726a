"""How an assistant turn opens: its prefix (a prefilled last turn, a turn with tool calls
after the last user message) and its reasoning block, with the conditions under which the
Jinja prints reasoning of a turn. Cut out of ``emit.py``, which assembles whole TEMPLATEs.
"""

from __future__ import annotations

from dataclasses import replace

from .gotext import Act, Lit, Piece
from .shape import TemplateShape
from .thinking import reasoning_pieces, without_head
from .tool_shape import ToolShape


def opening(shape: TemplateShape, tools: ToolShape | None) -> list[Piece]:
    """The assistant prefix, as a turn with tool calls may open differently."""
    pieces: list[Piece] = []
    if tools is not None and tools.opening is not None:
        # A turn with tool calls opens with its own text after a shared part; $tc (a
        # variable) keeps Ollama's tag search on the later `if .ToolCalls`.
        rest = replace(
            shape,
            assistant_prefix=shape.assistant_prefix[tools.opening :],
            assistant_prefix_last=shape.assistant_prefix_last[tools.opening :],
        )
        with_reasoning = _own_opening_reasoning(shape, rest, tools.opening)
        if with_reasoning is not None:
            return with_reasoning
        pieces += [Act("$tc := .ToolCalls"), Lit(shape.assistant_prefix[: tools.opening])]
        pieces += [Act("if not $tc"), *_rest_with_reasoning(shape, rest, tools.opening)]
        pieces += [Act("end")]
    elif shape.think is not None and shape.think.head is not None:
        # Reasoning replaces part of the opening (GLM): the reasoning block carries it, and
        # a turn without reasoning opens with the rest, tool calls after the query included.
        plain = _query_prefix(without_head(shape), tools)
        pieces += reasoning_pieces(shape, thinking_cond(shape), plain)
    else:
        pieces += _query_prefix(shape, tools)
    return pieces


def _rest_with_reasoning(shape: TemplateShape, rest: TemplateShape, shared: int) -> list[Piece]:
    """A turn without calls after the shared part, where reasoning replaces part of the
    opening and its header starts with that shared part (gpt-oss: ``<|start|>assistant``,
    then ``<|channel|>analysis...`` or ``<|channel|>final...``)."""
    think = shape.think
    if think is None or think.head is None or len(think.head) <= shared:
        return _prefix(rest)
    if not think.head.startswith(shape.assistant_prefix[:shared]):
        return _prefix(rest)
    own = replace(rest, think=replace(think, head=think.head[shared:]))
    return reasoning_pieces(own, thinking_cond(shape), _prefix(without_head(own)))


def _own_opening_reasoning(
    shape: TemplateShape, rest: TemplateShape, shared: int
) -> list[Piece] | None:
    """A turn with tool calls that opens with its own text, where reasoning follows the
    shared header (Command A: ``<|START_THINKING|>...<|END_THINKING|>`` then
    ``<|START_ACTION|>`` or ``<|START_TEXT|>``): the reasoning block ends before the text a
    turn without calls opens with. None when the shape is not of that kind."""
    think = shape.think
    if think is None or think.head is None or think.after_calls is not None or think.dropped:
        return None
    own = rest.assistant_prefix
    if len(think.head) != shared or rest.assistant_prefix_last != own:
        return None
    if not own or not think.after.endswith(own):
        return None
    pieces: list[Piece] = [Lit(think.head), Act("$tc := .ToolCalls")]
    pieces += [Act(f"if {thinking_cond(shape)}"), Act("if $tc"), Lit(think.before)]
    pieces += [Act(".Thinking"), Lit(think.after[: len(think.after) - len(own)]), Act("else")]
    pieces += [Lit(think.before), Act(".Thinking"), Lit(think.after), Act("end")]
    pieces += [Act("else if not $tc"), *_prefix(replace(rest, think=None)), Act("end")]
    return pieces


def _query_prefix(shape: TemplateShape, tools: ToolShape | None) -> list[Piece]:
    """The assistant prefix, where a turn with tool calls after the last user message opens
    like a final one (GLM, Nemotron: an empty reasoning block)."""
    if tools is None or not tools.prefix_after_query:
        return _prefix(shape)
    final: list[Piece] = [Lit(shape.assistant_prefix_last)]
    if shape.think is not None:
        # With reasoning it opens like any turn (the reasoning block follows), as _prefix.
        final = [Act(f"if {thinking_cond(shape)}"), Lit(shape.assistant_prefix), Act("else")]
        final += [Lit(shape.assistant_prefix_last), Act("end")]
    pieces: list[Piece] = [Act("$tq := .ToolCalls"), Act("if or $last (and $tq (gt $i $queryAt))")]
    return [*pieces, *final, Act("else"), Lit(shape.assistant_prefix), Act("end")]


def after_query_scan(tools: ToolShape | None) -> list[Piece]:
    """``$queryAt``: index of the last user message, where turns with tool calls after it
    open differently."""
    if tools is None or not tools.prefix_after_query:
        return []
    return [
        Act("$queryAt := -1"),
        Act("range $i, $m := .Messages"),
        Act('if eq $m.Role "user"'),
        Act("$queryAt = $i"),
        Act("end"),
        Act("end"),
    ]


def _prefix(shape: TemplateShape) -> list[Piece]:
    """The assistant prefix (its own variant when the turn is a prefilled last one)."""
    pieces: list[Piece] = []
    if shape.assistant_prefix_last != shape.assistant_prefix and shape.think is not None:
        # A prefilled turn with reasoning opens like any turn; without, as observed.
        pieces += [Act("if $last"), Act(f"if {thinking_cond(shape)}")]
        pieces += [Lit(shape.assistant_prefix), Act("else"), Lit(shape.assistant_prefix_last)]
        pieces += [Act("end"), Act("else"), Lit(shape.assistant_prefix), Act("end")]
    elif shape.assistant_prefix_last != shape.assistant_prefix:
        pieces += [
            Act("if $last"),
            Lit(shape.assistant_prefix_last),
            Act("else"),
            Lit(shape.assistant_prefix),
            Act("end"),
        ]
    else:
        pieces += [Lit(shape.assistant_prefix)]
    return pieces


def reasoning(shape: TemplateShape) -> list[Piece]:
    """An assistant turn's reasoning; ``.Thinking`` inside the messages loop is also where
    Ollama reads the thinking tags from (ollama/ollama ``thinking/template.go``)."""
    think = shape.think
    if think is None:
        return []
    cond = thinking_cond(shape)
    return [Act(f"if {cond}"), Lit(think.before), Act(".Thinking"), Lit(think.after), Act("end")]


def thinking_cond(shape: TemplateShape) -> str:
    """When a turn's reasoning prints: always, only for the last message, or only after the
    last user message (as the Jinja was seen to do)."""
    think = shape.think
    if think is not None and think.earlier:
        return ".Thinking"
    if think is not None and think.last_only:
        return "and .Thinking $last"
    return "and .Thinking (gt $i $lastQuery)"


def last_query(shape: TemplateShape) -> list[Piece]:
    """``$lastQuery``: index of the last user message, for templates that drop reasoning of
    the turns before it."""
    if shape.think is None or shape.think.earlier or shape.think.last_only:
        return []
    return [
        Act("$lastQuery := -1"),
        Act("range $i, $m := .Messages"),
        Act('if eq $m.Role "user"'),
        Act("$lastQuery = $i"),
        Act("end"),
        Act("end"),
    ]


__all__ = ["after_query_scan", "last_query", "opening", "reasoning", "thinking_cond"]
