"""Render probe conversations through both sides and describe where they differ.

The reference side is transformers' rendering of the fine-tune's Jinja; the Ollama side is our
port of Ollama's prompt building on the TEMPLATE, plus the BOS llama.cpp adds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..chat_template.prompt_diff import first_difference
from ..errors import DeployError
from .reference import ReferenceTemplate
from .targets import Target

Message = dict[str, Any]

#: Texts the probes use so that their place in a rendering can be found again.
_SYS = "You are a terse assistant."
_USER = "What is the secret word?"
_ANSWER = "Banana."
#: Probe conversations the doctor renders through both templates.
DOCTOR_PROBES: tuple[tuple[str, tuple[Message, ...]], ...] = (
    ("single_user", ({"role": "user", "content": _USER},)),
    ("system_user", ({"role": "system", "content": _SYS}, {"role": "user", "content": _USER})),
    (
        "multi_turn",
        (
            {"role": "user", "content": "Name a fruit."},
            {"role": "assistant", "content": "Apple."},
            {"role": "user", "content": "Another one, please."},
        ),
    ),
)


MARKER_RE = re.compile(r"<\|[^|<>\s]+\|>|\[\|[^|\s]+\|\]|<[a-z_]+>|\[/?INST\]|</?s>")


def show_text(text: str, limit: int = 40) -> str:
    """Short repr of a snippet for evidence lines."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


def strip_bos(text: str, bos: str | None) -> str:
    return text[len(bos) :] if bos and text.startswith(bos) else text


def _place(expected: str, at: int) -> str:
    """Where ``at`` falls in a conversation rendering, in words."""
    before = expected[:at]
    for label, needle in (
        ("the assistant's answer", _ANSWER),
        ("the user turn", _USER),
        ("the user turn", "Another one, please."),
        ("the user turn", "Name a fruit."),
        ("the system prompt", _SYS),
    ):
        pos = before.rfind(needle)
        if pos >= 0 and all(before.rfind(n) <= pos for n in (_USER, _ANSWER, _SYS)):
            return f"after {label}"
    return "at the start of the prompt" if at == 0 else "before the first message"


def snap_to_marker(expected: str, actual: str, at: int | None) -> int | None:
    """Move a difference inside a special marker back to the marker's start.

    >>> snap_to_marker("<|im_start|>u", "<|start_header_id|>u", 2)
    0
    """
    if at is None:
        return None
    for text in (expected, actual):
        for match in MARKER_RE.finditer(text):
            if match.start() < at < match.end():
                at = match.start()
    return at


def summarize_difference(expected: str, actual: str) -> str:
    """Say in words how Ollama's prompt departs from the reference.

    >>> summarize_difference("<u>hi</u><a>", "<u>hi</u>")
    "'<a>' missing at the end of the prompt"
    >>> summarize_difference("<u>hi</u>", "[INST]hi")
    "starts with '[INST]hi' instead of '<u>hi</u>'"
    """
    at = snap_to_marker(expected, actual, first_difference(expected, actual))
    if at is None:
        return "identical"
    want, got = expected[at:], actual[at:]
    if not got:
        return f"{show_text(want)} missing at the end of the prompt"
    if not want:
        return f"extra {show_text(got)} at the end of the prompt"
    where = "at the start of the prompt" if at == 0 else _place(expected, at)
    if want.endswith(got):
        return f"{show_text(want[: len(want) - len(got)])} missing {where}"
    if got.endswith(want):
        return f"extra {show_text(got[: len(got) - len(want)])} {where}"
    if at == 0:
        return f"starts with {show_text(got[:20])} instead of {show_text(want[:20])}"
    return f"{where}: the reference has {show_text(want[:25])}, Ollama has {show_text(got[:25])}"


def render_ollama(
    template: str, messages: Sequence[Message], *, system: str | None, tools: Any = None
) -> str:
    """Ollama's prompt for ``messages`` (our port of Ollama's template execution)."""
    from ..chat_template.ollama_prompt import render_ollama_prompt

    return render_ollama_prompt(
        template, [dict(m) for m in messages], system=system or None, tools=tools
    )


def effective_ollama(target: Target, messages: Sequence[Message], tools: Any = None) -> str:
    text = render_ollama(target.effective_template, messages, system=target.system, tools=tools)
    info = target.gguf
    if info is not None and info.add_bos and info.bos_token:
        return info.bos_token + text
    return text


def effective_reference(ref: ReferenceTemplate, messages: Sequence[Message], **kw: Any) -> str:
    text = ref.render(messages, **kw)
    return text


def eot_marker(ref: ReferenceTemplate) -> str | None:
    """The text the reference writes right after an assistant answer (e.g. ``<|im_end|>``)."""
    try:
        text = ref.render(
            [{"role": "user", "content": _USER}, {"role": "assistant", "content": _ANSWER}],
            add_generation_prompt=False,
        )
    except DeployError:
        return None
    pos = text.rfind(_ANSWER)
    if pos < 0:
        return None
    tail = text[pos + len(_ANSWER) :].strip()
    # The first marker is what the model generates first; it alone decides whether it stops.
    first = MARKER_RE.match(tail)
    marker = first.group(0) if first else tail.split("\n")[0].split(" ")[0].strip()
    return marker or None


def generation_suffix(ref: ReferenceTemplate, kwargs: Mapping[str, Any] | None = None) -> str:
    """What ``add_generation_prompt`` adds (the assistant header the model answers after);
    ``kwargs``: the Jinja's variables, such as its thinking switch."""
    messages = [{"role": "user", "content": _USER}]
    with_prompt = ref.render(messages, add_generation_prompt=True, kwargs=kwargs)
    without = ref.render(messages, add_generation_prompt=False, kwargs=kwargs)
    return with_prompt[len(without) :] if with_prompt.startswith(without) else ""


def default_system_prompt(ref: ReferenceTemplate) -> str | None:
    """The system prompt the reference writes when the conversation has none (Qwen2.5-style).

    Found by rendering with and without a system message and cutting out what differs.
    """
    user = [{"role": "user", "content": _USER}]
    try:
        with_sys = ref.render([{"role": "system", "content": _SYS}, *user])
        without = ref.render(user)
    except DeployError:
        return None
    prefix, found, suffix = with_sys.partition(_SYS)
    if not found or not without.startswith(prefix) or not without.endswith(suffix):
        return None
    middle = without[len(prefix) : len(without) - len(suffix)]
    return middle.strip() or None


def markers(text: str) -> list[str]:
    """Special markers in ``text``, first occurrence order."""
    return list(dict.fromkeys(MARKER_RE.findall(text)))


__all__ = [
    "DOCTOR_PROBES",
    "MARKER_RE",
    "default_system_prompt",
    "effective_ollama",
    "effective_reference",
    "eot_marker",
    "first_difference",
    "generation_suffix",
    "markers",
    "render_ollama",
    "show_text",
    "snap_to_marker",
    "strip_bos",
    "summarize_difference",
]
