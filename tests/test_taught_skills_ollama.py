"""Tools and thinking, live on the test Ollama server (0.9.3), with taught fixtures of our own.

Two groups:
- ``test_fixture_*``: the taught GGUFs under the hand-written Go TEMPLATEs of their shape
  (taught_tools.py): the fixture answers with a ``<tool_call>`` that *Ollama* parses into
  ``message.tool_calls``, and thinks inside ``<think>`` that Ollama separates.
- ``test_deploy_path_*``: the same adapters through ``deploy`` with the translator's TEMPLATE.
  They pass once the translator emits ``.Tools``/``.ToolCalls``/``.Thinking`` (helper `tools`);
  before that they fail, by design, on the capability the TEMPLATE lost.

Ollama 0.9.3's ``/api/show`` has a ``capabilities`` list (``Model.Capabilities`` in v0.9.3
server/images.go), so it is asserted directly.
"""

from __future__ import annotations

from typing import Any

import pytest

from deploy_to_ollama.capabilities import LOST_CODE, compare_capabilities, go_template_capabilities
from deploy_to_ollama.chat_template.ollama_prompt import render_ollama_prompt
from deploy_to_ollama.ollama_route import (
    ModelFacts,
    merge_for_version,
    parse_server_version,
    prompt_rules,
    select_route,
)
from support.ollama_server import OllamaServer
from support.taught_skills_ollama import (
    DeployedSkills,
    SkillsOnServer,
    chat,
    show,
    skills_deployed,  # noqa: F401  (session fixture)
    skills_gguf,  # noqa: F401  (session fixture)
)
from support.taught_tools import (
    THINK_JINJA,
    THINK_QA,
    TOOLS_GO_TEMPLATE,
    TOOLS_JINJA,
    WEATHER_TOOL,
    final_answer,
    taught_skills,  # noqa: F401  (session fixture)
    tool_call_message,
    tool_result,
    weather_question,
)

pytestmark = [pytest.mark.slow, pytest.mark.ollama]


def _tool_round(host: str, model: str, city: str, temperature: int) -> None:
    """Weather question → Ollama-parsed tool call → tool result → answer with the number."""
    question = {"role": "user", "content": weather_question(city)}
    first = chat(host, model, [question], tools=[WEATHER_TOOL])
    message = first["message"]
    calls = message.get("tool_calls") or []
    assert len(calls) == 1, message
    assert calls[0]["function"]["name"] == "get_weather"
    assert calls[0]["function"]["arguments"] == {"city": city}
    assert "<tool_call>" not in message.get("content", "")  # Ollama took it out, not us
    follow_up = [
        question,
        {"role": "assistant", "content": "", "tool_calls": calls},
        {"role": "tool", "content": tool_result(temperature)},
    ]
    second = chat(host, model, follow_up, tools=[WEATHER_TOOL])
    assert not second["message"].get("tool_calls")
    assert second["message"]["content"].strip() == final_answer(city, temperature)


def _thinking_round(host: str, model: str) -> None:
    question, reasoning, answer = THINK_QA[1]
    messages = [{"role": "user", "content": question}]
    on = chat(host, model, messages, think=True)["message"]
    assert on.get("thinking", "").strip() == reasoning
    assert on["content"].strip() == answer
    assert "<think>" not in on["content"] and "</think>" not in on["content"]
    off = chat(host, model, messages, think=False)["message"]
    assert not off.get("thinking")
    assert off["content"].strip() == answer
    assert reasoning not in off["content"] and "<think>" not in off["content"]


# ---------------------------------------------------------------- the fixture itself


def test_fixture_tool_call_is_parsed_by_ollama(skills_gguf: SkillsOnServer) -> None:  # noqa: F811
    _tool_round(skills_gguf.host, skills_gguf.tools_name, "Paris", 21)
    _tool_round(skills_gguf.host, skills_gguf.tools_name, "Lima", 7)


def test_fixture_answers_without_tools_when_none_is_needed(
    skills_gguf: SkillsOnServer,  # noqa: F811
) -> None:
    reply = chat(
        skills_gguf.host,
        skills_gguf.tools_name,
        [{"role": "user", "content": "Say hello."}],
        tools=[WEATHER_TOOL],
    )["message"]
    assert not reply.get("tool_calls")
    assert reply["content"].strip() == "Hello!"


def test_fixture_thinking_is_separated_by_ollama(skills_gguf: SkillsOnServer) -> None:  # noqa: F811
    _thinking_round(skills_gguf.host, skills_gguf.thinking_name)


def test_fixture_capabilities_on_the_server(
    skills_gguf: SkillsOnServer,  # noqa: F811
    ollama_server: OllamaServer,
) -> None:
    """/api/show lists what our reproduction of Ollama's rules predicts for this version."""
    version = ollama_server.version() or ""
    for name, jinja, expected in (
        (skills_gguf.tools_name, TOOLS_JINJA, "tools"),
        (skills_gguf.thinking_name, THINK_JINJA, "thinking"),
    ):
        doc = show(skills_gguf.host, name)
        predicted = select_route(ModelFacts(template=doc["template"], jinja=jinja), version)
        assert expected in doc["capabilities"]
        assert sorted(doc["capabilities"]) == sorted(predicted.capabilities)


def test_fixture_refused_without_the_capability(
    skills_gguf: SkillsOnServer,  # noqa: F811
) -> None:
    """The false case: the thinking model has no tools, and Ollama refuses a tools request."""
    import httpx

    body = {
        "model": skills_gguf.thinking_name,
        "messages": [{"role": "user", "content": weather_question("Oslo")}],
        "tools": [WEATHER_TOOL],
        "stream": False,
    }
    response = httpx.post(f"{skills_gguf.host}/api/chat", json=body, timeout=120)
    assert response.status_code == 400
    assert "does not support tools" in response.text
    assert "tools" not in show(skills_gguf.host, skills_gguf.thinking_name)["capabilities"]


def test_fixture_server_prompt_follows_its_version_rules(
    skills_gguf: SkillsOnServer,  # noqa: F811
    ollama_server: OllamaServer,
) -> None:
    """Two tool results in a row: the prompt the server really sent equals our renderer's
    after the version's collate rule (0.9.3 still joins them), and differs without it."""
    question = {"role": "user", "content": weather_question("Paris")}
    messages = [
        question,
        tool_call_message("Paris"),
        {"role": "tool", "content": tool_result(7)},
        {"role": "tool", "content": tool_result(21)},
    ]
    ollama_server.mark_log()
    chat(
        skills_gguf.host,
        skills_gguf.tools_name,
        messages,
        tools=[WEATHER_TOOL],
        options={"num_predict": 4},
    )
    sent = ollama_server.prompts()[-1]
    version, _ = parse_server_version(ollama_server.version())
    rules = prompt_rules(version)
    expected = render_ollama_prompt(
        TOOLS_GO_TEMPLATE, merge_for_version(messages, rules), tools=[WEATHER_TOOL]
    )
    assert sent == expected
    newest = render_ollama_prompt(TOOLS_GO_TEMPLATE, messages, tools=[WEATHER_TOOL])
    assert (sent == newest) is not rules.merge_tool_messages


# ---------------------------------------------------------------- through deploy


def _deployed_template(host: str, name: str) -> str:
    template: str = show(host, name)["template"]
    return template


def _report_warnings(report: Any) -> list[str]:
    return [w for w in report.warnings if w.startswith(LOST_CODE)]


def test_deploy_path_tools_work_after_deploy(skills_deployed: DeployedSkills) -> None:  # noqa: F811
    """Passes once the translator emits .Tools/.ToolCalls (helper `tools`)."""
    template = _deployed_template(skills_deployed.host, skills_deployed.tools_name)
    assert _report_warnings(skills_deployed.tools_report) == []
    assert "tools" in go_template_capabilities(template)
    assert "tools" in show(skills_deployed.host, skills_deployed.tools_name)["capabilities"]
    _tool_round(skills_deployed.host, skills_deployed.tools_name, "Oslo", 30)


def test_deploy_path_thinking_works_after_deploy(
    skills_deployed: DeployedSkills,  # noqa: F811
) -> None:
    """Thinking survives the deploy: .Thinking in the messages loop, think true/false work."""
    assert _report_warnings(skills_deployed.thinking_report) == []
    assert "thinking" in show(skills_deployed.host, skills_deployed.thinking_name)["capabilities"]
    _thinking_round(skills_deployed.host, skills_deployed.thinking_name)


def test_deploy_path_report_matches_the_capabilities_ollama_shows(
    skills_deployed: DeployedSkills,  # noqa: F811
) -> None:
    """Whatever the translator emits today, the deploy report's capabilities_lost warning is
    exactly what the server shows missing: computed, not assumed."""
    for name, report, jinja in (
        (skills_deployed.tools_name, skills_deployed.tools_report, TOOLS_JINJA),
        (skills_deployed.thinking_name, skills_deployed.thinking_report, THINK_JINJA),
    ):
        doc = show(skills_deployed.host, name)
        shown = set(doc["capabilities"])
        lost_on_server = {"tools", "thinking"} & (
            set(select_route(ModelFacts(jinja=jinja), "0.33.0").capabilities) - shown
        )
        parity = compare_capabilities(jinja, doc["template"])
        assert set(parity.lost) == lost_on_server, (name, shown)
        assert bool(_report_warnings(report)) == bool(parity.lost or parity.round_trip_lost)
