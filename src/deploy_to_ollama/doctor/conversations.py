"""Doctor checks on tool and thinking conversations: the packaged tool and thinking probes (a
call and its result, parallel calls, think on/off, earlier reasoning ...) rendered by
transformers from the reference Jinja and by our port of Ollama's prompt building from the
TEMPLATE, each probe graded ``exact`` / ``json_equivalent`` / ``differs`` (issue 13).

Capabilities alone (``check_tools``, ``check_capabilities``) say whether Ollama *accepts* tools
or ``think``; only a rendered conversation shows a TEMPLATE that accepts them and then writes
another prompt than the one the fine-tune learned (a renamed tag, a dropped tool result, a
missing think-off switch), or how much of the conversation a TEMPLATE without them drops.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

from ..chat_template.probes import Probe, load_probes
from ..errors import DeployError, TemplateRenderError
from .findings import Diagnosis, DoctorContext, ProbeRender
from .reference import ReferenceTemplate
from .rendering import show_text, snap_to_marker, summarize_difference

logger = logging.getLogger(__name__)

__all__ = ["check_thinking_prompts", "check_tool_prompts", "conversation_renders"]

Kind = Literal["tools", "thinking"]
_NOUN = {"tools": "tool", "thinking": "thinking"}
#: What a client loses when a conversation of this kind gets the wrong prompt.
_SYMPTOM = {
    "tools": "Tool calls come out malformed, are not parsed, or the answer ignores the tool "
    "result: the tool conversation is not written the way the fine-tune learned it.",
    "thinking": "Thinking does not switch on or off, or reasoning leaks into the answer: the "
    "thinking conversation is not written the way the fine-tune learned it.",
}


def _probes(kind: Kind) -> tuple[Probe, ...]:
    """The packaged probes of one kind (a probe that needs both counts for neither alone)."""
    if kind == "tools":
        return tuple(p for p in load_probes() if p.needs_tools and not p.needs_thinking)
    return tuple(p for p in load_probes() if p.needs_thinking and not p.needs_tools)


def _jinja_has(kind: Kind, jinja: str) -> bool:
    from ..capabilities import jinja_has_thinking_support, jinja_has_tool_support

    return jinja_has_tool_support(jinja) if kind == "tools" else jinja_has_thinking_support(jinja)


def _template_has(kind: Kind, template: str) -> bool:
    """Whether Ollama derives the capability from the TEMPLATE (else it refuses the request)."""
    from ..capabilities import go_template_capabilities

    return kind in go_template_capabilities(template)


def _skip_reason(ref: ReferenceTemplate, probe: Probe, actual: str) -> str | None:
    """Why no TEMPLATE could render ``probe`` like the Jinja (the verifier's own reasons)."""
    from ..chat_template.key_order import KEY_ORDER, key_order_only
    from ..chat_template.server_rules import joined_results_limit
    from ..chat_template.tool_input import inexpressible_tool, unsendable_arguments

    if limit := probe.ollama_limit or joined_results_limit(probe.messages):
        return f"Ollama limit: {limit}"
    if not probe.needs_tools or ref.source is None:
        return None
    if why := unsendable_arguments(probe):
        return why
    if key_order_only(ref.source, probe, actual):
        return KEY_ORDER
    return inexpressible_tool(probe)


def _render_one(ctx: DoctorContext, probe: Probe, expected: str) -> ProbeRender | None:
    """One probe through the TEMPLATE, graded against ``expected``; None when it is skipped."""
    from ..chat_template.ollama_prompt import render_ollama_prompt
    from ..chat_template.prompt_diff import first_difference, strip_bos
    from ..chat_template.verify import json_equivalent

    ref, info = ctx.reference, ctx.target.gguf
    assert ref is not None
    try:
        actual = render_ollama_prompt(
            ctx.target.effective_template,
            [dict(m) for m in probe.messages],
            system=ctx.target.system or None,
            tools=[dict(t) for t in probe.tools] or None,  # what the client sends
            think=probe.think,
        )
    except DeployError as err:
        return ProbeRender(
            probe.id, expected, "", 0, f"Ollama cannot render it: {err.message}", "differs"
        )
    if info is not None and info.add_bos and info.bos_token:
        actual = info.bos_token + actual  # llama.cpp adds it, whatever the TEMPLATE
    bos = ref.bos_token or (info.bos_token if info else None)
    exp, act = strip_bos(expected, actual, bos)
    if exp == act:
        return ProbeRender(probe.id, expected, actual, None, None, "exact")
    if ref.source is not None and json_equivalent(ref.source, probe, expected, act):
        return ProbeRender(probe.id, expected, actual, None, None, "json_equivalent")
    if (reason := _skip_reason(ref, probe, act)) is not None:
        logger.info("probe %s skipped: %s", probe.id, reason)
        return None
    aligned = _json_aware_difference(ref, probe, exp, act)
    if aligned is None:
        at = snap_to_marker(exp, act, first_difference(exp, act))
        return ProbeRender(probe.id, exp, act, at, summarize_difference(exp, act), "differs")
    # Past the JSON values (whose layout may differ): the text that really differs.
    e_at, a_at, where = aligned
    summary = (
        f"{where}: the reference has {show_text(exp[e_at : e_at + 25])}, "
        f"Ollama has {show_text(act[a_at : a_at + 25])}"
    )
    return ProbeRender(probe.id, exp, act, e_at, summary, "differs", a_at)


def _json_aware_difference(
    ref: ReferenceTemplate, probe: Probe, expected: str, actual: str
) -> tuple[int, int, str] | None:
    """Where ``actual`` first departs from ``expected`` when the reference's ``tojson`` values
    are compared as JSON: (index in expected, index in actual, where in words); None when the
    reference prints no JSON (the first byte difference is the place)."""
    import json

    from ..chat_template.hf_render import JSON_CLOSE, JSON_OPEN, render_hf, split_marked
    from ..chat_template.prompt_diff import same_json
    from ..chat_template.thinking import think_kwargs

    source = ref.source
    if source is None or not probe.tools:
        return None
    try:
        marked = render_hf(
            source.template,
            list(probe.messages),
            tokens=source.template_variables(),
            tools=list(probe.tools),
            kwargs=think_kwargs(source, think=probe.think),
            mark_json=True,
        )
    except DeployError:
        return None
    pieces = split_marked(marked)
    plain = marked.replace(JSON_OPEN, "").replace(JSON_CLOSE, "")
    if pieces is None or not plain.endswith(expected) or not any(j for j, _ in pieces):
        return None
    skip = len(plain) - len(expected)  # a BOS the comparison left out
    e_pos = a_pos = passed = 0
    decoder = json.JSONDecoder()
    for is_json, text in pieces:
        if skip:
            cut = min(skip, len(text))
            text, skip = text[cut:], skip - cut
        where = f"after {passed} equal JSON value(s)" if passed else "before any JSON value"
        if not is_json:
            same = _common_length(text, actual[a_pos:])
            if same < len(text):
                return e_pos + same, a_pos + same, where
            e_pos, a_pos = e_pos + len(text), a_pos + len(text)
            continue
        try:
            got, end = decoder.raw_decode(actual, a_pos)
            equal = same_json(json.loads(text), got)
        except ValueError:
            equal = False
        if not equal:
            return e_pos, a_pos, f"JSON value {passed + 1} differs or is missing"
        e_pos, a_pos, passed = e_pos + len(text), end, passed + 1
    return (e_pos, a_pos, "extra text at the end") if a_pos < len(actual) else None


def _common_length(text: str, other: str) -> int:
    """Length of the common prefix, backed up to the start of a ``<tag>`` it ends inside.

    >>> _common_length("<tool_response>x", "<tool_result>x")
    0
    """
    same = next((i for i, (a, b) in enumerate(zip(text, other, strict=False)) if a != b), None)
    if same is None:
        same = min(len(text), len(other))
    tag = text.rfind("<", 0, same)
    return tag if tag >= 0 and ">" not in text[tag:same] else same


def conversation_renders(ctx: DoctorContext, kind: Kind) -> tuple[ProbeRender, ...]:
    """Every evaluated probe of ``kind``, graded; differing ones first. Empty when there is
    no reference or TEMPLATE, or the reference Jinja has no such capability."""
    from ..chat_template.verify import reference_renders, sent_probe

    ref = ctx.reference
    if ref is None or ref.source is None or not ctx.has_template or ctx.target.route == "native":
        return ()
    if not _jinja_has(kind, ref.template):
        return ()
    # A request without think is think true on Ollama >= 0.12.4 (a thinking TEMPLATE).
    probes = tuple(sent_probe(p, ctx.target.effective_template) for p in _probes(kind))
    expected = reference_renders(ref.source, probes)
    renders: list[ProbeRender] = []
    for probe in probes:
        want = expected.get(probe.id)
        if want is None or isinstance(want, TemplateRenderError):
            continue  # the fine-tune's own template refuses it: nothing to compare with
        if (render := _render_one(ctx, probe, want)) is not None:
            renders.append(render)
    return tuple(sorted(renders, key=lambda r: r.tier != "differs"))


def _evidence(renders: tuple[ProbeRender, ...]) -> tuple[str, ...]:
    """One line per probe: its tier, and for a difference what differs."""
    return tuple(
        f"{r.probe}: {r.tier}" + (f" ({r.summary})" if r.tier == "differs" else "") for r in renders
    )


def _check(ctx: DoctorContext, kind: Kind, code: str) -> list[Diagnosis]:
    renders = conversation_renders(ctx, kind)
    differing = [r for r in renders if r.tier == "differs"]
    if not differing:
        return []
    lead = f"Ollama gives this TEMPLATE the {kind} capability, yet its prompt differs"
    exact = sum(r.tier == "exact" for r in renders)
    return [
        Diagnosis(
            code,
            "error",
            f"{_NOUN[kind]} conversations get another prompt "
            f"({len(differing)} of {len(renders)} probes differ, {exact} exact)",
            _SYMPTOM[kind],
            (lead, *_evidence(renders), f"first difference: {_first(differing[0])}"),
            "run `deploy-to-ollama doctor TARGET --fix` to write the verified translation; "
            "`deploy-to-ollama template diff` shows every probe",
            fixable=True,
            probes=renders,
        )
    ]


def _first(render: ProbeRender) -> str:
    at = render.first_difference or 0
    got = at if render.actual_difference is None else render.actual_difference
    return (
        f"{render.probe}: reference {show_text(render.expected[at : at + 30])}, "
        f"Ollama {show_text(render.actual[got : got + 30])}"
    )


def check_tool_prompts(ctx: DoctorContext) -> list[Diagnosis]:
    """Tool conversations (calls, results, parallel calls) render differently; where the
    TEMPLATE has no ``.Tools`` at all, ``tools_missing`` already says so (one problem, one
    diagnosis) and carries these renders."""
    if ctx.has_template and ".Tools" not in (ctx.target.template or ""):
        return []
    return _check(ctx, "tools", "tool_prompt_mismatch")


def check_thinking_prompts(ctx: DoctorContext) -> list[Diagnosis]:
    """Thinking conversations (think on/off, earlier reasoning, prefill) render differently;
    a TEMPLATE without the thinking capability is ``capabilities_lost``, which carries them."""
    if not ctx.has_template or not _template_has("thinking", ctx.target.effective_template):
        return []
    return _check(ctx, "thinking", "thinking_prompt_mismatch")


#: The conversation checks, in the order the catalogue runs them.
CONVERSATION_CHECKS: tuple[Callable[[DoctorContext], list[Diagnosis]], ...] = (
    check_tool_prompts,
    check_thinking_prompts,
)
