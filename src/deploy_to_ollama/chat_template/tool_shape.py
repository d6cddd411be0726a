"""Infer how a Jinja template prints tool calls and tool results, as loops.

We render the sentinel calls and results (:mod:`.tool_sentinels`) one and two at a time with
``tojson`` output marked, and read each list off as a loop: the text before the first item,
the item (its sentinels replaced by Go expressions, its JSON values by Ollama's ``json``), the
glue between items and the text after. No family table: a layout never seen before goes
through the same inference, and what it yields still has to verify. The tool definitions,
printed once per conversation, are :mod:`.tool_defs`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .gotext import Act, Piece
from .loops import Loop, extent, infer_loop, mentions, single_loop
from .shape import U1, U2, TemplateShape
from .source import TemplateSource
from .tool_args import ARGS_ACT, ArgumentLoop, per_argument, placeholder, splice
from .tool_defs import definitions_loop, last_user_insertion, tool_lead
from .tool_names import names_after_call, with_looked_up_names, with_previous_call
from .tool_sentinels import A2, CALLS, CONTENT, RESULTS, TOOLS, calls_rejected
from .tool_sentinels import call_conv as _call_conv
from .tool_sentinels import render as _render


@dataclass(frozen=True, slots=True)
class ToolShape:
    """Tool text the Go template must print, each part None where it was not inferred."""

    definitions: Loop | None = None
    calls: Loop | None = None
    content_pre: str = ""
    """Before an assistant's content when the turn also has tool calls."""
    content_post: str = ""
    """Between that content and the first call's wrapper."""
    calls_end: str = ""
    """The end of an assistant turn with tool calls (after the last call)."""
    result_open: str = ""
    """Before the first of consecutive tool results."""
    result: tuple[Piece, ...] = ()
    result_glue: str = ""
    result_close: str = ""
    """After the last of consecutive tool results, before the next turn."""
    result_close_last: str = ""
    """After a tool result that ends the conversation (includes the generation prompt)."""
    result_close_user: str | None = None
    """After the last of consecutive tool results when a user turn follows, where that
    differs from ``result_close`` (the shape gave part of the user opening to the assistant
    suffix, as Llama 4's ``<|header_start|>user``)."""
    opening: int | None = None
    """Where a turn with tool calls leaves the assistant prefix (None: it keeps all of it)."""
    bare_after_results: bool = False
    """An assistant turn right after tool results opens no turn of its own (the results'
    close leads into its content, as DeepSeek V3.2's ``</function_results>``)."""
    values_unproven: bool = False
    """Call arguments print one by one and it was not seen how a value that is not a string
    prints (Go's own formatting is used; only string values are proven)."""
    prefix_after_query: bool = False
    """A turn with tool calls after the last user message opens with the prefix of a final
    assistant turn (Qwen3.5's empty ``<think>`` block)."""
    calls_dropped: bool = False
    """The Jinja template prints an assistant turn with tool calls as an ordinary turn."""
    content_dropped: bool = False
    """The Jinja template drops an assistant's content when the turn has tool calls."""
    content_after: int | None = None
    """The content prints after the calls (Gemma 4), this many characters into the text that
    follows the last call; None when it prints before them."""
    content_after_results: str | None = None
    """The content prints after the last of the results that follow the calls, then this
    text (Gemma 4's ``<tool_response|>content<turn|>``); None when it prints elsewhere."""
    content_always: bool = False
    """``content_pre``/``content_post`` wrap the content of a turn with calls even when empty."""
    results_dropped: bool = False
    """The Jinja template prints no tool result (only the generation prompt after a last one)."""
    content_until_answer: bool = False
    """The content of a turn with calls prints (``content_pre``/``content_post``) only where no
    assistant turn without calls follows later (gpt-oss drops the analysis once answered)."""
    reason: str = ""
    """Why some part was not inferred (empty when all were)."""

    @property
    def results(self) -> bool:
        """Whether tool results were inferred (printed or dropped)."""
        return bool(self.result) or self.results_dropped


def _call_subst(call: Mapping[str, Any], var: str) -> tuple[dict[str, str], list[tuple[Any, str]]]:
    function = call["function"]
    strings = {function["name"]: f"{var}.Function.Name", call["id"]: f"{var}.ID"}
    return strings, [(function["arguments"], f"{var}.Function.Arguments")]


def _result_subst(result: Mapping[str, Any]) -> tuple[dict[str, str], list[tuple[Any, str]]]:
    strings = {result["content"]: ".Content", result["name"]: ".ToolName"}
    strings[result["tool_call_id"]] = ".ToolCallID"
    return strings, []


@dataclass(frozen=True, slots=True)
class _Regions:
    """The text between the opening of the tool-calling assistant turn and the next turn."""

    calls: dict[tuple[int, str], str]
    """(number of calls, content) -> region, one result per call."""
    results_two: str | None
    """Two results (after two calls, or one call where the template allows one only)."""
    final: bool
    next_prefix: str
    shared: int
    """How much of the assistant prefix opens a turn with tool calls."""


def _opening(source: TemplateSource, shape: TemplateShape) -> int | None:
    """How much of the assistant prefix a turn with tool calls shares (all of it, or up to a
    marker where it switches to its own opening, as Command-R's ``<|START_ACTION|>``)."""
    from .shape import MARKER_RE

    text = _render(source, _call_conv(1, content="", results=1, final=True), gen=True)
    if text is None:
        text = _render(source, _call_conv(1, content="", results=1, final=False), gen=True)
    at = text.find(U1) if text is not None else -1
    if text is None or at < 0 or not text.startswith(shape.user_suffix, at + len(U1)):
        return None
    rest = text[at + len(U1) + len(shape.user_suffix) :]
    prefix = shape.assistant_prefix
    if rest.startswith(prefix):
        return len(prefix)
    shared = 0
    while shared < len(prefix) and rest[shared] == prefix[shared]:
        shared += 1
    for match in MARKER_RE.finditer(prefix):
        if match.start() < shared < match.end():
            shared = match.start()
    return shared


def _regions(
    source: TemplateSource, shape: TemplateShape, finals: tuple[bool, ...] = (True, False)
) -> _Regions | str:
    shared = _opening(source, shape)
    if shared is None:
        rejected = calls_rejected(source)
        return rejected or "an assistant turn with tool calls opens unlike other turns"
    lead = shape.user_suffix + shape.assistant_prefix[:shared]
    for final in finals:
        stop, next_prefix = (A2, shape.assistant_prefix) if final else (U2, shape.user_prefix)
        found: dict[tuple[int, str], str] = {}
        for n in (1, 2):
            for content in ("", CONTENT):
                conv = _call_conv(n, content=content, results=n, final=final)
                text = _render(source, conv, gen=True)
                if text is None:
                    continue
                at = text.find(U1)
                if at < 0 or not text.startswith(lead, at + len(U1)):
                    return "an assistant turn with tool calls opens unlike other turns"
                found[n, content] = text[at + len(U1) + len(lead) : text.rfind(stop)]
        if (1, "") not in found:
            continue
        two = found.get((2, ""))
        if two is None:
            conv = _call_conv(1, content="", results=2, final=final)
            text = _render(source, conv, gen=True)
            if text is not None and U1 in text:
                at = text.find(U1)
                two = text[at + len(U1) + len(lead) : text.rfind(stop)]
        return _Regions(found, two, final, next_prefix, shared)
    return "the Jinja template rejects a conversation with tool calls"


def infer_tool_shape(source: TemplateSource, shape: TemplateShape) -> ToolShape:
    """Tool calls and results as the Jinja template prints them between ordinary turns.

    Returns:
        The inferred parts; ``reason`` says which part could not be read off and why.
    """
    regions = _regions(source, shape)
    if isinstance(regions, str):
        return ToolShape(reason=regions)
    opening = regions.shared if regions.shared < len(shape.assistant_prefix) else None
    after_call = _names_after_call(regions)
    shaped = _tool_parts(source, shape, after_call or regions)
    if after_call is not None:
        # Results named after the call before them (gpt-oss): the name is a lookup.
        named = with_previous_call(shaped.result)
        if named is None:
            return ToolShape(reason="tool results print the call's name, not read off")
        shaped = replace(shaped, result=named)
    if shaped.calls is None and shaped.reason == _NOT_A_LOOP:
        shaped = per_argument(source, shape, regions) or shaped
    if opening is not None and shaped.calls is None:
        return ToolShape(reason="an assistant turn with tool calls opens unlike other turns")
    if shaped.content_dropped and regions.final:
        shaped = _content_until_answer(source, shape, shaped)
    after = opening is None and shaped.calls is not None and _opens_as_last(source, shape)
    shaped = with_looked_up_names(source, shaped, final=regions.final)
    return replace(shaped, opening=opening, prefix_after_query=after)


#: ``$answered``: an assistant turn without calls comes at or after this message (the
#: current one has calls, so it never counts). ``(not .ToolCalls)`` sits inside a pipeline,
#: where Ollama's search for the tool-call ``{{ if }}`` does not look.
ANSWERED_SCAN: tuple[Piece, ...] = (
    Act("$answered := false"),
    Act("range (slice $.Messages $i)"),
    Act('if and (eq .Role "assistant") (not .ToolCalls)'),
    Act("$answered = true"),
    Act("end"),
    Act("end"),
)


def _content_until_answer(
    source: TemplateSource, shape: TemplateShape, shaped: ToolShape
) -> ToolShape:
    """``shaped`` (content dropped where an answer follows the results) with the content
    printed as the Jinja does where no answer follows, if it prints there around the same
    calls; else ``shaped``."""
    regions = _regions(source, shape, finals=(False,))
    if isinstance(regions, str):
        return shaped
    after_call = _names_after_call(regions)
    unanswered = _tool_parts(source, shape, after_call or regions)
    if unanswered.calls != shaped.calls or unanswered.content_dropped or unanswered.reason:
        return shaped
    if unanswered.content_always or unanswered.content_after is not None:
        return shaped
    if not (unanswered.content_pre or unanswered.content_post):
        return shaped
    return replace(
        shaped,
        content_dropped=False,
        content_pre=unanswered.content_pre,
        content_post=unanswered.content_post,
        content_until_answer=True,
    )


def _names_after_call(regions: _Regions) -> _Regions | None:
    """``regions`` with results' names read as the preceding call's (:func:`names_after_call`),
    or None where results print their own names or none."""
    keys = list(regions.calls)
    texts = [regions.calls[k] for k in keys]
    if regions.results_two is not None:
        texts.append(regions.results_two)
    found = names_after_call(texts)
    if found is None:
        return None
    calls = dict(zip(keys, found, strict=False))
    two = found[-1] if regions.results_two is not None else None
    return replace(regions, calls=calls, results_two=two)


def _opens_as_last(source: TemplateSource, shape: TemplateShape) -> bool:
    """Whether a turn with tool calls after the last user message opens with the prefix of
    a final assistant turn instead of the ordinary one."""
    last, prefix = shape.assistant_prefix_last, shape.assistant_prefix
    if last == prefix:
        return False
    text = _render(source, _call_conv(1, content="", results=1, final=False, end=False), gen=True)
    at = text.find(U1) if text is not None else -1
    if text is None or at < 0:
        return False
    return text.startswith(shape.user_suffix + last, at + len(U1))


#: Why calls were not read off as a loop (the per-argument reading is tried next).
_NOT_A_LOOP = "the tool calls do not print as a loop of sentinel-only items"

#: Why calls were not read off where only the first of parallel calls prints.
FIRST_CALL_ONLY = (
    "the Jinja template prints only the first of parallel tool calls (tool_calls[0]), "
    "which the translator does not read off"
)


def _region(text: str | None, shape: TemplateShape, regions: _Regions) -> str | None:
    """The text between the opening of the tool-calling turn and the next turn, as in
    :func:`_regions`."""
    lead = shape.user_suffix + shape.assistant_prefix[: regions.shared]
    at = text.find(U1) if text is not None else -1
    if text is None or at < 0 or not text.startswith(lead, at + len(U1)):
        return None
    return text[at + len(U1) + len(lead) : text.rfind(A2 if regions.final else U2)]


def _tool_parts(
    source: TemplateSource,
    shape: TemplateShape,
    regions: _Regions,
    args: ArgumentLoop | None = None,
) -> ToolShape:
    """Calls, content next to them and results, from the regions after the opening.

    With ``args``, each call's argument text has been replaced by its placeholder, which the
    call item turns into the argument loop."""
    call_mentions = [mentions(c) for c in CALLS]
    if args is not None:
        call_mentions = [[*m, placeholder(tag)] for m, tag in zip(call_mentions, "ab", strict=True)]
    result_mentions = [mentions(r) for r in RESULTS]

    def cut(region: str) -> str:
        start, _ = extent(region, result_mentions[0])
        return region[:start] if start >= 0 else region

    one = cut(regions.calls[1, ""])
    if extent(one, call_mentions[0])[0] < 0:
        # The Jinja template drops tool calls: the assistant turn prints as an ordinary one.
        return _with_results(source, shape, ToolShape(calls_dropped=True), one, regions)
    subst = [_call_subst(c, "$c") for c in CALLS]
    if args is not None:
        subst = [
            ({**strings, placeholder(tag): ARGS_ACT}, values)
            for (strings, values), tag in zip(subst, "ab", strict=True)
        ]
    two = regions.calls.get((2, ""))
    if two is not None:
        calls = infer_loop(one, cut(two), call_mentions, subst, index="$k")
    else:
        calls = single_loop(one, call_mentions[0], subst[0])
    if calls is not None and args is not None:
        item = splice(calls.item, args, "$c")
        calls = replace(calls, item=tuple(item)) if item is not None else None
    if calls is None and two is not None and args is None and cut(two) == one:
        # The second of two calls never prints (GigaChat's, gpt-oss's tool_calls[0]).
        calls = first_call_only(one, call_mentions[0], subst[0])
        if calls is None:
            return ToolShape(reason=FIRST_CALL_ONLY)
    if calls is None:
        return ToolShape(reason=_NOT_A_LOOP)
    parts = ToolShape(calls=calls)
    with_content = regions.calls.get((1, CONTENT))
    if with_content is None:
        return replace(parts, reason="the Jinja template rejects content next to tool calls")
    with_content = cut(with_content)
    at = with_content.find(CONTENT)
    rest = with_content[at + len(CONTENT) :] if at >= 0 else ""
    body = calls.before + calls.item_text + calls.after
    suffix_at = len(rest) - len(body)
    calls_text = calls.before + calls.item_text
    after_results = _content_after_results(regions)
    if at < 0 and with_content == one and after_results is not None:
        parts = replace(parts, content_after_results=after_results)
    elif at < 0 and with_content == one:
        parts = replace(parts, content_dropped=True)
    elif (
        at >= len(calls_text)
        and with_content.startswith(calls_text)
        and calls.after == with_content[len(calls_text) : at] + rest
        and with_content.replace(CONTENT, "") == one
    ):
        # The content follows the calls (Gemma 4's <tool_call|>content<turn|>).
        parts = replace(parts, content_after=at - len(calls_text))
    elif at >= 0 and with_content.replace(CONTENT, "") == one and one.startswith(with_content[:at]):
        # Content wrapped even when empty (Llama 4's <|python_start|>...<|python_end|>).
        # The calls keep the text after the content: Ollama reads their tag from it.
        calls = replace(calls, before=calls.before[len(with_content[:at]) :])
        parts = ToolShape(calls=calls, content_pre=with_content[:at], content_always=True)
    elif at < 0 or suffix_at < 0 or rest[suffix_at:] != body:
        return replace(parts, reason="content next to tool calls prints unlike a loop")
    else:
        parts = replace(parts, content_pre=with_content[:at], content_post=rest[:suffix_at])
    return _with_results(source, shape, parts, calls.after, regions)


def first_call_only(
    one: str, mentions: Sequence[str], subst: tuple[Mapping[str, str], Sequence[tuple[Any, str]]]
) -> Loop | None:
    """The call loop of a Jinja template that prints ``tool_calls[0]`` only: the item read off
    one call, printed for the loop's first index only (``$k`` is the call loop's index), so
    the TEMPLATE drops later calls exactly as the Jinja does; None where one call does not
    read off as an item."""
    loop = single_loop(one, mentions, subst)
    if loop is None:
        return None
    return replace(loop, item=(Act("if eq $k 0"), *loop.item, Act("end")))


def _content_after_results(regions: _Regions) -> str | None:
    """The text after the content when the Jinja template prints an assistant's content only
    after the tool results that answer its calls, with nothing else changed; else None."""
    plain, with_content = regions.calls[1, ""], regions.calls.get((1, CONTENT))
    if with_content is None or not with_content.startswith(plain + CONTENT):
        return None
    if extent(plain, mentions(RESULTS[0]))[0] < 0:
        return None
    return with_content[len(plain) + len(CONTENT) :]


def _results_dropped(
    source: TemplateSource, shape: TemplateShape, parts: ToolShape, head: str, regions: _Regions
) -> ToolShape:
    """The Jinja template prints no tool result at all (Granite 3.0): a tool message prints
    nothing, except the generation prompt when it ends the conversation."""
    two = regions.results_two
    if not parts.calls_dropped or (two is not None and extent(two, mentions(RESULTS[0]))[0] >= 0):
        return replace(parts, reason="tool results do not show their content")
    if head != shape.assistant_suffix + regions.next_prefix:
        return replace(parts, reason="tool results do not show their content")
    last = _render(source, _call_conv(1, content="", results=1, final=False, end=False), gen=True)
    lead = shape.user_suffix + shape.assistant_prefix + shape.assistant_suffix
    at = last.find(U1) + len(U1) if last is not None else -1
    if last is None or at < len(U1) or not last.startswith(lead, at):
        return replace(parts, reason="tool results do not show their content")
    return replace(parts, results_dropped=True, result_close_last=last[at + len(lead) :])


def _close_before_user(
    source: TemplateSource, shape: TemplateShape, result: Sequence[str], close: str
) -> str | None:
    """What follows a tool result when a user turn comes next, less the user prefix; None
    when it is ``close`` or cannot be read off."""
    text = _render(source, _call_conv(1, content="", results=1, final=False), gen=True)
    if text is None:
        return None
    end = extent(text, result)[1]
    at = text.find(U2, end) if end >= 0 else -1
    between = text[end:at]
    if at < 0 or not between.endswith(shape.user_prefix):
        return None
    found = between[: len(between) - len(shape.user_prefix)]
    return None if found == close else found


def _with_results(
    source: TemplateSource, shape: TemplateShape, parts: ToolShape, head: str, regions: _Regions
) -> ToolShape:
    """Add the tool results: one wrapper per result, glue between consecutive ones.

    ``head`` is the text from the end of the last call up to the first result.
    """
    result_mentions = [mentions(r) for r in RESULTS]
    subst = [_result_subst(r) for r in RESULTS]
    one = regions.calls[1, ""]
    start_one = extent(one, result_mentions[0])[0]
    if start_one < 0:
        return _results_dropped(source, shape, parts, head, regions)
    two = regions.results_two
    start_two = extent(two, result_mentions[0])[0] if two is not None else -1
    if two is not None and start_two >= 0:
        loop = infer_loop(head + one[start_one:], head + two[start_two:], result_mentions, subst)
    else:
        loop = single_loop(head + one[start_one:], result_mentions[0], subst[0])
    if loop is None or loop.before != head:
        return replace(parts, reason="tool results do not print as one wrapper per result")
    bare = not loop.after.endswith(regions.next_prefix)
    if bare and not regions.final:
        return replace(parts, reason="the turn after tool results opens unlike other turns")
    last = _render(source, _call_conv(1, content="", results=1, final=False, end=False), gen=True)
    if last is None:
        return replace(parts, reason="the Jinja template rejects a conversation ending in a result")
    # The assistant turn ends where an ordinary one does; the rest opens the results. Content
    # printed after the calls belongs to the turn: it ends after that content (R1 distills
    # print ``<｜Assistant｜>`` + content + eos after a first eos that closes the calls).
    after = parts.content_after or 0
    end_at = head.find(shape.assistant_suffix, after) if shape.assistant_suffix else -1
    split = end_at + len(shape.assistant_suffix) if end_at >= 0 else len(head)
    close = loop.after if bare else loop.after[: len(loop.after) - len(regions.next_prefix)]
    return replace(
        parts,
        bare_after_results=bare,
        result_close_user=_close_before_user(source, shape, result_mentions[0], close),
        calls=replace(parts.calls, after="") if parts.calls is not None else None,
        calls_end=head[:split],
        result_open=head[split:],
        result=loop.item,
        result_glue=loop.glue,
        result_close=close,
        result_close_last=last[extent(last, result_mentions[0])[1] :],
    )


__all__ = [
    "ANSWERED_SCAN",
    "CALLS",
    "RESULTS",
    "TOOLS",
    "Loop",
    "ToolShape",
    "definitions_loop",
    "infer_tool_shape",
    "last_user_insertion",
    "tool_lead",
]
