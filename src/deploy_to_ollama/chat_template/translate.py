"""Translate a Jinja chat template into an Ollama ``.Messages`` TEMPLATE by observing it.

We render the Jinja template on sentinel conversations, read off each role's wrapper, the
generation prompt, the system placement, a default system prompt and the BOS preamble, emit a
few candidate Go templates, and keep the first that the verifier proves equal on every probe.
No lookup table: a template never seen before goes through the same inference.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import TemplateRenderError, TemplateTranslationError
from .gotext import Act, Lit, Piece, go_string, join_pieces
from .source import TemplateSource
from .stops import infer_stops
from .tools import SENTINEL_TOOL, ToolAnalysis, analyse_tools, verify_tool_probes
from .verify import VerificationReport, reference_renders, verify_template

logger = logging.getLogger(__name__)

SYS = "Zqsysalpha"
SYS2 = "Zqsysbeta"
U1 = "Zquserone"
U2 = "Zqusertwo"
A1 = "Zqasstone"

#: Markers whose inside a split point must not fall into (``<|eot_id|>``, ``[/INST]`` ...).
MARKER_RE = re.compile(r"<\|?[^<>\s]{1,40}\|?>|\[/?[A-Z_]{2,20}\]")


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
    """``block`` (own turn), ``first_user``/``last_user`` (inside that user turn) or ``drop``."""
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

    def trim(self, role: str) -> tuple[str, str]:
        """(left, right) stripping of ``role``'s content."""
        for name, left, right in self.trims:
            if name == role:
                return left, right
        return "", ""


@dataclass(frozen=True, slots=True)
class TranslatedTemplate:
    """An Ollama TEMPLATE with its stops, default SYSTEM and the proof it matches."""

    template: str
    stop: tuple[str, ...]
    system: str | None
    report: VerificationReport
    shape: TemplateShape | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def verified(self) -> bool:
        """Every non-skipped probe renders the same prompt on both sides."""
        return self.report.verified


def translate_template(
    source: TemplateSource, *, references: Mapping[str, Any] | None = None
) -> TranslatedTemplate:
    """Translate ``source``'s Jinja template into an Ollama TEMPLATE and verify it.

    Args:
        source: the template and tokens (see :func:`load_template_source`).
        references: precomputed transformers renderings (probe id -> text or error), to reuse.

    Returns:
        The best candidate; ``verified`` is true only if every non-skipped probe matched.

    Raises:
        TemplateSyntaxError: the Jinja template does not parse.
        TemplateTranslationError: the Jinja template raises on every probe.
    """
    from .hf_render import check_syntax

    check_syntax(source.template)
    refs = dict(references) if references is not None else reference_renders(source)
    if all(isinstance(value, TemplateRenderError) for value in refs.values()):
        first = next(iter(refs.values()))
        hint = "check that this is a chat template for messages with user/assistant roles"
        if "_token' is undefined" in str(first):
            hint = "the template needs special tokens: pass --bos and --eos (or the model dir)"
        raise TemplateTranslationError(
            f"the chat template raises on every probe conversation ({first})", hint=hint
        )
    warnings: list[str] = []
    tools = analyse_tools(source)
    try:
        shape = infer_shape(source)
        if tools.mode == "ignored":
            # Tool definitions change nothing, so tool results are the only tool text to carry.
            shape = replace(shape, tool_turn=_tool_turn(_Renderer(source), shape))
    except TemplateTranslationError as err:
        logger.info("shape inference failed: %s", err)
        shape = None
        warnings.append(f"could not infer the template's structure: {err}")
    best: TranslatedTemplate | None = None
    candidates = _candidates(source, shape)
    for n, (template, system) in enumerate(candidates):
        # Rank candidates fast; only the winner (or the last) gets a full report.
        report = verify_template(source, template, system=system, references=refs, fail_fast=True)
        if report.public_verified or n == len(candidates) - 1:
            report = verify_template(source, template, system=system, references=refs)
        result = TranslatedTemplate(
            template=template,
            stop=infer_stops(source, shape),
            system=system,
            report=report,
            shape=shape,
            warnings=tuple(warnings + _bos_warnings(source, shape)),
        )
        if report.verified:
            result = _with_tool_probes(source, result, refs, tools)
            _log(result)
            return result
        if best is None or _score(report) > _score(best.report):
            best = result
    assert best is not None  # _candidates always yields at least the fallback
    if len(best.report.probes) < len(refs):
        full = verify_template(source, best.template, system=best.system, references=refs)
        best = replace(best, report=full)
    best = _with_tool_probes(source, best, refs, tools)
    _log(best)
    return best


def _with_tool_probes(
    source: TemplateSource,
    result: TranslatedTemplate,
    refs: Mapping[str, Any],
    tools: ToolAnalysis,
) -> TranslatedTemplate:
    """Run the tool probes where the Jinja template ignores tools; else say why they skip."""
    report = verify_tool_probes(
        source,
        result.template,
        result.report,
        system=result.system,
        references=refs,
        analysis=tools,
    )
    return replace(result, report=report)


def _log(result: TranslatedTemplate) -> None:
    for warning in result.warnings:
        logger.warning("%s", warning)
    if not result.verified:
        failure = result.report.first_failure()
        where = f" (first difference: probe {failure.probe})" if failure else ""
        logger.warning("the translated TEMPLATE is not verified%s", where)


def _score(report: VerificationReport) -> tuple[bool, int]:
    return report.public_verified, report.matched


def _bos_warnings(source: TemplateSource, shape: TemplateShape | None) -> list[str]:
    bos = source.bos_token
    if not bos or shape is None or not shape.preamble.startswith(bos):
        return []
    if source.add_bos_token:
        return [
            f"the chat template writes {bos} and the tokenizer adds it too (add_bos_token): "
            "tokenizing its output with add_special_tokens=True gives a double BOS; the Ollama "
            "TEMPLATE leaves BOS to the tokenizer"
        ]
    return []


# --------------------------------------------------------------------------- inference


class _Renderer:
    """Sentinel renders of one template (errors become None)."""

    def __init__(self, source: TemplateSource) -> None:
        self.source = source
        self.tokens = source.template_variables()

    def __call__(
        self, messages: Sequence[tuple[str, str]], *, gen: bool, cont: bool = False
    ) -> str | None:
        from .hf_render import render_hf

        try:
            return render_hf(
                self.source.template,
                [_message(role, content) for role, content in messages],
                tokens=self.tokens,
                add_generation_prompt=gen,
                continue_final_message=cont,
            )
        except TemplateRenderError:
            return None


TOOL_RESULT = "Zqtoolresult"
TOOL_NAME = SENTINEL_TOOL["function"]["name"]


def _message(role: str, content: str) -> dict[str, Any]:
    """A sentinel message; tool results carry a name and call id as real ones do."""
    if role == "tool":
        return {"role": role, "content": content, "name": TOOL_NAME, "tool_call_id": "call_1"}
    return {"role": role, "content": content}


def _tool_turn(render: _Renderer, shape: TemplateShape) -> tuple[str, str, str] | None:
    """Wrapper of a tool result between an assistant turn and a user turn (None if unseen)."""
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
            raise TemplateTranslationError(f"the template cannot render {what}")
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
    return _with_system(render, shape)


PAD = "\n \n"


def _observe_trims(render: _Renderer) -> tuple[tuple[str, str, str], ...]:
    """Which whitespace each role's content loses (``strip()``, ``lstrip('\\n')`` ...)."""
    convs = {
        "user": ([("user", U1)], U1),
        "system": ([("system", SYS), ("user", U1)], SYS),
        "assistant": ([("user", U1), ("assistant", A1), ("user", U2)], A1),
        "user_sys": ([("system", SYS), ("user", U1)], U1),
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
    from dataclasses import replace

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


# --------------------------------------------------------------------------- emission


def _strip_bos(source: TemplateSource, preamble: str) -> str:
    """Leave BOS to the tokenizer unless we know it does not add one."""
    bos = source.bos_token
    if bos and preamble.startswith(bos) and source.add_bos_token is not False:
        return preamble[len(bos) :]
    return preamble


def _candidates(
    source: TemplateSource, shape: TemplateShape | None
) -> list[tuple[str, str | None]]:
    """Candidate (TEMPLATE, SYSTEM) pairs, most likely first."""
    if shape is None:
        return [("{{ range .Messages }}{{ .Content }}{{ end }}", None)]
    found: list[tuple[str, str | None]] = []
    modes = ["render", "skip"] + (["default"] if shape.default_system else [])
    for empty_system in modes:
        text = join_pieces(_emit(source, shape, empty_system=empty_system))
        pair = (text, shape.default_system)
        if pair not in found:
            found.append(pair)
    if shape.head_system is not None:
        for empty_system in ("skip", "render", "inline"):
            if empty_system == "inline" and shape.mid_system is None:
                continue
            found.append((join_pieces(_emit_header(source, shape, empty_system)), None))
    return found


def _emit_header(source: TemplateSource, shape: TemplateShape, empty_system: str) -> list[Piece]:
    """A template whose whole lead-in (default system, preambles) is copied from observation.

    For templates that put the system prompt inside the first user turn, swap a default system
    for the given one, or drop a preamble with it: text before the first user content is
    either the no-system lead-in or (prefix, system, suffix) as observed. ``empty_system``:
    an empty leading system message is absent (``skip``), present (``render``), or absent from
    the lead-in but rendered as an ordinary system turn (``inline``, Command-A does this).
    """
    assert shape.head_system is not None
    before, after = shape.head_system
    has = "$hasSystem" if empty_system == "render" else "$sys0"
    pieces: list[Piece] = [*_system_slot_scan("first_user"), Act('$sys0 := ""')]
    pieces += [Act('if and .Messages (eq (index .Messages 0).Role "system")')]
    pieces += [Act("$sys0 = (index .Messages 0).Content"), Act("end")]
    pieces += [Act(f"if {has}"), Lit(_strip_bos(source, before))]
    pieces += [*_content("$sys0", shape.trim("system"), "s"), Lit(after)]
    pieces += [Act("else"), Lit(_strip_bos(source, shape.head)), Act("end")]
    pieces += [Act("range $i, $_ := .Messages"), Act("$last := eq (len (slice $.Messages $i)) 1")]
    pieces += [Act('if eq .Role "user"'), Act("if eq $i $sysAt")]
    pieces += [Act(f"if {has}"), *_content(".Content", shape.trim("user_sys"), "f")]
    pieces += [Act("else"), *_content(".Content", shape.trim("user"), "g"), Act("end")]
    pieces += [Act("else"), Lit(shape.user_prefix), *_content(".Content", shape.trim("user"), "u")]
    pieces += [Act("end"), *_user_tail(shape)]
    if shape.mid_system is not None:
        prefix, suffix = shape.mid_system
        cond = "or (gt $i 0) (not .Content)" if empty_system == "inline" else "gt $i 0"
        pieces += [Act(f'else if and (eq .Role "system") ({cond})'), Lit(prefix)]
        pieces += [*_content(".Content", shape.trim("system"), "m"), Lit(suffix)]
    pieces += _assistant(shape)
    return pieces


def _assistant(shape: TemplateShape) -> list[Piece]:
    """The assistant branch and the two closing ``end``s of the message loop."""
    pieces: list[Piece] = [Act('else if eq .Role "assistant"')]
    if shape.assistant_prefix_last != shape.assistant_prefix:
        pieces += [
            Act("if $last"),
            Lit(shape.assistant_prefix_last),
            Act("else"),
            Lit(shape.assistant_prefix),
            Act("end"),
        ]
    else:
        pieces += [Lit(shape.assistant_prefix)]
    pieces += _content(".Content", shape.trim("assistant"), "a")
    if shape.assistant_suffix:
        pieces += [Act("if not $last"), Lit(shape.assistant_suffix), Act("end")]
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


def _named(text: str) -> list[Piece]:
    """Literal text in which the sentinel tool name becomes ``.ToolName``."""
    pieces: list[Piece] = []
    for n, part in enumerate(text.split(TOOL_NAME)):
        if n:
            pieces.append(Act(".ToolName"))
        if part:
            pieces.append(Lit(part))
    return pieces


def _emit(source: TemplateSource, shape: TemplateShape, *, empty_system: str) -> list[Piece]:
    """Pieces of a ``.Messages`` template for ``shape``.

    ``empty_system``: what an empty system message does: ``render`` its wrapper, ``skip`` it,
    or stand for the ``default`` system prompt (templates that test the content's truth).
    """
    pieces: list[Piece] = [Lit(_strip_bos(source, shape.preamble))]
    inside_user = shape.system_mode in ("first_user", "last_user")
    if inside_user:
        pieces += _system_slot_scan(shape.system_mode)
    pieces += [
        Act("range $i, $_ := .Messages"),
        Act("$last := eq (len (slice $.Messages $i)) 1"),
    ]
    if shape.system_mode == "block":
        pieces += [Act('if eq .Role "system"')]
        body = [Lit(shape.system_prefix), *_content(".Content", shape.trim("system"), "s")]
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
    pieces += [Lit(shape.user_prefix)]
    if inside_user:
        has = "$hasSystem" if empty_system == "render" else "$.System"
        cond = f"and {has} (eq $i $sysAt)"
        pieces += [
            Act(f"if {cond}"),
            Lit(shape.system_prefix),
            *_content("$.System", shape.trim("system"), "s"),
            Lit(shape.system_suffix),
            Act("end"),
        ]
    pieces += _content(".Content", shape.trim("user"), "u")
    pieces += _user_tail(shape)
    return pieces + _assistant(shape)


_CHARS = {"nl": (10,), "ws": (32, 9, 10, 13, 11, 12)}


def _is_in(var: str, kind: str) -> str:
    tests = " ".join(f"(eq {var} {code})" for code in _CHARS[kind])
    return f"or {tests}" if len(_CHARS[kind]) > 1 else tests[1:-1]


def _content(expr: str, trim: tuple[str, str], tag: str) -> list[Piece]:
    """Print ``expr``, stripping whitespace as the Jinja template does.

    Ollama gives templates no trim function and no arithmetic, so this scans bytes with
    ``range`` over an int (Go >= 1.22), ``index`` and ``break``, from the front for the left
    edge and from the back for the right: ``len (slice $s $k)`` is ``len - k`` and
    ``len (slice $s 1 (len (slice $s $k)))`` is ``len - 1 - k``.
    """
    left, right = trim
    if not left and not right:
        return [Act(expr)]
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
    body += [Act(f"if lt {a} {b}"), Act(f"slice {s} {a} {b}"), Act("end")]
    return body


def _user_tail(shape: TemplateShape) -> list[Piece]:
    last = shape.user_suffix_last + shape.generation_prompt
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


__all__ = ["TemplateShape", "TranslatedTemplate", "go_string", "infer_shape", "translate_template"]
