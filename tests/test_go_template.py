"""The Go-template engine on its own (no Go toolchain needed): API, errors and Go semantics."""

from __future__ import annotations

import doctest
from typing import Any

import pytest

from deploy_to_ollama.chat_template import go_template
from deploy_to_ollama.chat_template.go_template import parse_template, values
from deploy_to_ollama.errors import TemplateRenderError, TemplateSyntaxError


@pytest.mark.parametrize("module", [go_template, values])
def test_doctests(module: Any) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0
    assert result.failed == 0


def test_syntax_error_carries_line_and_column_and_hint() -> None:
    with pytest.raises(TemplateSyntaxError) as caught:
        parse_template("line one\n{{ if .X }}\n  {{ .Y }\n{{ end }}")
    err = caught.value
    assert err.line == 3
    assert err.column is not None
    assert err.hint
    assert "\n" not in str(err)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{ nosuchfunc }}", "not defined"),
        ("{{ $x }}", "undefined variable"),
        ("{{ break }}", "outside {{range}}"),
        ("{{ if .X }}", "unexpected EOF"),
        ("{{ end }}", "unexpected {{end}}"),
    ],
)
def test_parse_errors_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(TemplateSyntaxError, match=message.replace("{", r"\{").replace("}", r"\}")):
        parse_template(text)


def test_render_errors_are_template_render_errors() -> None:
    with pytest.raises(TemplateRenderError, match="incompatible types"):
        parse_template('{{ eq 1 "1" }}').execute({})
    with pytest.raises(TemplateRenderError, match="nil pointer"):
        parse_template("{{ .Missing.Field }}").execute({})


def test_references_finds_fields_anywhere_case_insensitively() -> None:
    tmpl = parse_template(
        '{{ define "t" }}{{ $.Tools }}{{ end }}'
        "{{ if .System }}{{ range .Messages }}{{ end }}{{ end }}"
    )
    assert tmpl.references("Messages")
    assert tmpl.references("messages")
    assert tmpl.references("Tools")
    assert tmpl.references("System")
    assert not tmpl.references("Response")


def test_missingkey_zero_prints_no_value_but_print_sees_nil() -> None:
    assert parse_template("{{ .A }}|{{ print .A }}|{{ .A | print }}").execute({}) == (
        "<no value>|<nil>|<nil>"
    )


def test_strings_are_bytes_for_len_index_and_slice() -> None:
    out = parse_template("{{ len .S }}|{{ index .S 1 }}|{{ slice .S 0 3 }}").execute({"S": "aé€"})
    assert out == "6|195|aé"


def test_trim_markers_and_comments() -> None:
    text = "a  \n{{- /* note */ -}}\n  b {{- .X -}}  c"
    assert parse_template(text).execute({"X": 1}) == "ab1c"


def test_range_else_break_continue_and_variables() -> None:
    text = (
        "{{ $n := 0 }}{{ range $i, $v := .L }}{{ if eq $v 2 }}{{ continue }}{{ end }}"
        "{{ if gt $v 3 }}{{ break }}{{ end }}{{ $n = $i }}{{ $v }}{{ else }}none{{ end }}|{{ $n }}"
    )
    assert parse_template(text).execute({"L": [1, 2, 3, 4, 5]}) == "13|2"
    assert parse_template(text).execute({"L": []}) == "none|0"


def test_map_range_is_sorted_and_printf_verbs_match_go() -> None:
    text = (
        "{{ range $k, $v := .M }}{{ $k }}={{ $v }};{{ end }}"
        '{{ printf "%05.1f|%-4s|%q|%x" 3.14159 "ab" "é\\n" "hi" }}'
    )
    out = parse_template(text).execute({"M": {"b": 1, "a": [1, 2]}})
    assert out == 'a=[1 2];b=1;003.1|ab  |"é\\n"|6869'


def test_parse_is_cached_and_never_mutated_by_execution() -> None:
    text = "{{ .X }}"
    first = parse_template(text)
    second = parse_template(text)
    assert first.root is second.root
    assert first.execute({"X": 1}) == "1"
    assert second.execute({"X": 2}) == "2"
