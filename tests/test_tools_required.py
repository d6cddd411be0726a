"""Templates that render only with tools offered (Hermes 2 Pro's tool-use Jinja iterates
``tools`` before the first message): read with an empty tool list always passed, proven on the
tool probes alone in real Go; a request without tools prints what the Jinja prints for an empty
list, never a sentinel; references stay transformers' own; near-misses stay unproven."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.chat_template import TemplateSource, render_hf, translate_template
from deploy_to_ollama.chat_template.tools_required import needs_tools, tools_view
from deploy_to_ollama.chat_template.verify import reference_renders
from deploy_to_ollama.errors import TemplateRenderError
from support.go_claims import go_mismatches
from support.shared import CHAT_TEMPLATES_DIR, require_shared

#: The tool list iterated unguarded before ChatML turns; a call's arguments as JSON.
NEEDS_TOOLS = (
    "{{- bos_token }}{{- 'Tools: <tools>' }}{%- for tool in tools %}"
    "{{- ' ' + tool.function.name + ': ' + tool.function.description }}{%- endfor %}"
    "{{- ' </tools>\\n' }}"
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' and message.tool_calls is defined %}"
    "{{- '<|im_start|>assistant\\n' }}{%- for call in message.tool_calls %}"
    "{{- '<call>' + call.function.name + ' ' + call.function.arguments | tojson + '</call>' }}"
    "{%- endfor %}{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{{- '<|im_start|>tool\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
#: Near-miss: a tool printed with a counter of the messages, which no TEMPLATE has.
COUNTED = NEEDS_TOOLS.replace(
    "{{- ' ' + tool.function.name", "{{- ' ' + (messages | length | string) + tool.function.name"
)  # fmt: skip
#: Renders without tools: not this reading's.
OPTIONAL = NEEDS_TOOLS.replace("{%- for tool in tools %}", "{%- for tool in tools or [] %}")


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def test_a_template_needing_tools_is_told_from_transformers() -> None:
    user = [{"role": "user", "content": "Hi"}]
    with pytest.raises(TemplateRenderError):
        render_hf(NEEDS_TOOLS, user, tokens={"bos_token": "<s>"})
    assert needs_tools(_source(NEEDS_TOOLS))
    assert not needs_tools(_source(OPTIONAL))
    with tools_view():
        # Inside the view a render without tools gets an empty list, as a notebook may pass.
        assert render_hf(NEEDS_TOOLS, user, tokens={"bos_token": "<s>"}).startswith(
            "<s>Tools: <tools> </tools>\n<|im_start|>user\nHi"
        )


def test_references_stay_transformers_own_inside_the_view() -> None:
    source = _source(NEEDS_TOOLS)
    plain = {k: str(v) for k, v in reference_renders(source).items()}
    with tools_view():
        viewed = {k: str(v) for k, v in reference_renders(source).items()}
    assert viewed == plain
    assert "raised" in plain["single_user"]


def test_a_template_needing_tools_verifies_on_its_tool_probes(go_oracle: Any) -> None:
    source = _source(NEEDS_TOOLS)
    result = translate_template(source)
    assert result.verified and result.report.tools_verified
    statuses = {p.probe: p.status for p in result.report.probes}
    assert statuses["single_user"] == "skipped"  # no reference without tools
    assert statuses["tool_call_and_result"] == "match"
    assert "Zq" not in result.template  # no sentinel where a request has no tools
    assert "<tools> </tools>" in result.template  # the Jinja's own empty list
    assert go_mismatches(go_oracle, source, result) == []


def test_a_tool_item_holding_other_text_stays_unproven() -> None:
    result = translate_template(_source(COUNTED))
    assert not result.verified
    assert "Zq" not in result.template


@pytest.mark.parametrize(
    "name",
    [
        "chatml__nousresearch-hermes-2-pro-llama-3-8b.json",
        "chatml__nousresearch-hermes-2-pro-llama-3-8b-tool_use.json",
    ],
)
def test_hermes_2_pro_tool_use_verifies_with_its_signatures(name: str, go_oracle: Any) -> None:
    # Each tool prints a Python signature and its Args (two loops over the parameters, types
    # as Python words) beside its schema dumped as JSON.
    path = require_shared(CHAT_TEMPLATES_DIR) / name
    record = json.loads(path.read_text(encoding="utf-8"))
    source = TemplateSource(
        template=record["jinja"], origin=path, kind="jinja", bos_token="<s>", eos_token="</s>"
    )
    result = translate_template(source)
    assert result.verified and result.report.tools_verified
    matched = {p.probe for p in result.report.probes if p.status == "match"}
    assert {"tools_available", "tool_call_and_result", "parallel_tool_calls"} <= matched
    assert "Zq" not in result.template
    assert go_mismatches(go_oracle, source, result) == []


def test_the_round_trip_reference_without_tools_is_the_empty_list_prompt(go_oracle: Any) -> None:
    # check's reference for a plain question: transformers raises without tools, so the prompt
    # is the one with an empty list, which the TEMPLATE prints for a request without tools.
    from deploy_to_ollama.roundtrip.reference import reference_from_template

    source = _source(NEEDS_TOOLS)
    messages = [{"role": "user", "content": "Say banana."}]
    expected = reference_from_template(source).render(messages)
    assert expected == "<s>Tools: <tools> </tools>\n<|im_start|>user\nSay banana.<|im_end|>\n" + (
        "<|im_start|>assistant\n"
    )
    result = translate_template(source)
    case = {"kind": "ollama", "template": result.template, "messages": messages, "system": ""}
    (go,) = go_oracle.run([case])
    assert not go.failed and "<s>" + go.output == expected
    plain = reference_from_template(_source(OPTIONAL))
    with pytest.raises(TemplateRenderError):
        # Any other raise stays a raise (a template that rejects the conversation).
        reference_from_template(_source("{{ raise_exception('rejected') }}")).render(messages)
    assert plain.render(messages).startswith("<s>Tools: <tools> </tools>")
