"""Keep Ollama's tools capability where the Jinja ignores the tool list, with an inert ``.Tools``.

Ollama gives a Go TEMPLATE the tools capability only when it names ``.Tools``
(``capabilities.go_template_capabilities``), and from 0.30 on a TEMPLATE with fewer
capabilities than the GGUF's Jinja gives way to it (``ollama_route.should_prefer_chat_template``).
Many Jinja templates mention ``tools`` yet print nothing of the list: their tool turns translate,
but the TEMPLATE loses the capability. Where sentinel renders prove the list changes nothing
(every probe conversation, with and without a tool list, in each thinking setting), the TEMPLATE
gets ``{{ if .Tools }}{{ end }}``: it prints nothing, so every prompt stays the one verified,
and the tool probes are then run with the tools offered, on both sides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..errors import TemplateRenderError
from .probes import Probe, load_probes
from .source import TemplateSource
from .tools import SENTINEL_TOOL
from .verify import ProbeResult, VerificationReport, verify_template

#: The inert reference: Ollama lists ``tools`` among the TEMPLATE's variables; nothing prints.
INERT_TOOLS = "{{ if .Tools }}{{ end }}"


@dataclass(frozen=True, slots=True)
class ListIgnored:
    """The evidence that the Jinja prints nothing of a request's tool list."""

    renders: int
    """Conversations rendered with and without a tool list (each thinking setting counted)."""

    def line(self) -> str:
        """One line for the report: what was compared."""
        return (
            f"the Jinja renders {self.renders} probe conversations identically with and "
            "without a tool list (each thinking setting), so the TEMPLATE names .Tools and "
            "prints nothing of it"
        )


def ignores_tool_list(source: TemplateSource) -> ListIgnored | None:
    """Whether the Jinja renders every probe conversation the same with a tool list as without.

    A conversation the Jinja rejects both ways counts as the same; one it rejects only with
    tools does not (a client offering tools would then get an error, not the plain prompt).
    Each thinking setting is rendered too, and each other variable the Jinja reads set true
    (then all of them): a Jinja printing the list only under a switch must not get the inert
    reading.

    Returns:
        The evidence, or None when some conversation prints (or rejects) the tool list.
    """
    from .thinking import think_kwargs

    flags = jinja_flags(source)
    settings: tuple[dict[str, Any], ...] = (
        {},
        think_kwargs(source, think=True),
        think_kwargs(source, think=False),
        *({flag: True} for flag in flags),
        *((dict.fromkeys(flags, True),) if len(flags) > 1 else ()),
    )
    renders = 0
    for probe in load_probes():
        tools = list(probe.tools) or [SENTINEL_TOOL]
        for kwargs in settings:
            if _render(source, probe, None, kwargs) != _render(source, probe, tools, kwargs):
                return None
            renders += 1
    return ListIgnored(renders)


#: Variables every chat template may read that are no switch of its own.
_STANDARD = frozenset(
    {"messages", "tools", "add_generation_prompt", "continue_final_message", "bos_token",
     "eos_token", "unk_token", "pad_token"}
)  # fmt: skip


def jinja_flags(source: TemplateSource) -> tuple[str, ...]:
    """The undeclared variables the Jinja reads beyond messages, tools and the tokens: the
    switches a caller may pass (``tools_in_user_message``, ``builtin_tools`` ...), each of which
    may print the list where the default does not."""
    from .hf_render import caller_variables

    known = _STANDARD | set(source.template_variables())
    names = caller_variables(source.template)
    return tuple(sorted(n for n in names if n not in known))


def _render(
    source: TemplateSource,
    probe: Probe,
    tools: Sequence[Mapping[str, Any]] | None,
    kwargs: Mapping[str, Any],
) -> str:
    from .hf_render import render_hf

    try:
        return render_hf(
            source.template,
            list(probe.messages),
            tokens=source.template_variables(),
            tools=tools,
            kwargs=kwargs,
        )
    except TemplateRenderError as err:
        return f"\0raises: {type(err).__name__}"


def lacks_tools(jinja: str, template: str) -> bool:
    """The Jinja shows Ollama the tools capability and the TEMPLATE does not."""
    # Imported here: capabilities reads Go templates through this package.
    from ..capabilities import TOOLS, go_template_capabilities, jinja_capabilities

    return TOOLS in jinja_capabilities(jinja) and TOOLS not in go_template_capabilities(template)


def with_inert_tools(
    source: TemplateSource,
    template: str,
    report: VerificationReport,
    *,
    system: str | None,
    references: Mapping[str, Any],
) -> tuple[str, VerificationReport, ListIgnored] | None:
    """``template`` with the inert ``.Tools`` and its report, the tool probes re-run with their
    tools offered, when the Jinja ignores the list and no tool probe comes to differ.

    Only the tool probes are re-run: for a request without tools the inert block prints
    nothing, so every other probe's result stands.

    Returns:
        The TEMPLATE, its report and the evidence; None when the reading does not hold.
    """
    if not lacks_tools(source.template, template):
        return None
    evidence = ignores_tool_list(source)
    if evidence is None:
        return None
    inert = INERT_TOOLS + template
    tool_probes = [p for p in load_probes() if p.needs_tools]
    ran = verify_template(
        source, inert, system=system, tools=True, references=references, probes=tool_probes
    )
    if any(p.status == "differs" for p in ran.probes):
        return None
    if not any(p.status == "match" for p in ran.probes):
        return None
    updated: dict[str, ProbeResult] = {p.probe: p for p in ran.probes}
    probes = tuple(updated.get(p.probe, p) for p in report.probes)
    return inert, replace(report, probes=probes), evidence


__all__ = ["INERT_TOOLS", "ListIgnored", "ignores_tool_list", "lacks_tools", "with_inert_tools"]
