"""Modelfile writer and parser: parse(render(x)) == x, and Ollama's parser quirks."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from deploy_to_ollama.errors import ModelfileError
from deploy_to_ollama.modelfile import (
    Modelfile,
    num_ctx_parameter,
    parameters_from_generation_config,
    parse_modelfile,
    quote_value,
    render_modelfile,
    scan_commands,
    stop_parameters,
)

# Characters that make Modelfile quoting hard: quotes, backslashes, line breaks, comment and
# template syntax, plus a few printable non-ASCII ones that real chat templates use.
HOSTILE = st.sampled_from([*'"\\\n\r\t #{}|<>:-', "▁", "｜", "é", "ß", "字", "🙂"])
HOSTILE_TEXT = st.text(alphabet=st.one_of(HOSTILE, st.characters(codec="ascii")), max_size=60)

#: When Ollama's parser cannot carry a value, whatever the quoting (see modelfile.quote_value).
_UNCARRIABLE = re.compile(r'"""[ \t]*[\r\n]')


def _carriable(value: str) -> bool:
    printable = all(ch in " \t\r\n" or ch.isprintable() for ch in value)
    return printable and not _UNCARRIABLE.search(value)


PARAM_NAMES = st.sampled_from(["stop", "temperature", "num_ctx", "top_k", "repeat_penalty"])
ROLES = st.sampled_from(["system", "user", "assistant"])
HEADER = st.text(alphabet=st.characters(exclude_characters="\r"), max_size=40)


@st.composite
def modelfiles(draw: st.DrawFn) -> Modelfile:
    return Modelfile(
        from_=draw(HOSTILE_TEXT),
        adapters=tuple(draw(st.lists(HOSTILE_TEXT, max_size=2))),
        template=draw(st.none() | HOSTILE_TEXT),
        system=draw(st.none() | HOSTILE_TEXT),
        parameters=tuple(draw(st.lists(st.tuples(PARAM_NAMES, HOSTILE_TEXT), max_size=4))),
        license=draw(st.none() | HOSTILE_TEXT),
        messages=tuple(draw(st.lists(st.tuples(ROLES, HOSTILE_TEXT), max_size=3))),
        header_comment=draw(st.none() | HEADER),
    )


def _all_values(mf: Modelfile) -> list[str]:
    values = [mf.from_, *mf.adapters, *(v for _, v in mf.parameters), *(c for _, c in mf.messages)]
    values += [v for v in (mf.template, mf.system, mf.license) if v is not None]
    return values


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(modelfiles())
@example(Modelfile(from_="m.gguf", template='"""', system='"', license='""'))
@example(
    Modelfile(from_=" spaced path ", template='{{ "\\n" }}"""x\n"', parameters=(("stop", '"'),))
)
@example(Modelfile(from_="m", messages=(("user", "role: colon: inside"),)))
def test_parse_of_render_is_identity(mf: Modelfile) -> None:
    """Whatever we write, Ollama's parser (as mirrored by ours) reads back unchanged."""
    if not all(_carriable(v) for v in _all_values(mf)):
        with pytest.raises(ModelfileError):
            render_modelfile(mf)
        return
    assert parse_modelfile(render_modelfile(mf)) == mf


@settings(max_examples=300, deadline=None)
@given(HOSTILE_TEXT)
def test_quote_value_refuses_only_uncarriable_text(value: str) -> None:
    if _carriable(value):
        assert scan_commands(f"SYSTEM {quote_value(value)}\n") == [("system", value)]
    else:
        with pytest.raises(ModelfileError):
            quote_value(value)


def test_template_is_written_as_a_triple_quoted_block() -> None:
    template = '{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}\\n"'
    text = render_modelfile(Modelfile(from_="./model.gguf", template=template))
    assert text == f'FROM ./model.gguf\nTEMPLATE """{template}"""\n'


def test_rendered_layout_has_header_then_commands_in_order() -> None:
    mf = Modelfile(
        from_="./model.gguf",
        adapters=("./adapter.gguf",),
        template="{{ .Prompt }}",
        system="Be brief.",
        parameters=(("stop", "<|im_end|>"), ("stop", "</s>"), ("num_thread", "1")),
        license="MIT",
        messages=(("user", "hi"), ("assistant", "hello\nthere")),
        header_comment="written by deploy-to-ollama\n\nsource: ./lora",
    )
    assert render_modelfile(mf) == (
        "# written by deploy-to-ollama\n#\n# source: ./lora\n\n"
        "FROM ./model.gguf\n"
        "ADAPTER ./adapter.gguf\n"
        'TEMPLATE """{{ .Prompt }}"""\n'
        "SYSTEM Be brief.\n"
        "PARAMETER stop <|im_end|>\n"
        "PARAMETER stop </s>\n"
        "PARAMETER num_thread 1\n"
        "MESSAGE user hi\n"
        'MESSAGE assistant """hello\nthere"""\n'
        "LICENSE MIT\n"
    )
    assert mf.parameter_values("stop") == ["<|im_end|>", "</s>"]


def test_parser_follows_ollama_on_a_handwritten_file() -> None:
    text = (
        "\ufeff# a comment\r\n"
        "from llama3.2\r\n"
        "\n"
        "  # indented comment after the first command is ignored\n"
        "template {{ .Prompt }}   \n"
        'parameter stop "<|eot_id|>"\n'
        "PARAMETER temperature 0.2\n"
        "message user what is up\n"
        'TEMPLATE """second\ntemplate wins"""\n'
        'license """A"""\n'
        "LICENSE B\n"
        "REQUIRES 0.12.0\n"
    )
    mf = parse_modelfile(text)
    assert mf == Modelfile(
        from_="llama3.2",
        template="second\ntemplate wins",
        parameters=(("stop", "<|eot_id|>"), ("temperature", "0.2")),
        license="A\nB",
        messages=(("user", "what is up"),),
        header_comment="a comment",
        extra=(("requires", "0.12.0"),),
    )


def test_parser_drops_control_characters_like_ollama() -> None:
    # Go's strconv.IsPrint decides what enters a value: control chars and NBSP vanish.
    assert scan_commands('SYSTEM "a\x00b\x1b\u00a0c\td"\n') == [("system", "abc\td")]


def test_a_value_ends_where_its_quotes_close_at_a_line_break() -> None:
    # The closing quotes followed by more text do not end the value; the line break does.
    assert scan_commands('SYSTEM """a""" b\nc"""\n') == [("system", 'a""" b\nc')]
    assert scan_commands('SYSTEM """a"""\nTEMPLATE x\n') == [("system", "a"), ("template", "x")]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("FROM m\nBOGUS x\n", "line 2: unknown command 'BOGUS'"),
        ('FROM m\nSYSTEM """open\n', "unterminated quoted value"),
        ("FROM m\nMESSAGE tool hi\n", "MESSAGE role 'tool'"),
        ("FROM m\nPARAMETER st-op x\n", "PARAMETER name"),
        ("SYSTEM hi\n", "no FROM line"),
        ("FROM a\nFROM b\n", "2 FROM lines"),
        ("FROM m\nSYSTEM\n", "invalid command character"),
    ],
)
def test_parse_errors_are_one_line_with_a_hint(text: str, match: str) -> None:
    with pytest.raises(ModelfileError, match=re.escape(match)) as info:
        parse_modelfile(text)
    assert "\n" not in str(info.value)
    assert info.value.hint


@pytest.mark.parametrize(
    ("mf", "match"),
    [
        (Modelfile(from_="m", template='a"""\nb'), "three double quotes followed by a line break"),
        (Modelfile(from_="m", system="bell\x07"), "U+0007"),
        (Modelfile(from_="m", parameters=(("bad name", "1"),)), "invalid PARAMETER name"),
        (Modelfile(from_="m", parameters=(("template", "1"),)), "collides"),
        (Modelfile(from_="m", messages=(("tool", "x"),)), "MESSAGE role 'tool'"),
        (Modelfile(from_="m", header_comment="a\rb"), "carriage return"),
    ],
)
def test_render_refuses_what_ollama_would_misread(mf: Modelfile, match: str) -> None:
    with pytest.raises(ModelfileError, match=re.escape(match)):
        render_modelfile(mf)


def test_generation_config_maps_to_ollama_parameter_names() -> None:
    config = {
        "temperature": 0.6,
        "top_p": 0.95,
        "top_k": 20,
        "min_p": 0.0,
        "repetition_penalty": 1.05,
        "max_new_tokens": 512,
        "bos_token_id": 1,
    }
    assert parameters_from_generation_config(config) == (
        ("temperature", "0.6"),
        ("top_p", "0.95"),
        ("top_k", "20"),
        ("min_p", "0"),
        ("repeat_penalty", "1.05"),
    )
    assert parameters_from_generation_config({"do_sample": False}) == (("temperature", "0"),)
    with pytest.raises(ModelfileError, match="not a number"):
        parameters_from_generation_config({"top_p": "high"})


def test_num_ctx_and_stop_builders() -> None:
    assert num_ctx_parameter(4096) == ("num_ctx", "4096")
    with pytest.raises(ModelfileError):
        num_ctx_parameter(0)
    stops = stop_parameters(["<|im_end|>", "", "User:", "<|im_end|>"])
    assert stops == (("stop", "<|im_end|>"), ("stop", "User:"))
    text = render_modelfile(Modelfile(from_="m", parameters=stops))
    assert parse_modelfile(text).parameter_values("stop") == ["<|im_end|>", "User:"]
