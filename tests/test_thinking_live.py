"""The new thinking TEMPLATE shapes on the real test Ollama server (0.9.3): Ollama gives them
the thinking capability, and the prompts it renders (read from its debug log) are the ones
transformers renders from the Jinja, for think unset, true and false, an earlier reasoned
turn and a ``/no_think`` system flag.

0.9.3 leaves an unset ``think`` false with ``.IsThinkSet`` false (newer servers send true):
the TEMPLATEs test both, so an unset ``think`` is the Jinja's default on either server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.chat_template import TemplateSource, translate_template
from deploy_to_ollama.chat_template.hf_render import render_hf
from deploy_to_ollama.chat_template.thinking import think_kwargs
from support.ollama_server import OllamaServer
from support.taught_skills_ollama import (
    SkillsOnServer,
    _register,
    chat,
    show,
    skills_gguf,  # noqa: F401  (session fixture)
)
from support.taught_tools import taught_skills  # noqa: F401  (session fixture)
from test_thinking_named_tags import FIXED, WORDED
from test_thinking_switches import GLM_LIKE, OPENED_BY_PROMPT, SMOLLM3_FLAGS

pytestmark = [pytest.mark.slow, pytest.mark.ollama]

QUESTION = {"role": "user", "content": "How many r's are in strawberry?"}
EARLIER = [
    {"role": "user", "content": "What is 17 * 3?"},
    {"role": "assistant", "content": "51.", "reasoning_content": "17 * 3 = 51."},
    {"role": "user", "content": "And 17 * 4?"},
]
CASES: list[tuple[list[dict[str, Any]], bool | None]] = [
    ([QUESTION], None),
    ([QUESTION], True),
    ([QUESTION], False),
    (EARLIER, True),
    ([{"role": "system", "content": "Be terse. /no_think"}, QUESTION], None),
]


def _api(message: dict[str, Any]) -> dict[str, Any]:
    """A message as Ollama's API takes it (reasoning in ``thinking``)."""
    out = {k: v for k, v in message.items() if k != "reasoning_content"}
    if "reasoning_content" in message:
        out["thinking"] = message["reasoning_content"]
    return out


@pytest.mark.parametrize(
    "jinja",
    [SMOLLM3_FLAGS, OPENED_BY_PROMPT, GLM_LIKE, WORDED, FIXED],
    ids=["smollm3", "opened", "glm", "named_by_switch", "named_in_prompt"],
)
def test_server_renders_the_thinking_templates_as_the_jinja(
    ollama_server: OllamaServer,
    skills_gguf: SkillsOnServer,  # noqa: F811
    jinja: str,
    request: pytest.FixtureRequest,
) -> None:
    source = TemplateSource(template=jinja, origin=Path("t.jinja"), kind="jinja")
    result = translate_template(source)
    assert result.report.thinking_verified
    name = f"think-shape-{request.node.callspec.id}:latest"
    _register(name, skills_gguf.thinking, result.template, ollama_server.host)
    assert "thinking" in show(ollama_server.host, name)["capabilities"]
    for messages, think in CASES:
        ollama_server.mark_log()
        extra: dict[str, Any] = {"options": {"num_predict": 1}}
        if think is not None:
            extra["think"] = think
        chat(ollama_server.host, name, [_api(m) for m in messages], **extra)
        expected = render_hf(
            jinja, messages, add_generation_prompt=True, kwargs=think_kwargs(source, think=think)
        )
        prompts = ollama_server.prompts()
        assert prompts, ollama_server.log_tail()
        assert prompts[-1] == expected, (messages, think)
