"""Tool names and descriptions the Jinja template HTML-escapes, printed through Go's ``html``.

Functionary v3.1 builds each tool's line as ``"Use the function '"|safe + name + ...``: adding
a plain string to MarkupSafe's ``Markup`` escapes it, so a description with ``'`` or ``"``
prints ``&#39;`` / ``&#34;``. Go's builtin ``html`` (text/template, kept in every Ollama
FuncMap since builtins cannot be removed) escapes the same five characters the same way
(``&`` ``<`` ``>`` ``'`` ``"`` to ``&amp;`` ``&lt;`` ``&gt;`` ``&#39;`` ``&#34;``). So where a
TEMPLATE matches every probe but prints awkward tool text unlike the Jinja, the same TEMPLATE
with ``html`` around the tool's name and description is tried; it still has to pass the
awkward-text check and every probe.
"""

from __future__ import annotations

import re

#: A tool's text field printed plainly inside the tool loops (name, description, a parameter's
#: key, type or description).
_FIELD = r"\$t\.Function\.(?:Name|Description)|\$pk|\$pv\.(?:Type|Description)"
_TOOL_TEXT = re.compile(r"(\{\{-?\s*)(" + _FIELD + r")(\s*-?\}\})")
#: The same inside an HTML-escaped JSON string (``&#34;`` on both sides): Python's
#: ``json.dumps`` escapes quotes, backslashes and newlines before the HTML escaping. Go's
#: ``printf "%q"`` quotes them the same way and, unlike Ollama's ``json`` (``json.Marshal``),
#: leaves ``&``, ``<`` and ``>`` alone, as ``json.dumps`` does; it differs only on control
#: characters other than newline and tab (``\x01`` against ``\u0001``).
_QUOTED = re.compile(r"&#34;(\n?\{\{-?\s*)(" + _FIELD + r")(\s*-?\}\})&#34;")


def html_escaped(template: str) -> str | None:
    """``template`` with each plain print of a tool's text fields HTML-escaped (JSON-quoted
    first where it sits between escaped quotes); None when it prints none.

    >>> html_escaped("{{- range $k, $t := $.Tools }}{{ $t.Function.Description }}{{ end }}")
    '{{- range $k, $t := $.Tools }}{{ html $t.Function.Description }}{{ end }}'
    >>> html_escaped('{&#34;name&#34;: &#34;{{ $t.Function.Name }}&#34;}')
    '{&#34;name&#34;: {{ html (printf "%q" $t.Function.Name) }}}'
    >>> html_escaped("{{ json $t.Function }}") is None
    True
    """
    # No trim marker: the text before the quote may end with a space the action must keep.
    quoted, n_quoted = _QUOTED.subn(r'{{ html (printf "%q" \2) }}', template)
    escaped, n_plain = _TOOL_TEXT.subn(r"\1html \2\3", quoted)
    return escaped if n_quoted + n_plain else None


__all__ = ["html_escaped"]
