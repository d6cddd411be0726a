"""Thinking switches that rewrite more than the generation prompt: one TEMPLATE per setting.

SmolLM3's ``enable_thinking`` (or ``/no_think``) changes the system block ("Reasoning Mode:
/no_think", other default instructions), every assistant turn (an empty ``<think></think>``)
and the generation prompt; Command-A's ``reasoning=False`` rewrites its preamble. No single
reading of turn wrappers covers that, but each setting alone is an ordinary template: we fix
the switch in the Jinja source, translate both settings with the usual inference, and join the
two TEMPLATEs under ``{{ if and $.IsThinkSet (not $.Think) }}``. The pair is kept only when
it verifies on every probe of the original template that the single TEMPLATE matched, and on
the thinking probes. A Jinja whose default is thinking off is joined the same way under
``{{ if not $.Think }}``: before v0.12.4 a request without ``think`` reaches the TEMPLATE as
think false, the Jinja's default; from v0.12.4 the server sends it as true, and verification
compares it with the Jinja's thinking-on setting (``verify.UNSET_ON``). The report then says
that the Jinja's default is off (``think_generations.DEFAULT_OFF_NOTE``).

Where neither setting prints reasoning (SmolLM3 drops it from every turn), Ollama still needs
``.Thinking`` inside the messages loop to infer the tags it parses the model's output with;
we take them from the empty reasoning block the Jinja prints with thinking off
(``<think>\\n\\n</think>``, Gemma 4's ``<|channel>thought\\n<channel|>``) and declare them in a
branch that prints nothing, as the Jinja.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..errors import DeployError, TemplateRenderError
from .loop_reasoning import with_loop_thinking
from .server_rules import current_version
from .shape import A1, R1, U1, U2
from .source import TemplateSource
from .think_tags import list_block_tags, named_tags, with_named_tags
from .thinking import OFF, switch_name

if TYPE_CHECKING:
    from .translate import TranslatedTemplate

logger = logging.getLogger(__name__)

#: A generation prompt that opens the reasoning block: ``<think>\n``.
OPEN_RE = re.compile(r"(<([A-Za-z_]{1,20})>)\s*$")

#: An empty reasoning block at the end of a thinking-off generation prompt: ``<think>\n\n</think>``.
EMPTY_BLOCK_RE = re.compile(r"(<([A-Za-z_|]{1,20})>)\s*(</\2>)\s*$")

#: The same with mirrored bars and a channel name (Gemma 4: ``<|channel>thought\n<channel|>``).
EMPTY_CHANNEL_RE = re.compile(r"(<\|([A-Za-z_]{1,20})>[A-Za-z_]{0,20})\s*(<\2\|>)\s*$")


def empty_block(prompt: str) -> tuple[str, str] | None:
    r"""(opening, closing) of the empty reasoning block that ends ``prompt``, the tags Ollama
    should separate the model's reasoning with (None: the prompt ends otherwise). The opening
    keeps a channel name (``<|channel>thought``): the model writes it before its reasoning.

    >>> empty_block("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    ('<think>', '</think>')
    >>> empty_block("<|turn>model\n<|channel>thought\n<channel|>")
    ('<|channel>thought', '<channel|>')
    >>> empty_block("<|turn>model\n<|channel>thought\n<other|>") is None
    True
    """
    for pattern in (EMPTY_BLOCK_RE, EMPTY_CHANNEL_RE):
        found = pattern.search(prompt)
        if found is not None:
            return found.group(1), found.group(3)
    return None


#: The action that opens the thinking-off TEMPLATE for a Jinja whose default is thinking off:
#: every request but ``think: true``. Only where a request without ``think`` reaches the
#: TEMPLATE as think false (Ollama before v0.12.4) does that render the Jinja's default.
OFF_BY_DEFAULT = "if not $.Think"

#: Why thinking probes skip where the Jinja's default is thinking off and the two settings'
#: TEMPLATEs did not join into one that verifies.
DEFAULT_OFF_NOT_JOINED = (
    "the Jinja template's default is thinking off; one TEMPLATE per setting joined under "
    "{{{{ if not $.Think }}}} would render it (Ollama before v0.12.4 sends a request without "
    "think as think false, the Jinja's default; from v0.12.4 as think true, its thinking-on "
    "setting), but that pair did not verify for Ollama {version} (each setting translated "
    "alone, with the same SYSTEM, losing no probe), so thinking is left out"
)


#: A closing tag (``</think>``, ``<channel|>``) in a rendering.
CLOSING_RE = re.compile(r"</[A-Za-z_]{1,20}>|<[A-Za-z_]{1,20}\|>")

#: Why thinking probes skip where the Jinja's default is thinking off and no rendering of it
#: shows the tags the model writes its reasoning in.
NO_TAGS = (
    "the Jinja template's default is thinking off and its thinking-on setting only changes the "
    "prompt: no rendering shows a reasoning tag (no turn's or tool loop's reasoning is printed, "
    "no empty reasoning block, no closing tag in what thinking on adds), while Ollama {version} "
    "infers the tags it separates reasoning with from the TEMPLATE alone (the text around "
    ".Thinking in the messages loop, thinking/template.go); tags the Jinja does not show would "
    "be a guess, so thinking is left out"
)


#: Why thinking probes skip for a Jinja whose default is a third setting, where the
#: three TEMPLATEs did not join into one that verifies.
THREE_NOT_JOINED = (
    "the Jinja template's default is neither its thinking-on nor its thinking-off setting; "
    "Ollama before v0.12.4 tells a request without think apart (.IsThinkSet false), from "
    "v0.12.4 it sends it as think true, but the TEMPLATEs of the default and of each setting "
    "did not join into one that verifies for Ollama {version}, so thinking is left out"
)


def with_switched_thinking(
    source: TemplateSource, result: TranslatedTemplate, refs: Mapping[str, Any]
) -> TranslatedTemplate:
    """``result``, or the two-setting TEMPLATE where that verifies thinking and loses nothing;
    a template whose default is thinking off gets that reason on its thinking probes."""
    if result.report.thinking_verified:
        return result
    name = switch_name(source)
    renders = _generation_prompts(source, name)
    cond = OFF
    if renders is not None and renders[0] != renders[1] and renders[1] != renders[2]:
        if renders[0] != renders[2]:
            return _three_settings(source, name, result, refs)
        # Before v0.12.4 an unset think is false: the Jinja's default; from v0.12.4 it is
        # true, and verification compares it with the Jinja's thinking-on setting.
        cond = OFF_BY_DEFAULT
    joined = _joined_or_opened(source, name, result, refs, renders, cond)
    if joined is not None:
        return _default_off_noted(joined) if cond == OFF_BY_DEFAULT else joined
    if cond == OFF_BY_DEFAULT:
        version = _version()
        if renders is not None and _names_no_tags(source, name, renders):
            return _default_off(result, NO_TAGS.format(version=version))
        return _default_off(result, DEFAULT_OFF_NOT_JOINED.format(version=version))
    return result


def _names_no_tags(source: TemplateSource, name: str, renders: tuple[str, str, str]) -> bool:
    """Whether no rendering shows reasoning tags: no turn's reasoning (with thinking on), no
    tool loop's, no generation prompt opening or closing an empty block, no closing tag in
    what thinking on adds (Cogito: thinking on only adds a system line)."""
    from .call_reasoning import prints_call_reasoning
    from .hf_render import render_hf

    if empty_block(renders[2]) or OPEN_RE.search(renders[1]) or prints_call_reasoning(source):
        return False
    if block_tags(source, name) is not None or list_block_tags(source) is not None:
        return False
    if set(CLOSING_RE.findall(renders[1])) - set(CLOSING_RE.findall(renders[2])):
        return False  # thinking on names a tag, if only in words (Granite: "<think></think>")
    turns = [
        {"role": "user", "content": U1},
        {"role": "assistant", "content": A1, "reasoning_content": R1},
        {"role": "user", "content": U2},
    ]
    for messages in (turns, turns[:2]):
        try:
            text = render_hf(
                source.template,
                messages,
                tokens=source.template_variables(),
                kwargs={name: True},
            )
        except TemplateRenderError:
            return False
        if R1 in text:
            return False
    return True


def _joined_or_opened(
    source: TemplateSource,
    name: str,
    result: TranslatedTemplate,
    refs: Mapping[str, Any],
    renders: tuple[str, str, str] | None,
    cond: str,
) -> TranslatedTemplate | None:
    """The two-setting TEMPLATE, or the declared tags of an opened block (None: neither)."""
    if not result.report.public_verified:
        return None
    try:
        if renders is None or renders[1] == renders[2]:
            from .think_stripped import with_stripped_thinking

            return (
                _opened(source, result, refs)
                or with_named_tags(source, result, refs)
                or with_loop_thinking(source, result, refs)
                or with_stripped_thinking(source, result, refs)
            )
        return _joined(source, name, result, refs, renders[2], cond)
    except DeployError as err:
        logger.info("thinking settings not joined: %s", err)
        return None


def _default_off(result: TranslatedTemplate, reason: str) -> TranslatedTemplate:
    from .verify import NO_THINKING

    probes = tuple(
        replace(p, reason=reason) if p.status == "skipped" and p.reason == NO_THINKING else p
        for p in result.report.probes
    )
    return replace(result, report=replace(result.report, probes=probes))


def _generation_prompts(source: TemplateSource, name: str) -> tuple[str, str, str] | None:
    """(default, on, off) renderings of one user message with the generation prompt (None
    when one raises)."""
    from .hf_render import render_hf

    user = [{"role": "user", "content": U1}]
    texts = []
    for kwargs in ({}, {name: True}, {name: False}):
        try:
            texts.append(
                render_hf(
                    source.template,
                    user,
                    tokens=source.template_variables(),
                    add_generation_prompt=True,
                    kwargs=kwargs,
                )
            )
        except TemplateRenderError:
            return None
    return texts[0], texts[1], texts[2]


def fixed(source: TemplateSource, name: str, *, value: bool) -> TemplateSource:
    """``source`` with its thinking switch set once and for all, whatever a caller passes."""
    setting = "true" if value else "false"
    return replace(source, template=f"{{%- set {name} = {setting} -%}}" + source.template)


def _joined(
    source: TemplateSource,
    name: str,
    result: TranslatedTemplate,
    refs: Mapping[str, Any],
    off_prompt: str,
    cond: str = OFF,
) -> TranslatedTemplate | None:
    from .translate import translate_template

    on = translate_template(fixed(source, name, value=True))
    off = translate_template(fixed(source, name, value=False))
    if not (on.report.public_verified and off.report.public_verified) or on.system != off.system:
        return None
    for on_text, off_text, calls in _settings(source, on.template, off.template, off_prompt):
        template = "{{- " + cond + " }}" + off_text + "{{- else }}" + on_text + "{{- end }}"
        flagged = _with_inband_flags(source, name, off_text, on_text, on.system, cond)
        for candidate in (flagged, template):
            accepted = None
            if candidate is not None:
                accepted = accept_thinking(source, result, candidate, on.system, refs)
            if accepted is not None and (not calls or _loops_hold(source, accepted)):
                return accepted
    return None


def _settings(
    source: TemplateSource, on: str, off: str, off_prompt: str
) -> list[tuple[str, str, bool]]:
    """(on, off, prints tool loops' reasoning) to try, in order. Where neither setting prints
    reasoning, Ollama's tags come from the reasoning the Jinja keeps in tool loops, else from
    the empty block its thinking-off prompt ends with (a branch that prints nothing)."""
    if _declares_thinking(on) or _declares_thinking(off):
        return [(on, off, False)]
    tries = []
    calls = _call_reasoning(source, on, off)
    if calls is not None:
        tries.append((calls[0], calls[1], True))
    name = switch_name(source)
    tags = empty_block(off_prompt) or block_tags(source, name) or named_tags(source, name)
    tags = tags or list_block_tags(source)
    if tags is not None:
        tries.append((on + declaration(*tags), off, False))
    return tries


def block_tags(source: TemplateSource, name: str) -> tuple[str, str] | None:
    """The tags around reasoning in an assistant turn written as typed content blocks
    (Apertus: ``{"blocks": [{"type": "thoughts", ...}, {"type": "response", ...}]}`` prints
    ``<|inner_prefix|>R<|inner_suffix|>A``), with thinking on; None where the Jinja has no
    such format or prints no special token right around the reasoning. Ollama's messages
    never arrive in that format; the rendering only shows which tags the model writes."""
    from .call_reasoning import tags_around
    from .hf_render import render_hf

    blocks = [{"type": "thoughts", "text": R1}, {"type": "response", "text": A1}]
    turns: list[dict[str, Any]] = [
        {"role": "user", "content": U1},
        {"role": "assistant", "content": {"blocks": blocks}},
        {"role": "user", "content": U2},
    ]
    try:
        text = render_hf(
            source.template, turns, tokens=source.template_variables(), kwargs={name: True}
        )
    except TemplateRenderError:
        return None
    return tags_around(text, R1, A1)


def _loops_hold(source: TemplateSource, result: TranslatedTemplate) -> bool:
    from .call_reasoning import earlier_loops_hold

    return earlier_loops_hold(source, result.template, result.system)


def _call_reasoning(source: TemplateSource, on: str, off: str) -> tuple[str, str] | None:
    """Both settings' TEMPLATEs printing tool-calling turns' reasoning, where the Jinja does
    that and nothing else with reasoning (Gemma 4; ``call_reasoning.py``)."""
    from .call_reasoning import read_call_reasoning, with_call_reasoning

    reading = read_call_reasoning(source)
    if reading is None:
        return None
    texts = with_call_reasoning(on, reading), with_call_reasoning(off, reading)
    return None if texts[0] is None or texts[1] is None else (texts[0], texts[1])


def _three_settings(
    source: TemplateSource, name: str, result: TranslatedTemplate, refs: Mapping[str, Any]
) -> TranslatedTemplate:
    """A Jinja whose default is neither setting (RWKV World: unset prints no tag), on a server
    before v0.12.4, where ``.IsThinkSet`` tells an unset ``think`` apart: ``result`` for the
    default, then one TEMPLATE per setting. Without that, the reason says why."""
    joined = None
    if result.report.public_verified:
        try:
            joined = _three_joined(source, name, result, refs)
        except DeployError as err:
            logger.info("thinking settings not joined: %s", err)
    if joined is not None:
        return joined
    return _default_off(result, THREE_NOT_JOINED.format(version=_version()))


def _three_joined(
    source: TemplateSource, name: str, result: TranslatedTemplate, refs: Mapping[str, Any]
) -> TranslatedTemplate | None:
    from .translate import translate_template

    on = translate_template(fixed(source, name, value=True))
    off = translate_template(fixed(source, name, value=False))
    settings = (on.report.public_verified, off.report.public_verified)
    if not all(settings) or not result.system == on.system == off.system:
        return None
    if not (_declares_thinking(on.template) or _declares_thinking(off.template)):
        return None
    template = (
        "{{- if not $.IsThinkSet }}" + result.template
        + "{{- else if $.Think }}" + on.template
        + "{{- else }}" + off.template + "{{- end }}"
    )  # fmt: skip
    accepted = accept_thinking(source, result, template, on.system, refs)
    return None if accepted is None else _default_off_noted(accepted)


def _version() -> str:
    """The serving Ollama in reasons (the newest when none is named)."""
    return current_version() or "(the newest)"


def _default_off_noted(result: TranslatedTemplate) -> TranslatedTemplate:
    """``result`` with its report saying the Jinja's default is not thinking on: the warning
    ``think_generations.thinking_note`` gives next to the claim."""
    return replace(result, report=replace(result.report, thinking_default_off=True))


def _with_inband_flags(
    source: TemplateSource, name: str, off: str, on: str, system: str | None, cond: str = OFF
) -> str | None:
    """The two-setting TEMPLATE that also obeys ``/no_think``-style flags in the system
    message, where the Jinja has them and conversations carrying each flag verify."""
    from .inband import flag_probes, inband_flags, with_flags
    from .verify import reference_renders, verify_template

    variants = {value: fixed(source, name, value=value) for value in (True, False)}
    flags = inband_flags(source, variants)
    template = with_flags(off, on, cond, flags) if flags else None
    if template is None:
        return None
    probes = flag_probes(flags)
    refs = reference_renders(source, probes)
    report = verify_template(source, template, system=system, references=refs, probes=probes)
    ran = [p for p in report.probes if p.status != "skipped"]
    if len(ran) != len(probes) or any(p.status != "match" for p in ran):
        logger.info("system-message thinking flags not translated: %s", report.first_failure())
        return None
    return template


def accept_thinking(
    source: TemplateSource,
    result: TranslatedTemplate,
    template: str,
    system: str | None,
    refs: Mapping[str, Any],
) -> TranslatedTemplate | None:
    """``template`` verified in ``result``'s place, when it loses no match, adds no
    difference and verifies the thinking probes; else None."""
    from .translate import _require_tools, _with_tool_probes
    from .verify import verify_template

    tools = ".Tools" in template
    report = verify_template(source, template, system=system, tools=tools, references=refs)
    joined = replace(result, template=template, system=system, report=report)
    analysis = _analysis(source)
    if not tools:
        # Where the Jinja ignores tool definitions, tool turns are still probed (as plain).
        joined = _with_tool_probes(source, joined, refs, analysis)
    joined = _require_tools(joined, analysis)
    before = {p.probe: p.status for p in result.report.probes}
    after = {p.probe: p.status for p in joined.report.probes}
    lost = [p for p, status in before.items() if status == "match" and after.get(p) != "match"]
    new_diff = [p for p, s in after.items() if s == "differs" and before.get(p) != "differs"]
    if lost or new_diff or not joined.report.thinking_verified:
        logger.info("thinking not added: %s differ", lost + new_diff)
        return None
    return joined


def _opened(
    source: TemplateSource, result: TranslatedTemplate, refs: Mapping[str, Any]
) -> TranslatedTemplate | None:
    """QwQ / DeepSeek-R1 distills: the generation prompt opens the reasoning block
    (``<think>\n``) and earlier turns lose what precedes its closing tag. The TEMPLATE already
    prints the same; declaring the tags lets Ollama separate the reasoning (its parser starts
    inside the block when the prompt ends with the opening tag)."""
    from .hf_render import render_hf

    shape = result.shape
    found = OPEN_RE.search(shape.generation_prompt) if shape is not None else None
    if found is None or _declares_thinking(result.template):
        return None
    opening, closing = found.group(1), f"</{found.group(2)}>"
    turns = [
        {"role": "user", "content": U1},
        {"role": "assistant", "content": R1 + closing + A1},
        {"role": "user", "content": U2},
    ]
    try:
        text = render_hf(source.template, turns, tokens=source.template_variables())
    except TemplateRenderError:
        return None
    if R1 in text or A1 not in text:
        return None  # no evidence that the closing tag ends the reasoning
    template = result.template + declaration(opening, closing)
    return accept_thinking(source, result, template, result.system, refs)


def _declares_thinking(template: str) -> bool:
    from .ollama_prompt import template_thinks

    return template_thinks(template)


def declaration(opening: str, closing: str) -> str:
    """A messages loop that prints nothing and shows Ollama the thinking tags: the Jinja
    template prints no turn's reasoning, and neither does the TEMPLATE."""
    return (
        "{{- range .Messages }}{{- if false }}"
        + opening
        + "{{ .Thinking }}"
        + closing
        + "{{- end }}{{- end }}"
    )


def _analysis(source: TemplateSource) -> Any:
    from .tools import analyse_tools

    return analyse_tools(source)


__all__ = [
    "CLOSING_RE",
    "DEFAULT_OFF_NOT_JOINED",
    "EMPTY_BLOCK_RE",
    "EMPTY_CHANNEL_RE",
    "NO_TAGS",
    "OFF_BY_DEFAULT",
    "OPEN_RE",
    "THREE_NOT_JOINED",
    "accept_thinking",
    "block_tags",
    "declaration",
    "empty_block",
    "fixed",
    "with_switched_thinking",
]
