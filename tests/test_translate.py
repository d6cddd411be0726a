"""The translator generalises: templates written here, never seen before, come out verified."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.chat_template import (
    TemplateSource,
    load_probes,
    load_template_source,
    translate_template,
)
from deploy_to_ollama.errors import (
    InputError,
    TemplateNotFoundError,
    TemplateSyntaxError,
    TemplateTranslationError,
)

# An invented format with a default system prompt, stripped contents and its own markers.
INVENTED = (
    "{{ bos_token }}{% if messages[0].role == 'system' %}{% set sys = messages[0].content %}"
    "{% set rest = messages[1:] %}{% else %}{% set sys = 'You are Zed, a careful helper.' %}"
    "{% set rest = messages %}{% endif %}"
    "<|turn|>system: {{ sys | trim }}<|turn_end|>\n"
    "{% for m in rest %}<|turn|>{{ m.role }}: {{ m.content | trim }}"
    "{% if not loop.last or m.role != 'assistant' %}<|turn_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|turn|>assistant: {% endif %}"
)

# System prompt folded into the first user turn, Llama-2 style, with no end marker for users.
FOLDED = (
    "{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}"
    "{% if m.role == 'user' %}[Q] {% if loop.index0 == 1 and messages[0].role == 'system' %}"
    "(({{ messages[0].content }}))\n{% endif %}{{ m.content }} [/Q]"
    "{% else %} {{ m.content }}{{ eos_token }}{% endif %}{% endfor %}"
)


def _source(template: str, **kw: Any) -> TemplateSource:
    return TemplateSource(template=template, origin=Path("t.jinja"), kind="jinja", **kw)


def test_invented_format_is_verified_with_default_system_and_stops() -> None:
    result = translate_template(_source(INVENTED, bos_token="<s>", eos_token="</s>"))
    assert result.verified, [p for p in result.report.probes if p.status == "differs"]
    assert result.system == "You are Zed, a careful helper."
    assert ".Messages" in result.template
    assert "<|turn_end|>" in result.stop
    assert all(stop.strip() == stop and stop for stop in result.stop)


def test_folded_system_template_is_verified() -> None:
    result = translate_template(_source(FOLDED, bos_token="<s>", eos_token="</s>"))
    assert result.report.public_verified
    assert "[Q]" in result.stop and "</s>" in result.stop


def test_bos_is_left_to_the_tokenizer_and_double_bos_warned() -> None:
    result = translate_template(
        _source(INVENTED, bos_token="<s>", eos_token="</s>", add_bos_token=True)
    )
    assert result.verified
    assert "<s>" not in result.template
    assert any("double BOS" in w for w in result.warnings)
    assert "<s>" not in result.stop


def test_bos_is_kept_when_the_tokenizer_does_not_add_it() -> None:
    result = translate_template(
        _source(INVENTED, bos_token="<s>", eos_token="</s>", add_bos_token=False)
    )
    assert result.template.startswith("<s>")
    assert all(p.exact for p in result.report.probes if p.status == "match")


def test_template_raising_on_every_probe_is_bad_input() -> None:
    with pytest.raises(TemplateTranslationError, match="every probe"):
        translate_template(_source("{{ raise_exception('no') }}"))


def test_jinja_syntax_error_is_bad_input() -> None:
    with pytest.raises(TemplateSyntaxError, match="line 1"):
        translate_template(_source("{% for m in messages %}{{ m.content }"))


# --------------------------------------------------------------------------- sources


def test_model_dir_source_reads_tokens_and_generation_config(tmp_path: Path) -> None:
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "chat_template": INVENTED,
                "bos_token": {"content": "<s>"},
                "eos_token": "</s>",
                "add_bos_token": True,
                "added_tokens_decoder": {
                    "1": {"content": "<s>"},
                    "2": {"content": "</s>"},
                    "7": {"content": "<|turn_end|>"},
                },
            }
        )
    )
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 7]}))
    source = load_template_source(tmp_path)
    assert source.bos_token == "<s>" and source.add_bos_token is True
    assert source.stop_tokens == ("</s>", "<|turn_end|>")


def test_chat_template_jinja_wins_over_tokenizer_config(tmp_path: Path) -> None:
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "old"}))
    (tmp_path / "chat_template.jinja").write_text(FOLDED)
    assert load_template_source(tmp_path).template == FOLDED


def test_missing_template_names_the_files_looked_for(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(TemplateNotFoundError, match=r"chat_template\.jinja.*tokenizer_config"):
        load_template_source(tmp_path)


def test_non_utf8_template_is_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "t.jinja"
    path.write_bytes(b"\xff{{ x }}")
    with pytest.raises(InputError, match="not UTF-8"):
        load_template_source(path)


def test_bare_jinja_takes_bos_eos_flags(tmp_path: Path) -> None:
    path = tmp_path / "t.jinja"
    path.write_text(INVENTED)
    source = load_template_source(path, bos="<s>", eos="</s>")
    assert (source.bos_token, source.eos_token) == ("<s>", "</s>")
    assert "</s>" in source.stop_tokens


def _write_gguf(path: Path, template: str | None) -> None:
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(["<unk>", "<s>", "</s>", "<|turn_end|>", "a"])
    writer.add_token_types([2, 3, 3, 3, 1])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_eot_token_id(3)
    writer.add_add_bos_token(True)
    if template is not None:
        writer.add_chat_template(template)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_source_reads_template_and_token_metadata(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    _write_gguf(path, INVENTED)
    source = load_template_source(path)
    assert source.template == INVENTED
    assert (source.bos_token, source.eos_token, source.add_bos_token) == ("<s>", "</s>", True)
    assert source.stop_tokens == ("</s>", "<|turn_end|>")
    assert translate_template(source).verified


def test_gguf_without_chat_template_is_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    _write_gguf(path, None)
    with pytest.raises(TemplateNotFoundError, match=r"tokenizer\.chat_template"):
        load_template_source(path)


# --------------------------------------------------------------------------- Go as oracle


def test_real_go_renders_our_templates_like_transformers(go_oracle: Any) -> None:
    """Our emitted templates (trim loops, break, range over int) run the same in Go itself."""
    from deploy_to_ollama.chat_template.prompt_diff import strip_bos
    from support.go_oracle import to_ollama_api_messages

    cases, expected = [], []
    probes = {probe.id: probe for probe in load_probes()}
    for template in (INVENTED, FOLDED):
        source = _source(template, bos_token="<s>", eos_token="</s>")
        result = translate_template(source)
        for checked in result.report.probes:
            if checked.status == "skipped":
                continue
            probe = probes[checked.probe]
            case = {
                "kind": "ollama",
                "template": result.template,
                "messages": to_ollama_api_messages(list(probe.messages)),
                "system": result.system or "",
            }
            cases.append(case)
            expected.append(checked)
    assert sum(c.status == "match" for c in expected) >= 25
    assert any(c.probe == "tool_call_and_result" and c.status == "match" for c in expected)
    for checked, go in zip(expected, go_oracle.run(cases), strict=True):
        assert not go.failed, (checked.probe, go.error, go.parse_error)
        assert go.output == checked.actual, checked.probe
        if checked.status == "match":
            exp, act = strip_bos(checked.expected or "", go.output, "<s>")
            assert exp == act, checked.probe
