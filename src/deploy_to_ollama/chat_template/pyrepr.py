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

#: The first Ollama release built with Go 1.24 (text/template ranges over an integer).
RANGE_INT_SINCE = (0, 5, 13)
#: What a TEMPLATE with the ``repr`` reading asks of the server (a deploy warning).
REPR_SERVER = (
    "the TEMPLATE prints tool strings as Python's repr (the Jinja's |string) by walking them "
    "with range over an integer: Ollama before v0.5.13 (built with Go < 1.24) cannot parse it; "
    "a character one Unicode database assigns and the other does not (Go 1.24: Unicode 15.0, "
    f"Python here: {unicodedata.unidata_version}) may print escaped on one side only"
)


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


__all__ = [
    "RANGE_INT_SINCE",
    "REPR_SERVER",
    "optional_required",
    "repr_action",
    "server_reads_repr",
    "with_python_repr",
]
