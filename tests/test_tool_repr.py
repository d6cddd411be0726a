"""Tool definitions a Jinja template prints with ``tool|string`` (Python's repr of a dict).

SmolLM3, Hammer 2.1 and Apriel 1.5/1.6 print each tool that way: every string in Python's own
quote choice and escapes. The TEMPLATE walks each string byte by byte (Go 1.24's range over an
integer) to print the same. Every case renders the real Jinja (transformers) and re-renders
the TEMPLATE in Go's own text/template; the cases where it must come out false are here too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.chat_template import TemplateSource, load_probes, translate_template
from deploy_to_ollama.chat_template.go_template import parse_template
from deploy_to_ollama.chat_template.hf_render import render_hf
from deploy_to_ollama.chat_template.prompt_diff import strip_bos
from deploy_to_ollama.chat_template.pyrepr import (
    REPR_SERVER,
    repr_action,
    server_reads_repr,
    with_python_repr,
)
from deploy_to_ollama.chat_template.tool_escapes import (
    AWKWARD_TEXTS,
    REPR_NEEDS_GO124,
    awkward_tools,
    how_escaped,
    prints_awkward_text,
)
from deploy_to_ollama.chat_template.translate_tools import ESCAPED
from deploy_to_ollama.modelfile import Modelfile
from deploy_to_ollama.registrar import register_model
from support.go_oracle import GoOracle, to_ollama_api_messages
from support.ollama_server import OllamaServer

#: Strings whose repr takes each branch: either quote, both, none, escapes, non-printables.
STRINGS = [
    "",
    "plain text",
    "It's",
    'say "hi"',
    "'\"",
    "back\\slash",
    "tab\there\r\nbell\x07 esc\x1b del\x7f nul\x00",
    "caf\u00e9 \u2603 \U0001f600 \u65e5\u672c",
    "nbsp\u00a0 shy\u00ad zw\u200b nel\u0085 ls\u2028 tag\U000e0001",
    *AWKWARD_TEXTS,
]

# Hammer 2.1's way, cut down: the tool list as one repr, in the first user turn.
HAMMER_LIKE = (
    "{%- if tools is defined and tools %}<|im_start|>user\n[TOOLS]\n{{ tools|string }}\n"
    "[/TOOLS]<|im_end|>\n{% endif %}"
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# SmolLM3's way: one repr per tool, a line each, inside <tools>.
SMOLLM_LIKE = (
    "<|im_start|>system\nYou are helpful.\n"
    "{%- if tools %}\n<tools>\n{% for t in tools %}{{ t|string }}\n{% endfor %}</tools>{% endif %}"
    "<|im_end|>\n"
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: The same layout with the tool text HTML-escaped (Jinja's |e): no Ollama function does that.
HTML_ESCAPED = SMOLLM_LIKE.replace("{{ t|string }}", "{{ t|string|e }}")


def _source(template: str) -> TemplateSource:
    return TemplateSource(
        template=template, origin=Path("t.jinja"), kind="jinja", bos_token="<s>", eos_token="</s>"
    )


def _repr_loop() -> str:
    return "{{ range .S }}" + repr_action(".") + "|{{ end }}"


def test_repr_action_prints_python_repr_in_our_go_port() -> None:
    out = parse_template(_repr_loop()).execute({"S": STRINGS})
    assert out.split("|")[:-1] == [repr(s) for s in STRINGS]


def test_repr_action_prints_python_repr_in_real_go(go_oracle: GoOracle) -> None:
    go = go_oracle.execute(_repr_loop(), {"S": STRINGS})
    assert not go.failed, go.error or go.parse_error
    assert go.output.split("|")[:-1] == [repr(s) for s in STRINGS]


def test_a_plain_quoted_value_is_not_repr() -> None:
    """The layout before the rewrite prints awkward strings unlike repr: the check must see it."""
    template = "{{ range .S }}'{{ . }}'|{{ end }}"
    out = parse_template(template).execute({"S": STRINGS}).split("|")[:-1]
    agreeing = [s for s, o in zip(STRINGS, out, strict=True) if o == repr(s)]
    # Only text without apostrophes, backslashes, control or non-printable characters.
    assert agreeing == ["", "plain text", 'say "hi"', STRINGS[7]]


def test_rewrite_replaces_quoted_strings_and_keeps_types() -> None:
    loop = (
        "['\n{{- range $k, $t := .Tools }}\n{{- if $k }}, '\n{{- end }}\n{{- $t.Name }}'"
        "{{ end }}] {'type': '\n{{- $p.Type }}', 'd': '\n{{- $p.Description }}'}"
    )
    changed = with_python_repr(loop)
    assert changed is not None
    assert "$pyS := $t.Name" in changed and "$pyS := $p.Description" in changed
    assert "'\n{{- $p.Type }}'" in changed  # a type is a list of names in Ollama, left alone
    assert "{{- if $k }}, {{ end }}" in changed  # the separator keeps its space
    assert with_python_repr("{{ .Content }}") is None


@pytest.mark.parametrize("jinja", [HAMMER_LIKE, SMOLLM_LIKE], ids=["hammer", "smollm3"])
def test_tool_string_translates_and_holds_in_go(jinja: str, go_oracle: GoOracle) -> None:
    source = _source(jinja)
    result = translate_template(source)
    assert result.report.tools_verified, result.report.first_failure()
    assert "$pyS :=" in result.template and REPR_SERVER in result.warnings
    offered = next(p for p in result.report.probes if p.probe == "tools_available")
    assert offered.status == "match" and offered.tier == "exact"
    assert prints_awkward_text(source, result.template, result.system)
    # Go itself, through Ollama's prompt building, prints what transformers does.
    probe = next(p for p in load_probes() if p.id == "tools_available")
    variants = awkward_tools(probe.tools[0])
    tool_sets = [[v] for v in variants] + [variants]
    for tools, act in zip(
        tool_sets, _go_prints_as_jinja(go_oracle, source, result, tool_sets), strict=True
    ):
        assert repr(tools[0]["function"]["description"]) in act


def _go_prints_as_jinja(
    go_oracle: GoOracle, source: TemplateSource, result: Any, tool_sets: list[list[dict[str, Any]]]
) -> list[str]:
    """Go's prompts (BOS stripped) for the tools_available probe with each tool set, each
    asserted equal to transformers' rendering of ``source``'s Jinja."""
    probe = next(p for p in load_probes() if p.id == "tools_available")
    cases = [
        {
            "kind": "ollama",
            "template": result.template,
            "messages": to_ollama_api_messages(list(probe.messages)),
            "system": result.system or "",
            "think": None,
            "tools": tools,
        }
        for tools in tool_sets
    ]
    printed = []
    for tools, go in zip(tool_sets, go_oracle.run(cases), strict=True):
        want = render_hf(
            source.template,
            list(probe.messages),
            tokens=source.template_variables(),
            add_generation_prompt=True,
            tools=tools,
        )
        assert not go.failed, go.error or go.parse_error
        exp, act = strip_bos(want, go.output, "<s>")
        assert exp == act
        printed.append(act)
    return printed


def test_a_server_before_go_1_24_gets_the_refusal_with_its_reason() -> None:
    assert server_reads_repr("0.5.13") and not server_reads_repr("0.5.12")
    old = translate_template(_source(HAMMER_LIKE), server_version="0.5.12")
    assert not old.report.tools_verified and "$pyS" not in old.template
    offered = next(p for p in old.report.probes if p.probe == "tools_available")
    assert offered.status == "skipped"
    assert REPR_NEEDS_GO124.format(version="0.5.12") in (offered.reason or "")
    new = translate_template(_source(HAMMER_LIKE), server_version="0.5.13")
    assert new.report.tools_verified


def test_html_escaped_tool_text_is_refused_and_named() -> None:
    source = _source(HTML_ESCAPED)
    assert how_escaped(source) == "Python repr, then HTML entities (Jinja's |e)"
    result = translate_template(source)
    assert not result.report.tools_verified and "$pyS" not in result.template
    offered = next(p for p in result.report.probes if p.probe == "tools_available")
    assert offered.status == "skipped"
    reason = offered.reason or ""
    assert ESCAPED in reason and "HTML entities" in reason and "byte walk" in reason


def test_awkward_check_fails_a_template_that_misprints_one_field() -> None:
    """A TEMPLATE right on descriptions but with the name between plain quotes is caught."""
    source = _source(SMOLLM_LIKE)
    result = translate_template(source)
    name_plain = result.template.replace("$pyS := $t.Function.Name", "$pyS := print")
    assert name_plain != result.template
    assert not prints_awkward_text(source, name_plain, result.system)


def test_awkward_tools_rename_the_key_and_its_required_entry() -> None:
    probe = next(p for p in load_probes() if p.id == "tools_available")
    renamed = awkward_tools(probe.tools[0])[-3]["function"]
    (key,) = renamed["parameters"]["properties"]
    assert renamed["parameters"]["required"] == [key]
    assert "'" in key and '"' in key and "'" in renamed["name"]


@pytest.mark.ollama
def test_real_ollama_prints_the_repr_and_offers_tools(
    ollama_server: OllamaServer, tiny_gguf: Path, tmp_path: Path
) -> None:
    """The real server (0.9.3, built with Go 1.24) parses the TEMPLATE, lists the tools
    capability and sends the prompt transformers renders, awkward tool text included."""
    import httpx

    source = _source(HAMMER_LIKE)
    result = translate_template(source, server_version="0.9.3")
    assert result.report.tools_verified
    (tmp_path / "tiny.gguf").symlink_to(tiny_gguf)
    modelfile = Modelfile(
        from_="./tiny.gguf",
        template=result.template,
        parameters=(("num_predict", "1"), ("num_thread", "1"), ("temperature", "0")),
    )
    name = register_model("repr-tools", modelfile, base_dir=tmp_path, host=ollama_server.host).name
    shown = httpx.post(f"{ollama_server.host}/api/show", json={"model": name}, timeout=60)
    assert "tools" in shown.json()["capabilities"]
    probe = next(p for p in load_probes() if p.id == "tools_available")
    tools = awkward_tools(probe.tools[0])
    ollama_server.mark_log()
    body = {"model": name, "messages": list(probe.messages), "tools": tools, "stream": False}
    response = httpx.post(f"{ollama_server.host}/api/chat", json=body, timeout=300)
    assert response.status_code == 200, response.text
    want = render_hf(
        HAMMER_LIKE,
        list(probe.messages),
        tokens=source.template_variables(),
        add_generation_prompt=True,
        tools=tools,
    )
    (prompt,) = ollama_server.prompts()
    assert prompt == want
    assert repr(AWKWARD_TEXTS[0]) in prompt


def test_markupsafe_escaped_tool_text_is_printed_through_go_html(go_oracle: GoOracle) -> None:
    """Tool text glued to a |safe string is escaped by markupsafe (Functionary 3.1's way):
    the html reading (tool_html.py) prints it through Go's html, proven on awkward text."""
    glued = SMOLLM_LIKE.replace(
        "{{ t|string }}", "{{ 'Use '|safe + t.function.description + ' now'|safe }}"
    )
    source = _source(glued)
    assert how_escaped(source) == "HTML entities (Jinja's |e)"
    result = translate_template(source)
    offered = next(p for p in result.report.probes if p.probe == "tools_available")
    assert result.report.tools_verified and offered.status == "match", offered.reason
    assert "html" in result.template and "$pyS :=" not in result.template
    probe = next(p for p in load_probes() if p.id == "tools_available")
    _go_prints_as_jinja(
        go_oracle, source, result, [[tool] for tool in awkward_tools(probe.tools[0])]
    )


def test_required_list_only_where_the_request_has_one(go_oracle: GoOracle) -> None:
    """repr omits a key the tool lacks, prints ``[]`` for an empty list: absent, empty and
    filled lists, in one request, print as transformers does in Go; the unconditional list
    (the layout before) is caught."""
    source = _source(SMOLLM_LIKE)
    result = translate_template(source)
    assert "$pyReq" in result.template
    probe = next(p for p in load_probes() if p.id == "tools_available")
    tool = probe.tools[0]
    params = tool["function"]["parameters"]
    absent = {k: v for k, v in params.items() if k != "required"}
    tools = [
        {**tool, "function": {**tool["function"], "name": name, "parameters": parameters}}
        for name, parameters in (
            ("absent", absent),
            ("empty", {**params, "required": []}),
            ("filled", params),
        )
    ]
    case = {
        "kind": "ollama",
        "template": result.template,
        "messages": to_ollama_api_messages(list(probe.messages)),
        "system": result.system or "",
        "think": None,
        "tools": tools,
    }
    (go,) = go_oracle.run([case])
    want = render_hf(
        SMOLLM_LIKE,
        list(probe.messages),
        tokens=source.template_variables(),
        add_generation_prompt=True,
        tools=tools,
    )
    assert not go.failed and go.output == want
    assert "'required': []" in want and want.count("'required'") == 2
    always = result.template.replace(
        "{{ if $pyReq }}, 'required': [{{ end }}", ", 'required': ["
    ).replace("{{ if $pyReq }}]{{ end }}", "]")
    assert always != result.template
    assert not prints_awkward_text(source, always, result.system)
