"""The chat-path selection reproduced: cases from ollama/ollama's own tests (server/images_test.go
TestGetModelTemplateMetadata and TestModelCapabilities, server/routes_generate_test.go
TestChatModeForModel, template/template_test.go TestNamed), restated as our model facts, plus
the corpus. Read at ollama/ollama fb30760 (v0.33.0-rc2) and v0.9.3."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from deploy_to_ollama.ollama_route import (
    LibraryTemplate,
    ModelFacts,
    attach_library_template,
    detect_library_template,
    go_template_env,
    levenshtein_below,
    merge_for_version,
    parse_server_version,
    prompt_rules,
    select_route,
    should_prefer_chat_template,
)
from support.shared import corpus_records
from support.taught_tools import THINK_GO_TEMPLATE, THINK_JINJA, TOOLS_GO_TEMPLATE, TOOLS_JINJA

NEW = "0.33.0"
OLD = "0.9.3"
CUSTOM = "CUSTOM {{ .Prompt }}"
TOOLS_ONLY_JINJA = "{% if tools %}{{ tools }}{% endif %}{{ messages[0]['content'] }}"
QWEN_SPLIT_JINJA = (
    "{% if tools %}{{ tools }}{% endif %}{% set content = (content.split('</think>')|last) %}"
)
THINKING_GO = (
    "{{ range .Messages }}{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}"
    "{{ .Content }}{{ end }}"
)
ROUND_TRIP_JINJA = (
    "{% if tools %}{{ tools }}{% endif %}\n{% for message in messages %}\n"
    "{% if message.tool_calls %}{% for tool_call in message.tool_calls %}"
    "{{ tool_call.function.name }}{% endfor %}{% endif %}\n"
    "{% if message.role == 'tool' %}tool_response {{ message.content }}{% endif %}\n{% endfor %}"
)
TOOLS_NO_RESULT_GO = (
    "{{ if .Tools }}tools{{ end }}\n{{ range .Messages }}\n"
    "{{ range .ToolCalls }}{{ .Function.Name }}{{ end }}\n{{ end }}"
)
GRANITE_LIKE_JINJA = (
    "{%- if tools and not available_tools -%}{{- set available_tools = tools -}}{%- endif -%}"
    "{%- if available_tools -%}{{ '<|start_of_role|>available_tools<|end_of_role|>' }}"
    "{{ available_tools | tojson }}{%- endif -%}"
    "{%- if thinking -%}<think></think><response></response>{%- endif -%}"
    "{%- for message in messages -%}{{ message['content'] }}{%- endfor -%}"
)
GO_WITH_TOOL_RESULTS = (
    "{{ if .Tools }}tools{{ end }}\n{{ range .Messages }}\n"
    '{{ if eq .Role "tool" }}tool_response{{ else }}{{ .Role }}{{ end }}\n'
    "{{ if .ToolCalls }}<|tool_call|>{{ range .ToolCalls }}{{ .Function.Name }}{{ end }}"
    "{{ else }}{{ .Content }}{{ end }}\n{{ end }}"
)


# ---------------------------------------------------------------- images_test.go: GetModel


def test_go_template_with_fewer_capabilities_loses_to_the_jinja() -> None:
    decision = select_route(ModelFacts(template=CUSTOM, jinja=TOOLS_ONLY_JINJA), NEW)
    assert decision.prefer_chat_template
    assert (decision.path, decision.source) == ("native", "gguf_chat_template")
    assert "tools" in decision.capabilities


def test_qwen_split_jinja_beats_a_thinking_only_go_template() -> None:
    decision = select_route(ModelFacts(template=THINKING_GO, jinja=QWEN_SPLIT_JINJA), NEW)
    assert decision.prefer_chat_template
    assert {"tools", "thinking"} <= set(decision.capabilities)


def test_stronger_jinja_round_trip_wins_at_equal_capabilities() -> None:
    assert should_prefer_chat_template(ROUND_TRIP_JINJA, TOOLS_NO_RESULT_GO)
    decision = select_route(ModelFacts(template=TOOLS_NO_RESULT_GO, jinja=ROUND_TRIP_JINJA), NEW)
    assert decision.path == "native" and "tools" in decision.capabilities


def test_go_template_with_round_trip_keeps_the_route_against_weaker_jinja() -> None:
    # The Jinja shows tools + thinking (2) against tools (1), but only Go has a round trip.
    decision = select_route(
        ModelFacts(template=GO_WITH_TOOL_RESULTS, jinja=GRANITE_LIKE_JINJA), NEW
    )
    assert not decision.prefer_chat_template
    assert (decision.path, decision.source) == ("rendered", "go_template")
    assert "tools" in decision.capabilities
    assert "thinking" not in decision.capabilities


@pytest.mark.parametrize(
    ("env", "path", "tools"), [("1", "rendered", False), ("0", "native", True)]
)
def test_explicit_ollama_go_template(env: str, path: str, *, tools: bool) -> None:
    decision = select_route(
        ModelFacts(template=CUSTOM, jinja=TOOLS_ONLY_JINJA), NEW, go_template=env
    )
    assert not decision.prefer_chat_template  # an explicit setting suppresses the preference
    assert decision.path == path
    assert ("tools" in decision.capabilities) is tools


def test_missing_jinja_keeps_the_go_template() -> None:
    decision = select_route(ModelFacts(template=CUSTOM), NEW)
    assert (decision.path, decision.source) == ("rendered", "go_template")


# ---------------------------------------------------------------- images_test.go: Capabilities


@pytest.mark.parametrize(
    ("facts", "env", "expected"),
    [
        (ModelFacts(template="{{ .prompt }}"), None, ("completion",)),
        (
            ModelFacts(template="{{ .prompt }}{{ if .tools }}{{ .tools }}{{ end }}{{ .suffix }}"),
            None,
            ("completion", "tools", "insert"),
        ),
        (
            ModelFacts(
                jinja="{% if tools %}<tool_call>{{ tools }}</tool_call>{% endif %}<think>x</think>"
            ),
            None,
            ("completion", "tools", "thinking"),
        ),
        # "Go TEMPLATE ignores GGUF chat_template capabilities": the Go test builds the model
        # with PreferChatTemplate false, which with this pair only OLLAMA_GO_TEMPLATE=1 gives.
        (
            ModelFacts(
                template="{{ .prompt }}",
                jinja="{% if tools %}<tool_call>{{ tools }}</tool_call>{% endif %}<think>x</think>",
            ),
            "1",
            ("completion",),
        ),
        (ModelFacts(template="{{ .prompt }}", vision=True), None, ("completion", "vision")),
        (ModelFacts(template="{{ .prompt }}", embedding=True), None, ("embedding",)),
        (
            ModelFacts(
                template="{{ .prompt }}", parser="qwen3-coder", parser_capabilities=("tools",)
            ),
            None,
            ("completion", "tools"),
        ),
    ],
)
def test_capabilities_like_ollama(
    facts: ModelFacts, env: str | None, expected: tuple[str, ...]
) -> None:
    assert select_route(facts, NEW, go_template=env).capabilities == expected


# ---------------------------------------------------------------- routes_generate_test.go


def test_chat_mode_like_ollama() -> None:
    both = ModelFacts(template=CUSTOM, jinja="{{ messages[0]['content'] }}")
    assert select_route(both, NEW).path == "rendered"
    assert select_route(both, NEW, go_template="0").path == "native"
    assert select_route(both, NEW, go_template="1").path == "rendered"
    preferred = ModelFacts(template=CUSTOM, jinja=TOOLS_ONLY_JINJA)
    assert select_route(preferred, NEW, go_template="1").path == "rendered"
    assert select_route(preferred, NEW).path == "native"
    jinja_only = ModelFacts(jinja="{{ messages[0]['content'] }}")
    parser = select_route(ModelFacts(jinja=TOOLS_ONLY_JINJA, parser="gemma4"), NEW, go_template="0")
    assert (parser.path, parser.source) == ("rendered", "parser")
    renderer = select_route(ModelFacts(jinja=TOOLS_ONLY_JINJA, renderer="gemma3"), NEW)
    assert (renderer.path, renderer.source) == ("rendered", "renderer")
    harmony = select_route(
        ModelFacts(template="<|start|><|end|>", jinja="x", model_family="gptoss"), NEW
    )
    assert (harmony.path, harmony.source) == ("rendered", "harmony")
    assert "thinking" in harmony.capabilities
    assert select_route(jinja_only, NEW).path == "native"
    assert select_route(ModelFacts(template=CUSTOM), NEW).path == "rendered"


def test_no_template_and_no_jinja_warns() -> None:
    decision = select_route(ModelFacts(template=CUSTOM), NEW, go_template="0")
    assert decision.source == "none" and decision.path == "native"
    assert any("poorly formatted" in w for w in decision.warnings)


# ---------------------------------------------------------------- 0.9.x


def test_old_servers_render_the_go_template_and_ignore_the_jinja() -> None:
    facts = ModelFacts(template=CUSTOM, jinja=TOOLS_ONLY_JINJA)
    decision = select_route(facts, OLD)
    assert (decision.path, decision.source) == ("rendered", "go_template")
    assert decision.capabilities == ("completion",)
    assert select_route(facts, OLD, go_template="0").path == "rendered"  # no such switch then
    assert select_route(ModelFacts(jinja=TOOLS_ONLY_JINJA), "0.29.9").source == "none"
    assert select_route(ModelFacts(jinja=TOOLS_ONLY_JINJA), "0.30.0").path == "native"


def test_our_fixture_templates_keep_their_route_on_both_generations() -> None:
    """Parity (tools with a round trip; thinking) keeps the Go TEMPLATE on 0.30+ as well."""
    for template, jinja, caps in (
        (TOOLS_GO_TEMPLATE, TOOLS_JINJA, ("completion", "tools")),
        (THINK_GO_TEMPLATE, THINK_JINJA, ("completion", "thinking")),
    ):
        for version in (OLD, NEW):
            decision = select_route(ModelFacts(template=template, jinja=jinja), version)
            assert (decision.path, decision.source) == ("rendered", "go_template"), version
            assert decision.capabilities == caps


# ---------------------------------------------------------------- versions and env


@pytest.mark.parametrize(
    ("text", "parts", "newest", "warned"),
    [
        ("0.9.3", (0, 9, 3), False, False),
        ("v0.30.0-rc1", (0, 30, 0), False, False),
        ("0.33", (0, 33, 0), False, False),
        ("0.0.0", (0, 0, 0), True, True),
        ("", (0, 0, 0), True, True),
        ("not a version", (0, 0, 0), True, True),
        (None, (0, 0, 0), True, True),
    ],
)
def test_server_versions(
    text: str | None, parts: tuple[int, int, int], *, newest: bool, warned: bool
) -> None:
    version, warning = parse_server_version(text)
    assert (version.parts, version.newest, warning is not None) == (parts, newest, warned)


def test_unparseable_version_uses_the_newest_rules_with_a_warning() -> None:
    decision = select_route(ModelFacts(jinja=TOOLS_ONLY_JINJA), "weird-build")
    assert decision.path == "native"
    assert decision.warnings and "weird-build" in decision.warnings[0]


def test_go_template_env_reads_like_go() -> None:
    assert [go_template_env(v) for v in (None, "", "1", "true", "0", "F", "junk")] == [
        None,
        None,
        True,
        True,
        False,
        False,
        True,
    ]


# ---------------------------------------------------------------- ollama create


def test_levenshtein_matches_the_plain_definition() -> None:
    def plain(a: str, b: str) -> int:
        row = list(range(len(b) + 1))
        for i, ca in enumerate(a, 1):
            prev, row[0] = row[0], i
            for j, cb in enumerate(b, 1):
                prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
        return row[-1]

    pairs = [
        ("", ""),
        ("abc", ""),
        ("flaw", "lawn"),
        ("x" * 50 + "ab", "x" * 50 + "ba"),
        ("ab", "ab"),
    ]
    for a, b in pairs:
        assert levenshtein_below(a, b, 100) == plain(a, b)
    assert levenshtein_below("abcd", "wxyz", 4) is None  # distance 4 is not below 4


_INDEX_ENTRY = re.compile(r"template/index\.json \+ template/([\w.\-]+)\.gotmpl")


def _library_entry(record: dict[str, Any]) -> LibraryTemplate | None:
    """A corpus record taken from Ollama's template/index.json, with Ollama's own pairing."""
    names = _INDEX_ENTRY.findall(json.dumps([record.get("source"), record.get("other_sources")]))
    if not names:
        return None
    pairings = [{"from": record.get("ollama_pairing_source"), **record}]
    pairings += record.get("alternate_ollama_pairings") or []
    for pairing in pairings:
        if str(pairing.get("from") or "").startswith("ollama:") and pairing.get("ollama_template"):
            stop = tuple((pairing.get("ollama_parameters") or {}).get("stop") or ())
            return LibraryTemplate(names[0], record["jinja"], pairing["ollama_template"], stop)
    return None


def _library() -> list[LibraryTemplate]:
    entries = [e for r in corpus_records() if (e := _library_entry(r)) is not None]
    if not entries:
        pytest.skip("../shared/chat_templates (with Ollama's template/index.json) is absent")
    return entries


def test_every_library_jinja_finds_its_own_template() -> None:
    """template_test.go TestNamed: each index.json Jinja maps back to its own entry."""
    library = _library()
    assert len(library) >= 10
    for entry in library:
        found = detect_library_template(entry.jinja, library)
        assert found is not None and found.name == entry.name


def test_create_attaches_a_library_template_only_without_a_modelfile_template() -> None:
    library = _library()
    chatml = next(e for e in library if e.name == "chatml")
    near = (
        chatml.jinja.replace("'\\n'", "'\\n' ", 1)
        if "'\\n'" in chatml.jinja
        else chatml.jinja + " "
    )
    template, attached = attach_library_template(None, near, library)
    assert attached is not None and attached.name == "chatml" and template == chatml.template
    assert attach_library_template("{{ .Prompt }}", near, library) == ("{{ .Prompt }}", None)
    assert attach_library_template(None, None, library) == (None, None)
    # Our fixture's Jinja is far from every library entry: nothing attached.
    assert attach_library_template(None, TOOLS_JINJA, library) == (None, None)
    # What the attached template means on 0.30+: its capabilities against the GGUF's Jinja.
    decision = select_route(ModelFacts(template=template, jinja=near), NEW)
    assert decision.source in ("go_template", "gguf_chat_template")


def test_corpus_parity_keeps_the_go_route_on_current_ollama() -> None:
    """Over the corpus's Jinja/Ollama-TEMPLATE pairs: a pair at capability parity is never
    moved to the native path, and the pairs that are moved are pinned (19 of 139)."""
    from deploy_to_ollama.capabilities import compare_capabilities

    pairs = [r for r in corpus_records() if r.get("ollama_template")]
    if not pairs:
        pytest.skip("../shared/chat_templates is absent")
    native = []
    for record in pairs:
        facts = ModelFacts(template=record["ollama_template"], jinja=record["jinja"])
        decision = select_route(facts, NEW)
        assert select_route(facts, OLD).path == "rendered"
        if decision.path == "native":
            native.append(record["_file"])
            assert not compare_capabilities(record["jinja"], record["ollama_template"]).parity
            assert set(decision.capabilities) >= {"completion", "tools"} or (
                "thinking" in decision.capabilities
            )
    assert (len(pairs), len(native)) == (139, 19)


@pytest.mark.parametrize(
    ("text", "merge", "level", "omit"),
    [
        ("0.9.3", True, False, False),
        ("0.9.5", True, False, False),
        ("0.9.6", False, False, False),
        ("0.11.0", False, True, False),
        ("0.12.10", False, True, False),
        ("0.12.11", False, True, True),
        ("junk", False, True, True),
    ],
)
def test_prompt_rules_by_version(text: str, *, merge: bool, level: bool, omit: bool) -> None:
    rules = prompt_rules(parse_server_version(text)[0])
    assert (rules.merge_tool_messages, rules.think_level, rules.required_omitted_when_empty) == (
        merge,
        level,
        omit,
    )


def test_merge_for_version_joins_only_consecutive_tool_results() -> None:
    old, new = (prompt_rules(parse_server_version(v)[0]) for v in (OLD, NEW))
    messages = [
        {"role": "tool", "content": "a"},
        {"role": "tool", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "tool", "content": "d"},
    ]
    assert [m["content"] for m in merge_for_version(messages, old)] == ["a\n\nb", "c", "d"]
    assert merge_for_version(messages, new) == messages
