"""Emit candidate Ollama ``.Messages`` TEMPLATEs for an inferred :class:`TemplateShape`.

Each candidate is one reading of what the Jinja template does with cases the sentinel renders
leave open (an empty system message, a default system prompt, a copied lead-in); the search in
``translate.py`` keeps the first that verifies.
"""

from __future__ import annotations

from dataclasses import replace

from .emit_joined import joined_head
from .emit_last_user import last_user_scan, prefix_out_of_head, user_prefix_in_loop
from .emit_opening import after_query_scan, last_query, opening, reasoning
from .emit_prefill import prefill_trailing
from .gotext import Act, Lit, Piece, go_string, join_pieces
from .hf_render import JSON_CLOSE, JSON_OPEN
from .shape import TOOL_NAME, TemplateShape
from .source import TemplateSource
from .system_variants import (
    absent_system_default,
    any_system,
    hoisted_expr,
    hoisted_system,
    system_content,
)
from .thinking import generation_text, switch_pieces
from .tool_shape import ANSWERED_SCAN, Loop, ToolShape
from .tool_system import system_with_tools


def _strip_bos(source: TemplateSource, preamble: str) -> str:
    """Leave BOS to the tokenizer unless we know it does not add one."""
    bos = source.bos_token
    if bos and preamble.startswith(bos) and source.add_bos_token is not False:
        return preamble[len(bos) :]
    return preamble


def candidates(
    source: TemplateSource, shape: TemplateShape | None, tools: ToolShape | None = None
) -> list[tuple[str, str | None]]:
    """Candidate (TEMPLATE, SYSTEM) pairs, most likely first.

    With ``tools``, assistant turns print their tool calls and tool results get their
    wrappers; the candidates keep their order, so index ``n`` is the same reading either way.
    """
    return [
        (join_pieces(pieces), system) for pieces, system in _candidate_pieces(source, shape, tools)
    ]


def _candidate_pieces(
    source: TemplateSource, shape: TemplateShape | None, tools: ToolShape | None
) -> list[tuple[list[Piece], str | None]]:
    if shape is None:
        return [([Act("range .Messages"), Act(".Content"), Act("end")], None)]
    found: list[tuple[list[Piece], str | None]] = []
    modes = ["render", "skip"] + (["default"] if shape.default_system else [])
    shapes = [shape]
    if shape.system_mode == "last_user":
        shapes.append(replace(shape, system_mode="final_user"))
    for variant in shapes:
        for empty_system in modes:
            pieces = _emit(source, variant, empty_system=empty_system, tools=tools)
            # default_block: the TEMPLATE prints the default itself, so no Modelfile SYSTEM.
            system = None if variant.system_mode == "default_block" else shape.default_system
            pair = (pieces, system)
            if pair not in found:
                found.append(pair)
    if shape.head_system is not None:
        for empty_system in ("skip", "render", "inline"):
            if empty_system == "inline" and shape.mid_system is None:
                continue
            found.append((_emit_header(source, shape, empty_system, tools), None))
    return found


def tool_candidates(
    source: TemplateSource,
    shape: TemplateShape,
    tools: ToolShape,
    lead: tuple[str, tuple[str, str] | None],
    plain: str,
    system: str | None = None,
    last_user: tuple[int, str] | None = None,
) -> list[str]:
    """TEMPLATEs that print tool definitions: ``{{ if .Tools }}`` a lead-in observed with
    tools offered (the tool list as a ``range $.Tools`` loop) ``{{ else }}`` ``plain``.

    Args:
        source: for the BOS handling.
        shape: the plain shape (turn wrappers after the lead-in).
        tools: with ``definitions`` set.
        lead: (head, head_system) rendered with one sentinel tool offered.
        plain: the TEMPLATE for requests without tools.
        system: the Modelfile SYSTEM that goes with ``plain``.
        last_user: where the definitions go in the last user turn, if the Jinja puts them
            there (tried before the lead-in readings).
    """
    assert tools.definitions is not None
    head, head_system = lead
    with_tools = replace(shape, head=head, head_system=head_system)
    found: list[str] = []
    bodies: list[list[Piece]] = []
    if last_user is not None:
        modes = ["render", "skip"] + (["default"] if shape.default_system else [])
        variants = [shape]
        if shape.system_mode == "last_user":
            variants.append(replace(shape, system_mode="final_user"))
        placed = system_with_tools(source, shape)
        variants += [placed] if placed is not None else []
        if shape.default_system == system:
            for variant in variants:
                for mode in modes:
                    bodies.append(
                        _emit(source, variant, empty_system=mode, tools=tools, last_user=last_user)
                    )
    if shape.head_system is not None and last_user is not None:
        # The lead-in copied from observation, the definitions in the last user turn.
        for empty_system in ("skip", "render"):
            bodies.append(_emit_header(source, shape, empty_system, tools, system, last_user))
    for body_pieces in bodies:
        expanded = _expand_definitions(body_pieces, tools.definitions)
        if expanded is not None:
            body = join_pieces(expanded)
            found.append("{{- if .Tools }}" + body + "{{- else }}" + plain + "{{- end }}")
    if head_system is None and shape.system_mode == "drop" and head.endswith(shape.user_prefix):
        # System messages are dropped anyway: the lead-in with tools is the preamble.
        dropped = replace(shape, preamble=head[: len(head) - len(shape.user_prefix)])
        pieces = _emit(source, dropped, empty_system="skip", tools=tools)
        expanded = _expand_definitions(pieces, tools.definitions)
        if expanded is not None:
            body = join_pieces(expanded)
            found.append("{{- if .Tools }}" + body + "{{- else }}" + plain + "{{- end }}")
    if head_system is None:
        return found
    for empty_system in ("skip", "render", "inline"):
        if empty_system == "inline" and shape.mid_system is None:
            continue
        pieces = _emit_header(source, with_tools, empty_system, tools, system)
        expanded = _expand_definitions(pieces, tools.definitions)
        if expanded is None:
            return []
        body = join_pieces(expanded)
        found.append("{{- if .Tools }}" + body + "{{- else }}" + plain + "{{- end }}")
    return found


def _expand_definitions(pieces: list[Piece], loop: Loop) -> list[Piece] | None:
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


def _emit_header(
    source: TemplateSource,
    shape: TemplateShape,
    empty_system: str,
    tools: ToolShape | None,
    default: str | None = None,
    last_user: tuple[int, str] | None = None,
) -> list[Piece]:
    """A template whose whole lead-in (default system, preambles) is copied from observation.

    For templates that put the system prompt inside the first user turn, swap a default system
    for the given one, or drop a preamble with it: text before the first user content is
    either the no-system lead-in or (prefix, system, suffix) as observed. ``empty_system``:
    an empty leading system message is absent (``skip``), present (``render``), or absent from
    the lead-in but rendered as an ordinary system turn (``inline``, Command-A does this).
    ``last_user``: tool definitions inside the last user turn's prefix (Mistral Small 3.2's
    ``[AVAILABLE_TOOLS]``), so every user turn prints its prefix in the loop.
    """
    assert shape.head_system is not None
    before, after = shape.head_system
    if last_user is not None:
        cut = prefix_out_of_head(shape, after)
        if cut is None:
            return []
        shape, after = cut
    scan, expr = hoisted_expr(shape) if shape.system_mode.startswith("hoist") else ([], "$sys0")
    has = "$hasSystem" if empty_system == "render" else expr
    if has == "$hasSystem" and expr != "$sys0":
        # Hoisted: any system message, wherever it stands, opens the system lead-in.
        scan, has = [*scan, *any_system()], "$anySystem"
    if default is not None:
        # Ollama sends the Modelfile SYSTEM (the plain default) as a system message; with
        # tools the Jinja template prints its own default, as when no system message is given.
        has = f"(and {has} (ne $sys0 {go_string(default)}))"
    pieces: list[Piece] = [*_system_slot_scan("first_user"), Act('$sys0 := ""'), *scan]
    pieces += [Act("$inl0 := false")] if empty_system == "inline" else []
    pieces += [Act('if and .Messages (eq (index .Messages 0).Role "system")')]
    pieces += [Act("$sys0 = (index .Messages 0).Content"), Act("end")]
    inline = _inline_head(shape) if empty_system == "inline" else None
    head, after, lead, head_lead = joined_head(shape, _strip_bos(source, shape.head), after, inline)
    pieces += [Act(f"if {has}"), Lit(_strip_bos(source, before))]
    pieces += [*_content(expr, shape.trim("system"), "s"), Lit(after)]
    if inline is not None:
        # An empty leading system turn prints between the lead-in and the first user turn
        # (Command A), so the lead-in stops before the user opening it otherwise ends with.
        pieces += [Act('else if and .Messages (eq (index .Messages 0).Role "system")')]
        pieces += [Lit(_strip_bos(source, inline)), Act("$inl0 = true")]
    pieces += [Act("else"), Lit(head), Act("end")]
    pieces += [Act('$prevRole := ""')] if tools is not None and tools.results else []
    pieces += _call_content_decl(tools)
    pieces += after_query_scan(tools)
    pieces += last_query(shape)
    pieces += last_user_scan(last_user)
    pieces += [Act("range $i, $_ := .Messages"), Act("$last := eq (len (slice $.Messages $i)) 1")]
    pieces += [Act('if eq .Role "user"'), *user_prefix_in_loop(shape, last_user, every=True)]
    pieces += [Act("if eq $i $sysAt")]
    pieces += [Act(f"if {has}"), *_content(".Content", shape.trim("user_sys"), "f", lead)]
    pieces += [Act("else")]
    if inline is not None:
        pieces += [Act("if $inl0"), Lit(shape.user_prefix), Act("end")]
    pieces += [*_content(".Content", shape.trim("user"), "g", head_lead), Act("end")]
    rest = user_prefix_in_loop(shape, last_user, every=False)
    pieces += [Act("else"), *rest, *_content(".Content", shape.trim("user"), "u")]
    pieces += [Act("end"), *_user_tail(shape)]
    if shape.mid_system is not None:
        prefix, suffix = shape.mid_system
        cond = "or (gt $i 0) (not .Content)" if empty_system == "inline" else "gt $i 0"
        pieces += [Act(f'else if and (eq .Role "system") ({cond})'), Lit(prefix)]
        pieces += [*_content(".Content", shape.trim("system_mid"), "m"), Lit(suffix)]
    pieces += _assistant(shape, tools)
    return pieces


def _inline_head(shape: TemplateShape) -> str | None:
    """The lead-in less the first user opening it ends with, where an empty leading system
    message prints as its own turn before that opening; None when it does not end so."""
    prefix = shape.user_prefix
    if shape.mid_system is None or not prefix or not shape.head.endswith(prefix):
        return None
    return shape.head[: len(shape.head) - len(prefix)]


def _assistant(shape: TemplateShape, tools: ToolShape | None) -> list[Piece]:
    """The assistant branch (and the tool branch) and the two closing ``end``s of the loop."""
    pieces: list[Piece] = [Act('else if eq .Role "assistant"')]
    opens = opening(shape, tools)
    if tools is not None and tools.bare_after_results:
        # Right after tool results the Jinja template opens no new turn (DeepSeek V3.2).
        opens = [Act('if ne $prevRole "tool"'), *opens, Act("end")]
    pieces += opens
    if shape.think is None or shape.think.head is None:
        pieces += reasoning(shape)
    if tools is not None and (tools.content_dropped or tools.content_after_results is not None):
        content = _content(".Content", shape.trim("assistant"), "a")
        pieces += [Act("$tc := .ToolCalls"), Act("if not $tc"), *content, Act("end")]
        if tools.content_after_results is not None:
            # Printed after the results that answer these calls (Gemma 4).
            pieces += [Act("if $tc"), Act("$callContent = .Content"), Act("end")]
        pieces += _calls(shape, tools, tools.calls, content=False)
    elif tools is not None and tools.calls is not None:
        pieces += _calls(shape, tools, tools.calls)
    else:
        pieces += _content(".Content", shape.trim("assistant"), "a")
        pieces += prefill_trailing(shape, "a")
        if shape.assistant_suffix:
            pieces += [Act("if not $last"), Lit(shape.assistant_suffix), Act("end")]
    if tools is not None and tools.results:
        pieces += _results(shape, tools)
        return [*pieces, Act("end"), Act("$prevRole = .Role"), Act("end")]
    if shape.tool_turn is not None:
        prefix, suffix, suffix_last = shape.tool_turn
        pieces += [Act('else if eq .Role "tool"'), *_named(prefix), Act(".Content")]
        if suffix_last == suffix:
            pieces += _named(suffix)
        else:
            pieces += [Act("if $last"), *_named(suffix_last), Act("else"), *_named(suffix)]
            pieces += [Act("end")]
    pieces += [Act("end"), Act("end")]
    return pieces


def _calls(
    shape: TemplateShape, tools: ToolShape, calls: Loop | None, *, content: bool = True
) -> list[Piece]:
    """Content and tool calls of an assistant turn.

    The ``{{ if .ToolCalls }}`` block starts with the text before the first call: Ollama reads
    its tool-call tag from there (ollama/ollama ``tools/template.go``), so no other
    ``.ToolCalls`` test may come first (``$tc`` is a variable, which Ollama's search skips).
    """
    assert calls is not None
    text = _content(".Content", shape.trim("assistant"), "a")
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


def _results(shape: TemplateShape, tools: ToolShape) -> list[Piece]:
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


def _call_content_decl(tools: ToolShape | None) -> list[Piece]:
    """``$callContent``: the content of the last turn with tool calls, where the Jinja
    template prints it after the results."""
    if tools is None or tools.content_after_results is None:
        return []
    return [Act('$callContent := ""')]


def _after_results(shape: TemplateShape, tools: ToolShape) -> list[Piece]:
    """The content of the turn with the calls, after the last of their results (Gemma 4)."""
    if tools.content_after_results is None:
        return []
    text = _content("$callContent", shape.trim("assistant"), "r")
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


def _named(text: str) -> list[Piece]:
    """Literal text in which the sentinel tool name becomes ``.ToolName``."""
    pieces: list[Piece] = []
    for n, part in enumerate(text.split(TOOL_NAME)):
        if n:
            pieces.append(Act(".ToolName"))
        if part:
            pieces.append(Lit(part))
    return pieces


def _emit(
    source: TemplateSource,
    shape: TemplateShape,
    *,
    empty_system: str,
    tools: ToolShape | None,
    last_user: tuple[int, str] | None = None,
) -> list[Piece]:
    """Pieces of a ``.Messages`` template for ``shape``.

    ``empty_system``: what an empty system message does: ``render`` its wrapper, ``skip`` it,
    or stand for the ``default`` system prompt (templates that test the content's truth).
    """
    pieces: list[Piece] = [Lit(_strip_bos(source, shape.preamble))]
    inside_user = shape.system_mode in ("first_user", "last_user", "final_user")
    if inside_user:
        pieces += _system_slot_scan(shape.system_mode)
    pieces += [Act('$prevRole := ""')] if tools is not None and tools.results else []
    pieces += _call_content_decl(tools)
    pieces += after_query_scan(tools)
    pieces += last_query(shape)
    if last_user is not None:
        pieces += last_user_scan(last_user)
    if shape.system_mode in ("hoist", "hoist_last"):
        trim = shape.trim("system")
        pieces += hoisted_system(shape, empty_system, lambda expr: _content(expr, trim, "h"))
    elif shape.system_mode == "default_block":
        pieces += absent_system_default(shape)
    pieces += [
        Act("range $i, $_ := .Messages"),
        Act("$last := eq (len (slice $.Messages $i)) 1"),
    ]
    if shape.system_mode in ("hoist", "hoist_last"):
        pieces += [Act('if eq .Role "system"'), Act('else if eq .Role "user"')]
    elif shape.system_mode in ("block", "default_block"):
        pieces += [Act('if eq .Role "system"')]
        content = system_content(shape, _content)
        body = [Lit(shape.system_prefix), *content]
        body += [Lit(shape.system_suffix)]
        if empty_system == "skip":
            body = [Act("if .Content"), *body, Act("end")]
        elif empty_system == "default":
            default = [
                Lit(shape.system_prefix + (shape.default_system or "") + shape.system_suffix)
            ]
            body = [Act("if .Content"), *body, Act("else"), *default, Act("end")]
        pieces += body
        pieces += [Act('else if eq .Role "user"')]
    else:
        pieces += [Act('if eq .Role "user"')]
    if last_user is None:
        pieces += [Lit(shape.user_prefix)]
    else:
        at, text = last_user
        pieces += [Lit(shape.user_prefix[:at]), Act("if eq $i $lastUser"), Lit(text), Act("end")]
        pieces += [Lit(shape.user_prefix[at:])]
    if inside_user:
        has = "$hasSystem" if empty_system == "render" else "$.System"
        # final_user: only a user message that ends the conversation carries the system prompt
        # (Mistral Nemo/Small drop it when a prefilled assistant message follows).
        slot = "$last" if shape.system_mode == "final_user" else "(eq $i $sysAt)"
        cond = f"and {has} {slot}"
        pieces += [
            Act(f"if {cond}"),
            Lit(shape.system_prefix),
            *_content("$.System", shape.trim("system"), "s"),
            Lit(shape.system_suffix),
            Act("end"),
        ]
    pieces += _content(".Content", shape.trim("user"), "u")
    pieces += _user_tail(shape)
    return pieces + _assistant(shape, tools)


_CHARS = {"nl": (10,), "ws": (32, 9, 10, 13, 11, 12)}


def _is_in(var: str, kind: str) -> str:
    tests = " ".join(f"(eq {var} {code})" for code in _CHARS[kind])
    return f"or {tests}" if len(_CHARS[kind]) > 1 else tests[1:-1]


def _content(expr: str, trim: tuple[str, str], tag: str, lead: str = "") -> list[Piece]:
    """Print ``expr``, stripping whitespace as the Jinja template does (``lead`` before it
    where it is not blank: ``emit_joined``).

    Ollama gives templates no trim function and no arithmetic, so this scans bytes with
    ``range`` over an int (Go >= 1.22), ``index`` and ``break``, from the front for the left
    edge and from the back for the right: ``len (slice $s $k)`` is ``len - k`` and
    ``len (slice $s 1 (len (slice $s $k)))`` is ``len - 1 - k``.
    """
    left, right = trim
    if not left and not right:
        return [Lit(lead), Act(expr)] if lead else [Act(expr)]
    s, a, b, c = f"$s{tag}", f"$a{tag}", f"$b{tag}", f"$c{tag}"
    body: list[Piece] = [Act(f"{s} := {expr}"), Act(f"{a} := {f'len {s}' if left else 0}")]
    body += [Act(f"{b} := {0 if right else f'len {s}'}")]
    if left:
        body += [Act(f"range $k := len {s}"), Act(f"{c} := index {s} $k")]
        body += [Act(f"if not ({_is_in(c, left)})"), Act(f"{a} = $k"), Act("break")]
        body += [Act("end"), Act("end")]
    if right:
        back = f"len (slice {s} 1 (len (slice {s} $k)))"
        body += [Act(f"range $k := len {s}"), Act(f"{c} := index {s} ({back})")]
        body += [Act(f"if not ({_is_in(c, right)})"), Act(f"{b} = len (slice {s} $k)")]
        body += [Act("break"), Act("end"), Act("end")]
    body += [Act(f"if lt {a} {b}"), *([Lit(lead)] if lead else []), Act(f"slice {s} {a} {b}")]
    return [*body, Act("end")]


def _user_tail(shape: TemplateShape) -> list[Piece]:
    last = shape.user_suffix_last + shape.generation_prompt
    if shape.think is not None and shape.think.off:
        switch = [Lit(generation_text(shape, last)), *switch_pieces(shape)]
        return [Act("if $last"), *switch, Act("else"), Lit(shape.user_suffix), Act("end")]
    if last == shape.user_suffix:
        return [Lit(shape.user_suffix)]
    return [Act("if $last"), Lit(last), Act("else"), Lit(shape.user_suffix), Act("end")]


def _system_slot_scan(mode: str) -> list[Piece]:
    """Find the user message that carries the system prompt (first or last user turn)."""
    assign = "$sysAt = $i" if mode == "last_user" else "if lt $sysAt 0 }}{{ $sysAt = $i }}{{ end"
    return [
        Act("$sysAt := -1"),
        Act("$hasSystem := false"),
        Act("range $i, $m := .Messages"),
        Act('if eq $m.Role "user"'),
        Act(assign),
        Act("end"),
        Act('if and (eq $m.Role "system") (eq $i 0)'),
        Act("$hasSystem = true"),
        Act("end"),
        Act("end"),
    ]


__all__ = ["candidates", "tool_candidates"]
