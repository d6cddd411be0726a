"""Thinking switched by a word in the system prompt (SmolLM3's ``/think`` and ``/no_think``).

Some templates read a flag inside the first system message: it overrides ``enable_thinking``
and is cut out of the text they print. We find such flags by rendering a system message with
a candidate word appended and comparing with the template rendered with the switch fixed and
the plain system message; the two-setting TEMPLATE (``switched.py``) then chooses its setting
from the flag as well as from ``.Think``, and prints the system message without the flags.
Go templates have no ``replace`` or ``contains``: a byte scan with ``slice`` does both.
"""

from __future__ import annotations

from typing import Any

from ..errors import TemplateRenderError
from .probes import Probe
from .shape import SYS, U1
from .source import TemplateSource

#: Words tried as in-band switches, longest first so ``/no_think`` is not read as ``/think``.
FLAGS = ("/no_think", "/nothink", "/think")

#: How the two-setting TEMPLATE reads the first system message (what it replaces).
FIRST_SYSTEM = "(index .Messages 0).Content"


def inband_flags(source: TemplateSource, fixed: dict[bool, TemplateSource]) -> dict[str, bool]:
    """Flag word -> the thinking setting it selects, for words the Jinja both obeys and cuts
    out of the system message (``fixed``: the source with the switch set each way)."""
    found: dict[str, bool] = {}
    for word in FLAGS:
        flagged = _render(source, f"{SYS} {word}")
        for value, variant in fixed.items():
            if flagged is not None and flagged == _render(variant, SYS):
                found[word] = value
    return found


def _render(source: TemplateSource, system: str) -> str | None:
    from .hf_render import render_hf

    messages = [{"role": "system", "content": system}, {"role": "user", "content": U1}]
    try:
        return render_hf(
            source.template,
            messages,
            tokens=source.template_variables(),
            add_generation_prompt=True,
        )
    except TemplateRenderError:
        return None


def with_flags(off: str, on: str, cond: str, flags: dict[str, bool]) -> str | None:
    """The two-setting TEMPLATE choosing its setting by ``cond`` overridden by the flags,
    with the flags cut out of the first system message; None when the settings' TEMPLATEs do
    not read that message in the one way this rewrites."""
    if FIRST_SYSTEM not in off or FIRST_SYSTEM not in on:
        return None
    scan = ["{{- $thinkOff := " + cond.removeprefix("if ") + " }}", '{{- $clean := "" }}']
    scan += [f"{{{{- $f{n} := false }}}}" for n in range(len(FLAGS))]
    scan += [
        '{{- if and .Messages (eq (index .Messages 0).Role "system") }}',
        "{{- $s := " + FIRST_SYSTEM + " }}",
        '{{- $skip := "" }}',
        "{{- range $k := len $s }}",
        "{{- $t := slice $s $k }}",
        "{{- if $skip }}{{ $skip = slice $skip 1 }}",
    ]
    for n, word in enumerate(FLAGS):
        if word in flags:
            size, text = len(word.encode()), _go(word)
            scan.append(
                f"{{{{- else if and (ge (len $t) {size}) (eq (slice $t 0 {size}) {text}) }}}}"
                f"{{{{ $skip = slice {text} 1 }}}}{{{{ $f{n} = true }}}}"
            )
    scan += ["{{- else }}{{ $clean = print $clean (slice $t 0 1) }}{{ end }}", "{{- end }}"]
    scan += ["{{- end }}", *_precedence(flags)]
    body = "{{- if $thinkOff }}" + off + "{{- else }}" + on + "{{- end }}"
    return "".join(scan) + body.replace(FIRST_SYSTEM, "$clean")


def _precedence(flags: dict[str, bool]) -> list[str]:
    """The Jinja tests the words in :data:`FLAGS` order (``/no_think`` first): the first
    listed word present decides."""
    pieces = ["{{- $decided := false }}"]
    for n, word in enumerate(FLAGS):
        if word in flags:
            value = "false" if flags[word] else "true"
            pieces.append(
                f"{{{{- if and (not $decided) $f{n} }}}}"
                f"{{{{ $thinkOff = {value} }}}}{{{{ $decided = true }}}}{{{{ end }}}}"
            )
    return pieces


def _go(text: str) -> str:
    from .gotext import go_string

    return go_string(text)


def flag_probes(flags: dict[str, bool]) -> list[Probe]:
    """Conversations that exercise each flag (a system message carrying it), to prove the
    flag handling before it is kept; they are not among the packaged probes."""
    probes: list[Probe] = []
    for word in flags:
        messages: tuple[dict[str, Any], ...] = (
            {"role": "system", "content": f"Be terse. {word}"},
            {"role": "user", "content": "How many r's are in strawberry?"},
        )
        name = "system_flag" + word.replace("/", "_")
        probes.append(Probe(id=name, description=word, messages=messages))
    return probes


__all__ = ["FIRST_SYSTEM", "FLAGS", "flag_probes", "inband_flags", "with_flags"]
