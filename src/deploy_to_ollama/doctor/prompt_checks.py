"""Doctor checks of the prompt itself: the TEMPLATE Ollama renders (our port of Ollama's prompt
building, with the serving version's rules) against the reference Jinja rendered by
transformers, probe by probe, and the parts users notice first (the assistant header, a
doubled BOS, the default system prompt).
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import DeployError
from .findings import Diagnosis, DoctorContext, ProbeRender
from .rendering import (
    DOCTOR_PROBES,
    default_system_prompt,
    effective_ollama,
    effective_reference,
    first_difference,
    generation_suffix,
    markers,
    show_text,
    snap_to_marker,
    strip_bos,
    summarize_difference,
)

logger = logging.getLogger(__name__)

__all__ = [
    "check_double_bos",
    "check_generation_prompt",
    "check_renders",
    "check_system_prompt",
]


def check_renders(ctx: DoctorContext) -> list[Diagnosis]:
    """TEMPLATE renders differently from the reference, probe by probe."""
    ref = ctx.reference
    if ref is None or not ctx.has_template:
        return []
    bos = ref.bos_token or (ctx.target.gguf.bos_token if ctx.target.gguf else None)
    renders: list[ProbeRender] = []
    think = _unset_think(ctx)
    for name, messages in DOCTOR_PROBES:
        try:
            expected = effective_reference(ref, messages, kwargs=think)
        except DeployError as err:
            # The fine-tune's own template refuses this conversation (e.g. no system role):
            # nothing Ollama could be compared with.
            logger.info("probe %s skipped: %s", name, err.message)
            continue
        try:
            actual = effective_ollama(ctx.target, messages)
        except DeployError as err:
            renders.append(
                ProbeRender(
                    name, expected, "", 0, f"Ollama cannot render it: {err.message}", "differs"
                )
            )
            continue
        # One leading BOS on either side is the tokenizer's business, not the template's.
        if strip_bos(expected, bos) == strip_bos(actual, bos):
            continue
        at = snap_to_marker(expected, actual, first_difference(expected, actual))
        renders.append(
            ProbeRender(
                name, expected, actual, at, summarize_difference(expected, actual), "differs"
            )
        )
    if not renders:
        return []
    family = _family_evidence(renders[0], bos)
    return [
        Diagnosis(
            "template_mismatch",
            "error",
            f"TEMPLATE renders another prompt than the fine-tune's "
            f"({len(renders)} of {len(DOCTOR_PROBES)} probes)",
            "It answers off-topic, in the wrong format, or leaks template text: the prompt "
            "does not look like the conversations it was trained on.",
            (*family, *(f"{p.probe}: {p.summary}" for p in renders), f"reference: {ref.location}"),
            "run `deploy-to-ollama doctor TARGET --fix` to replace the TEMPLATE with a "
            "verified translation; `deploy-to-ollama template diff` shows it side by side",
            fixable=True,
            probes=tuple(renders),
        )
    ]


def _unset_think(ctx: DoctorContext) -> dict[str, Any]:
    """The reference's variables for the probes, which leave think unset: its thinking switch
    on where the serving Ollama (>= 0.12.4) sends such a request to a thinking TEMPLATE as
    think true, as the template engine verifies it (``verify.UNSET_ON``)."""
    from ..chat_template.verify import unset_think_kwargs

    ref = ctx.reference
    if ref is None or ref.source is None or not ctx.target.effective_template:
        return {}
    return unset_think_kwargs(ref.source, ctx.target.effective_template)


def _family_evidence(first: ProbeRender, bos: str | None) -> tuple[str, ...]:
    """A line naming the other chat format when no reference marker survives in Ollama's prompt
    (BOS does not count: llama.cpp adds it whatever the TEMPLATE)."""
    want = [m for m in markers(first.expected) if m != bos]
    got = [m for m in markers(first.actual) if m != bos]
    if not want or set(want) & set(got):
        return ()
    used = ", ".join(got[:3]) if got else "no special markers"
    return (
        f"a TEMPLATE of another model family: the reference writes {', '.join(want[:3])}, "
        f"the TEMPLATE writes {used}",
    )


def check_generation_prompt(ctx: DoctorContext) -> list[Diagnosis]:
    """The TEMPLATE does not end with the assistant header the model answers after."""
    ref = ctx.reference
    if ref is None or not ctx.has_template:
        return []
    try:
        suffix = generation_suffix(ref, kwargs=_unset_think(ctx))
        actual = effective_ollama(ctx.target, DOCTOR_PROBES[0][1])
    except DeployError:
        return []
    if not suffix.strip() or actual.endswith(suffix):
        return []
    return [
        Diagnosis(
            "generation_prompt_missing",
            "error",
            "the prompt does not end with the assistant header",
            "It continues your text instead of answering, or answers as the user.",
            (
                f"the reference ends the prompt with {show_text(suffix)}; Ollama's ends with "
                f"{show_text(actual[-len(suffix) - 10 :])}",
            ),
            "end the TEMPLATE with the assistant header; `doctor --fix` writes it",
            fixable=True,
        )
    ]


def check_double_bos(ctx: DoctorContext) -> list[Diagnosis]:
    """The TEMPLATE writes BOS and llama.cpp adds one too."""
    info = ctx.target.gguf
    if info is None or not info.add_bos or not info.bos_token or not ctx.has_template:
        return []
    try:
        actual = effective_ollama(ctx.target, DOCTOR_PROBES[0][1])
    except DeployError:
        return []
    if not actual.startswith(info.bos_token * 2):
        return []
    return [
        Diagnosis(
            "double_bos",
            "error",
            f"BOS {info.bos_token} is sent twice",
            "Answers are subtly worse or odd from the first word: every prompt starts with "
            "two BOS tokens, which the model never saw in training.",
            (
                "the GGUF sets tokenizer.ggml.add_bos_token, so llama.cpp prepends "
                f"{info.bos_token!r}",
                f"the TEMPLATE writes {info.bos_token!r} itself as well",
            ),
            f"remove {info.bos_token} from the start of the TEMPLATE; `doctor --fix` does",
            fixable=True,
        )
    ]


def check_system_prompt(ctx: DoctorContext) -> list[Diagnosis]:
    """The reference's default system prompt is lost, or SYSTEM duplicates one."""
    ref = ctx.reference
    if ref is None or not ctx.has_template:
        return []
    default = default_system_prompt(ref)
    if default is None:
        return []
    try:
        actual = effective_ollama(ctx.target, DOCTOR_PROBES[0][1])
    except DeployError:
        return []
    count = actual.count(default)
    if count == 1:
        return []
    if count == 0:
        return [
            Diagnosis(
                "default_system_lost",
                "error",
                "the default system prompt of the fine-tune is lost",
                "It ignores its persona or instructions when you give no system prompt.",
                (
                    f"the reference adds {show_text(default, 60)} when no system message is given; "
                    "Ollama's prompt does not contain it",
                ),
                "set `SYSTEM` to that text (or put it in the TEMPLATE); `doctor --fix` does",
                fixable=True,
            )
        ]
    return [
        Diagnosis(
            "system_duplicated",
            "error",
            "the default system prompt appears twice",
            "It repeats or over-weights its instructions: the prompt carries them twice.",
            (
                f"{show_text(default, 60)} appears {count} times in Ollama's prompt "
                "(SYSTEM and the TEMPLATE both write it)",
            ),
            "drop SYSTEM or the hard-coded text in the TEMPLATE; `doctor --fix` does",
            fixable=True,
        )
    ]
