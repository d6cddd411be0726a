"""Find why a model misbehaves in Ollama: each problem is a ``Diagnosis`` with the symptom a
user sees, the evidence, and the fix.

Checks compare the TEMPLATE Ollama uses (rendered with our port of Ollama's prompt building)
against the reference Jinja template (rendered with transformers), plus stops, BOS, SYSTEM and
sampling parameters. Pure functions of a ``Target`` and a ``ReferenceChoice``: no server calls.

The catalogue of diagnoses (one small function each, mirrored by README's doctor table) and
their order; the prompt comparisons live in ``prompt_checks``, the route checks in ``routes``,
the ``Diagnosis`` type in ``findings``, rendering and difference summaries in ``rendering``.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..modelfile import GENERATION_PARAMETERS
from .conversations import CONVERSATION_CHECKS, conversation_renders
from .findings import Diagnosis, DoctorContext, ProbeRender
from .prompt_checks import (
    check_double_bos,
    check_generation_prompt,
    check_renders,
    check_system_prompt,
)
from .reference import ReferenceChoice
from .rendering import (
    DOCTOR_PROBES,
    default_system_prompt,
    eot_marker,
    first_difference,
    summarize_difference,
)
from .targets import Target

#: End-of-turn markers of common chat formats (checked when there is no reference template).
KNOWN_EOT_MARKERS = (
    "<|im_end|>",
    "<|eot_id|>",
    "<end_of_turn>",
    "<|end|>",
    "<|END_OF_TURN_TOKEN|>",
)

#: Unsloth's Modelfile sampling defaults, which override what the fine-tune was trained for.
UNSLOTH_SAMPLING = {"temperature": 1.5, "min_p": 0.1}

#: generation_config.json key -> Ollama parameter name (the one mapping, in modelfile).
_OLLAMA_PARAM = dict(GENERATION_PARAMETERS)


def check_no_template(ctx: DoctorContext) -> list[Diagnosis]:
    """No TEMPLATE, or Ollama's ``{{ .Prompt }}`` fallback; none is needed on the native
    route (llama-server renders the GGUF's Jinja; ``routes`` checks that path)."""
    if ctx.has_template or ctx.target.route == "native":
        return []
    shown = (ctx.target.template or "").strip()
    info = ctx.target.gguf
    if not shown and info is not None and info.chat_template:
        # ollama create guesses a TEMPLATE from the embedded Jinja by similarity
        # (ollama/ollama server/model.go detectChatTemplate); a near miss loses details silently.
        return [
            Diagnosis(
                "no_template",
                "warning",
                "no TEMPLATE: Ollama will guess one from the GGUF's chat template",
                "It may work, or may drop the default system prompt or tool format: Ollama "
                "picks the closest template it knows, not the fine-tune's own.",
                ("the Modelfile sets no TEMPLATE; the GGUF embeds a Jinja chat template",),
                "run `deploy-to-ollama doctor TARGET --fix` to write the translated TEMPLATE",
                fixable=True,
            )
        ]
    evidence = (
        f"TEMPLATE is {shown!r}: Ollama did not recognise the GGUF's chat template"
        if shown
        else "no TEMPLATE and no chat template in the GGUF: Ollama uses '{{ .Prompt }}'",
    )
    return [
        Diagnosis(
            "no_template",
            "error",
            "no chat template: Ollama sends your message raw",
            "It rambles, continues your text, or answers gibberish: it never sees the chat "
            "format it was fine-tuned on.",
            evidence,
            "run `deploy-to-ollama doctor TARGET --fix` to add the translated TEMPLATE and stops",
            fixable=True,
        )
    ]


def check_eot_stop(ctx: DoctorContext) -> list[Diagnosis]:
    """The end-of-turn marker is neither a stop nor an end-of-generation token."""
    ref = ctx.reference
    eogs = set(ctx.target.gguf.eog_tokens) if ctx.target.gguf else set()
    markers: list[str] = []
    if ref is not None:
        marker = eot_marker(ref)
        markers = [marker] if marker else []
    elif ctx.has_template:
        # No reference: the well-known end-of-turn markers the TEMPLATE itself writes.
        markers = [m for m in KNOWN_EOT_MARKERS if m in (ctx.target.template or "")]
    missing = [m for m in markers if m not in eogs and m not in ctx.target.stops]
    if not missing:
        return []
    marker = missing[0]
    return [
        Diagnosis(
            "eot_not_stop",
            # Without the GGUF's token metadata the marker may still be an EOG token.
            "error" if ctx.target.gguf is not None else "warning",
            f"{marker} ends each turn but does not stop generation",
            f"It never stops: it prints {marker} and goes on writing the next turns itself.",
            (
                f"the {'reference' if ref is not None else 'TEMPLATE'} ends an assistant turn "
                f"with {marker!r}",
                f"stops: {ctx.target.stops or 'none'}; end-of-generation tokens of the GGUF: "
                f"{sorted(eogs) or 'none'}",
            ),
            f"add `PARAMETER stop {marker}`; `doctor --fix` writes it",
            fixable=True,
        )
    ]


def check_stops_in_answers(ctx: DoctorContext) -> list[Diagnosis]:
    """Stop strings that ordinary answers contain (the template engine's stop policy)."""
    from ..chat_template.stops import is_safe_stop

    special = set(ctx.target.gguf.eog_tokens) if ctx.target.gguf else set()
    if ctx.reference is not None:
        special |= set(ctx.reference.stop_tokens)
    out: list[Diagnosis] = []
    for stop in ctx.target.stops:
        if is_safe_stop(stop, special=frozenset(special)):
            continue
        core = stop.strip()
        out.append(
            Diagnosis(
                "stop_in_answers",
                "error" if len(core) <= 1 else "warning",
                f"stop string {stop!r} appears in normal answers",
                f"Answers are cut short: generation ends at the first {stop!r}.",
                (f"PARAMETER stop {stop!r} is ordinary text, not an end-of-turn marker",),
                f"remove `PARAMETER stop {stop!r}`; `doctor --fix` keeps only the template's "
                "end-of-turn stops",
                fixable=True,
            )
        )
    return out


def check_tools(ctx: DoctorContext) -> list[Diagnosis]:
    """Tools supported on one side only."""
    ref = ctx.reference
    if ref is None or not ctx.has_template:
        return []
    ollama_tools = ".Tools" in (ctx.target.template or "")
    if ref.mentions_tools == ollama_tools:
        return []
    if ref.mentions_tools:
        # The tool conversations as this TEMPLATE writes them: what a client loses, shown.
        renders = conversation_renders(ctx, "tools")
        differ = sum(r.tier == "differs" for r in renders)
        shown = (
            (f"{differ} of {len(renders)} tool conversations render differently through it",)
            if renders
            else ()
        )
        return [
            Diagnosis(
                "tools_missing",
                "warning",
                "the fine-tune supports tools but the TEMPLATE does not",
                "Tool calls are ignored: Ollama says the model does not support tools.",
                ("the reference template reads `tools`; the TEMPLATE never uses .Tools", *shown),
                "`doctor --fix` writes a TEMPLATE with the tool format of the reference",
                fixable=True,
                probes=renders,
            )
        ]
    return [
        Diagnosis(
            "tools_extra",
            "warning",
            "the TEMPLATE offers tools the fine-tune never learned",
            "Tool calls come out malformed or as plain text.",
            ("the TEMPLATE uses .Tools; the reference template has no tools",),
            "`doctor --fix` writes a TEMPLATE without the tool section",
            fixable=True,
        )
    ]


def check_capabilities(ctx: DoctorContext) -> list[Diagnosis]:
    """Capabilities Ollama derives from the reference Jinja but not from the TEMPLATE
    (ollama/ollama server/images.go rules, reproduced in ``capabilities.py``)."""
    from ..capabilities import LOST_CODE, compare_capabilities

    ref = ctx.reference
    if ref is None or not ctx.has_template:
        return []
    parity = compare_capabilities(ref.template, ctx.target.template)
    # A TEMPLATE without .Tools is already `tools_missing`: one problem, one diagnosis.
    covered = {"tools"} if any(d.code == "tools_missing" for d in check_tools(ctx)) else set()
    missing = [c for c in parity.lost if c not in covered]
    if not missing and not (parity.round_trip_lost and not covered):
        return []
    lost = ", ".join(missing) or "the tool round trip"
    # What the lost capability does to a real conversation, probe by probe (with its tier).
    renders = conversation_renders(ctx, "thinking") if "thinking" in missing else ()
    differ = sum(r.tier == "differs" for r in renders)
    shown = (f"{differ} of {len(renders)} thinking conversations render differently",)
    return [
        Diagnosis(
            LOST_CODE,
            "warning",
            f"the TEMPLATE loses {lost} that the fine-tune's chat template has",
            'Clients that send tools or think get "model does not support …" from Ollama; '
            "Ollama 0.30+ may drop this TEMPLATE for the GGUF's Jinja.",
            (
                f"Ollama derives {list(parity.jinja)} from the reference Jinja and "
                f"{list(parity.template)} from the TEMPLATE",
                *[line for line in parity.problems() if "claims" not in line],
                *(shown if renders else ()),
            ),
            "`doctor --fix` writes the translated TEMPLATE; where the translator cannot carry "
            "the capability, serve the GGUF's Jinja (Ollama 0.30+, OLLAMA_GO_TEMPLATE=0)",
            fixable=True,
            probes=renders,
        )
    ]


def check_sampling(ctx: DoctorContext) -> list[Diagnosis]:
    """Sampling parameters that fight the fine-tune (a warning, never an error)."""
    params = dict(ctx.target.parameters)
    ref = ctx.reference
    trained = dict(ref.generation_config) if ref is not None else {}
    evidence: list[str] = []
    for key, value in trained.items():
        name = _OLLAMA_PARAM[key]
        if name in params and _as_float(params[name]) not in (None, value):
            evidence.append(f"{name} is {params[name]}, generation_config.json says {value:g}")
    if not trained:
        evidence += [
            f"{name} is {params[name]} (Unsloth's Modelfile default, not a value you trained for)"
            for name, value in UNSLOTH_SAMPLING.items()
            if name in params and _as_float(params[name]) == value
        ]
    if not evidence:
        return []
    return [
        Diagnosis(
            "sampling_conflict",
            "warning",
            "sampling parameters differ from what the fine-tune was made for",
            "Answers are erratic or drift off-topic at these settings.",
            tuple(evidence),
            "use generation_config.json's values (`doctor --fix` writes them) or remove the "
            "PARAMETER lines",
            fixable=True,
        )
    ]


def _as_float(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def check_reference(ctx: DoctorContext) -> list[Diagnosis]:
    """Notes about the reference itself."""
    out: list[Diagnosis] = []
    if ctx.choice.disagreement:
        out.append(
            Diagnosis(
                "reference_disagreement",
                "warning",
                "the GGUF's embedded template differs from --source's",
                "Tools that read the GGUF (llama.cpp, LM Studio) format chats differently "
                "than the fine-tune expects.",
                (ctx.choice.disagreement,),
                "re-export the GGUF from the fine-tune's tokenizer; the doctor used --source",
            )
        )
    if ctx.reference is None and ctx.has_template:
        out.append(
            Diagnosis(
                "no_reference",
                "info",
                "the TEMPLATE could not be compared with a reference",
                "None yet; but a wrong TEMPLATE would go unnoticed.",
                (ctx.choice.note,),
                "pass --source the fine-tune's folder (tokenizer files) for a full check",
            )
        )
    return out


CHECKS = (
    check_reference,
    check_no_template,
    check_renders,
    check_generation_prompt,
    check_double_bos,
    check_system_prompt,
    check_eot_stop,
    check_stops_in_answers,
    check_tools,
    *CONVERSATION_CHECKS,  # tool and thinking conversations, probe by probe
    check_capabilities,
    check_sampling,
)


def diagnose(target: Target, choice: ReferenceChoice) -> list[Diagnosis]:
    """Run every check; errors first, then warnings, then notes."""
    from ..chat_template.server_rules import for_server
    from .routes import ROUTE_CHECKS  # the template-route checks (issue 13), own module

    ctx = DoctorContext(target, choice)
    with for_server(target.server_version):  # the serving Ollama's prompt building
        found = [d for check in (*CHECKS, *ROUTE_CHECKS) for d in check(ctx)]
    order: Mapping[str, int] = {"error": 0, "warning": 1, "info": 2}
    return sorted(found, key=lambda d: order[d.severity])


__all__ = [
    "CHECKS",
    "DOCTOR_PROBES",
    "Diagnosis",
    "DoctorContext",
    "ProbeRender",
    "default_system_prompt",
    "diagnose",
    "first_difference",
    "summarize_difference",
]
