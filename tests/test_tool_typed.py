"""Tool definitions printed as typed signatures (Apertus's TypeScript, Seed-OSS's Python).

The type of each parameter is mapped to a word of the template's own, with one fixed word for
every type it does not know (our sentinel type included), and a parameter prints otherwise
when it is required (``city`` vs ``city?``). The translator reads the word table and the
required mark off real Jinja renderings; every claim is re-rendered by Go.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from deploy_to_ollama.chat_template import load_probes, translate_template
from deploy_to_ollama.chat_template.gotext import Act, Lit
from deploy_to_ollama.chat_template.tool_args import ItemLoop
from deploy_to_ollama.chat_template.tool_typed import required_mark
from deploy_to_ollama.chat_template.translate_tools import FIELDS_UNPROVEN
from deploy_to_ollama.chat_template.verify import verify_template
from support.go_oracle import to_ollama_api_messages
from test_tool_args import _TURNS, _go_holds, _source, _tool_probes

_TYPE = "{{ {'string': 'string', 'number': 'number', 'integer': 'number'}.get(v.type, 'any') }}"

# Apertus-style: a TypeScript signature per tool, `?` after an optional parameter's name.
TS_LIKE = (
    "{% if tools %}Tools:\n{% for t in tools %}// {{ t.function.description }}\n"
    "type {{ t.function.name }} = (_: {\n"
    "{% for k, v in t.function.parameters.properties.items() %}// {{ v.description }}\n"
    "{{ k }}{% if k not in t.function.parameters.required %}?{% endif %}: " + _TYPE + ""
    "{% if not loop.last %},{% endif %}\n{% endfor %}}) => any;\n{% endfor %}{% endif %}"
) + _TURNS


def test_typed_signatures_become_a_type_table_and_a_required_flag(go_oracle: Any) -> None:
    source = _source(TS_LIKE)
    result = translate_template(source)
    assert "range $t.Function.Parameters.Required" in result.template
    assert '{{- else if eq $ty "integer" }}number' in result.template
    assert "{{- else }}any" in result.template
    assert result.verified and result.report.tools_verified
    assert FIELDS_UNPROVEN not in result.warnings
    offered = _tool_probes(result)["tools_available"]
    assert "city: string" in (offered.actual or "")
    assert _go_holds(go_oracle, source, result) == []


def test_an_optional_parameter_and_other_types_print_as_the_jinja_prints_them(
    go_oracle: Any,
) -> None:
    """The probes' parameters are all required strings; a tool with an optional number, a
    boolean and an array proves the flag and the word table on Go's side too."""
    source = _source(TS_LIKE)
    result = translate_template(source)
    offered = next(p for p in load_probes() if p.id == "tools_available")
    tool = offered.tools[0]
    props = {
        "city": {"type": "string", "description": "City"},
        "days": {"type": "integer", "description": "Days ahead"},
        "metric": {"type": "boolean", "description": "Metric units"},
        "tags": {"type": "array", "description": "Tags"},
    }
    params = {"type": "object", "properties": props, "required": ["city"]}
    probe = replace(
        offered, tools=({**tool, "function": {**tool["function"], "parameters": params}},)
    )
    report = verify_template(
        source, result.template, system=result.system, tools=True, probes=[probe]
    )
    (checked,) = report.probes
    assert checked.status == "match", checked.actual
    text = checked.actual or ""
    assert "city: string," in text and "days?: number," in text
    assert "metric?: any," in text and "tags?: any}" in text
    case = {
        "kind": "ollama",
        "template": result.template,
        "messages": to_ollama_api_messages(list(probe.messages)),
        "system": result.system or "",
        "think": None,
        "tools": list(probe.tools),
    }
    (go,) = go_oracle.run([case])
    assert not go.failed and go.output == checked.actual


def test_a_required_mark_no_go_template_can_print_is_not_verified() -> None:
    """A required parameter's name upper-cased: more than literal text changes, so the
    reading is refused and the tool probes stay unverified with a reason."""
    upper = TS_LIKE.replace(
        "{{ k }}{% if k not in t.function.parameters.required %}?{% endif %}",
        "{% if k in t.function.parameters.required %}{{ k | upper }}{% else %}{{ k }}?{% endif %}",
    )
    assert upper != TS_LIKE
    result = translate_template(_source(upper))
    assert not result.report.tools_verified
    offered = _tool_probes(result)["tools_available"]
    assert offered.status == "skipped" and offered.reason


def test_a_type_word_that_depends_on_other_fields_is_said_to_be_unproven() -> None:
    """Seed-/MiniCPM-style ``List[str]`` from an array's ``items``: the word table cannot hold
    it, so the claim carries the warning (and the template without it does not)."""
    with_items = TS_LIKE.replace(
        _TYPE,
        "{% if v.type == 'array' and v['items'] %}{{ v['items'].type }}[]{% else %}"
        + _TYPE
        + "{% endif %}",
    )
    assert with_items != TS_LIKE
    result = translate_template(_source(with_items))
    assert result.report.tools_verified and FIELDS_UNPROVEN in result.warnings


def test_a_printed_default_or_nested_properties_are_said_to_be_unproven() -> None:
    """Apertus prints a default, MiniCPM3 nested classes: fields the TEMPLATE does not print."""
    for extra in (
        "{% if v.default is defined %} = {{ v.default }}{% endif %}",
        "{% if v.properties %} {{ v.properties | list | join(',') }}{% endif %}",
    ):
        with_field = TS_LIKE.replace(_TYPE, _TYPE + extra)
        assert with_field != TS_LIKE
        result = translate_template(_source(with_field))
        assert result.report.tools_verified and FIELDS_UNPROVEN in result.warnings


def test_a_parameter_without_description_printed_otherwise_is_said_to_be_unproven() -> None:
    """Apertus drops the whole ``// ...`` line of a parameter without description, where the
    TEMPLATE prints an empty description: the probes (all described) match, the claim says
    which tools it covers."""
    dropped = TS_LIKE.replace(
        "// {{ v.description }}\n", "{% if v.description %}// {{ v.description }}\n{% endif %}"
    )
    assert dropped != TS_LIKE
    result = translate_template(_source(dropped))
    assert result.report.tools_verified and FIELDS_UNPROVEN in result.warnings


# Seed-OSS-style: each tool lists its parameters twice, a typed signature and then its Args.
_PY_TYPE = "{{ {'string': 'str', 'integer': 'int', 'number': 'int'}.get(v.type, 'Any') }}"
TWO_LISTS = (
    "{% if tools %}{% for t in tools %}\n\nFunction:\ndef {{ t.function.name }}("
    "{% for k, v in t.function.parameters.properties.items() %}{{ k }}: " + _PY_TYPE + ""
    '{% if not loop.last %},{% endif %}{% endfor %}):\n    """\n    '
    "{{ t.function.description }}\n\n    Args:"
    "{% for k, v in t.function.parameters.properties.items() %}\n    - {{ k }} (" + _PY_TYPE + ")"
    "{% if k in t.function.parameters.required %} [required]{% else %} [optional]{% endif %}: "
    '{{ v.description }}{% endfor %}\n    """{% endfor %}\n{% endif %}'
) + _TURNS


def test_parameters_listed_twice_become_two_ranges(go_oracle: Any) -> None:
    source = _source(TWO_LISTS)
    result = translate_template(source)
    # Two ranges per tool list (the TEMPLATE prints the list in a branch with and without system).
    assert result.template.count("range $pk, $pv := $t.Function.Parameters.Properties") in (2, 4)
    assert "Args:" in result.template
    assert result.verified and result.report.tools_verified
    offered = _tool_probes(result)["tools_offered_not_called"]
    assert "def get_time(timezone: str):" in (offered.actual or "")
    assert "- timezone (str) [required]: IANA timezone name" in (offered.actual or "")
    assert _go_holds(go_oracle, source, result) == []


def test_two_lists_that_disagree_on_the_parameters_are_not_verified() -> None:
    """The Args list skips the first parameter: the lists are not two loops over the same
    properties, so nothing is claimed."""
    skewed = TWO_LISTS.replace(
        "{% for k, v in t.function.parameters.properties.items() %}\n    - ",
        "{% for k, v in t.function.parameters.properties.items() %}{% if not loop.first %}\n    - ",
    ).replace("{{ v.description }}{% endfor %}", "{{ v.description }}{% endif %}{% endfor %}")
    assert skewed != TWO_LISTS
    result = translate_template(_source(skewed))
    assert not result.report.tools_verified


# MiniCPM3-style: a type the template does not know raises (MiniCPM3 recurses into the
# letters of a type name), a bare name in the signature, ``Optional[...]`` when optional.
STRICT_TYPES = (
    "{% if tools %}{% for t in tools %}\ndef {{ t.function.name }}("
    "{% for k, v in t.function.parameters.properties.items() %}{{ ', ' if not loop.first }}"
    "{{ k }}{{ '=None' if k not in t.function.parameters.required }}{% endfor %}):\n"
    "    Args:{% for k, v in t.function.parameters.properties.items() %}"
    "{% set ty = {'string': 'str', 'integer': 'int', 'number': 'float', 'boolean': 'bool',"
    " 'array': 'list', 'object': 'dict', 'null': 'None'}.get(v.type) %}"
    "{% if ty is none %}{{ raise_exception('unknown type ' ~ v.type) }}{% endif %}"
    "\n        {{ k }}: {{ ty if k in t.function.parameters.required else 'Optional[' ~ ty ~ ']' }}"
    " = Field(description={{ v.description | tojson }}){% endfor %}{% endfor %}\n{% endif %}"
) + _TURNS


def test_a_template_that_rejects_unknown_types_is_read_with_string_in_their_place(
    go_oracle: Any,
) -> None:
    source = _source(STRICT_TYPES)
    result = translate_template(source)
    assert '{{- if eq $ty "string" }}str' in result.template
    assert result.verified and result.report.tools_verified
    offered = _tool_probes(result)["tools_available"]
    assert 'city: str = Field(description="City name")' in (offered.actual or "")
    assert "def get_weather(city):" in (offered.actual or "")
    assert _go_holds(go_oracle, source, result) == []


def test_a_template_that_rejects_every_type_claims_no_tools() -> None:
    """Where even ``string`` raises, no parameter's word can be read: nothing is claimed."""
    rejecting = STRICT_TYPES.replace("'string': 'str', ", "")
    assert rejecting != STRICT_TYPES
    result = translate_template(_source(rejecting))
    assert not result.report.tools_verified


def test_parameterless_tools_and_trimmed_descriptions_printed_otherwise_are_said_unproven() -> None:
    """Seed-OSS prints ``Args:`` only for a tool with parameters and trims a tool's
    description; the probes' tools have parameters and trimmed descriptions, so they match,
    and the claim says which tools it leaves out. Where the Jinja prints both as the
    TEMPLATE does, nothing is said."""
    from deploy_to_ollama.chat_template.tool_props import SHAPES_UNPROVEN

    plain = translate_template(_source(TWO_LISTS))
    assert plain.report.tools_verified and SHAPES_UNPROVEN not in plain.warnings
    header = "\n\n    Args:{% for"
    guarded = TWO_LISTS.replace(
        header, "{% if t.function.parameters.properties %}" + header[:-6] + "{% endif %}{% for"
    )
    description = "{{ t.function.description }}"
    trimmed = TWO_LISTS.replace(description, description.replace(" }}", " | trim }}"))
    for variant in (guarded, trimmed):
        assert variant != TWO_LISTS
        result = translate_template(_source(variant))
        assert result.report.tools_verified and SHAPES_UNPROVEN in result.warnings


def _loop(*item: Act | Lit) -> ItemLoop:
    return ItemLoop("x", item, ",", "range $pk, $pv := {var}.P", ("x",))


def test_required_mark_asks_required_only_where_literal_text_differs() -> None:
    loose = _loop(Act("$pk"), Lit("?: "), Act("$pv.Type"))
    strict = _loop(Act("$pk"), Lit(": "), Act("$pv.Type"))
    marked = required_mark(loose, strict)
    assert marked is not None
    assert Act("range $t.Function.Parameters.Required") in marked.item
    assert marked.item[-6:] == (
        Act("if $req"),
        Lit(": "),
        Act("else"),
        Lit("?: "),
        Act("end"),
        Act("$pv.Type"),
    )
    assert required_mark(strict, strict) == strict
    # An action that differs (the name upper-cased) is not a mark a literal can print.
    assert required_mark(loose, _loop(Act("upper $pk"), Lit(": "), Act("$pv.Type"))) is None
    # A mark with nothing on one side (`k?` vs `k`) is still only literal text.
    bare = required_mark(
        _loop(Act("$pk"), Lit("?"), Act("$pv.Type")), _loop(Act("$pk"), Act("$pv.Type"))
    )
    assert bare is not None and Act("else") in bare.item


def _first_only(calls: str) -> str:
    return (
        "{% for m in messages %}<|{{ m.role }}|>\n{% if m.role == 'tool' %}"
        "<tool_response>{{ m.content }}</tool_response>{% else %}{{ m.content }}"
        + calls
        + "{% endif %}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    )


def test_a_template_that_prints_only_the_first_call_is_told_apart() -> None:
    """GigaChat and gpt-oss print ``tool_calls[0]`` only: read as a loop that prints the first
    index; calls printed in reverse are no loop, and a template printing every call reads off."""
    from deploy_to_ollama.chat_template.shape import infer_shape
    from deploy_to_ollama.chat_template.tool_shape import FIRST_CALL_ONLY, infer_tool_shape

    call = "<tool_call>{{ c.function.name }}{{ c.function.arguments | tojson }}</tool_call>"
    cases = {
        "{% if m.tool_calls %}{% set c = m.tool_calls[0] %}" + call + "{% endif %}": (
            FIRST_CALL_ONLY
        ),
        "{% for c in (m.tool_calls or []) | reverse %}" + call + "{% endfor %}": "no loop",
        "{% for c in m.tool_calls or [] %}" + call + "{% endfor %}": "",
    }
    for calls, reason in cases.items():
        source = _source(_first_only(calls))
        shape = infer_tool_shape(source, infer_shape(source))
        if reason == FIRST_CALL_ONLY:
            # Read since gpt-oss (tool_shape.first_call_only): a loop printing index 0 only.
            assert shape.calls is not None, shape.reason
            assert any(getattr(a, "code", "") == "if eq $k 0" for a in shape.calls.item)
        elif reason:
            assert shape.calls is None and shape.reason not in ("", FIRST_CALL_ONLY)
        else:
            assert shape.calls is not None
