"""The render-only llama-server gives every case it takes the prompt Ollama's server gives.

``chat_template.native_servers`` sends most cases to a llama-server started with
``--skip-chat-parsing`` (no per-request template analysis) and keeps the rest on the server as
Ollama 0.30+ runs it. The proof stays about Ollama's prompt only if both render alike: here
every case of the corpus templates (one per family; all of them under ``slow``) is rendered by
a plain ``--jinja`` server and by the pair, and must come back the same (prompt, or refusal).
Real llama-server of the shared toolchain, stub GGUFs; the corpus tests skip without ../shared.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.chat_template.native import native_cases, request_body
from deploy_to_ollama.chat_template.native_servers import (
    NativeRenderer,
    start_native_renderer,
)
from deploy_to_ollama.chat_template.source import TemplateSource
from deploy_to_ollama.chat_template.thinking import switch_name
from deploy_to_ollama.gguf.llama_server import (
    ApplyTemplateError,
    ChatTemplateRejectedError,
    LlamaServer,
    start_llama_server,
)
from deploy_to_ollama.gguf.template_gguf import write_template_gguf
from support.ollama_server import TINY_CHAT_TEMPLATE
from support.shared import CHAT_TEMPLATES_DIR, corpus_records, require_shared

#: What makes llama.cpp 0c1e570 use its Gemma 4 handler (``common_chat_try_specialized_template``).
GEMMA4_MARKER = "'<|tool_call>call:'"
#: Renders reasoning and reads the thinking switch: llama-server turns thinking on by default.
THINKS = (
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role == 'assistant' and "
    "m.reasoning_content %}<think>{{ m.reasoning_content }}</think>{% endif %}{{ m.content }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking %}<think>{% else %}<think></think>{% endif %}{% endif %}"
)


def _outcome(server: LlamaServer | NativeRenderer, body: dict[str, Any]) -> str:
    try:
        return server.apply_template(body)
    except ApplyTemplateError as err:
        return f"refused: {err}"


def _source(record: dict[str, Any]) -> TemplateSource:
    return TemplateSource(
        template=record["jinja"], origin=Path(record.get("_file", "t.jinja")), kind="jinja",
        bos_token=record.get("bos_token") or "<s>", eos_token=record.get("eos_token") or "</s>",
    )  # fmt: skip


def compare_both_ways(binary: Path, record: dict[str, Any], tmp: Path) -> tuple[list[str], int]:
    """(cases whose outcome differs between Ollama's server and the pair, cases rendered by
    the render-only server) for one template."""
    source = _source(record)
    tmp.mkdir(parents=True, exist_ok=True)
    model = write_template_gguf(
        tmp / "t.gguf", source.template, bos=source.bos_token or "", eos=source.eos_token or ""
    )
    try:
        plain = start_llama_server(binary, model, tmp / "logs")
    except ChatTemplateRejectedError:
        with pytest.raises(ChatTemplateRejectedError):  # the pair refuses it the same way
            start_native_renderer(binary, model, tmp / "logs")
        return [], 0
    differs, routed = [], 0
    with plain, start_native_renderer(binary, model, tmp / "logs") as pair:
        for case in native_cases(source.template, switch=switch_name(source)):
            body = request_body(case)
            routed += pair.renders_alike(body)
            if _outcome(plain, body) != _outcome(pair, body):
                differs.append(case.id)
    return differs, routed


def _one_per_family() -> list[dict[str, Any]]:
    chosen: dict[str, dict[str, Any]] = {}
    for record in corpus_records():
        chosen.setdefault(record["family"], record)
    return list(chosen.values())


def _check_corpus(binary: Path, records: list[dict[str, Any]], tmp: Path) -> None:
    failures, routed, gemma4 = {}, {}, {}
    for index, record in enumerate(records):
        differs, routed[record["_file"]] = compare_both_ways(binary, record, tmp / str(index))
        if differs:
            failures[record["_file"]] = differs
        if GEMMA4_MARKER in record["jinja"]:
            gemma4[record["_file"]] = routed[record["_file"]]
    assert not failures, json.dumps(failures, indent=1)
    print(f"render-only server used for {sum(n > 0 for n in routed.values())}/{len(records)} "
          f"templates, {sum(routed.values())} cases")  # fmt: skip
    # The fast path is really taken (most templates), and never for a specialised one.
    assert sum(n > 0 for n in routed.values()) > len(records) // 2, routed
    assert gemma4, "the corpus has Gemma 4 templates with their own handler in llama.cpp"
    assert not any(gemma4.values()), gemma4


def test_corpus_families_render_alike_on_both_servers(
    llama_server_binary: Path, tmp_path: Path
) -> None:
    require_shared(CHAT_TEMPLATES_DIR)
    _check_corpus(llama_server_binary, _one_per_family(), tmp_path)


@pytest.mark.slow
def test_every_corpus_template_renders_alike_on_both_servers(
    llama_server_binary: Path, tmp_path: Path
) -> None:
    require_shared(CHAT_TEMPLATES_DIR)
    _check_corpus(llama_server_binary, corpus_records(), tmp_path)


def test_the_guards_are_needed_and_taken(llama_server_binary: Path, tmp_path: Path) -> None:
    """Sent straight to the render-only server, a continued assistant message comes out
    differently; through the pair it matches Ollama's server, and so does the thinking default."""
    model = write_template_gguf(tmp_path / "t.gguf", THINKS, bos="<s>", eos="<|im_end|>")
    prefill = {"messages": [{"role": "user", "content": "Hi"},
                            {"role": "assistant", "content": "Hel"}]}  # fmt: skip
    plain_turn = {"messages": [{"role": "user", "content": "Hi"}]}
    with (
        start_llama_server(llama_server_binary, model, tmp_path / "a") as plain,
        start_native_renderer(llama_server_binary, model, tmp_path / "b") as pair,
    ):
        assert pair.render_only is not None and pair.thinking  # auto-parser path, thinking on
        assert pair.renders_alike(plain_turn) and not pair.renders_alike(prefill)
        for body in (prefill, plain_turn):
            assert _outcome(pair, body) == _outcome(plain, body)
        assert _outcome(pair.render_only, prefill) != _outcome(plain, prefill)
        assert _outcome(plain, prefill).endswith("Hel")
        assert _outcome(plain, plain_turn).endswith("<think>")


def test_a_template_with_its_own_handler_stays_on_the_exact_server(
    llama_server_binary: Path, tmp_path: Path
) -> None:
    """llama.cpp picks a specialised handler by markers in the source (here Gemma 4's): its
    prompt is not the plain render, so nothing goes to the render-only server."""
    marked = "{#- " + GEMMA4_MARKER + " -#}" + TINY_CHAT_TEMPLATE
    model = write_template_gguf(tmp_path / "t.gguf", marked, bos="<s>", eos="</s>")
    with start_native_renderer(llama_server_binary, model, tmp_path) as pair:
        assert pair.render_only is None
        assert not pair.renders_alike({"messages": [{"role": "user", "content": "Hi"}]})
