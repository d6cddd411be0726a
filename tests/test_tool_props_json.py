"""Tool definitions that list each parameter and also dump the schema as JSON (Hermes 2 Pro's
signature, ``Args`` and ``parameters|tojson``): the per-parameter lists are read with JSON
values hidden, since the dump repeats the property sentinels; verified in real Go."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy_to_ollama.chat_template import TemplateSource, translate_template
from deploy_to_ollama.chat_template.gotext import Lit
from deploy_to_ollama.chat_template.tool_props import property_loops
from support.go_claims import go_mismatches

SIGNATURE = (
    '{%- set words = {"string": "str", "integer": "int", "number": "float", "boolean": "bool"} %}'
    "{%- if tools %}{{- '<tools>\\n' }}{%- for tool in tools %}{{- tool.function.name + '(' }}"
    "{%- for name, p in tool.function.parameters.properties|items %}"
    "{{- name + ': ' + words.get(p.type, 'Any') }}{%- if not loop.last %}{{- ', ' }}{%- endif %}"
    "{%- endfor %}{{- ') -> ' + tool.function.parameters|tojson + '\\n' }}{%- endfor %}"
    "{{- '</tools>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' and message.tool_calls is defined %}"
    "{{- '<|im_start|>assistant\\n' }}{%- for call in message.tool_calls %}"
    "{{- '<call>' + call.function.name + ' ' + call.function.arguments | tojson + '</call>' }}"
    "{%- endfor %}{{- '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def test_the_parameter_list_is_read_beside_the_json_dump() -> None:
    loops = property_loops(_source(SIGNATURE))
    assert loops is not None and len(loops) == 1
    # The sentinel type is not one the Jinja knows: it prints the fixed word, and each JSON
    # schema type's word is read off its own render.
    assert loops[0].item_text == "zqarga: Any" and loops[0].glue == ", "
    assert Lit("str") in loops[0].item and Lit("float") in loops[0].item


def test_signature_and_schema_verify_in_real_go(go_oracle: Any) -> None:
    source = _source(SIGNATURE)
    result = translate_template(source)
    assert result.verified and result.report.tools_verified
    assert "json $t.Function.Parameters" in result.template
    assert go_mismatches(go_oracle, source, result) == []
