"""Infer a chat template's structure from sentinel renders (no lookup table).

We render the Jinja template on conversations whose contents are unique sentinel words and read
off each role's wrapper, the generation prompt, the system placement, a default system prompt,
whitespace trimming and the BOS preamble. ``emit.py`` turns the result into Go templates.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..errors import TemplateRenderError, TemplateTranslationError
from .final_user import FinalUser
from .source import TemplateSource
from .tools import SENTINEL_TOOL

SYS = "Zqsysalpha"
SYS2 = "Zqsysbeta"
U1 = "Zquserone"
U2 = "Zqusertwo"
A1 = "Zqasstone"
R1 = "Zqreasonone"

#: Markers whose inside a split point must not fall into (``<|eot_id|>``, ``[/INST]`` ...).
MARKER_RE = re.compile(r"<\|?[^<>\s]{1,40}\|?>|\[/?[A-Z_]{2,20}\]")


@dataclass(frozen=True, slots=True)
class ThinkShape:
    """Reasoning as the Jinja template prints it (``reasoning_content``, ``enable_thinking``)."""

    before: str
    """Before an assistant's reasoning (``<think>\n``)."""
    after: str
    """Between the reasoning and the content (``\n</think>\n\n``)."""
    earlier: bool
    """Whether reasoning of turns before the last user message is printed too."""
    off: str
    """Appended to the generation prompt when thinking is switched off (``enable_thinking``
    false); empty when the template has no switch."""
    last_only: bool = False
    """Whether only the last message's reasoning is printed (``loop.last``), not that of every
    assistant turn after the last user message (a tool loop's earlier steps)."""
    on: str = ""
    """The end of the generation prompt that ``off`` replaces (empty: ``off`` is appended)."""
    head: str | None = None
    """The assistant opening shared by turns with and without reasoning, where the reasoning
    block replaces the rest of it (``<|assistant|>`` of ``<|assistant|><think>R</think>`` vs
    ``<|assistant|></think>``); None where reasoning follows the whole opening."""
    dropped: str | None = None
    """What an earlier turn whose reasoning is dropped prints instead of the rest of the
    opening, where that differs from a turn without reasoning (``head`` readings only)."""
    after_calls: str | None = None
    """``after`` less its trailing whitespace, for a turn with tool calls and no content
    (Nemotron trims reasoning and content together; ``head`` readings only)."""


@dataclass(frozen=True, slots=True)
class TemplateShape:
    """What the sentinel renders revealed about a chat template."""

    preamble: str
    user_prefix: str
    user_suffix: str
    """After a user message that another message follows."""
    user_suffix_last: str
    generation_prompt: str
    assistant_prefix: str
    assistant_prefix_last: str
    """Before a final (prefilled) assistant message."""
    assistant_suffix: str
    system_mode: str
    """``block`` (own turn), ``first_user``/``last_user`` (inside that user turn), ``drop``,
    ``hoist``/``hoist_last`` (all system messages, or the last, in one block before the first
    turn) or ``default_block`` (``block``; the default only when no message is a system one)."""
    system_prefix: str = ""
    system_suffix: str = ""
    default_system: str | None = None
    head: str = ""
    """Everything before the first user content when there is no system message."""
    mid_system: tuple[str, str] | None = None
    """(prefix, suffix) of a system message after the first turn, if the template shows one."""
    head_system: tuple[str, str] | None = None
    """(before, after) the system content, up to the first user content, with a system message."""
    trims: tuple[tuple[str, str, str], ...] = ()
    """Per role (role, left, right): which whitespace the Jinja template strips from content:
    ``""`` none, ``"nl"`` newlines only (``lstrip('\\n')``), ``"ws"`` all (``strip()``)."""
    tool_turn: tuple[str, str, str] | None = None
    """(prefix, suffix, suffix when last) of a tool result message, where one was observed."""
    tool_then_assistant: str = ""
    """Printed after a tool result that an assistant turn follows, between the tool turn's
    suffix and the assistant's opening (Phi-4-mini-reasoning closes the result and opens the
    assistant there, as a user turn's suffix does after a user message; ``tool_turns``)."""
    call_turn: str = ""
    """How an assistant message with tool calls and empty content prints where the Jinja
    ignores its calls (``tool_turns``): ``dropped``, not at all (GLM-4 prints only messages
    with content); ``empty``, as an empty turn (DeepSeek R1's distills print calls only for a
    content that is None), the TEMPLATE naming ``.ToolCalls`` without printing them so Ollama
    sees the Jinja's tool round trip; ``""``: not read."""
    think: ThinkShape | None = None
    """How the template prints reasoning and its thinking switch, where it has them."""
    prefill_trailing: bool = False
    """Whether transformers keeps the trailing whitespace of a continued (prefilled) final
    assistant message that the template strips on other turns: it appends a tag to that
    message and cuts at it, so the whitespace stays before the tag when what follows the
    content (Llama 2's `` </s>``) gives the tag its space back."""
    hoist_sep: str | None = None
    """Between two system messages that ``hoist`` collects before the first turn, where the
    template prints each one trimmed with its own separator (``system_each``) instead of
    Ollama's ``.System`` (joined with a blank line); None: ``.System``."""
    mid_dropped: bool = False
    """Whether a system message after the first message prints its wrapper without its
    content (axolotl's alpaca prints only a ``loop.first`` system message, and the blank line
    after every message); ``block`` mode only."""
    head_joined: bool = False
    """Whether the first user message is stripped together with the lead-in before it (Llama 2
    variants join the system block and the message, then ``strip()``): a blank first message
    takes the lead-in's trailing whitespace (``<</SYS>>\n\n``) with it, with or without a
    system message."""
    blank_turn: tuple[str, str] | None = None
    """(lead, dropped) where an assistant turn whose stripped content is blank prints neither
    the end of its opening (``lead``) nor the start of its closing (``dropped``): Seed-OSS,
    GLM 4.6 (``emit_blank``); None: a blank turn prints its whole wrapper."""
    lead_after_assistant: str | None = None
    """The preamble where the conversation ends with an assistant message, where it differs
    from ``preamble`` (Llama Guard 3 names the role to check: ``last_role``)."""
    system_pad: str | None = None
    """Text printed once per system message before the system lead-in (``head_system``'s
    before), where the Jinja's loop over them prints it (DeepSeek V2.5: ``system_pad``)."""
    later_user_prefix: str | None = None
    """The opening of a user message at index 2 or later, where the first one (index 0, or 1
    after a system message) opens with ``user_prefix`` (Smaug: ``first_bare``)."""
    folds: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    """Per role, the ``str.replace`` chain the Jinja runs on a message's content before
    printing it (Falcon folds a blank line into one newline: ``emit_fold``)."""
    system_echo: tuple[str, str] | None = None
    """(prefix, suffix) of a system message printed again where it stands, in ``hoist`` modes
    whose collected text is printed before the conversation too (``system_echo``)."""
    final_user: FinalUser | None = None
    """How a user message that ends the conversation opens, where that differs from the
    others (mistral.rs's Mistral Small 3: ``final_user``); None: like every user turn."""

    def fold(self, role: str) -> tuple[tuple[str, str], ...]:
        """The rewrites of ``role``'s content, in the order the Jinja applies them."""
        return next((chain for name, chain in self.folds if name == role), ())

    def trim(self, role: str) -> tuple[str, str]:
        """(left, right) stripping of ``role``'s content."""
        for name, left, right in self.trims:
            if name == role:
                return left, right
        return "", ""


class _Renderer:
    """Sentinel renders of one template (errors become None)."""

    def __init__(self, source: TemplateSource) -> None:
        self.source = source
        self.tokens = source.template_variables()
        self.error: TemplateRenderError | None = None
        """The last render's error, for saying why a shape cannot be read."""

    def __call__(
        self, messages: Sequence[tuple[str, str]], *, gen: bool, cont: bool = False
    ) -> str | None:
        from .hf_render import render_hf

        self.error = None
        try:
            return render_hf(
                self.source.template,
                [_message(role, content) for role, content in messages],
                tokens=self.tokens,
                add_generation_prompt=gen,
                continue_final_message=cont,
            )
        except TemplateRenderError as err:
            self.error = err
            return None


TOOL_RESULT = "Zqtoolresult"
TOOL_NAME = SENTINEL_TOOL["function"]["name"]


def _message(role: str, content: str) -> dict[str, Any]:
    """A sentinel message; tool results carry a name and call id as real ones do."""
    if role == "tool":
        return {"role": role, "content": content, "name": TOOL_NAME, "tool_call_id": "call_1"}
    return {"role": role, "content": content}


def tool_turn(source: TemplateSource, shape: TemplateShape) -> tuple[str, str, str] | None:
    """Wrapper of a tool result between an assistant turn and a user turn (None if unseen)."""
    render = _Renderer(source)
    conv = [("user", U1), ("assistant", A1), ("tool", TOOL_RESULT)]
    text = render([*conv, ("user", U2)], gen=False)
    split = _between(text, A1, TOOL_RESULT, U2) if text else None
    if split is None:
        return None
    pre, post = split[1], split[2]
    if not pre.startswith(shape.assistant_suffix) or not post.endswith(shape.user_prefix):
        return None
    suffix = post[: len(post) - len(shape.user_prefix)]
    last = render(conv, gen=True)
    split_last = _between(last, A1, TOOL_RESULT) if last else None
    suffix_last = split_last[2] if split_last and split_last[1] == pre else suffix
    return pre[len(shape.assistant_suffix) :], suffix, suffix_last


def _between(text: str, *marks: str) -> list[str] | None:
    """Split ``text`` at the sentinels in order: [before m1, m1..m2, ..., after last]."""
    parts: list[str] = []
    pos = 0
    for mark in marks:
        found = text.find(mark, pos)
        if found < 0:
            return None
        parts.append(text[pos:found])
        pos = found + len(mark)
    parts.append(text[pos:])
    return parts


def _common_suffix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[len(a) - 1 - n] == b[len(b) - 1 - n]:
        n += 1
    return n


def _snap_suffix(text: str, n: int, tokens: Sequence[str]) -> int:
    """Shrink a suffix length so the cut point does not split a marker or special token."""
    cut = len(text) - n
    spans = [(m.start(), m.end()) for m in MARKER_RE.finditer(text)]
    for tok in tokens:
        if tok:
            start = text.find(tok)
            while start >= 0:
                spans.append((start, start + len(tok)))
                start = text.find(tok, start + 1)
    for start, end in spans:
        if start < cut < end:
            cut = end
    return len(text) - cut


def _common_prefix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _role_start(region: str, assistant_header: str) -> int:
    """Where the user header starts in ``region``: the first place that opens like the
    assistant header does (``<|im_start|>``, ``<start_of_turn>``), so closers such as
    ``<|im_end|>\\n`` stay with the turn they close. 0 when nothing looks alike."""
    header = assistant_header.lstrip()
    best, best_len = 0, 2
    for at in range(1, len(region)):
        length = _common_prefix(region[at:], header)
        if length > best_len:
            best, best_len = at, length
    return best


def infer_shape(source: TemplateSource) -> TemplateShape:
    """Read a template's structure off sentinel renders.

    Raises:
        TemplateTranslationError: the sentinels do not come through (the template rewrites
            content, or rejects these basic conversations).
    """
    render = _Renderer(source)
    specials = [*source.added_tokens, *source.template_variables().values()]

    def need(value: Any, what: str) -> Any:
        if value is None:
            # A render that raised says why (Hermes 2 Pro's tool-use Jinja iterates ``tools``
            # even when there are none); a render that dropped the sentinels does not.
            why = f" ({render.error})" if render.error is not None else ""
            raise TemplateTranslationError(f"the template cannot render {what}{why}")
        return value

    u_gen = need(render([("user", U1)], gen=True), "a single user message")
    u_nog = need(render([("user", U1)], gen=False), "a single user message")
    generation = u_gen[len(u_nog) :] if u_gen.startswith(u_nog) else ""
    head, user_suffix_last = need(_between(u_nog, U1), "the user content")
    if not u_gen.startswith(u_nog):
        user_suffix_last = need(_between(u_gen, U1), "the user content")[1]
    conv = need(render([("user", U1), ("assistant", A1), ("user", U2)], gen=False), "3 turns")
    _, mid_ua, mid_au, _ = need(_between(conv, U1, A1, U2), "the content of 3 turns")
    default_system, sys_pieces = _system_observation(render, head)
    if default_system is not None and sys_pieces is not None:
        # The default system block sits in ``head``; read the user prefix after a system turn.
        pre_s, mid_su = sys_pieces
        n = _snap_suffix(mid_au, _common_suffix(mid_su, mid_au), specials)
        n = _snap_suffix(mid_su, n, specials)
        user_prefix = mid_su[len(mid_su) - n :] if n else ""
        bos = source.bos_token
        preamble = bos if bos and pre_s.startswith(bos) else ""
    else:
        n = _snap_suffix(mid_au, _common_suffix(head, mid_au), specials)
        n = _snap_suffix(head, n, specials)
        user_prefix = head[len(head) - n :] if n else ""
        preamble = head[: len(head) - n]
    assistant_suffix = mid_au[: len(mid_au) - n]
    cut = _role_start(user_prefix, generation or mid_ua)
    if cut:
        if default_system is None:
            preamble += user_prefix[:cut]
        user_prefix = user_prefix[cut:]
        assistant_suffix = mid_au[: len(mid_au) - len(user_prefix)]
    if mid_ua.startswith(user_suffix_last):
        user_suffix, assistant_prefix = user_suffix_last, mid_ua[len(user_suffix_last) :]
    elif generation and mid_ua.endswith(generation):
        user_suffix, assistant_prefix = mid_ua[: -len(generation)], generation
    else:
        user_suffix, assistant_prefix = mid_ua, ""
    prefill = render([("user", U1), ("assistant", A1)], gen=False, cont=True)
    assistant_prefix_last = assistant_prefix
    split = _between(prefill, U1, A1) if prefill else None
    if split and split[1].startswith(user_suffix):
        assistant_prefix_last = split[1][len(user_suffix) :]
    shape = TemplateShape(
        preamble=preamble,
        user_prefix=user_prefix,
        user_suffix=user_suffix,
        user_suffix_last=user_suffix_last,
        generation_prompt=generation,
        assistant_prefix=assistant_prefix,
        assistant_prefix_last=assistant_prefix_last,
        assistant_suffix=assistant_suffix,
        system_mode="drop",
        default_system=default_system,
        head=u_nog[: u_nog.find(U1)],
        head_system=sys_pieces,
        mid_system=_mid_system(render, assistant_suffix, user_prefix),
        trims=_observe_trims(render),
    )
    if shape.trim("assistant")[1]:
        shape = replace(shape, prefill_trailing=_prefill_trailing(render))
    if _head_joined(render, u_nog, sys_pieces):
        shape = replace(shape, head_joined=True)
    shape = _with_system(render, shape)
    if shape.system_mode == "block" and shape.mid_system is None and _mid_dropped(render, shape):
        shape = replace(shape, mid_dropped=True)
    return shape


def _mid_dropped(render: _Renderer, shape: TemplateShape) -> bool:
    """Whether a later system message prints exactly its wrapper, with no content."""
    text = render([("user", U1), ("assistant", A1), ("system", SYS2), ("user", U2)], gen=False)
    split = _between(text, A1, U2) if text else None
    wrapper = shape.system_prefix + shape.system_suffix
    return split is not None and split[1] == shape.assistant_suffix + wrapper + shape.user_prefix


def _head_joined(render: _Renderer, u_nog: str, sys_pieces: tuple[str, str] | None) -> bool:
    """Whether a blank first user message takes the lead-in's trailing whitespace with it
    (observed without a system message, and with one where the template renders it)."""
    head, tail = u_nog.split(U1, 1)
    if head == head.rstrip() or render([("user", PAD)], gen=False) != head.rstrip() + tail:
        return False
    if sys_pieces is None:
        return True
    before, after = sys_pieces
    blank = render([("system", SYS), ("user", PAD)], gen=False)
    return blank == before + SYS + after.rstrip() + tail


#: Trailing whitespace of the continued message in :func:`_prefill_trailing`.
TRAIL = " \n "


def _prefill_trailing(render: _Renderer) -> bool:
    """Whether a prefilled final assistant message keeps its trailing whitespace (observed:
    the continued render ends with the whole content, not the stripped one)."""
    text = render([("user", U1), ("assistant", A1 + TRAIL)], gen=False, cont=True)
    return text is not None and text.endswith(A1 + TRAIL)


PAD = "\n \n"


def _observe_trims(render: _Renderer) -> tuple[tuple[str, str, str], ...]:
    """Which whitespace each role's content loses (``strip()``, ``lstrip('\\n')`` ...)."""
    convs = {
        "user": ([("user", U1)], U1),
        "system": ([("system", SYS), ("user", U1)], SYS),
        "assistant": ([("user", U1), ("assistant", A1), ("user", U2)], A1),
        "user_sys": ([("system", SYS), ("user", U1)], U1),
        # A later system message may be printed as is where the first one is trimmed.
        "system_mid": ([("user", U1), ("assistant", A1), ("system", SYS2), ("user", U2)], SYS2),
    }
    found: list[tuple[str, str, str]] = []
    for role, (messages, mark) in convs.items():
        padded = [(r, PAD + c + PAD if c == mark else c) for r, c in messages]
        plain, text = render(messages, gen=False), render(padded, gen=False)
        split = _between(plain, mark) if plain else None
        split_pad = _between(text, mark) if text else None
        if not split or not split_pad:
            continue
        (ctx_before, ctx_after), (before, after) = split, split_pad
        if not before.startswith(ctx_before) or not after.endswith(ctx_after):
            continue
        lead, trail = before[len(ctx_before) :], after[: len(after) - len(ctx_after)]
        left = "" if lead == PAD else "nl" if lead == PAD.lstrip("\n") else "ws"
        right = "" if trail == PAD else "nl" if trail == PAD.rstrip("\n") else "ws"
        if left or right:
            found.append((role, left, right))
    return tuple(found)


def _mid_system(
    render: _Renderer, assistant_suffix: str, user_prefix: str
) -> tuple[str, str] | None:
    """Wrapper of a system message in the middle of a conversation (None if none shows)."""
    conv = [("user", U1), ("assistant", A1), ("system", SYS2), ("user", U2)]
    text = render(conv, gen=False)
    split = _between(text, A1, SYS2, U2) if text else None
    if split is None:
        return None
    pre, post = split[1], split[2]
    if pre.startswith(assistant_suffix) and post.endswith(user_prefix):
        return pre[len(assistant_suffix) :], post[: len(post) - len(user_prefix)]
    return None


def _system_observation(render: _Renderer, head: str) -> tuple[str | None, tuple[str, str] | None]:
    """Default system prompt (text the template adds when no system message is given)."""
    s_conv = render([("system", SYS), ("user", U1)], gen=False)
    split = _between(s_conv, SYS, U1) if s_conv else None
    if split is None:
        return None, None
    pre_s, mid_su, _ = split
    if head.startswith(pre_s) and head.endswith(mid_su) and len(head) > len(pre_s) + len(mid_su):
        default = head[len(pre_s) : len(head) - len(mid_su)]
        if default.strip():
            return default, (pre_s, mid_su)
    return None, (pre_s, mid_su)


def _with_system(render: _Renderer, shape: TemplateShape) -> TemplateShape:
    s_conv = render([("system", SYS), ("user", U1)], gen=False)
    split = _between(s_conv, SYS, U1) if s_conv else None
    if split is None:
        return shape
    pre_s, mid_su, _ = split
    up = shape.user_prefix
    if pre_s.startswith(shape.preamble) and mid_su.endswith(up):
        return replace(
            shape,
            system_mode="block",
            system_prefix=pre_s[len(shape.preamble) :],
            system_suffix=mid_su[: len(mid_su) - len(up)],
        )
    if pre_s.startswith(shape.preamble + up):
        multi = render([("system", SYS), ("user", U1), ("assistant", A1), ("user", U2)], gen=False)
        mode = "first_user"
        if multi and multi.find(SYS) > multi.find(A1) >= 0:
            mode = "last_user"
        return replace(
            shape,
            system_mode=mode,
            system_prefix=pre_s[len(shape.preamble + up) :],
            system_suffix=mid_su,
        )
    return shape


__all__ = [
    "MARKER_RE",
    "TOOL_NAME",
    "TemplateShape",
    "ThinkShape",
    "infer_shape",
    "tool_turn",
]
