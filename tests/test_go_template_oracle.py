"""Differential tests: the Python Go-template engine against Go's own text/template (our oracle).

Byte-exact output and equality of failure (both fail or neither) over generated templates that
exercise each construct, and over every Ollama template in the corpus x the probe conversations.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from deploy_to_ollama.chat_template.go_template import parse_template
from deploy_to_ollama.chat_template.ollama_prompt import render_ollama_prompt
from deploy_to_ollama.errors import InputError, TemplateRenderError, TemplateSyntaxError
from support.go_oracle import GoOracle, GoResult, to_ollama_api_messages
from support.shared import CHAT_TEMPLATES_DIR, PROBES_FILE, corpus_records, require_shared

DATA: dict[str, Any] = {
    "s": "héllo <b>&\"' =",
    "e": "",
    "n": 3,
    "z": 0,
    "neg": -7,
    "f": 1.5,
    "fi": 2.0,
    "fm": 1234567.0,
    "f6": 100000.0,
    "big": 1e21,
    "small": 1e-7,
    "tiny": 0.0001,
    "t": True,
    "F": False,
    "nil": None,
    "l": [1, "two", 3.5, None, True],
    "el": [],
    "ls": ["a", "b"],
    "m": {"b": 2, "a": "x", "c": [1, 2], "d": {"k": "v"}, "n": None},
    "em": {},
    "msgs": [
        {"Role": "user", "Content": "hi"},
        {"Role": "assistant", "Content": "yo"},
        {"Role": "user", "Content": "again"},
    ],
    "u": "ü日本\u2028\n\t\x01",
    "html": "<script>alert('x')</script>",
    "url": "a b&c=d/é?",
}

NUMBER_LITERALS = (
    "99999999999999999999", "18446744073709551615", "9223372036854775807",
    "-9223372036854775808", "1e400", "1e-400", "1__0", "1_", "0x_1", "0_7", "1_0.5",
    "0x1_F", "0x1p-2_0", "1e1_0", "1.5e_5", "0x1__F", "07.5", "089", ".5", "5.", "+5",
    "-0.0", "0o17", "0B1", "0X1F", "'\\x41'", "''", "0x1P+2",
)  # fmt: skip
"""Number literals: underscores, bases, overflow (a parse failure vs an execution failure)."""

# Each template runs on DATA through both engines.
GENERATED = [
    # text, trim markers, comments
    "plain text only",
    "",
    "a  {{- .s -}}  b",
    "a \n\t{{- .n }} \n b",
    "a {{ .n -}} \n\n b",
    "x{{- /* comment */ -}} y",
    "x {{/* c */}} y",
    "{{- .e -}}",
    "{{ -3 }}",
    "{{-3}}",
    "{{ 3 -}}x",
    "{{/* unterminated",
    "{{- -}}",
    "{{-}}",
    "{{ - }}",
    "a {{- /* */ -}} b",
    "a {{- /*x*/}} b",
    "a {{/*x*/ -}} b",
    "a {{/*x*/-}} b",
    "a {{- 3}} b",
    "a {{-3}} b",
    "{{ 3-}}",
    "{{ .n\t-}}\n x",
    "{{ .n\n}}",
    "{{\n.n\n}}",
    "{{ .n -}}",
    "a{{- \n.n}}",
    "{{ .n }}}",
    "{{{ .n }}",
    "}}{{",
    "{{ .n }}{{",
    "{{ /* comment not at start */ }}",
    # fields, missing keys, printing
    "{{ .s }}|{{ .n }}|{{ .f }}|{{ .t }}|{{ .nil }}|{{ .missing }}",
    "{{ .l }}|{{ .el }}|{{ .m }}|{{ .em }}|{{ .ls }}",
    "{{ .fi }}|{{ .fm }}|{{ .f6 }}|{{ .big }}|{{ .small }}|{{ .tiny }}|{{ .neg }}",
    "{{ .m.a }}|{{ .m.d.k }}|{{ .m.zz }}|{{ .m.n }}",
    "{{ .missing.deeper }}",
    "{{ .nil.x }}",
    "{{ .s.x }}",
    "{{ .l.x }}",
    "{{ $x := .missing }}{{ $x.y }}",
    "{{ $.s }}{{ $ }}",
    "{{ . }}",
    "{{ .m.d }}",
    "{{ (.m).a }}|{{ (index .msgs 1).Role }}",
    "{{ .s 1 }}",
    "{{ nil }}",
    "{{ 1.5 }}|{{ 1e3 }}|{{ 0x1F }}|{{ 017 }}|{{ 0b101 }}|{{ 1_000 }}|{{ 'a' }}|{{ '\\n' }}",
    '{{ "esc\\t\\"q\\"\\u00e9\\x41" }}|{{ `raw\\n` }}',
    "{{ true }}{{ false }}",
    *("{{ " + literal + " }}" for literal in NUMBER_LITERALS),
    # if / else if / with
    "{{ if .t }}T{{ else }}F{{ end }}{{ if .F }}T{{ else }}F{{ end }}",
    "{{ if .e }}a{{ else if .z }}b{{ else if .el }}c{{ else if .em }}d{{ else }}e{{ end }}",
    "{{ if .missing }}a{{ else }}b{{ end }}{{ if .nil }}a{{ else }}b{{ end }}",
    "{{ if .m }}{{ .m.a }}{{ end }}{{ if .l }}L{{ end }}{{ if .f }}F{{ end }}",
    "{{ with .m.d }}{{ .k }}{{ end }}{{ with .missing }}x{{ else }}none{{ end }}",
    "{{ with .e }}x{{ else with .s }}{{ . }}{{ end }}",
    "{{ with $x := .n }}{{ $x }}{{ . }}{{ end }}",
    "{{ if $x := .s }}{{ $x }}{{ end }}",
    "{{ if }}{{ end }}",
    "{{ if .t }}unterminated",
    "{{ end }}",
    "{{ else }}",
    # range
    "{{ range .l }}[{{ . }}]{{ end }}",
    "{{ range $i, $v := .l }}{{ $i }}={{ $v }};{{ end }}",
    "{{ range $v := .ls }}{{ $v }}{{ end }}",
    "{{ range $k, $v := .m }}{{ $k }}:{{ $v }};{{ end }}",
    "{{ range .el }}x{{ else }}empty{{ end }}|{{ range .missing }}x{{ else }}none{{ end }}",
    "{{ range .em }}x{{ else }}emptymap{{ end }}",
    "{{ range .s }}{{ . }}{{ end }}",
    "{{ range .n }}{{ . }}{{ end }}",
    "{{ range $i, $v := .n }}{{ . }}{{ end }}",
    "{{ range .f }}{{ . }}{{ end }}",
    "{{ range .l }}{{ if eq . 3.5 }}{{ break }}{{ end }}{{ . }},{{ end }}",
    '{{ range .ls }}{{ if eq . "a" }}{{ continue }}{{ end }}{{ . }}{{ end }}',
    "{{ range $i, $m := .msgs }}{{ if $i }},{{ end }}{{ $m.Role }}:{{ .Content }}{{ end }}",
    "{{ range .msgs }}{{ range $.ls }}{{ . }}{{ end }}{{ .Role }}{{ end }}",
    "{{ break }}",
    "{{ range .l }}{{ end }}{{ continue }}",
    "{{ range $i, $j, $k := .l }}{{ end }}",
    "{{ $n := 0 }}{{ range .l }}{{ $n = . }}{{ end }}{{ $n }}",
    "{{ $x := 1 }}{{ if .t }}{{ $x := 2 }}{{ $x }}{{ end }}{{ $x }}",
    "{{ $x := 1 }}{{ if .t }}{{ $x = 2 }}{{ end }}{{ $x }}",
    "{{ $undefined }}",
    "{{ range $i, $m := .msgs }}{{ end }}{{ $m }}",
    "{{ $last := sub 1 }}",
    # comparisons
    '{{ eq .n 3 }}{{ eq .s "x" }}{{ eq .n 1 2 3 }}{{ ne .n 3 }}',
    "{{ eq .f 1.5 }}{{ eq .t true }}",
    "{{ eq .n 3.0 }}",
    '{{ eq .n "3" }}',
    '{{ eq .missing "x" }}{{ eq .nil nil }}',
    "{{ eq .missing .nil }}",
    '{{ $x := .missing }}{{ eq $x "a" }}',
    '{{ eq (.missing) "a" }}',
    "{{ eq .l .l }}",
    "{{ eq .m .m }}",
    "{{ eq .n }}",
    '{{ lt 1 2 }}{{ le 2 2 }}{{ gt "b" "a" }}{{ ge 1.5 2.5 }}',
    "{{ lt .n 3.5 }}",
    "{{ lt .t .F }}",
    "{{ lt .missing 1 }}",
    '{{ lt .s "z" }}{{ lt "é" "z" }}',
    '{{ and 1 0 2 }}|{{ or 0 "" .s }}|{{ and }}|{{ or .missing .n }}|{{ and .t .missing }}',
    "{{ not .t }}{{ not .e }}{{ not .missing }}{{ not .l }}",
    "{{ if and .t (or .F .n) (not .e) }}yes{{ end }}",
    "{{ and .t .missing.x }}",
    "{{ or .t .missing.x }}",
    # len / index / slice
    "{{ len .s }}|{{ len .l }}|{{ len .m }}|{{ len .el }}|{{ len .u }}",
    "{{ len .n }}",
    "{{ len .missing }}",
    "{{ len .nil }}",
    '{{ index .l 1 }}|{{ index .m "a" }}|{{ index .m "zz" }}|{{ index .m "d" "k" }}',
    "{{ index .s 0 }}|{{ index .u 1 }}",
    "{{ index .l 5 }}",
    "{{ index .l -1 }}",
    "{{ index .l 1.0 }}",
    "{{ index .missing 0 }}",
    "{{ index .m 1 }}",
    "{{ index .n 0 }}",
    "{{ index .l }}",
    "{{ slice .s 1 3 }}|{{ slice .s 2 }}|{{ slice .s }}|{{ slice .l 1 3 }}|{{ slice .ls 0 0 }}",
    "{{ slice .s 3 1 }}",
    "{{ slice .s 0 99 }}",
    "{{ slice .s 1 2 3 }}",
    "{{ slice .l 1 2 3 }}",
    "{{ slice .n 1 }}",
    # print family
    '{{ print .s .n .f .t .nil .missing }}|{{ print 1 2 }}|{{ print "a" "b" }}|{{ print 1 "a" 2 }}',
    "{{ println .s .n }}|{{ println }}",
    "{{ print .l .m }}",
    '{{ printf "%s|%d|%v|%q|%t|%x|%X|%%" .s .n .f .s .t .n .s }}',
    '{{ printf "%5d|%-5d|%05d|%+d|%x|%o|%b|%c|%U" .n .n .neg .n 255 8 5 65 65 }}',
    '{{ printf "%.2f|%8.3f|%e|%g|%G|%.3g|%v|%v" .f .f .fm .fm .small .f .big .small }}',
    '{{ printf "%s %d" .n .s }}',
    '{{ printf "%d" }}|{{ printf "%d" 1 2 }}|{{ printf "x%" }}|{{ printf "%z" 1 }}',
    '{{ printf "%v %s %d" .l .ls .l }}',
    '{{ printf "%v|%s" .m .m }}',
    '{{ printf "%v|%s|%d" .nil .nil .missing }}',
    '{{ printf "%10s|%-10s|%.2s|%q" .s .s .s .u }}',
    '{{ printf "%T %T %T %T %T %T" .s .n .f .l .m .nil }}',
    '{{ printf "%[2]d %[1]d|%[3]d %d|%[1]d %[1]q|%[0]d|%[2]*[1]d" 65 5 }}',
    '{{ printf "%+q %#q %# x %#q|%6.2v|%v|%.3v" "é" "a`b" "ab" "ok" 3.14159 -0.0 "abcdef" }}',
    '{{ printf "%*d|%.*f|%*d|%.*d|%*%" -5 1 -1 1.5 "x" 1 "y" 2 3 }}',
    '{{ printf "%e %E %.0e|%g %g %g" 0.0 123456.0 5.5 1e21 1e-7 123456789.0 }}',
    '{{ printf "%x %X %x|%08.3f|%+.2e|% d" -255 255 "é" -3.14159 12345.678 5 }}',
    '{{ printf "%o %O %b %#o %#x %#b" 8 8 5 8 255 5 }}',
    "{{ printf .s }}",
    "{{ printf .n }}",
    "{{ printf .missing }}",
    "{{ printf 3 }}",
    '{{ .s | printf "%s!" }}|{{ .n | printf "%d-%d" 1 }}',
    '{{ .s | len }}|{{ .l | len | printf "%03d" }}',
    "{{ .missing | print }}",
    "{{ .missing | len }}",
    '{{ "x" | eq "x" }}',
    "{{ .s | .n }}",
    "{{ 1 | 2 }}",
    # escaping
    "{{ html .html }}|{{ js .html }}|{{ urlquery .url }}",
    "{{ html .s .n }}|{{ js .u }}|{{ urlquery .missing }}|{{ html .nil }}",
    '{{ .html | html }}|{{ js "a\\u00a0b" }}',
    # json and Ollama funcs
    "{{ json .s }}|{{ json .l }}|{{ json .m }}|{{ json .u }}|{{ json .html }}",
    "{{ json .f }}|{{ json .big }}|{{ json .small }}|{{ json .fm }}",
    "{{ json .nil }}|{{ json .missing }}|{{ json .tiny }}|{{ json .neg }}",
    "{{ json . }}",
    "{{ toTypeScriptType .s }}|{{ toTypeScriptType .missing }}",
    '{{ len currentDate }}|{{ eq (len (yesterdayDate)) 10 }}|{{ currentDate "x" }}',
    "{{ currentDate 1 }}",
    "{{ json }}",
    "{{ undefinedfunc 1 }}",
    "{{ call .n }}",
    "{{ call .missing }}",
    # define / template / block
    '{{ define "a" }}A{{ . }}{{ end }}{{ template "a" .n }}|{{ template "a" }}',
    '{{ define "a" }}{{ $ }}{{ end }}{{ template "a" .m.d }}',
    '{{ template "nope" . }}',
    '{{ block "b" .s }}[{{ . }}]{{ end }}',
    '{{ define "r" }}{{ if gt . 0 }}{{ . }}{{ template "r" (len (slice "xxxxxxxxx" 1 .)) }}'
    "{{ end }}{{ end }}"
    '{{ template "r" 4 }}',
    '{{ define "a" }}1{{ end }}{{ define "a" }}2{{ end }}{{ template "a" . }}',
    '{{ define "a" }}x{{ else }}y{{ end }}',
    # syntax errors
    "{{ .s",
    "{{ .s }",
    "{{ ( .s }}",
    "{{ .s ) }}",
    "{{ $x := }}",
    '{{ "unterminated }}',
    "{{ 1x }}",
    "{{ .a.b. }}",
    "{{ .s | }}",
    "{{ | .s }}",
    "{{ $x = 1 }}",
    "{{ 3.x }}",
    "{{ .s.x.(y) }}",
    '{{ "a".x }}',
    "{{ 'ab' }}",
    "{{ @ }}",
]

EXTRA_CONVERSATIONS: list[dict[str, Any]] = [
    {
        "id": "tool_call_round_trip",
        "messages": [
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": "Weather in Paris and Tokyo?"},
            {
                "role": "assistant",
                "content": "",
                "thinking": "I should call the tool.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": {
                                "city": "Paris",
                                "days": 3,
                                "opts": {"u": "C", "a": [1, 2.5]},
                            },
                        },
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": {"city": "Tokyo <jp>"}},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "name": "get_weather", "content": "22C"},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Get the weather & forecast",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "city": {"type": "string", "description": "City name"},
                            "days": {"type": ["integer", "null"], "enum": [1, 3, 7]},
                            "opts": {
                                "type": "object",
                                "properties": {"u": {"type": "string"}, "a": {"type": "array"}},
                            },
                        },
                        "required": ["city"],
                    },
                },
            },
            {"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}}},
        ],
    },
    {
        "id": "template_syntax_in_content",
        "messages": [
            {"role": "user", "content": 'Show {{ .Prompt }} and <|im_end|> and """ literally'},
            {"role": "assistant", "content": "{{ end }}"},
            {"role": "user", "content": ""},
        ],
    },
    {
        "id": "system_mid_conversation",
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "system", "content": "mid"},
            {"role": "assistant", "content": "b"},
            {"role": "assistant", "content": "c"},
            {"role": "user", "content": "d"},
        ],
    },
]


def _python_outcome(run: Any) -> tuple[str, str]:
    try:
        return "ok", run()
    except TemplateSyntaxError:
        return "parse_error", ""
    except (TemplateRenderError, InputError):
        return "error", ""


def _go_outcome(result: GoResult) -> tuple[str, str]:
    if result.parse_error is not None:
        return "parse_error", ""
    if result.error is not None:
        return "error", ""
    return "ok", result.output


def _describe(name: str, py: tuple[str, str], go: tuple[str, str], go_result: GoResult) -> str:
    detail = go_result.parse_error or go_result.error or ""
    return f"{name}: python={py!r} go={go!r} ({detail[:160]})"


def test_generated_templates_match_go(go_oracle: GoOracle) -> None:
    cases = [{"kind": "generic", "template": t, "data": DATA} for t in GENERATED]
    go_results = go_oracle.run(cases)
    mismatches = []
    outcomes: dict[str, int] = {}
    for template, go_result in zip(GENERATED, go_results, strict=True):
        py = _python_outcome(lambda t=template: parse_template(t).execute(DATA))
        go = _go_outcome(go_result)
        outcomes[go[0]] = outcomes.get(go[0], 0) + 1
        if py != go:
            mismatches.append(_describe(repr(template), py, go, go_result))
    matched = len(GENERATED) - len(mismatches)
    summary = f"{matched}/{len(GENERATED)} generated templates match Go {outcomes}"
    print(summary)
    assert not mismatches, summary + "\n" + "\n".join(mismatches)


def _corpus_templates() -> list[tuple[str, str]]:
    templates = []
    for record in corpus_records():
        if record.get("ollama_template"):
            templates.append((record["_file"], record["ollama_template"]))
        for alt in record.get("alternate_ollama_pairings") or []:
            if alt.get("ollama_template"):
                templates.append((f"{record['_file']}:{alt.get('from')}", alt["ollama_template"]))
    return templates


def _conversations() -> list[dict[str, Any]]:
    probes = json.loads(PROBES_FILE.read_text(encoding="utf-8"))["conversations"]
    return [*probes, *EXTRA_CONVERSATIONS]


def test_corpus_templates_match_go_on_probes(go_oracle: GoOracle) -> None:
    require_shared(CHAT_TEMPLATES_DIR)
    require_shared(PROBES_FILE)
    templates = _corpus_templates()
    variants: list[tuple[str, str, dict[str, Any], bool | None, str | None]] = []
    for name, template in templates:
        for conv in _conversations():
            variants.append((name, template, conv, None, None))
        variants.append((name, template, EXTRA_CONVERSATIONS[0], True, None))
        variants.append((name, template, _conversations()[0], False, "Modelfile system"))
    cases = [
        {
            "kind": "ollama",
            "template": template,
            "messages": to_ollama_api_messages(conv["messages"]),
            "tools": conv.get("tools"),
            "think": think,
            "system": system or "",
        }
        for _, template, conv, think, system in variants
    ]
    go_results = go_oracle.run(cases)
    mismatches = []
    failures_both = 0
    for (name, template, conv, think, system), go_result in zip(variants, go_results, strict=True):
        py = _python_outcome(
            lambda t=template, c=conv, k=think, s=system: render_ollama_prompt(
                t, c["messages"], system=s, tools=c.get("tools"), think=k
            )
        )
        go = _go_outcome(go_result)
        failures_both += go[0] != "ok"
        if py != go:
            mismatches.append(_describe(f"{name} x {conv['id']} think={think}", py, go, go_result))
    summary = (
        f"{len(variants) - len(mismatches)}/{len(variants)} renders of {len(templates)} corpus "
        f"templates match Go ({failures_both} fail in Go too)"
    )
    print(summary)
    assert not mismatches, summary + "\n" + "\n".join(mismatches[:30])


@pytest.mark.parametrize("template", ["{{ .Missing }}", "{{ range .Messages }}{{ end }}"])
def test_oracle_itself_runs_go(go_oracle: GoOracle, template: str) -> None:
    assert go_oracle.execute(template, {}).output == parse_template(template).execute({})


# Templates run through Ollama's prompt building (both the .Messages and the legacy path).
OLLAMA_GENERATED = [
    "{{ range .Messages }}{{ . }}{{ end }}",
    "{{ json .Messages }}",
    "{{ json . }}",
    "{{ .Tools }}|{{ json .Tools }}{{ range .Messages }}{{ end }}",
    "{{ range .Tools }}{{ . }}|{{ json . }}|{{ .Function.Parameters.Properties }}|"
    "{{ .Function.Parameters.Required }}|{{ .Function.Parameters.Defs }}|{{ .Type }}{{ end }}"
    "{{ range .Messages }}{{ end }}",
    "{{ range .Tools }}{{ range $k, $v := .Function.Parameters.Properties }}{{ $k }}:"
    "{{ $v.Type }}|{{ $v.Enum }}|{{ $v.Description }}|{{ json $v }}|{{ toTypeScriptType $v }}|"
    "{{ $v.Required }}|{{ $v.AnyOf }};{{ end }}{{ end }}{{ range .Messages }}{{ end }}",
    "{{ with .Tools }}{{ with index . 0 }}{{ .Function.Parameters.Properties.city.Description }}|"
    "{{ .Function.Parameters.Properties.missing.Type }}|"
    "{{ toTypeScriptType .Function.Parameters.Properties.city }}{{ end }}{{ end }}"
    "{{ range .Messages }}{{ end }}",
    "{{ range .Messages }}{{ range .ToolCalls }}{{ .ID }}|{{ .Function.Index }}|"
    "{{ .Function.Name }}|{{ .Function.Arguments.city }}|{{ .Function.Arguments.missing }}|"
    "{{ range $k, $v := .Function.Arguments }}{{ $k }}={{ $v }},{{ end }}|{{ . }}"
    "{{ end }}{{ end }}",
    "{{ range .Messages }}{{ .ToolCalls }}|{{ .Thinking }}|{{ .ToolName }}|{{ .ToolCallID }}|"
    "{{ .Images }}|{{ len .ToolCalls }}|{{ if .ToolCalls }}T{{ end }};{{ end }}",
    "{{ .Messages.Role }}",
    "{{ range .Messages }}{{ .Function }}{{ end }}",
    "{{ (index .Messages 0).Role }}|{{ len .Messages }}|"
    "{{ (index (slice .Messages 1) 0).Content }}",
    "{{ index .Messages 99 }}",
    "{{ .System }}|{{ .Prompt }}|{{ .Think }}|{{ .ThinkLevel }}|{{ .IsThinkSet }}|{{ .Response }}|"
    "{{ range .Messages }}{{ end }}",
    "{{ range $i, $m := .Messages }}{{ if eq (len $.Messages) (len (slice $.Messages 0 $i)) }}"
    "{{ end }}{{ $m.Role }}{{ end }}",
    "{{ range .Messages }}{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Content }}"
    "{{ end }}{{ if .Think }}T{{ end }}",
    # legacy path
    "{{ if .System }}{{ .System }}{{ end }}{{ .Prompt }}"
    "{{ if .Response }}R{{ .Response }}{{ end }}!",
    "{{ if .Response }}{{ .Response }}{{ else }}none{{ end }}",
    '{{ define "x" }}D{{ end }}{{ template "x" . }}{{ .Prompt }}{{ .Response }}',
    "{{ json .Prompt }}{{ .Response }}",
    "{{ .Prompt }}{{ json .Prompt }}",
    "{{ .Prompt }}{{ .Missing.X }}",
    "{{ .Response }}{{ .Prompt }}",
    '{{ .Prompt }} {{ .Response | printf "%s" }} tail',
    '{{ printf "%s|%s" .Prompt .Response }} tail',
    "{{ .Prompt }}|{{ $.Response }}|end",
    "{{ .Prompt }}{{ with .Response }}{{ . }}{{ end }}",
    "{{ .Prompt }}{{ .Tools }}{{ .Missing }}",
    '{{ template "nope" }}',
    "",
]


def test_ollama_shaped_templates_match_go(go_oracle: GoOracle) -> None:
    require_shared(PROBES_FILE)
    by_id = {conv["id"]: conv for conv in _conversations()}
    convs = [by_id[i] for i in ("system_multi_turn", "prefill_assistant", "consecutive_user")]
    convs += EXTRA_CONVERSATIONS
    variants = [
        (template, conv, think)
        for template in OLLAMA_GENERATED
        for conv in convs
        for think in (None, True, False)
    ]
    cases = [
        {
            "kind": "ollama",
            "template": template,
            "messages": to_ollama_api_messages(conv["messages"]),
            "tools": conv.get("tools"),
            "think": think,
        }
        for template, conv, think in variants
    ]
    mismatches = []
    for (template, conv, think), go_result in zip(variants, go_oracle.run(cases), strict=True):
        py = _python_outcome(
            lambda t=template, c=conv, k=think: render_ollama_prompt(
                t, c["messages"], tools=c.get("tools"), think=k
            )
        )
        go = _go_outcome(go_result)
        if py != go:
            mismatches.append(
                _describe(f"{template!r} x {conv['id']} think={think}", py, go, go_result)
            )
    summary = f"{len(variants) - len(mismatches)}/{len(variants)} Ollama-shaped renders match Go"
    print(summary)
    assert not mismatches, summary + "\n" + "\n".join(mismatches[:20])


class _RandomTemplates:
    """Seeded generator of random (often ill-typed) templates over DATA's keys."""

    FIELDS = (
        ".s", ".e", ".n", ".z", ".neg", ".f", ".fi", ".fm", ".big", ".small", ".t", ".F",
        ".nil", ".missing", ".l", ".el", ".ls", ".m", ".m.a", ".m.c", ".m.n", ".em", ".u",
        ".html", ".msgs", "$", ".",
    )  # fmt: skip
    LITERALS = (
        '"x"', '""', "0", "1", "2", "-1", "1.5", "true", "false", "nil", "'a'", "1e3", "0x10",
        "-0", "1_0", '"a\\tb"', "`r`n`",
    )  # fmt: skip
    UNARY = ("not", "len", "html", "js", "urlquery", "json", "print", "println")
    BINARY = ("eq", "ne", "lt", "le", "gt", "ge", "and", "or", "index", "slice", "print")
    FORMATS = ('"%v"', '"%s|%d"', '"%q %x"', '"%5.1f %t"', '"%-4v|%03d"', '"%T %v"', '"%c%U"')
    TEXTS = ("x", " ", "\n", "  a\n", "\t", "b ", "<&>")
    PIPED = ("print", "len", 'printf "%v!"', "html", "not")

    def __init__(self, seed: int) -> None:
        import random

        self.rng = random.Random(seed)
        self.vars: list[str] = []

    def operand(self, depth: int) -> str:
        roll = self.rng.random()
        if roll < 0.45 or depth <= 0:
            pool = self.FIELDS + tuple(self.vars)
            return self.rng.choice(pool)
        if roll < 0.65:
            return self.rng.choice(self.LITERALS)
        if roll < 0.72:
            return "(" + self.expr(depth - 1) + ")." + self.rng.choice(("a", "Role", "k", "x"))
        return "(" + self.expr(depth - 1) + ")"

    def expr(self, depth: int) -> str:
        roll = self.rng.random()
        if roll < 0.3:
            return self.operand(depth)
        if roll < 0.5:
            return f"{self.rng.choice(self.UNARY)} {self.operand(depth)}"
        if roll < 0.8:
            name = self.rng.choice(self.BINARY)
            return f"{name} {self.operand(depth)} {self.operand(depth)}"
        if roll < 0.9:
            args = " ".join(self.operand(depth) for _ in range(self.rng.randint(0, 3)))
            return f"printf {self.rng.choice(self.FORMATS)} {args}".rstrip()
        return self.operand(depth) + " | " + self.rng.choice(self.PIPED)

    def action(self, body: str) -> str:
        left = self.rng.choice(("{{ ", "{{- ", "{{"))
        right = self.rng.choice((" }}", " -}}", "}}"))
        if left == "{{" and body[:1] in "-0123456789":
            left = "{{ "
        return left + body + right

    def block(self, depth: int, *, in_range: bool = False) -> str:
        parts = []
        for _ in range(self.rng.randint(1, 4)):
            parts.append(self.statement(depth, in_range=in_range))
        return "".join(parts)

    def statement(self, depth: int, *, in_range: bool) -> str:
        roll = self.rng.random()
        if roll < 0.25 or depth <= 0:
            return self.rng.choice(self.TEXTS)
        if roll < 0.5:
            return self.action(self.expr(2))
        if roll < 0.6:
            name = f"$v{len(self.vars)}"
            self.vars.append(name)
            return self.action(f"{name} := {self.expr(1)}")
        if roll < 0.68 and self.vars:
            return self.action(f"{self.rng.choice(self.vars)} = {self.expr(1)}")
        if roll < 0.78:
            keyword = self.rng.choice(("if", "with"))
            saved = list(self.vars)
            text = self.action(f"{keyword} {self.expr(1)}")
            text += self.block(depth - 1, in_range=in_range)
            if self.rng.random() < 0.3:
                text += self.action(f"else {keyword} {self.expr(1)}")
                text += self.block(depth - 1, in_range=in_range)
            if self.rng.random() < 0.5:
                text += self.action("else") + self.block(depth - 1, in_range=in_range)
            self.vars = saved
            return text + self.action("end")
        if roll < 0.9:
            saved = list(self.vars)
            target = self.rng.choice((".l", ".ls", ".m", ".el", ".msgs", ".n", ".missing", ".s"))
            head = f"range {target}"
            if self.rng.random() < 0.5:
                self.vars += ["$i", "$e"]
                head = f"range $i, $e := {target}"
            text = self.action(head) + self.block(depth - 1, in_range=True)
            if self.rng.random() < 0.3:
                text += self.action("else") + self.block(depth - 1, in_range=in_range)
            self.vars = saved
            return text + self.action("end")
        if in_range and self.rng.random() < 0.6:
            return self.action(self.rng.choice(("break", "continue")))
        if self.rng.random() < 0.5:
            return self.action(f'template "t" {self.expr(1)}')
        return self.action("/* c */") if self.rng.random() < 0.5 else "y"

    def template(self) -> str:
        self.vars = []
        body = self.block(3)
        self.vars = []
        definition = '{{ define "t" }}' + self.block(1) + "{{ end }}"
        return definition + body


RANDOM_TEMPLATE_COUNT = 600


def test_random_templates_match_go(go_oracle: GoOracle) -> None:
    generator = _RandomTemplates(seed=20261127)
    templates = [generator.template() for _ in range(RANDOM_TEMPLATE_COUNT)]
    results = go_oracle.run([{"kind": "generic", "template": t, "data": DATA} for t in templates])
    mismatches = []
    outcomes: dict[str, int] = {}
    for template, go_result in zip(templates, results, strict=True):
        py = _python_outcome(lambda t=template: parse_template(t).execute(DATA))
        go = _go_outcome(go_result)
        outcomes[go[0]] = outcomes.get(go[0], 0) + 1
        if py != go:
            mismatches.append(_describe(repr(template), py, go, go_result))
    summary = (
        f"{len(templates) - len(mismatches)}/{len(templates)} random templates match Go {outcomes}"
    )
    print(summary)
    assert not mismatches, summary + "\n" + "\n".join(mismatches[:15])


def test_slice_does_not_unwrap_interface_indexes_like_go(go_oracle: GoOracle) -> None:
    # Go's slice (unlike index) rejects interface-typed indexes: fields of JSON maps, range
    # elements of []any, and variables holding them; pipelines and typed ints are fine.
    templates = [
        "{{ slice .s .n }}",
        "{{ slice .s (.n) }}",
        "{{ $x := .n }}{{ slice .s $x }}",
        '{{ range .l }}{{ slice "abcdef" . }}{{ end }}',
        '{{ range $i, $e := .ls }}{{ slice "abc" $i }}{{ end }}',
        '{{ range $e := .l }}{{ slice "abcdef" $e }}{{ end }}',
        '{{ with .n }}{{ slice "abcdef" . }}{{ end }}',
        "{{ slice .s 1 }}",
    ]
    results = go_oracle.run([{"kind": "generic", "template": t, "data": DATA} for t in templates])
    for template, go_result in zip(templates, results, strict=True):
        py = _python_outcome(lambda t=template: parse_template(t).execute(DATA))
        assert py == _go_outcome(go_result), template


class _RandomOllamaTemplates(_RandomTemplates):
    """Random templates over the data Ollama gives its templates."""

    FIELDS = (
        ".System", ".Prompt", ".Response", ".Messages", ".Tools", ".Think", ".ThinkLevel",
        ".IsThinkSet", ".Role", ".Content", ".ToolCalls", ".Thinking", ".ToolName",
        ".ToolCallID", ".Function", ".Function.Name", ".Function.Arguments",
        ".Function.Arguments.city", ".Function.Parameters", ".Function.Parameters.Properties",
        ".Type", ".ID", "$", ".", "$.Messages", "$.Tools", ".Missing",
    )  # fmt: skip
    RANGES = (
        ".Messages", ".Tools", ".ToolCalls", ".Function.Parameters.Properties",
        ".Function.Arguments", "$.Messages",
    )  # fmt: skip

    def statement(self, depth: int, *, in_range: bool) -> str:
        if self.rng.random() < 0.15 and depth > 0:
            saved = list(self.vars)
            self.vars += ["$i", "$e"]
            head = self.action(f"range $i, $e := {self.rng.choice(self.RANGES)}")
            text = head + self.block(depth - 1, in_range=True) + self.action("end")
            self.vars = saved
            return text
        return super().statement(depth, in_range=in_range)


# Go prints pointers inside values as addresses; such renders cannot be reproduced by anyone.
_ADDRESS = re.compile(r"0x[0-9a-f]{10}|\d{12}")


def test_random_ollama_templates_match_go(go_oracle: GoOracle) -> None:
    require_shared(PROBES_FILE)
    generator = _RandomOllamaTemplates(seed=4242)
    templates = [generator.template() for _ in range(200)]
    convs = [_conversations()[2], *EXTRA_CONVERSATIONS]
    variants = [(t, c) for t in templates for c in convs]
    cases = [
        {
            "kind": "ollama",
            "template": t,
            "messages": to_ollama_api_messages(c["messages"]),
            "tools": c.get("tools"),
        }
        for t, c in variants
    ]
    mismatches, compared = [], 0
    for (template, conv), go_result in zip(variants, go_oracle.run(cases), strict=True):
        go = _go_outcome(go_result)
        if _ADDRESS.search(go[1]):
            continue
        compared += 1
        py = _python_outcome(
            lambda t=template, c=conv: render_ollama_prompt(t, c["messages"], tools=c.get("tools"))
        )
        if py != go:
            mismatches.append(_describe(f"{template!r} x {conv['id']}", py, go, go_result))
    summary = f"{compared - len(mismatches)}/{compared} random Ollama-shaped renders match Go"
    print(summary)
    assert compared > len(variants) * 0.9
    assert not mismatches, summary + "\n" + "\n".join(mismatches[:10])
