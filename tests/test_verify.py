"""The verifier never says `verified` unless both renderers agree on every non-skipped probe."""

from __future__ import annotations

import json
from pathlib import Path

from deploy_to_ollama.chat_template import TemplateSource, load_probes, verify_template

CHATML = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
GO_CHATML = (
    "{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}"
    '<|im_start|>{{ .Role }}\n{{ .Content }}{{ if not (and $last (eq .Role "assistant")) }}'
    '<|im_end|>\n{{ end }}{{ if and $last (ne .Role "assistant") }}<|im_start|>assistant\n'
    "{{ end }}{{ end }}"
)


def _source(template: str = CHATML, **kw: object) -> TemplateSource:
    return TemplateSource(template=template, origin=Path("t"), kind="jinja", **kw)  # type: ignore[arg-type]


def test_equal_templates_verify_modulo_one_leading_bos() -> None:
    report = verify_template(_source(bos_token="<s>"), GO_CHATML)
    assert report.verified
    matches = [p for p in report.probes if p.status == "match"]
    assert matches and not any(p.exact for p in matches)  # the Go side has no BOS


def test_a_wrong_template_differs_with_position_and_snippets() -> None:
    report = verify_template(_source(bos_token=""), GO_CHATML.replace("assistant\n", "bot\n"))
    assert not report.verified and not report.public_verified
    failure = report.first_failure()
    assert failure is not None and failure.position is not None
    assert failure.expected_snippet and failure.actual_snippet
    assert failure.expected_snippet != failure.actual_snippet
    expected, actual = failure.expected or "", failure.actual or ""
    assert expected[: failure.position] == actual[: failure.position]
    assert expected[failure.position] != actual[failure.position]


def test_one_extra_bos_is_forgiven_but_two_are_not() -> None:
    report = verify_template(_source(bos_token="<s>"), "<s><s>" + GO_CHATML)
    assert not report.verified


def test_probes_the_jinja_template_rejects_are_skipped_with_the_reason() -> None:
    alternating = (
        "{% for m in messages %}{% if m.role == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "{{ m.role }}: {{ m.content }}\n{% endfor %}"
    )
    go = "{{ range .Messages }}{{ .Role }}: {{ .Content }}\n{{ end }}"
    report = verify_template(_source(alternating), go)
    skipped = {p.probe: p.reason for p in report.probes if p.status == "skipped"}
    assert "System role not supported" in (skipped["system_user"] or "")
    statuses = {p.probe: p.status for p in report.probes}
    assert statuses["single_user"] == statuses["multi_turn_no_system"] == "match"


def test_merged_same_role_messages_are_an_ollama_limit() -> None:
    report = verify_template(_source(bos_token=""), GO_CHATML)
    consecutive = next(p for p in report.probes if p.probe == "consecutive_user")
    assert consecutive.status == "skipped" and "Ollama limit" in (consecutive.reason or "")


def test_tool_probes_are_skipped_unless_tools_are_translated() -> None:
    report = verify_template(_source(bos_token=""), GO_CHATML)
    tools = [p for p in report.probes if p.probe.startswith("tool")]
    assert tools and all(p.status == "skipped" for p in tools)


def test_a_template_that_fails_in_go_is_a_difference_not_a_crash() -> None:
    report = verify_template(_source(bos_token=""), "{{ .Nope.Deeper | printf }}{{ index 1 }}")
    assert not report.verified
    assert any("TEMPLATE fails" in (p.reason or "") for p in report.probes)


def test_token_level_check_catches_text_equal_but_token_different(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "hi": 1}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    report = verify_template(_source(bos_token="", tokenizer_file=path), GO_CHATML)
    assert report.token_level and report.verified
    assert all(p.token_match for p in report.probes if p.status == "match")


def test_packaged_probes_hold_the_public_suite_and_ours() -> None:
    probes = load_probes()
    public = [p.id for p in probes if p.public]
    assert len(public) == 12
    ours = " ".join(json.dumps(list(p.messages)) for p in probes if not p.public)
    for needle in ("{{ .Prompt }}", '\\"\\"\\"', "<|im_end|>", "tool_calls", "\\u200d"):
        assert needle in ours
    assert any(p.messages[-1]["role"] == "assistant" for p in probes if not p.public)
