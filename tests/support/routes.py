"""Chat templates and settings the route tests share (``test_routing*``, ``test_doctor_routes``)."""

from __future__ import annotations

from support.ollama_server import TINY_CHAT_TEMPLATE

#: Ollama's substring rule grants the Jinja ``tools``; it prints them (their count) only after a
#: system message, which no inert ``.Tools`` may claim (``tool_inert``: one that never prints
#: them keeps tools) and no TEMPLATE reading reproduces, so our TEMPLATE has no ``.Tools``: it
#: is verified and lacks a capability (capabilities_lost).
TOOLS_AFTER_SYSTEM = (
    "{% if tools and messages[0]['role'] == 'system' %}{{ tools | length }}{% endif %}"
)
LOST_TOOLS = TINY_CHAT_TEMPLATE + TOOLS_AFTER_SYSTEM
#: ChatML behind a long comment: it renders like ChatML, but its text is at edit distance >= 100
#: from every library template, so ``ollama create`` attaches none (``detectChatTemplate``).
OWN_FORMAT = (
    "{#- A chat template of the deploy-to-ollama route tests. It renders ChatML; this comment "
    "only moves it away from every entry of Ollama's template library, so that create keeps "
    "the model without a TEMPLATE. -#}" + TINY_CHAT_TEMPLATE
)
#: llama.cpp passes ``enable_thinking``; transformers leaves it undefined: native differs.
NATIVE_DIFFERS = OWN_FORMAT + "{% if enable_thinking is defined %}<think>\n{% endif %}"


def toolchain_env() -> dict[str, str]:
    """The variables that find the shared toolchain (llama-server built by setup)."""
    from support.llama_cpp import _START_ENV, shared_cache_dir

    env = {"DTO_CACHE_DIR": str(shared_cache_dir())}
    if _START_ENV.get("DTO_LLAMA_CPP_DIR"):
        env["DTO_LLAMA_CPP_DIR"] = _START_ENV["DTO_LLAMA_CPP_DIR"]
    return env
