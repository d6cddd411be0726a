"""Ollama's capability rules reproduced: cases from ollama/ollama's own tests, the corpus,
the reference Modelfiles, and real Go (the oracle) for the TEMPLATE side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.capabilities import (
    compare_capabilities,
    go_template_capabilities,
    go_template_has_tool_round_trip,
    jinja_capabilities,
    jinja_has_thinking_support,
    jinja_has_tool_round_trip,
    jinja_has_tool_support,
)
from deploy_to_ollama.chat_template.go_template import parse_template
from deploy_to_ollama.chat_template.ollama_prompt import infer_thinking_tags
from deploy_to_ollama.modelfile import parse_modelfile
from support.go_oracle import GoOracle
from support.shared import corpus_records
from support.taught_tools import THINK_GO_TEMPLATE, THINK_JINJA, TOOLS_GO_TEMPLATE, TOOLS_JINJA

MODELFILES = Path(__file__).resolve().parents[1] / "modelfiles"

# ollama/ollama server/images_test.go TestModelCapabilities: the three Go templates it builds
# (lower-case fields: Vars lower-cases names) and the GGUF chat_template with tools + <think>.
PROMPT_ONLY = "{{ .prompt }}"
WITH_TOOLS = "{{ .prompt }}{{ if .tools }}{{ .tools }}{{ end }}"
WITH_TOOLS_AND_SUFFIX = WITH_TOOLS + "{{ if .suffix }}{{ .suffix }}{{ end }}"
GGUF_TOOLS_THINK = (
    "{% if tools %}<tool_call>{{ tools }}</tool_call>{% endif %}"
    "<think>{{ messages[0]['content'] }}</think>"
)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (PROMPT_ONLY, ()),
        (WITH_TOOLS, ("tools",)),
        (WITH_TOOLS_AND_SUFFIX, ("tools", "insert")),
        ("", ()),
        (None, ()),
        # A template Ollama cannot list the variables of gets nothing, thinking included.
        ('{{ range .Messages }}<think>{{ .Thinking }}</think>{{ template "x" }}{{ end }}', ()),
        ("{{ if .Tools", ()),  # does not parse
    ],
)
def test_go_template_capabilities_follow_ollama(
    template: str | None, expected: tuple[str, ...]
) -> None:
    assert go_template_capabilities(template) == expected


def test_jinja_capabilities_follow_ollama() -> None:
    assert jinja_capabilities(GGUF_TOOLS_THINK) == ("tools", "thinking")
    assert jinja_capabilities("{{ messages[0]['content'] }}") == ()
    assert jinja_capabilities("") == ()
    # images_test.go: a Granite-style template mentions `tools` but has no tool_calls/result.
    granite_like = "{%- if tools and not available_tools -%}{%- endif -%}<think></think>"
    assert jinja_has_tool_support(granite_like)
    assert not jinja_has_tool_round_trip(granite_like)
    # Only </think> split, reasoning_content or Mistral's <SPECIAL_12> veto it.
    split = "{% set content = (content.split('</think>')|last) %}"
    assert jinja_has_thinking_support(split)
    assert not jinja_has_thinking_support(split + "{{ reasoning_content }}")
    assert not jinja_has_thinking_support(split + "<SPECIAL_12>")
    assert not jinja_has_thinking_support("<think> without its closing tag")


def test_tool_round_trip_markers() -> None:
    jinja = (
        "{% if tools %}{{ tools }}{% endif %}{% for message in messages %}"
        "{% for tool_call in message.tool_calls %}{{ tool_call.function.name }}{% endfor %}"
        "{% if message.role == 'tool' %}tool_response {{ message.content }}{% endif %}{% endfor %}"
    )
    assert jinja_has_tool_round_trip(jinja)
    assert not jinja_has_tool_round_trip(
        jinja.replace("tool_response", "").replace("'tool'", "'x'")
    )
    weak_go = (
        "{{ if .Tools }}t{{ end }}{{ range .Messages }}{{ range .ToolCalls }}c{{ end }}{{ end }}"
    )
    assert not go_template_has_tool_round_trip(weak_go)
    strong_go = weak_go.replace("c{{ end }}", 'c{{ end }}{{ if eq .Role "tool" }}r{{ end }}')
    assert go_template_has_tool_round_trip(strong_go)
    # A tool-result marker without .ToolCalls is no round trip.
    assert not go_template_has_tool_round_trip('{{ if .Tools }}{{ end }}{{ if eq .Role "tool" }}')


@pytest.mark.parametrize(
    ("template", "tags"),
    [
        # thinking/template_test.go, same facts in our own words: the tags are the text at both
        # ends of the list that holds .Thinking, trimmed; only a range over .Messages counts.
        (
            "{{ if .Thinking }}/think{{ end }}{{ range $i, $_ := .Messages }}"
            "{{ if .Thinking }} <think>{{ .Thinking }}</think>\n{{ end }}{{ end }}",
            ("<think>", "</think>"),
        ),
        (
            "{{ range .Messages }}{{ range .Other }}{{ if .Thinking }}<think>{{ .Thinking }}"
            "</think>{{ end }}{{ end }}{{ end }}",
            ("", ""),
        ),
        (
            "{{ range .Messages }}{{ if .Thinking }}  before  {{ .Thinking }}  after "
            "{{ end }}{{ end }}",
            ("before", "after"),
        ),
        ("{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}", ("", "")),
    ],
)
def test_thinking_tags(template: str, tags: tuple[str, str]) -> None:
    assert infer_thinking_tags(parse_template(template)) == tags
    assert ("thinking" in go_template_capabilities(template)) == all(tags)


def test_parity_is_computed_and_can_fail() -> None:
    lost = compare_capabilities(GGUF_TOOLS_THINK, PROMPT_ONLY)
    assert not lost.parity
    assert lost.lost == ("tools", "thinking")
    assert any("tools, thinking" in line for line in lost.problems())
    gained = compare_capabilities("{{ messages[0]['content'] }}", WITH_TOOLS)
    assert not gained.parity and gained.gained == ("tools",)
    same = compare_capabilities(TOOLS_JINJA, TOOLS_GO_TEMPLATE)
    assert same.parity, same.problems()
    assert compare_capabilities(THINK_JINJA, THINK_GO_TEMPLATE).parity
    # Tools on both sides, but only the Jinja renders calls and results.
    no_trip = compare_capabilities(
        TOOLS_JINJA, "{{ if .Tools }}{{ json .Tools }}{{ end }}{{ range .Messages }}{{ end }}"
    )
    assert no_trip.lost == () and no_trip.round_trip_lost and not no_trip.parity
    assert no_trip.to_json()["parity"] is False


def test_reference_modelfiles_keep_the_capabilities_of_their_jinja() -> None:
    """The reference Modelfiles now carry .Tools (and Qwen3 .Thinking): parity must say so,
    and a TEMPLATE without them must still come out as losing them."""
    qwen25 = parse_modelfile((MODELFILES / "qwen2.5.Modelfile").read_text(encoding="utf-8"))
    qwen3 = parse_modelfile((MODELFILES / "qwen3.Modelfile").read_text(encoding="utf-8"))
    assert go_template_capabilities(qwen25.template) == ("tools",)
    assert go_template_capabilities(qwen3.template) == ("tools", "thinking")
    records = {r.get("name"): r for r in corpus_records()}
    jinja = (records.get("Qwen/Qwen2.5-7B-Instruct") or {}).get("jinja")
    if jinja:  # ../shared present: the Jinja it came from has tools, and so does the TEMPLATE
        assert compare_capabilities(jinja, qwen25.template).lost == ()
        plain = "{{ range .Messages }}{{ .Content }}{{ end }}"
        assert compare_capabilities(jinja, plain).lost == ("tools",)
    for path in sorted(MODELFILES.glob("*.Modelfile")):
        template = parse_modelfile(path.read_text(encoding="utf-8")).template
        # Every reference TEMPLATE parses and Ollama can list its variables.
        parse_template(template or "").identifiers()


def _corpus_templates() -> list[dict[str, Any]]:
    records = corpus_records()
    if not records:
        pytest.skip("../shared/chat_templates is absent")
    return records


def test_corpus_jinja_capabilities() -> None:
    """Every corpus Jinja gets a decision; the counts are pinned so a rule change shows."""
    records = _corpus_templates()
    tools = [r for r in records if "tools" in jinja_capabilities(r["jinja"])]
    thinking = [r for r in records if "thinking" in jinja_capabilities(r["jinja"])]
    # Every template the corpus index says renders tool_calls passes Ollama's tool test.
    for record in records:
        if "tool_call" in record["jinja"]:
            assert record in tools, record["_file"]
    assert (len(tools), len(thinking)) == (142, 47)


def test_corpus_go_templates_against_real_go(go_oracle: GoOracle) -> None:
    """Our capabilities for every corpus Ollama TEMPLATE equal what Go's parse tree gives."""
    records = [r for r in _corpus_templates() if r.get("ollama_template")]
    templates = sorted({r["ollama_template"] for r in records})
    templates += [TOOLS_GO_TEMPLATE, THINK_GO_TEMPLATE, WITH_TOOLS_AND_SUFFIX]
    results = go_oracle.run(
        [{"kind": "capabilities", "template": t, "data": None} for t in templates]
    )
    seen: set[str] = set()
    for template, result in zip(templates, results, strict=True):
        if result.failed:
            assert go_template_capabilities(template) == (), template[:80]
            continue
        go = json.loads(result.output)
        assert list(go_template_capabilities(template)) == (go["capabilities"] or []), template
        assert go_template_has_tool_round_trip(template) == go["round_trip"], template
        seen.update(go["capabilities"] or [])
    # The corpus has Ollama TEMPLATEs with tools and with thinking: the check saw both.
    assert {"tools", "thinking", "insert"} <= seen
