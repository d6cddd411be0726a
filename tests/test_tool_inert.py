"""A Jinja that mentions tools but prints nothing of the request's tool list (Phi-4-mini reads
tools from a system message's own field, which Ollama never sends): the TEMPLATE names
``.Tools`` inertly, so Ollama keeps the tools capability the Jinja shows, and the tool probes
run with their tools offered. A Jinja printing the list in only one case stays without it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deploy_to_ollama.capabilities import go_template_capabilities
from deploy_to_ollama.chat_template import TemplateSource, load_probes, translate_template
from deploy_to_ollama.chat_template.tool_inert import INERT_TOOLS, ignores_tool_list
from deploy_to_ollama.ollama_route import ModelFacts, select_route
from support.go_claims import go_case, go_mismatches

PHI4_MINI_LIKE = (
    "{% for m in messages %}{% if m['role'] == 'system' and 'tools' in m and m['tools'] %}"
    "{{ '<|' + m['role'] + '|>' + m['content'] + '<|tool|>' + m['tools'] + '<|/tool|><|end|>' }}"
    "{% else %}{{ '<|' + m['role'] + '|>' + m['content'] + '<|end|>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}"
)
#: Near-misses: the list printed only with thinking on, or only after a system message.
ONLY_THINKING = (
    "{% if tools and enable_thinking %}<|tool|>{{ tools | tojson }}<|/tool|>{% endif %}"
    + PHI4_MINI_LIKE
)
#: The list printed only under a switch of the Jinja's own, which no request sets.
ONLY_SWITCHED = (
    "{% if tools and list_tools %}<|tool|>{{ tools | tojson }}<|/tool|>{% endif %}" + PHI4_MINI_LIKE
)
ONLY_WITH_SYSTEM = (
    "{% if tools and messages[0]['role'] == 'system' %}<|tool|>{{ tools | tojson }}<|/tool|>"
    "{% endif %}" + PHI4_MINI_LIKE
)
TOOL_PROBES = (
    "tools_available",
    "tool_call_and_result",
    "tools_offered_not_called",
    "tool_results_then_answer",
)


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def test_an_ignored_tool_list_keeps_the_tools_capability(go_oracle: Any) -> None:
    source = _source(PHI4_MINI_LIKE)
    result = translate_template(source)
    assert result.verified
    assert result.template.startswith(INERT_TOOLS)
    assert result.tools_inert is not None and "identically" in result.tools_inert
    assert "tools" in go_template_capabilities(result.template)
    statuses = {p.probe: p for p in result.report.probes}
    assert all(statuses[name].status == "match" for name in TOOL_PROBES)
    # Ollama 0.30+ keeps the TEMPLATE: it shows the Jinja's capabilities.
    decision = select_route(ModelFacts(template=result.template, jinja=source.template), "0.33.0")
    assert decision.path == "rendered"
    assert go_mismatches(go_oracle, source, result) == []


def test_the_inert_reference_holds_in_go_on_ollama_0_9_3(go_oracle: Any) -> None:
    """0.9.3 takes tools for a TEMPLATE naming .Tools too: its prompt building, in Go."""
    source = _source(PHI4_MINI_LIKE)
    result = translate_template(source, server_version="0.9.3")
    assert result.tools_inert is not None
    probes = {p.id: p for p in load_probes()}
    claims = [p for p in result.report.probes if p.status == "match" and p.probe in TOOL_PROBES]
    assert len(claims) == len(TOOL_PROBES)
    cases = [
        {**go_case(result, probes[c.probe]), "server": "0.9.3", "merge_tools": True} for c in claims
    ]
    for claim, go in zip(claims, go_oracle.run(cases), strict=True):
        assert not go.failed and go.output == claim.expected, claim.probe


def test_without_the_inert_reference_0_33_prefers_the_jinja() -> None:
    source = _source(PHI4_MINI_LIKE)
    plain = translate_template(source).template.removeprefix(INERT_TOOLS)
    decision = select_route(ModelFacts(template=plain, jinja=source.template), "0.33.0")
    assert decision.path == "native"


def test_a_list_printed_only_with_thinking_on_gets_no_inert_tools() -> None:
    source = _source(ONLY_THINKING)
    assert ignores_tool_list(source) is None
    result = translate_template(source)
    assert result.tools_inert is None
    assert "tools" not in go_template_capabilities(result.template)


def test_a_list_printed_only_after_a_system_message_gets_no_inert_tools() -> None:
    source = _source(ONLY_WITH_SYSTEM)
    assert ignores_tool_list(source) is None
    result = translate_template(source)
    assert result.tools_inert is None
    assert "tools" not in go_template_capabilities(result.template)


def test_template_json_records_the_evidence(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from deploy_to_ollama.cli import app, rewrite_default_commands

    path = tmp_path / "phi4.jinja"
    path.write_text(PHI4_MINI_LIKE, encoding="utf-8")
    out = CliRunner().invoke(app, rewrite_default_commands(["template", str(path), "--json"]))
    doc = json.loads(out.stdout)
    assert out.exit_code == 0 and "identically" in doc["tools_inert"]
    assert doc["capabilities"]["parity"] is True
    plain = tmp_path / "plain.jinja"
    plain.write_text(ONLY_THINKING, encoding="utf-8")
    out = CliRunner().invoke(app, rewrite_default_commands(["template", str(plain), "--json"]))
    assert json.loads(out.stdout)["tools_inert"] is None


def test_a_list_printed_only_under_a_switch_of_its_own_gets_no_inert_tools() -> None:
    source = _source(ONLY_SWITCHED)
    assert ignores_tool_list(source) is None
    assert ignores_tool_list(_source(PHI4_MINI_LIKE)) is not None
    result = translate_template(source)
    assert result.tools_inert is None
    assert "tools" not in go_template_capabilities(result.template)
