"""Tool text the Jinja template HTML-escapes (Functionary v3.1's ``"..."|safe + name``).

Adding a plain string to MarkupSafe's ``Markup`` escapes it; Go's builtin ``html`` escapes
the same five characters the same way. A TEMPLATE that matches every probe but prints an
awkward description (quotes, apostrophes, backslash, newline) unlike the Jinja is retried
with ``html`` around the tool's text; every claim is re-rendered by Go.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from deploy_to_ollama.chat_template import TemplateSource, load_probes, translate_template
from deploy_to_ollama.chat_template.prompt_diff import strip_bos
from deploy_to_ollama.chat_template.tool_props import AWKWARD_TEXT
from deploy_to_ollama.chat_template.translate_tools import ESCAPED
from deploy_to_ollama.chat_template.verify import verify_template
from support.go_claims import go_mismatches
from support.go_oracle import to_ollama_api_messages
from support.shared import CHAT_TEMPLATES_DIR, require_shared

_TURNS = (
    "{%- for m in messages %}<|{{ m.role }}|>{{ m.content }}"
    "{%- for c in m.tool_calls or [] %}<function={{ c.function.name }}>"
    "{{ c.function.arguments | tojson }}</function>{%- endfor %}<|end|>{%- endfor %}"
    "{%- if add_generation_prompt %}<|assistant|>{% endif %}"
)

#: Each tool's line starts as Markup, so the name and description added to it are escaped.
ESCAPING = (
    "{%- if tools %}<|tools|>{%- for t in tools %}"
    "{{ 'Use the function \\''|safe + t.function.name + '\\' to \\''|safe"
    " + t.function.description + '\\'\\n'|safe }}{%- endfor %}<|end|>{%- endif %}" + _TURNS
)

#: The same with apostrophes backslash-escaped instead: no Go function prints that.
BACKSLASHED = (
    "{%- if tools %}<|tools|>{%- for t in tools %}"
    "Use the function '{{ t.function.name }}' to "
    "'{{ t.function.description | replace(\"'\", \"\\\\'\") }}'\n"
    "{%- endfor %}<|end|>{%- endif %}" + _TURNS
)


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def _awkward_probe() -> Any:
    offered = next(p for p in load_probes() if p.id == "tools_available")
    (tool,) = offered.tools
    function = {**tool["function"], "description": AWKWARD_TEXT + " & <more>"}
    return replace(offered, tools=({**tool, "function": function},))


def test_html_escaped_tool_text_is_printed_through_go_html(go_oracle: Any) -> None:
    source = _source(ESCAPING)
    result = translate_template(source)
    assert result.verified and result.report.tools_verified
    assert "html $t.Function.Description" in result.template
    probe = _awkward_probe()
    report = verify_template(
        source, result.template, system=result.system, tools=True, probes=[probe]
    )
    (checked,) = report.probes
    assert checked.status == "match"
    assert "It&#39;s the user&#39;s &#34;city&#34;" in (checked.actual or "")
    assert "&amp; &lt;more&gt;" in (checked.actual or "")
    (go,) = go_oracle.run(
        [
            {
                "kind": "ollama",
                "template": result.template,
                "messages": to_ollama_api_messages(list(probe.messages)),
                "system": result.system or "",
                "tools": list(probe.tools),
            }
        ]
    )
    expected, actual = strip_bos(checked.expected or "", go.output, "<s>")
    assert not go.failed and expected == actual


def test_text_escaped_otherwise_is_still_refused() -> None:
    result = translate_template(_source(BACKSLASHED))
    assert not result.report.tools_verified
    assert "html $t" not in result.template
    reasons = [p.reason or "" for p in result.report.probes if p.probe == "tools_available"]
    assert any(ESCAPED in reason for reason in reasons)


def test_functionary_v31_gets_tools_with_escaped_json(go_oracle: Any) -> None:
    require_shared(CHAT_TEMPLATES_DIR)
    name = "llama3__meetkai-functionary-medium-v3.1.json"
    record = json.loads((CHAT_TEMPLATES_DIR / name).read_text(encoding="utf-8"))
    source = TemplateSource(
        template=record["jinja"],
        origin=CHAT_TEMPLATES_DIR / name,
        kind="jinja",
        bos_token=record.get("bos_token") or "<s>",
        eos_token=record.get("eos_token") or "</s>",
    )
    result = translate_template(source)
    assert result.verified and result.report.tools_verified
    assert 'html (printf "%q" $t.Function.Description)' in result.template
    probe = _awkward_probe()
    report = verify_template(
        source, result.template, system=result.system, tools=True, probes=[probe]
    )
    (checked,) = report.probes
    assert checked.status == "match"
    claimed = [p for p in result.report.probes if p.status == "match" and p.tier == "exact"]
    assert go_mismatches(go_oracle, source, result, claimed, bos="<s>") == []
