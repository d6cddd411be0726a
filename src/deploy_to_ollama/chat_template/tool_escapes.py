"""What a Jinja template does to awkward tool text, and whether a TEMPLATE does the same.

The probes' tools hold plain text, so a TEMPLATE printing tool strings between literal quotes
matches them even where the Jinja escapes quotes, backslashes or newlines. Here every reading
of tool definitions is also rendered with awkward tools (both quotes, an apostrophe alone,
control and non-printable characters, odd names, no required list, no parameters); where the
Jinja prints them as Python's repr (``tool|string``), ``pyrepr`` rewrites the TEMPLATE to do
the same, and where it escapes them otherwise the refusal names the escaping found.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..errors import DeployError
from .pyrepr import server_reads_repr, with_python_repr

if TYPE_CHECKING:
    from .source import TemplateSource
    from .verify import VerificationReport

#: Why tool definitions printed as Python ``repr`` stay untranslated for an older server.
REPR_NEEDS_GO124 = (
    "the Jinja template prints tool definitions with |string (Python repr: its own quote "
    "choice and escapes); a TEMPLATE reproduces that only by walking each string with range "
    "over an integer (Go 1.24), which Ollama {version} (before v0.5.13) cannot parse"
)
#: Why a TEMPLATE is refused when the Jinja escapes tool text in a way no TEMPLATE can.
ESCAPED_LEAD = (
    "the Jinja template escapes quotes, apostrophes, backslashes or newlines in tool text"
)
ESCAPED = (
    ESCAPED_LEAD + " ({how}), which the TEMPLATE does not reproduce: common tool text would "
    "print otherwise{note}"
)

#: What the reason adds where Go could print the escaping but no reading does yet.
_REPRODUCIBLE = (
    "; only Python's repr (|string) has a reading, a byte walk that Ollama >= 0.5.13 runs and "
    "that could print any per-character escaping"
)
_GO_HTML = (
    "; Go's html function prints the same entities (it differs only on NUL, printed as "
    "U+FFFD), but no reading prints tool text through it yet"
)
#: Why the ``repr`` reading is refused although it prints awkward tool text right.
REPR_DIFFERS = (
    "the TEMPLATE printing tool strings as Python's repr (the Jinja's |string) differs on "
    "probes the plain TEMPLATE matches"
)

#: How :func:`how_escaped` names markupsafe's escaping of the text itself.
_MARKUP = "HTML entities (Jinja's |e)"


def _markup(text: str) -> str:
    """Jinja's ``|e`` (markupsafe): ``&<>'"`` as entities."""
    for raw, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("'", "&#39;")):
        text = text.replace(raw, entity)
    return text.replace('"', "&#34;")


def _escapings(text: str) -> list[tuple[str, str]]:
    """(name, printed) of the escapings a Jinja template is known to apply to ``text``."""
    import html
    import json

    bases = [
        ("", text),
        ("Python repr", repr(text)),
        ("JSON string escapes", json.dumps(text, ensure_ascii=False)[1:-1]),
    ]
    found = []
    for name, base in bases:
        found.append((f"{name}, then {_MARKUP}", _markup(base)))
        found.append((f"{name}, then HTML entities (html.escape)", html.escape(base)))
        found.append((name, base))
    return [(name.removeprefix(", then "), printed) for name, printed in found if name]


def how_escaped(source: TemplateSource) -> str:
    """Name the escaping the Jinja template applies to a tool description, for the reason.

    Python repr counts only where it is not reproduced by :func:`with_python_repr` (the value
    is not printed between the quotes the layout expects).
    """
    from .hf_render import render_hf
    from .tools import SENTINEL_TOOL

    text = AWKWARD_TEXTS[0]
    function = {**SENTINEL_TOOL["function"], "description": text}
    tool = {**SENTINEL_TOOL, "function": function}
    user = [{"role": "user", "content": "Zquserone"}]
    try:
        shown = render_hf(
            source.template,
            user,
            tokens=source.template_variables(),
            add_generation_prompt=True,
            tools=[tool],
        )
    except DeployError:
        return "the template fails on such text"
    if text in shown:
        return "printed unescaped, unlike the TEMPLATE's reading"
    found = next((name for name, printed in _escapings(text) if printed in shown), None)
    return found or "an escaping not recognised"


#: Tool text each reading must print as ``repr`` does: both quotes (repr quotes with ``'``),
#: an apostrophe alone (``"``), a double quote alone, and characters ``repr`` escapes or keeps.
AWKWARD_TEXTS = (
    "It's the user's \"city\"\\ name,\nas written",
    "The user's city",
    'A "city"\tname\r',
    "Caf\u00e9 \u2603 \U0001f600, no\u00a0break\u200b \x07 \u2028",
)

#: A function name and a parameter name holding both quotes.
AWKWARD_NAME = 'get_user\'s_"weather"'
AWKWARD_KEY = 'city\'s "name"'


def awkward_tools(tool: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``tool`` with each of :data:`AWKWARD_TEXTS` as every description, once with an
    awkward function and parameter name too (the required list follows the renamed key), once
    without a required list and once without parameters.

    >>> [t["function"]["description"] for t in awkward_tools(_TOOL)] == list(AWKWARD_TEXTS) + [
    ...     AWKWARD_TEXTS[0]] * 3
    True
    """
    function = tool["function"]
    params = function["parameters"]
    found = []
    for text in AWKWARD_TEXTS:
        props = {k: {**v, "description": text} for k, v in params["properties"].items()}
        found.append(
            {
                **tool,
                "function": {
                    **function,
                    "description": text,
                    "parameters": {**params, "properties": props},
                },
            }
        )
    first = found[0]["function"]
    keys = {
        k: AWKWARD_KEY if i == 0 else k for i, k in enumerate(first["parameters"]["properties"])
    }
    props = {keys[k]: v for k, v in first["parameters"]["properties"].items()}
    required = [keys.get(k, k) for k in first["parameters"].get("required", [])]
    renamed = {**first["parameters"], "properties": props, "required": required}
    found.append({**tool, "function": {**first, "name": AWKWARD_NAME, "parameters": renamed}})
    # Without a required list, and without parameters (a tool taking no arguments).
    optional = {k: v for k, v in first["parameters"].items() if k != "required"}
    found.append({**tool, "function": {**first, "name": "optional_args", "parameters": optional}})
    bare = {"type": "object", "properties": {}}
    found.append({**tool, "function": {**first, "name": "no_args", "parameters": bare}})
    return found


_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "f",
        "description": "d",
        "parameters": {"type": "object", "properties": {"a": {"type": "string"}}},
    },
}


def prints_awkward_text(source: TemplateSource, template: str, system: str | None) -> bool:
    """Whether ``template`` prints every :func:`awkward_tools` variant of the tool probe as
    the Jinja template does (each offered alone, and all together)."""
    from .probes import load_probes
    from .verify import verify_template

    offered = next(p for p in load_probes() if p.id == "tools_available")
    variants = awkward_tools(offered.tools[0])
    # Distinct ids: renderings are keyed by probe id.
    probes = [
        replace(offered, id=f"awkward_tool_text_{i}", tools=(tool,))
        for i, tool in enumerate(variants)
    ]
    probes.append(replace(offered, id="awkward_tool_texts", tools=tuple(variants)))
    report = verify_template(source, template, system=system, tools=True, probes=probes)
    return bool(report.probes) and all(p.status == "match" for p in report.probes)


def repr_reading(
    source: TemplateSource,
    template: str,
    system: str | None,
    references: Mapping[str, Any],
) -> tuple[str, VerificationReport] | str:
    """``template`` with its tool strings printed as Python's ``repr``, and its report on
    the whole suite, when that holds for every awkward tool text; else why not.

    The caller judges the report against the probes the plain TEMPLATE already failed.
    """
    from .server_rules import current_version
    from .verify import verify_template

    changed = with_python_repr(template)
    if changed is None or not prints_awkward_text(source, changed, system):
        how = how_escaped(source)
        note = _GO_HTML if how == _MARKUP else _REPRODUCIBLE
        return ESCAPED.format(how=how, note=note)
    version = current_version()
    if not server_reads_repr(version):
        return REPR_NEEDS_GO124.format(version=version)
    report = verify_template(source, changed, system=system, tools=True, references=references)
    return changed, report


__all__ = [
    "AWKWARD_TEXTS",
    "ESCAPED",
    "ESCAPED_LEAD",
    "REPR_DIFFERS",
    "REPR_NEEDS_GO124",
    "awkward_tools",
    "how_escaped",
    "prints_awkward_text",
    "repr_reading",
]
