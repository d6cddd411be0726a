"""Tool calls numbered across the conversation (Command-R / Command A's ``tool_call_id``).

The Jinja prints the n-th call of the whole conversation as ``n`` and a tool result as the
number of the call whose id it answers. The translator reads that off the sentinel renders
and emits Go that counts (``len`` of a string grown per call). Every claim is re-rendered by
Go, including a conversation with two tool-calling turns that no packaged probe has.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.chat_template import TemplateSource, load_probes, translate_template
from deploy_to_ollama.chat_template.probes import Probe
from deploy_to_ollama.chat_template.tool_ordinals import NO_IDS, numbers_calls
from deploy_to_ollama.chat_template.tool_tag import tool_call_tag
from deploy_to_ollama.chat_template.verify import verify_template
from support.go_claims import go_mismatches
from support.shared import CHAT_TEMPLATES_DIR, require_shared

#: Command-style: the call number counts across the conversation; a result looks its call
#: up by id over every message, as Command A's ``tool_call_id_to_int``.
_COUNTED = (
    "{%- macro number_of(messages, id) %}{%- set n = namespace(value=0, seen=false) %}"
    "{%- for m in messages %}{%- for c in m.tool_calls or [] %}"
    "{%- if c.id == id and not n.seen %}{{ n.value }}{%- set n.seen = true %}{%- endif %}"
    "{%- set n.value = n.value + 1 %}{%- endfor %}{%- endfor %}{%- endmacro %}"
    "{%- set idx = namespace(value=0) %}"
    "{%- if tools %}<tools>{% for t in tools %}\n{{ t | tojson }}{% endfor %}\n</tools>\n"
    "{%- endif %}"
    "{%- for m in messages %}<|{{ m.role }}|>"
    "{%- if m.role == 'tool' %}<result id=\"{{ number_of(messages, m.tool_call_id) }}\">"
    "{{ m.content }}</result>"
    "{%- elif m.tool_calls %}<|action|>["
    "{%- for c in m.tool_calls %}{% if not loop.first %},{% endif %}"
    '{"tool_call_id": "{{ idx.value }}", "tool_name": "{{ c.function.name }}", '
    '"parameters": {{ c.function.arguments | tojson }}}'
    "{%- set idx.value = idx.value + 1 %}{%- endfor %}]"
    "{%- else %}{{ m.content }}{%- endif %}<|end|>\n{%- endfor %}"
    "{%- if add_generation_prompt %}<|assistant|>{% endif %}"
)

#: The same, numbering calls within each turn only (``loop.index0``): not a counter.
_PER_TURN = _COUNTED.replace("{{ idx.value }}", "{{ loop.index0 }}").replace(
    "{{ number_of(messages, m.tool_call_id) }}", "{{ m.tool_call_id }}"
)


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def _call(call_id: str, name: str, city: str) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": {"city": city}},
    }


def _result(call_id: str, content: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "name": "get_weather", "content": content}


#: Two tool-calling turns: the second turn's calls are numbered 1 and 2, and the results
#: answer them out of order, so neither a per-turn index nor a result's position would do.
TWO_TURNS = Probe(
    id="two_tool_turns",
    description="two tool-calling turns, results out of order",
    tools=next(p for p in load_probes() if p.id == "tools_available").tools,
    needs_tools=True,
    messages=(
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [_call("c_a", "get_weather", "Paris")]},
        _result("c_a", "21"),
        {"role": "assistant", "content": "21 degrees."},
        {"role": "user", "content": "And Rome and Oslo?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                _call("c_b", "get_weather", "Rome"),
                _call("c_c", "get_weather", "Oslo"),
            ],
        },
        _result("c_c", "-3"),
        _result("c_b", "25"),
    ),
)


def _go_mismatches(
    go_oracle: Any, source: TemplateSource, result: Any, extra: tuple[Probe, ...] = ()
) -> list[str]:
    """Probe ids claimed to match (and ``extra`` ones, checked the same way) whose Go
    rendering of the TEMPLATE is not the Jinja's, byte for byte or as JSON where claimed."""
    report = result.report
    if extra:
        more = verify_template(
            source, result.template, system=result.system, tools=True, probes=list(extra)
        )
        assert all(p.status == "match" for p in more.probes)
        report = more
    checks = [p for p in (*result.report.probes, *report.probes) if p.status == "match"]
    return go_mismatches(go_oracle, source, result, checks, extra=extra, bos="<s>")


def test_a_conversation_wide_call_counter_is_translated(go_oracle: Any) -> None:
    source = _source(_COUNTED)
    assert numbers_calls(source)
    result = translate_template(source)
    assert result.verified and result.report.tools_verified
    assert "len $ordN" in result.template and "eq .ID $ordID" in result.template
    assert tool_call_tag(result.template) == "<|action|>["
    matched = {p.probe for p in result.report.probes if p.status == "match"}
    assert {"parallel_tool_calls", "same_tool_twice", "tool_call_and_result"} <= matched
    assert _go_mismatches(go_oracle, source, result, (TWO_TURNS,)) == []
    # The numbers the Jinja prints for the second turn are the ones Go printed.
    report = verify_template(
        source, result.template, system=result.system, tools=True, probes=[TWO_TURNS]
    )
    (two,) = report.probes
    assert two.status == "match"
    assert '"tool_call_id": "2", "tool_name": "get_weather", "parameters": {"city":"Oslo"}' in (
        two.actual or ""
    )
    assert '<result id="2">-3</result>' in (two.actual or "")


def test_a_per_turn_number_is_not_taken_for_the_counter() -> None:
    assert not numbers_calls(_source(_PER_TURN))


def test_a_counter_that_restarts_per_turn_differs_on_two_tool_turns() -> None:
    """The counting Go, made to count within the turn only, must fail the two-turn case."""
    source = _source(_COUNTED)
    result = translate_template(source)
    broken = result.template.replace("slice $.Messages 0 $i", "slice $.Messages 0 0")
    assert broken != result.template
    report = verify_template(source, broken, system=result.system, tools=True, probes=[TWO_TURNS])
    assert [p.status for p in report.probes] == ["differs"]
    assert not report.verified


def test_no_counter_reading_for_a_server_without_call_ids() -> None:
    result = translate_template(_source(_COUNTED), server_version="0.9.3")
    assert "$ordN" not in result.template
    assert not result.report.tools_verified
    reasons = {p.reason for p in result.report.probes if p.probe == "tool_call_and_result"}
    assert any(NO_IDS in (reason or "") for reason in reasons)


@pytest.mark.parametrize(
    ("name", "thinking"),
    [
        ("command-r__cohere2moe.json", True),
        ("command-r__axolotl-command_a_tool_use.json", False),
        # The user suffix took <|START_RESPONSE|>; the tool reading gives it back (tool_opening).
        # Its thinking stays unproven for a reason of its own (default off, Ollama sends on).
        ("command-r__cohereforai-c4ai-command-r7b-12-2024-tool_use.json", False),
    ],
)
def test_command_a_corpus_templates_get_tools_and_keep_thinking(
    go_oracle: Any, name: str, thinking: bool
) -> None:
    import json

    from deploy_to_ollama.chat_template.thinking import renders_reasoning

    require_shared(CHAT_TEMPLATES_DIR)
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
    if thinking:
        assert renders_reasoning(source) and result.report.thinking_verified
    assert _go_mismatches(go_oracle, source, result, (TWO_TURNS,)) == []
