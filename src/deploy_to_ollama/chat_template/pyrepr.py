"""Print tool text the way Python's ``repr`` does, from inside an Ollama TEMPLATE.

Some Jinja templates print each tool with ``tool|string`` (SmolLM3, Hammer 2.1, Apriel 1.5 and
1.6). Under transformers that is ``str(dict)``: every string of the definition appears as
Python's ``repr`` -- quoted with ``'``, or with ``"`` when it holds an apostrophe and no double
quote; backslash, that quote, ``\\n``, ``\\r``, ``\\t`` escaped; other control characters and
non-printable characters as ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``. The translator's layout
(``tool_props``) prints the values between literal ``'`` quotes, which is only right for text
without any of those characters.

Ollama's functions have no replace, but Go 1.24's text/template ranges over an integer, so a
TEMPLATE can walk a string byte by byte (``index``): it picks the quote as ``repr`` does, then
escapes ASCII bytes one by one and prints each other character (its first byte: ``printf
"%.1s"`` of the rest) as it is when Go's ``%q`` keeps it, else as the escape ``%+q`` gives,
reshaped into Python's. Go's printable (``unicode.IsPrint``) and Python's
(``str.isprintable``) share one definition: categories L, M, N, P, S and the ASCII space; they
part only on characters one Unicode database assigns and the other does not (Go 1.24 has
Unicode 15.0, the Python here :data:`unicodedata.unidata_version`).

Python's repr also omits a key the dict lacks: a tool sent without ``required`` has no
``'required'`` entry, one sent with ``[]`` has ``'required': []``. Ollama decodes the first as
a nil list (``json`` prints ``null``), the second as an empty one, so the TEMPLATE tells them
apart too. Other keys (``enum``, ``items``, ...) and the request's key order stay out of reach:
the layout prints type and description per parameter, in its own order.

Ollama is built with Go 1.24 from v0.5.13 (``go.mod``); an older server cannot parse such a
TEMPLATE, so the reading is only offered for the newest server or one from v0.5.13 on.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..errors import DeployError

if TYPE_CHECKING:
    from .source import TemplateSource
    from .verify import VerificationReport

#: The first Ollama release built with Go 1.24 (text/template ranges over an integer).
RANGE_INT_SINCE = (0, 5, 13)

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

#: What a TEMPLATE with the ``repr`` reading asks of the server (a deploy warning).
REPR_SERVER = (
    "the TEMPLATE prints tool strings as Python's repr (the Jinja's |string) by walking them "
    "with range over an integer: Ollama before v0.5.13 (built with Go < 1.24) cannot parse it; "
    "a character one Unicode database assigns and the other does not (Go 1.24: Unicode 15.0, "
    f"Python here: {unicodedata.unidata_version}) may print escaped on one side only"
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


def repr_action(expr: str) -> str:
    """Go template text printing the string ``expr`` as Python's ``repr`` does.

    The variables live inside an ``if true`` block, so they never clash with the caller's; it
    trims nothing around it.

    >>> repr_action("$t.Name").startswith("{{ if true }}{{ $pyS := $t.Name }}")
    True
    """
    loop = "{{ range $pyI := len $pyS }}{{ $pyB := index $pyS $pyI }}"
    return "".join(
        (
            "{{ if true }}{{ $pyS := ",
            expr,
            " }}{{ $pySq := false }}{{ $pyDq := false }}",
            loop,
            "{{ if eq $pyB 39 }}{{ $pySq = true }}{{ else if eq $pyB 34 }}{{ $pyDq = true }}",
            "{{ end }}{{ end }}",
            "{{ $pyQ := 39 }}{{ if and $pySq (not $pyDq) }}{{ $pyQ = 34 }}{{ end }}",
            '{{ printf "%c" $pyQ }}',
            loop,
            '{{ if eq $pyB $pyQ 92 }}\\{{ printf "%c" $pyB }}',
            "{{ else if eq $pyB 10 }}\\n{{ else if eq $pyB 13 }}\\r{{ else if eq $pyB 9 }}\\t",
            '{{ else if or (lt $pyB 32) (eq $pyB 127) }}{{ printf "\\\\x%02x" $pyB }}',
            '{{ else if lt $pyB 128 }}{{ printf "%c" $pyB }}',
            # A character's first byte (continuation bytes, 0x80-0xBF, print nothing).
            '{{ else if ge $pyB 192 }}{{ $pyC := printf "%.1s" (slice $pyS $pyI) }}',
            '{{ if eq (printf "%q" $pyC) (printf "\\"%s\\"" $pyC) }}{{ $pyC }}',
            '{{ else }}{{ $pyU := printf "%+q" $pyC }}',
            '{{ if eq (slice $pyU 0 5) "\\"\\\\u00" }}\\x{{ slice $pyU 5 7 }}',
            "{{ else if eq (len $pyU) 8 }}{{ slice $pyU 1 7 }}",
            "{{ else }}{{ slice $pyU 1 11 }}{{ end }}",
            "{{ end }}{{ end }}{{ end }}",
            '{{ printf "%c" $pyQ }}{{ end }}',
        )
    )


#: A string value between literal quotes: ``'{{- $x.Description }}'``.
_QUOTED = re.compile(r"'\n\{\{- (?P<expr>\$\w+(?:\.\w+)*) \}\}'")

#: A loop whose first item opens its quote before the loop and whose later items open it in
#: the separator: ``'{{- range ... }}{{- if $k }}, '{{- end }}{{- $x }}'``.
_LOOP_QUOTED = re.compile(
    r"'(?P<pre>(?:\n\{\{- (?:(?!\}\})[^\n])* \}\})+)"
    r"(?P<open>\n\{\{- if \$\w+ \}\})(?P<sep>(?:(?!\{\{)[^'])*(?:'(?:(?!\{\{)[^'])*)*?)'"
    r"(?P<end>\n\{\{- end \}\}(?:\n\{\{- \$\w+ = true \}\})?)"
    r"\n\{\{- (?P<expr>\$\w+(?:\.\w+)*) \}\}'"
)


def _string_valued(expr: str) -> bool:
    # A property's type is Ollama's PropertyType (a list of names), never a free string.
    return not expr.endswith(".Type")


def _joined(before: str, action: str) -> str:
    """``action`` (``{{ ...``) after text ending in ``before``: a ``{{-`` with its newline
    where that text does not end in whitespace (it would be eaten with it), else a plain
    ``{{`` -- one that cannot follow a ``{``, which is never whitespace."""
    if before[-1:].isspace():
        return action
    return "\n{{- " + action.removeprefix("{{ ")


def _retrimmed(before: str, actions: str) -> str:
    # The quote is gone: the first action now follows the text the quote closed.
    first, sep, rest = actions.removeprefix("\n{{- ").partition(" }}")
    return _joined(before, "{{ " + first + sep) + rest


def _loop_sub(match: re.Match[str]) -> str:
    if not _string_valued(match["expr"]):
        return match[0]
    before = match.string[: match.start()]
    head = _retrimmed(before, match["pre"]) + match["open"]
    tail = _retrimmed(match["sep"], match["end"])
    return head + match["sep"] + tail + repr_action(match["expr"])


def _plain_sub(match: re.Match[str]) -> str:
    if not _string_valued(match["expr"]):
        return match[0]
    return _joined(match.string[: match.start()], repr_action(match["expr"]))


def with_python_repr(template: str) -> str | None:
    """``template`` with each string printed between ``'`` quotes printed as ``repr`` does
    instead; None when there is none to change.

    >>> with_python_repr("{'a': '\\n{{- $t.Name }}'}").count("$pyS := $t.Name")
    1
    >>> with_python_repr("{'type': '\\n{{- $p.Type }}'}") is None
    True
    """
    changed = _LOOP_QUOTED.sub(_loop_sub, template)
    changed = _QUOTED.sub(_plain_sub, changed)
    changed = optional_required(changed)
    return None if changed == template else changed


#: The tool loop of the layout: each later item first closes the one before (``]}}}, ...``),
#: and the text after the loop closes the last, so the required list closes in both places.
_TOOLS_LOOP = re.compile(
    r"(?P<open>\n?\{\{-? range (?P<k>\$\w+), (?P<t>\$\w+) := \$\.Tools \}\})"
    r"(?P<sep>\n\{\{- if (?P=k) \}\})\]"
)

#: The actions that open and close blocks, for finding a block's ``end``.
_BLOCK = re.compile(r"\{\{-? *(?P<word>if|range|with|end|define|block)\b")


def _matching_end(template: str, start: int) -> int | None:
    """The index just past the ``end`` action closing the first block opened from ``start``."""
    depth = 0
    for match in _BLOCK.finditer(template, start):
        depth += -1 if match["word"] == "end" else 1
        if depth == 0:
            close = template.find("}}", match.end())
            return None if close < 0 else close + 2
    return None


def _optional_loop(template: str, match: re.Match[str]) -> tuple[str, int] | None:
    """The tool loop at ``match`` with its required list printed only where the request has
    one, and the index the rewrite ends at; None when the loop is not the expected layout."""
    end = _matching_end(template, match.start())
    if end is None or template[end : end + 1] != "]":
        return None
    expr = f"{match['t']}.Function.Parameters.Required"
    opened = f", 'required': [\n{{{{- if {expr} }}}}"
    body = template[match.end() : end]
    if body.count(opened) != 1:
        return None
    has = f'{{{{ $pyReq = ne (json {expr}) "null" }}}}'
    body = body.replace(opened, has + "{{ if $pyReq }}, 'required': [{{ end }}" + opened[16:])
    head = "{{ $pyReq := true }}" + match["open"] + match["sep"] + "{{ if $pyReq }}]{{ end }}"
    return head + body + "{{ if $pyReq }}]{{ end }}", end + 1


def optional_required(template: str) -> str:
    """``template`` printing each tool's ``'required': [...]`` only where the request has the
    key: Python's repr omits a key the dict lacks, where the layout printed ``[]``. Ollama
    decodes an absent list as nil, which ``json`` prints ``null``, and ``[]`` as empty.
    """
    out, last = [], 0
    for match in _TOOLS_LOOP.finditer(template):
        found = _optional_loop(template, match) if match.start() >= last else None
        if found is None:
            continue
        out += [template[last : match.start()], found[0]]
        last = found[1]
    return "".join(out) + template[last:]


def server_reads_repr(version: str | None) -> bool:
    """Whether Ollama ``version`` (None: the newest) parses :func:`repr_action`'s range.

    >>> server_reads_repr(None), server_reads_repr("0.5.13"), server_reads_repr("0.5.12")
    (True, True, False)
    """
    if version is None:
        return True
    from ..ollama_route import parse_server_version

    parsed = parse_server_version(version)[0]
    return parsed.newest or parsed.parts >= RANGE_INT_SINCE


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
    "RANGE_INT_SINCE",
    "REPR_DIFFERS",
    "REPR_NEEDS_GO124",
    "REPR_SERVER",
    "awkward_tools",
    "how_escaped",
    "optional_required",
    "prints_awkward_text",
    "repr_action",
    "repr_reading",
    "server_reads_repr",
    "with_python_repr",
]
