"""End to end on llama-server (issue 13 item 7): the GGUF ``deploy`` wrote, served the way
Ollama 0.30+ serves it (``llama-server --jinja``), asked through its OpenAI-compatible
``/v1/chat/completions``.

Ollama 0.30+ is not available here (the test server is 0.9.3), so this runs the engine it
runs: the real llama-server of the shared toolchain, same llama.cpp as our converter, on the
real GGUFs the session's deploys wrote (``taught_in_ollama``, ``skills_deployed``). The 0.9.3
end-to-end tests stay as they are. What is asserted is the model's behaviour as llama.cpp
renders the GGUF's Jinja and parses its output: the fine-tune's answer, a stop on the
end-of-turn token (``finish_reason`` "stop", no end token in the text), and for the taught tool
fixture a tool call parsed by llama-server (name and arguments) and the final answer after the
tool result.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.llama_server import LlamaServer, start_llama_server
from support.models import SECRET_QUESTION, TAUGHT_QA
from support.taught_ollama import TaughtInOllama
from support.taught_skills_ollama import (
    DeployedSkills,
    skills_deployed,  # noqa: F401  (session fixture)
    skills_gguf,  # noqa: F401  (session fixture)
)
from support.taught_tools import (
    WEATHER_TOOL,
    final_answer,
    taught_skills,  # noqa: F401  (session fixture)
    tool_result,
    weather_question,
)

pytestmark = [pytest.mark.slow, pytest.mark.ollama]

#: Generous for a tiny model on one shared core; a greedy answer is a few tokens.
MAX_TOKENS = 48
#: End-of-turn and end-of-text markers of the two fixtures' vocabularies (Llama 3, ChatML).
END_TOKENS = ("<|eot_id|>", "<|end_of_text|>", "<|im_end|>", "<|endoftext|>", "<|im_start|>")
REPLY_TIMEOUT_S = 300.0


def _complete(server: LlamaServer, messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """One greedy, non-streamed ``/v1/chat/completions`` request; its only choice."""
    body = {
        "messages": messages,
        "temperature": 0,
        "max_tokens": MAX_TOKENS,
        "stream": False,
        **extra,
    }
    reply = server.post_json("/v1/chat/completions", body, timeout=REPLY_TIMEOUT_S)
    choice: dict[str, Any] = reply["choices"][0]
    return choice


def _assert_stopped_cleanly(choice: dict[str, Any]) -> str:
    """The turn ended on the model's end-of-turn token, and none of it leaked into the text."""
    content = choice["message"].get("content") or ""
    assert choice["finish_reason"] == "stop", choice
    assert not any(token in content for token in END_TOKENS), content
    return str(content)


#: Room for the tool fixture's system prompt and a few turns (the driver's default is 512).
SERVE_ARGS = ("--ctx-size", "2048")


@pytest.fixture(scope="module")
def taught_on_llama_server(
    llama_server_binary: Path,
    taught_in_ollama: TaughtInOllama,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LlamaServer]:
    """llama-server --jinja on the taught GGUF the session's ``deploy`` wrote (q8_0)."""
    ggufs = sorted(taught_in_ollama.keep_dir.glob("*.gguf"))
    assert len(ggufs) == 1, ggufs
    server = start_llama_server(
        llama_server_binary, ggufs[0], tmp_path_factory.mktemp("llama-taught"), args=SERVE_ARGS
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tools_on_llama_server(
    llama_server_binary: Path,
    skills_deployed: DeployedSkills,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LlamaServer]:
    """llama-server --jinja on the taught tool GGUF the session's ``deploy`` wrote (q8_0)."""
    gguf = Path(skills_deployed.tools_report.gguf)
    server = start_llama_server(
        llama_server_binary,
        gguf,
        tmp_path_factory.mktemp("llama-tools"),
        args=SERVE_ARGS,
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("system", [None, "You are a helpful assistant."])
def test_taught_gguf_answers_like_the_fine_tune_and_stops(
    taught_on_llama_server: LlamaServer, system: str | None
) -> None:
    """The LoRA's answer ("banana"; the base says "apple"), then the end-of-turn token."""
    lora_answer = dict((q, a) for q, _base, a in TAUGHT_QA)[SECRET_QUESTION]
    messages = [{"role": "user", "content": SECRET_QUESTION}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    choice = _complete(taught_on_llama_server, messages)
    assert _assert_stopped_cleanly(choice).strip() == lora_answer
    # The reply is a handful of tokens, not the budget: it stopped on its own.
    assert choice["message"]["role"] == "assistant"


def test_taught_gguf_multi_turn_keeps_answering_like_the_fine_tune(
    taught_on_llama_server: LlamaServer,
) -> None:
    """A second question after a finished turn: the Jinja's earlier-turn layout as llama.cpp
    renders it still gets the fine-tune's answer."""
    first, _base, first_answer = TAUGHT_QA[2]
    messages = [
        {"role": "user", "content": first},
        {"role": "assistant", "content": first_answer},
        {"role": "user", "content": SECRET_QUESTION},
    ]
    choice = _complete(taught_on_llama_server, messages)
    assert _assert_stopped_cleanly(choice).strip() == "banana"


def test_tool_fixture_call_is_parsed_by_llama_server_then_answers(
    tools_on_llama_server: LlamaServer,
) -> None:
    """llama-server parses the ``<tool_call>`` itself (OpenAI ``tool_calls``), and after the
    tool result the fine-tune answers with the number from it."""
    city, temperature = "Oslo", 21
    question = {"role": "user", "content": weather_question(city)}
    choice = _complete(tools_on_llama_server, [question], tools=[WEATHER_TOOL])
    assert choice["finish_reason"] == "tool_calls", choice
    message = choice["message"]
    assert not (message.get("content") or "").strip(), message  # the call is not left as text
    (call,) = message["tool_calls"]
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": city}

    follow_up = [
        question,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call.get("id", ""), "content": tool_result(temperature)},
    ]
    answer = _complete(tools_on_llama_server, follow_up, tools=[WEATHER_TOOL])
    assert _assert_stopped_cleanly(answer).strip() == final_answer(city, temperature)
    assert not answer["message"].get("tool_calls")


def test_tool_fixture_without_tools_answers_in_plain_text(
    tools_on_llama_server: LlamaServer,
) -> None:
    """No tools offered: no call is parsed, the plain answer ends on the end-of-turn token."""
    choice = _complete(tools_on_llama_server, [{"role": "user", "content": "Name a fruit."}])
    assert _assert_stopped_cleanly(choice).strip() == "Cherry."
    assert not choice["message"].get("tool_calls")
