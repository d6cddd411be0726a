"""How the tool pieces of a TEMPLATE print: an assistant turn's tool calls, the tool results
that answer them, and the tool definitions as a ``range $.Tools`` loop.

Cut out of ``emit.py``, which assembles whole TEMPLATEs, because what Ollama's parser reads from
the calls' text (its tool-call tag) and how results share their wrappers are one concern of their
own; ``emit.py`` only decides where these pieces go.
"""

from __future__ import annotations

from .emit_trim import trimmed
from .gotext import Act, Lit, Piece, go_string
from .hf_render import JSON_CLOSE, JSON_OPEN
from .shape import TOOL_NAME, TemplateShape
from .thinking import generation_text, switch_pieces
from .tool_shape import ANSWERED_SCAN, Loop, ToolShape


def expand_definitions(pieces: list[Piece], loop: Loop) -> list[Piece] | None:
    """Replace the sentinel tool's text in literals by a ``range $.Tools`` loop."""
    out: list[Piece] = []
    rng: list[Piece] = [Act("range $k, $t := $.Tools"), Act("if $k"), Lit(_plain(loop.glue))]
    rng += [Act("end"), *loop.item, Act("end")]
    if loop.whole:
        rng = list(loop.item)
    seen = False
    for piece in pieces:
        if isinstance(piece, Lit) and loop.item_text in piece.text:
            parts = piece.text.split(loop.item_text)
            for n, part in enumerate(parts):
                if n:
                    out += rng
                out.append(Lit(_plain(part)))
            seen = True
        else:
            out.append(piece)
    if not seen or any(isinstance(p, Lit) and "Zq" in p.text for p in out):
        return None
    return out


def _plain(text: str) -> str:
    """Literal text without the JSON marks of a marked rendering."""
    return text.replace(JSON_OPEN, "").replace(JSON_CLOSE, "")


def tool_calls(
    shape: TemplateShape, tools: ToolShape, calls: Loop | None, *, content: bool = True
) -> list[Piece]:
    """Content and tool calls of an assistant turn.

    The ``{{ if .ToolCalls }}`` block starts with the text before the first call: Ollama reads
    its tool-call tag from there (ollama/ollama ``tools/template.go``), so no other
    ``.ToolCalls`` test may come first (``$tc`` is a variable, which Ollama's search skips).
    """
    assert calls is not None
    text = trimmed(".Content", shape.trim("assistant"), "a")
    pieces: list[Piece] = []
    if content and tools.content_after is not None:
        return _calls_then_content(shape, tools, calls, text)
    if content:
        cond = "$tc" if tools.content_always else "and $tc .Content"
        if tools.content_until_answer:
            pieces += list(ANSWERED_SCAN)
            cond += " (not $answered)"
        pieces += [Act("$tc := .ToolCalls"), Act(f"if {cond}")]
        pieces += [Lit(_plain(tools.content_pre)), *text, Lit(_plain(tools.content_post))]
        if tools.content_until_answer and shape.think is not None:
            # Reasoning of a turn with calls and no content prints where the content would
            # (gpt-oss's analysis channel), until an answer follows.
            pieces += [Act("else if and $tc .Thinking (not $answered)")]
            pieces += [Lit(_plain(tools.content_pre)), Act(".Thinking")]
            pieces += [Lit(_plain(tools.content_post))]
        pieces += [Act("else if not $tc"), *text, Act("end")]
    pieces += [Act("if .ToolCalls"), *_tagged(_plain(calls.before))]
    pieces += [Act("range $k, $c := .ToolCalls"), Act("if $k"), Lit(_plain(calls.glue))]
    pieces += [Act("end"), *calls.item, Act("end")]
    end = tools.calls_end if tools.results else calls.after
    pieces += [Lit(_plain(end))]
    if shape.assistant_suffix:
        pieces += [Act("else if not $last"), Lit(shape.assistant_suffix)]
    return [*pieces, Act("end")]


def _calls_then_content(
    shape: TemplateShape, tools: ToolShape, calls: Loop, text: list[Piece]
) -> list[Piece]:
    """Tool calls first, then the content, then the end of the turn (Gemma 4)."""
    assert tools.content_after is not None
    end = _plain(tools.calls_end if tools.results else calls.after)
    at = tools.content_after
    pieces: list[Piece] = [Act("$tc := .ToolCalls")]
    pieces += [Act("if .ToolCalls"), *_tagged(_plain(calls.before))]
    pieces += [Act("range $k, $c := .ToolCalls"), Act("if $k"), Lit(_plain(calls.glue))]
    pieces += [Act("end"), *calls.item, Act("end"), Lit(end[:at]), Act("end"), *text]
    pieces += [Act("if $tc"), Lit(end[at:])]
    if shape.assistant_suffix:
        pieces += [Act("else if not $last"), Lit(shape.assistant_suffix)]
    return [*pieces, Act("end")]


def _tagged(before: str) -> list[Piece]:
    """The text before the first call, with whitespace that ends its tag printed by an action,
    so Ollama's tag (first text node, trimmed, cut at ``{``) is ``<tool_call>``, not
    ``<tool_call>\n``: the same prompt, and the tag still matches if the model drops the
    newline."""
    cut = before.find("{")
    head = before if cut < 0 else before[:cut]
    tag = head.rstrip()
    if not before:
        # No text before the first call: an action first makes Ollama's tag empty (bare
        # JSON) instead of taking the glue between calls inside the range.
        return [Act('""')]
    if not tag or tag == head:
        return [Lit(before)]
    return [Lit(tag), Act(go_string(head[len(tag) :])), Lit(before[len(head) :])]


def tool_results(shape: TemplateShape, tools: ToolShape) -> list[Piece]:
    """A tool result; consecutive results share the opening and closing the Jinja prints."""
    if tools.results_dropped:
        last: list[Piece] = [Lit(generation_text(shape, _plain(tools.result_close_last)))]
        last += switch_pieces(shape)
        return [Act('else if eq .Role "tool"'), Act("if $last"), *last, Act("end")]
    pieces: list[Piece] = [Act('else if eq .Role "tool"'), Act('if ne $prevRole "tool"')]
    pieces += [Lit(_plain(tools.result_open)), Act("end"), *tools.result, Act("if $last")]
    pieces += [*_close_last(shape, tools), *switch_pieces(shape)]
    pieces += [Act('else if eq (index (slice $.Messages $i) 1).Role "tool"')]
    pieces += [Lit(_plain(tools.result_glue))]
    if tools.result_close_user is not None:
        pieces += [Act('else if eq (index (slice $.Messages $i) 1).Role "user"')]
        pieces += [Lit(_plain(tools.result_close_user)), *_after_results(shape, tools)]
    pieces += [Act("else"), Lit(_plain(tools.result_close)), *_after_results(shape, tools)]
    return [*pieces, Act("end")]


def call_content_decl(tools: ToolShape | None) -> list[Piece]:
    """``$callContent``: the content of the last turn with tool calls, where the Jinja
    template prints it after the results."""
    if tools is None or tools.content_after_results is None:
        return []
    return [Act('$callContent := ""')]


def _after_results(shape: TemplateShape, tools: ToolShape) -> list[Piece]:
    """The content of the turn with the calls, after the last of their results (Gemma 4)."""
    if tools.content_after_results is None:
        return []
    text = trimmed("$callContent", shape.trim("assistant"), "r")
    return [Act("if $callContent"), *text, Lit(_plain(tools.content_after_results)), Act("end")]


def _close_last(shape: TemplateShape, tools: ToolShape) -> list[Piece]:
    """After a tool result that ends the conversation: its close, the content of the turn
    with the calls where the Jinja template prints it there, then the generation prompt."""
    text = generation_text(shape, _plain(tools.result_close_last))
    close = _plain(tools.result_close)
    if tools.content_after_results is None or not text.startswith(close):
        return [Lit(text), *_after_results(shape, tools)]
    rest = text[len(close) :]
    return [Lit(close), *_after_results(shape, tools), *([Lit(rest)] if rest else [])]


def named(text: str) -> list[Piece]:
    """Literal text in which the sentinel tool name becomes ``.ToolName``."""
    pieces: list[Piece] = []
    for n, part in enumerate(text.split(TOOL_NAME)):
        if n:
            pieces.append(Act(".ToolName"))
        if part:
            pieces.append(Lit(part))
    return pieces


__all__ = ["call_content_decl", "expand_definitions", "named", "tool_calls", "tool_results"]
