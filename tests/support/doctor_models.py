"""Fixtures for the doctor tests: tiny ChatML GGUFs with chosen BOS/EOS metadata and reference
tokenizer folders (plain ChatML, ChatML with a default system prompt and generation_config)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from support.ollama_server import TINY_OLLAMA_TEMPLATE, write_tiny_gguf, write_tiny_tokenizer

DEFAULT_SYSTEM = "You are Tiny, a helpful assistant."

#: ChatML with a default system prompt when none is given (Qwen2.5-style).
DEFAULT_SYSTEM_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\n"
    + DEFAULT_SYSTEM
    + "<|im_end|>\\n' }}{% endif %}"
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

#: Llama-3's chat format: a TEMPLATE of another model family for the ChatML tiny model.
LLAMA3_TEMPLATE = (
    "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
    "{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
)

#: The correct TEMPLATE for the tiny ChatML reference (re-exported for the tests).
CHATML_TEMPLATE = TINY_OLLAMA_TEMPLATE


def write_chat_gguf(
    path: Path,
    *,
    eos: str = "<|im_end|>",
    bos: str = "<|endoftext|>",
    add_bos: bool = False,
    chat_template: str | None = None,
    seed: int = 0,
) -> Path:
    """A random one-layer llama GGUF (hidden 64, 2 heads: width 32 runs on the test server)."""
    # write_tiny_gguf reads None as "its default template"; here None means no template at all.
    return write_tiny_gguf(
        path,
        seed=seed,
        chat_template="" if chat_template is None else chat_template,
        bos=bos,
        eos=eos,
        add_bos=add_bos,
        name="dto-doctor-tiny",
    )


def write_reference_dir(
    folder: Path,
    *,
    chat_template: str | None = None,
    generation_config: dict[str, float] | None = None,
) -> Path:
    """The tiny ChatML tokenizer, optionally with another chat template and generation_config."""
    write_tiny_tokenizer(folder)
    if chat_template is not None:
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["chat_template"] = chat_template
        config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        jinja = folder / "chat_template.jinja"
        if jinja.exists():
            jinja.write_text(chat_template, encoding="utf-8")
    if generation_config is not None:
        (folder / "generation_config.json").write_text(json.dumps(generation_config))
    return folder


@pytest.fixture(scope="session")
def chatml_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Reference folder: plain ChatML, no default system, no generation_config."""
    return write_reference_dir(tmp_path_factory.mktemp("ref_chatml"))


@pytest.fixture(scope="session")
def system_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Reference folder: ChatML with a default system prompt, generation_config temperature 0.7."""
    return write_reference_dir(
        tmp_path_factory.mktemp("ref_system"),
        chat_template=DEFAULT_SYSTEM_TEMPLATE,
        generation_config={"temperature": 0.7, "top_p": 0.8},
    )


@pytest.fixture(scope="session")
def doctor_gguf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GGUF variants: ``plain`` (eos <|im_end|>), ``eos_endoftext`` (<|im_end|> is not EOG),
    ``add_bos`` (llama.cpp prepends <|endoftext|>), ``embedded`` (carries the ChatML Jinja),
    ``embedded_system`` (carries ChatML with a default system prompt)."""
    from support.ollama_server import TINY_CHAT_TEMPLATE

    folder = tmp_path_factory.mktemp("doctor_ggufs")
    write_chat_gguf(folder / "plain.gguf")
    write_chat_gguf(folder / "eos_endoftext.gguf", eos="<|endoftext|>", seed=1)
    write_chat_gguf(folder / "add_bos.gguf", add_bos=True, seed=2)
    write_chat_gguf(folder / "embedded.gguf", chat_template=TINY_CHAT_TEMPLATE, seed=3)
    write_chat_gguf(folder / "embedded_system.gguf", chat_template=DEFAULT_SYSTEM_TEMPLATE, seed=4)
    return folder


def copy_gguf(folder: Path, variant: str, dest: Path) -> Path:
    """Copy one GGUF variant into ``dest`` (a test's own folder) and return the copy."""
    dest.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(folder / f"{variant}.gguf", dest / f"{variant}.gguf"))


def _broken(template: str, old: str, new: str) -> str:
    assert old in template
    return template.replace(old, new)


def tools_broken_template() -> str:
    """The taught tools TEMPLATE with the tool result wrapped in another tag: it keeps the
    tools capability (and round trip), so only a rendered tool conversation shows the break."""
    from support.taught_tools import TOOLS_GO_TEMPLATE  # not at import: a pytest plugin module

    return _broken(
        TOOLS_GO_TEMPLATE, "<tool_response>\n{{ .Content }}\n</tool_response>",
        "<tool_result>\n{{ .Content }}\n</tool_result>",
    )  # fmt: skip


def think_broken_template() -> str:
    """The taught thinking TEMPLATE without its think-off switch: thinking capability kept."""
    from support.taught_tools import THINK_GO_TEMPLATE

    return _broken(
        THINK_GO_TEMPLATE,
        "{{ if and $.IsThinkSet (not $.Think) }}<think>\n\n</think>\n\n{{ end }}", "",
    )  # fmt: skip
