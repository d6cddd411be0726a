"""Emit candidate Ollama ``.Messages`` TEMPLATEs for an inferred :class:`TemplateShape`.

Each candidate is one reading of what the Jinja template does with cases the sentinel renders
leave open (an empty system message, a default system prompt, a copied lead-in); the search in
``translate.py`` keeps the first that verifies.
"""

from __future__ import annotations

from dataclasses import replace

from .emit_blank import rotated_opening
from .emit_final import user_turn_opening
from .emit_fold import folded
from .emit_joined import joined_head
from .emit_last_user import last_user_scan, prefix_out_of_head, user_prefix_in_loop
from .emit_opening import after_query_scan, last_query, opening, reasoning
from .emit_prefill import prefill_trailing
from .emit_tools import (
    call_content_decl,
    expand_definitions,
    if_tools,
    named,
    tool_calls,
    tool_results,
)
from .emit_trim import trimmed
from .gotext import Act, Lit, Piece, go_string, join_pieces
from .last_role import preamble_by_last_role
from .last_turns import frame_pieces
from .shape import TemplateShape
from .source import TemplateSource
from .system_echo import echoed_system
from .system_later import later_system
from .system_pad import padded_lead
from .system_variants import (
    absent_system_default,
    any_system,
    hoisted_expr,
    hoisted_system,
    system_content,
)
from .thinking import generation_text, switch_pieces
from .tool_shape import ToolShape
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
        (join_pieces(pieces), system) for pieces, system in candidate_pieces(source, shape, tools)
    ]


def candidate_pieces(
    source: TemplateSource, shape: TemplateShape | None, tools: ToolShape | None
) -> list[tuple[list[Piece], str | None]]:
    """:func:`candidates` as pieces, for the tool TEMPLATEs that embed one (``tool_candidates``)."""
    if shape is None:
        # A frame around the last turns (last_turns), then every content as it stands.
        framed = frame_pieces(source)
        fallback: list[Piece] = [Act("range .Messages"), Act(".Content"), Act("end")]
        found_none: list[tuple[list[Piece], str | None]] = [(framed, None)] if framed else []
        return [*found_none, (fallback, None)]
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
    if shape.head_system is not None and shape.final_user is None:
        # The lead-in copied from observation holds the first user opening: not one that
        # ends the conversation (final_user.py), so only ``_emit`` prints that.
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
    plain: list[Piece],
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
        plain: the TEMPLATE for requests without tools, as pieces.
        system: the Modelfile SYSTEM that goes with ``plain``.
        last_user: where the definitions go in the last user turn, if the Jinja puts them
            there (tried before the lead-in readings).

    Where the server in force has no ``.ToolName`` (before v0.9.6), each TEMPLATE that reads
    it comes after its reading without it (:func:`emit_tools.without_tool_name`).
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
        # default_block: the TEMPLATE prints the default itself, with no Modelfile SYSTEM.
        if shape.default_system == system or shape.system_mode == "default_block":
            for variant in variants:
                for mode in modes:
                    bodies.append(
                        _emit(source, variant, empty_system=mode, tools=tools, last_user=last_user)
                    )
    if shape.head_system is not None and last_user is not None and shape.final_user is None:
        # The lead-in copied from observation, the definitions in the last user turn.
        for empty_system in ("skip", "render"):
            bodies.append(_emit_header(source, shape, empty_system, tools, system, last_user))
    for body_pieces in bodies:
        expanded = expand_definitions(body_pieces, tools.definitions)
        if expanded is not None:
            found += if_tools(expanded, plain)
    if head_system is None and shape.system_mode == "drop" and head.endswith(shape.user_prefix):
        # System messages are dropped anyway: the lead-in with tools is the preamble.
        dropped = replace(shape, preamble=head[: len(head) - len(shape.user_prefix)])
        pieces = _emit(source, dropped, empty_system="skip", tools=tools)
        expanded = expand_definitions(pieces, tools.definitions)
        if expanded is not None:
            found += if_tools(expanded, plain)
    if head_system is None or shape.final_user is not None:
        return found
    for empty_system in ("skip", "render", "inline"):
        if empty_system == "inline" and shape.mid_system is None:
            continue
        pieces = _emit_header(source, with_tools, empty_system, tools, system)
        expanded = expand_definitions(pieces, tools.definitions)
        if expanded is None:
            return []
        found += if_tools(expanded, plain)
    return found


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
    pieces += [Act(f"if {has}"), *padded_lead(shape, _strip_bos(source, before))]
    pieces += [*trimmed(expr, shape.trim("system"), "s"), Lit(after)]
    if inline is not None:
        # An empty leading system turn prints between the lead-in and the first user turn
        # (Command A), so the lead-in stops before the user opening it otherwise ends with.
        pieces += [Act('else if and .Messages (eq (index .Messages 0).Role "system")')]
        pieces += [Lit(_strip_bos(source, inline)), Act("$inl0 = true")]
    pieces += [Act("else"), Lit(head), Act("end")]
    pieces += [Act('$prevRole := ""')] if tools is not None and tools.results else []
    pieces += call_content_decl(tools)
    pieces += after_query_scan(tools)
    pieces += last_query(shape)
    pieces += last_user_scan(last_user)
    pieces += [Act("range $i, $_ := .Messages"), Act("$last := eq (len (slice $.Messages $i)) 1")]
    pieces += [Act('if eq .Role "user"'), *user_prefix_in_loop(shape, last_user, every=True)]
    pieces += [Act("if eq $i $sysAt")]
    pieces += [Act(f"if {has}"), *trimmed(".Content", shape.trim("user_sys"), "f", lead)]
    pieces += [Act("else")]
    if inline is not None:
        pieces += [Act("if $inl0"), Lit(shape.user_prefix), Act("end")]
    pieces += [*trimmed(".Content", shape.trim("user"), "g", head_lead), Act("end")]
    rest = user_prefix_in_loop(shape, last_user, every=False)
    pieces += [Act("else"), *rest, *trimmed(".Content", shape.trim("user"), "u")]
    pieces += [Act("end"), *_user_tail(shape)]
    if shape.mid_system is not None:
        prefix, suffix = shape.mid_system
        cond = "or (gt $i 0) (not .Content)" if empty_system == "inline" else "gt $i 0"
        pieces += [Act(f'else if and (eq .Role "system") ({cond})'), Lit(prefix)]
        pieces += [*trimmed(".Content", shape.trim("system_mid"), "m"), Lit(suffix)]
    pieces += _assistant(shape, tools)
    return pieces


def _inline_head(shape: TemplateShape) -> str | None:
    """The lead-in less the first user opening it ends with, where an empty leading system
    message prints as its own turn before that opening; None when it does not end so."""
    prefix = shape.user_prefix
    if shape.mid_system is None or not prefix or not shape.head.endswith(prefix):
        return None
    return shape.head[: len(shape.head) - len(prefix)]


#: The role of the message after the current one (inside ``range $i, $_ := .Messages``).
_NEXT_ROLE = "(index (slice $.Messages $i) 1).Role"


def _blank_reading(
    shape: TemplateShape, tools: ToolShape | None, *, calls: bool
) -> tuple[TemplateShape, str, str]:
    """(the shape the turn opens with, the lead, the dropped part of the suffix) of the
    blank-turn reading (``emit_blank.rotated_opening``); ``shape`` and two empty texts where
    there is none, or where tool calls print in a way it is not carried into (content
    dropped, printed after the calls or results, a turn with calls opening otherwise)."""
    rotated = rotated_opening(shape)
    if rotated is None:
        return shape, "", ""
    if calls:
        assert tools is not None
        plain_calls = tools.calls is not None and tools.opening is None
        if not plain_calls or tools.content_dropped or tools.content_after is not None:
            return shape, "", ""
        if tools.content_after_results is not None or tools.content_until_answer:
            return shape, "", ""
    return rotated


def _assistant(shape: TemplateShape, tools: ToolShape | None) -> list[Piece]:
    """The assistant branch (and the tool branch) and the two closing ``end``s of the loop."""
    pieces: list[Piece] = [Act('else if eq .Role "assistant"')]
    calls = tools is not None and (
        tools.calls is not None or tools.content_dropped or tools.content_after_results is not None
    )
    # A blank turn's shorter wrapper (emit_blank): a turn without tool calls prints the lead
    # and the dropped part of its suffix only beside content that is not blank.
    opened, lead, dropped = _blank_reading(shape, tools, calls=calls)
    call_dropped = shape.call_turn == "dropped" and (tools is None or tools.calls is None)
    if call_dropped:
        # A message with calls and no content prints nothing (GLM-4: tool_turns.py).
        pieces += [Act("if or .Content (not .ToolCalls)")]
    opens = opening(opened, tools)
    if tools is not None and tools.bare_after_results:
        # Right after tool results the Jinja template opens no new turn (DeepSeek V3.2).
        opens = [Act('if ne $prevRole "tool"'), *opens, Act("end")]
    pieces += opens
    if opened.think is None or opened.think.head is None:
        pieces += reasoning(opened)
    if tools is not None and (tools.content_dropped or tools.content_after_results is not None):
        content = trimmed(".Content", shape.trim("assistant"), "a")
        pieces += [Act("$tc := .ToolCalls"), Act("if not $tc"), *content, Act("end")]
        if tools.content_after_results is not None:
            # Printed after the results that answer these calls (Gemma 4).
            pieces += [Act("if $tc"), Act("$callContent = .Content"), Act("end")]
        pieces += tool_calls(shape, tools, tools.calls, content=False)
    elif tools is not None and tools.calls is not None:
        pieces += tool_calls(shape, tools, tools.calls, blank=(lead, dropped))
    else:
        if shape.call_turn == "empty":
            # Calls print nothing (tool_turns.py); the reference gives Ollama's round trip.
            pieces += [Act("if .ToolCalls"), Act("end")]
        fold, text = folded(".Content", shape.fold("assistant"), "a")
        pieces += [*fold, *trimmed(text, shape.trim("assistant"), "a", lead)]
        pieces += prefill_trailing(shape, "a")
        if shape.assistant_suffix:
            kept = shape.assistant_suffix[len(dropped) :]
            unless: list[Piece] = []
            if dropped:
                unless = [Act("if lt $aa $ba"), Lit(dropped), Act("end")]
            pieces += [Act("if not $last"), *unless, Lit(kept), Act("end")]
    pieces += [Act("end")] if call_dropped else []
    if tools is not None and tools.results:
        pieces += tool_results(shape, tools)
        return [*pieces, Act("end"), Act("$prevRole = .Role"), Act("end")]
    if shape.tool_turn is not None:
        prefix, suffix, suffix_last = shape.tool_turn
        pieces += [Act('else if eq .Role "tool"'), *named(prefix), Act(".Content")]
        if suffix_last == suffix:
            pieces += named(suffix)
        else:
            pieces += [Act("if $last"), *named(suffix_last), Act("else"), *named(suffix)]
            pieces += [Act("end")]
        if shape.tool_then_assistant:
            # Before an assistant turn the result closes otherwise (tool_turns.py).
            pieces += [Act("if not $last"), Act(f'if eq {_NEXT_ROLE} "assistant"')]
            pieces += [*named(shape.tool_then_assistant), Act("end"), Act("end")]
    pieces += [Act("end"), Act("end")]
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
    pieces = preamble_by_last_role(shape, lambda text: _strip_bos(source, text))
    inside_user = shape.system_mode in ("first_user", "last_user", "final_user")
    if inside_user:
        pieces += _system_slot_scan(shape.system_mode)
    pieces += [Act('$prevRole := ""')] if tools is not None and tools.results else []
    pieces += call_content_decl(tools)
    pieces += after_query_scan(tools)
    pieces += last_query(shape)
    if last_user is not None:
        pieces += last_user_scan(last_user)
    if shape.system_mode in ("hoist", "hoist_last"):
        trim = shape.trim("system")
        pieces += hoisted_system(shape, empty_system, lambda expr: trimmed(expr, trim, "h"))
    elif shape.system_mode == "default_block":
        pieces += absent_system_default(shape)
    pieces += [
        Act("range $i, $_ := .Messages"),
        Act("$last := eq (len (slice $.Messages $i)) 1"),
    ]
    if shape.system_mode in ("hoist", "hoist_last"):
        echo = echoed_system(shape, system_content(shape, trimmed))
        pieces += [Act('if eq .Role "system"'), *echo, Act('else if eq .Role "user"')]
    elif shape.system_mode in ("block", "default_block"):
        pieces += [Act('if eq .Role "system"')]
        content = system_content(shape, trimmed)
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
    pieces += user_turn_opening(shape, last_user)
    if inside_user:
        has = "$hasSystem" if empty_system == "render" else "$.System"
        # final_user: only a user message that ends the conversation carries the system prompt
        # (Mistral Nemo/Small drop it when a prefilled assistant message follows).
        slot = "$last" if shape.system_mode == "final_user" else "(eq $i $sysAt)"
        cond = f"and {has} {slot}"
        pieces += [
            Act(f"if {cond}"),
            Lit(shape.system_prefix),
            *trimmed("$.System", shape.trim("system"), "s"),
            Lit(shape.system_suffix),
            Act("end"),
        ]
    fold, text = folded(".Content", shape.fold("user"), "u")
    pieces += [*fold, *trimmed(text, shape.trim("user"), "u")]
    pieces += _user_tail(shape)
    pieces += later_system(shape, trimmed)
    return pieces + _assistant(shape, tools)


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


__all__ = ["candidate_pieces", "candidates", "tool_candidates"]
