"""How the tool pieces of a TEMPLATE print: an assistant turn's tool calls, the tool results
that answer them, and the tool definitions as a ``range $.Tools`` loop.

Cut out of ``emit.py``, which assembles whole TEMPLATEs, because what Ollama's parser reads from
the calls' text (its tool-call tag) and how results share their wrappers are one concern of their
own; ``emit.py`` only decides where these pieces go.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeGuard

from .emit_trim import trimmed
from .gotext import Act, Lit, Piece, go_string, join_pieces
from .hf_render import JSON_CLOSE, JSON_OPEN
from .server_rules import current_rules
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
    shape: TemplateShape,
    tools: ToolShape,
    calls: Loop | None,
    *,
    content: bool = True,
    blank: tuple[str, str] = ("", ""),
) -> list[Piece]:
    """Content and tool calls of an assistant turn.

    The ``{{ if .ToolCalls }}`` block starts with the text before the first call: Ollama reads
    its tool-call tag from there (ollama/ollama ``tools/template.go``), so no other
    ``.ToolCalls`` test may come first (``$tc`` is a variable, which Ollama's search skips).
    ``blank``: the blank-turn reading's lead and dropped suffix part (``emit_blank``), left
    out of the opening: a turn with calls prints the lead whatever its content (as the tool
    shape was read), a turn without prints both only beside content that is not blank.
    """
    assert calls is not None
    lead, dropped = blank
    text = trimmed(".Content", shape.trim("assistant"), "a")
    pieces: list[Piece] = []
    if content and tools.content_after is not None:
        return _calls_then_content(shape, tools, calls, text)
    if content:
        cond = "$tc" if tools.content_always else "and $tc .Content"
        if tools.content_until_answer:
            pieces += list(ANSWERED_SCAN)
            cond += " (not $answered)"
        pieces += [Act("$tc := .ToolCalls")]
        if lead or dropped:
            pieces += [Act("$nb := false"), Act("if $tc"), Lit(lead), Act("end")]
            plain = trimmed(".Content", shape.trim("assistant"), "a", lead, mark="$nb")
        else:
            plain = text
        pieces += [Act(f"if {cond}")]
        pieces += [Lit(_plain(tools.content_pre)), *text, Lit(_plain(tools.content_post))]
        if tools.content_until_answer and shape.think is not None:
            # Reasoning of a turn with calls and no content prints where the content would
            # (gpt-oss's analysis channel), until an answer follows.
            pieces += [Act("else if and $tc .Thinking (not $answered)")]
            pieces += [Lit(_plain(tools.content_pre)), Act(".Thinking")]
            pieces += [Lit(_plain(tools.content_post))]
        pieces += [Act("else if not $tc"), *plain, Act("end")]
    pieces += [Act("if .ToolCalls"), *_tagged(_plain(calls.before))]
    pieces += [Act("range $k, $c := .ToolCalls"), Act("if $k"), Lit(_plain(calls.glue))]
    pieces += [Act("end"), *calls.item, Act("end")]
    end = tools.calls_end if tools.results else calls.after
    pieces += [Lit(_plain(end))]
    if shape.assistant_suffix:
        kept = shape.assistant_suffix[len(dropped) :] if content else shape.assistant_suffix
        pieces += [Act("else if not $last")]
        if dropped and content:
            pieces += [Act("if $nb"), Lit(dropped), Act("end")]
        pieces += [Lit(kept)]
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


def if_tools(body: list[Piece], plain: list[Piece]) -> list[str]:
    """``{{ if .Tools }}body{{ else }}plain{{ end }}``, preceded by its reading for the release
    in force where that release lacks ``.ToolName`` (:func:`without_tool_name`); the original
    comes last, so a failure is reported with the missing field's own reason."""
    readings = [[body, plain]]
    older = without_tool_name(readings[0])
    if older is not None:
        readings.insert(0, older)
    return [
        "{{- if .Tools }}" + join_pieces(b) + "{{- else }}" + join_pieces(p) + "{{- end }}"
        for b, p in readings
    ]


#: An action that loops over the messages, whose body a release without ``.ToolName`` updates.
_MESSAGES_LOOP = re.compile(r"range (?:\$\w+(?:, \$\w+)? := )?\.Messages")
#: After such a loop's action: the name of the turn's first call, if it has any. A range, not
#: an if on .ToolCalls: Ollama takes the tool-call tag from the text of the first if on
#: .ToolCalls (tools/template.go), which must stay the calls' own.
_KEEP_NAME = (
    "range $dtoK, $dtoC := .ToolCalls }}{{ if eq $dtoK 0 }}"
    "{{ $dtoToolName = $dtoC.Function.Name }}{{ end }}{{ end"
)


def without_tool_name(parts: Sequence[list[Piece]]) -> list[list[Piece]] | None:
    """``parts`` (one TEMPLATE's pieces, each part joined on its own) for a release without
    ``.ToolName`` (before v0.9.6), or None where the release in force has it or none is read.

    Such a release joins consecutive tool results anyway, so a result answers the call of
    the assistant turn before it: its name is that turn's first call's, kept in a variable
    each loop over the messages updates. Verification decides whether the reading holds (the
    other two namings: ``tool_names``'s lookup by call id and its ``PREVIOUS_CALL``).

    >>> from .server_rules import for_server
    >>> t = [[Act("range .Messages"), Lit("<"), Act(".ToolName"), Lit(">"), Act("end")]]
    >>> without_tool_name(t) is None  # the newest release has .ToolName
    True
    >>> with for_server("0.9.3"):
    ...     older = join_pieces((without_tool_name(t) or [[]])[0])
    >>> older.startswith('{{ $dtoToolName := "" }}{{ range .Messages }}{{ range $dtoK')
    True
    >>> older.endswith("<\\n{{- $dtoToolName }}>\\n{{- end }}"), "$dtoToolName = $dtoC" in older
    (True, True)
    """
    rules = current_rules()
    if rules is None or ".ToolName" not in dict(rules.missing):
        return None
    flat = [piece for part in parts for piece in part]
    loops = [n for n, piece in enumerate(flat) if _loops_messages(piece)]
    named = [n for n, piece in enumerate(flat) if piece == Act(".ToolName")]
    if not loops or not named or named[0] < loops[0]:
        return None
    return [_name_kept(part) for part in parts]


def _loops_messages(piece: Piece) -> TypeGuard[Act]:
    return isinstance(piece, Act) and _MESSAGES_LOOP.fullmatch(piece.code) is not None


def _name_kept(pieces: list[Piece]) -> list[Piece]:
    """Each loop over the messages declares and updates ``$dtoToolName``; ``.ToolName`` reads it."""
    out: list[Piece] = []
    previous: Piece | None = None
    for piece in pieces:
        if _loops_messages(piece):
            # One action, so that join_pieces adds no newline inside; the loop's own action
            # trims as join_pieces makes the declaration's do (after an action or non-space).
            trims = previous is not None and (
                isinstance(previous, Act) or not previous.text[-1:].isspace()
            )
            loop = "{{" + ("- " if trims else " ") + piece.code + " }}"
            piece = Act('$dtoToolName := "" }}' + loop + "{{ " + _KEEP_NAME)
        elif piece == Act(".ToolName"):
            piece = Act("$dtoToolName")
        out.append(piece)
        if isinstance(piece, Act) or piece.text:
            previous = piece
    return out


__all__ = [
    "call_content_decl",
    "expand_definitions",
    "if_tools",
    "named",
    "tool_calls",
    "tool_results",
    "without_tool_name",
]
