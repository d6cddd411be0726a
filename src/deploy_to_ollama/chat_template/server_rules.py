"""Verify for the Ollama version that will serve the TEMPLATE, not only the newest one.

Prompt building differs between releases before the TEMPLATE runs (``ollama_route.
prompt_rules``): up to v0.9.5, ``collate`` joins consecutive tool results into one message
(``"\\n\\n"``), so a TEMPLATE there can never print two results apart as the Jinja does;
before v0.12.4 a request without ``think`` reaches the TEMPLATE as think false, so a
Jinja whose default is thinking off can be matched there (``switched.py``). The
rules in force for one verification travel in a context variable, so that every render the
translator's candidate search makes uses them without threading them through each call.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from itertools import pairwise
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..ollama_route import PromptRules

_RULES: ContextVar[PromptRules | None] = ContextVar("prompt_rules", default=None)
_VERSION: ContextVar[str] = ContextVar("prompt_rules_version", default="")

#: Why a probe with consecutive tool results cannot match on a server that joins them.
JOINED_TOOL_RESULTS = (
    "Ollama {version} joins consecutive tool results into one message (collate, up to "
    "v0.9.5) before the TEMPLATE sees them, so no TEMPLATE can print them apart as the Jinja "
    "template does"
)


@contextmanager
def using_rules(rules: PromptRules | None, version: str = "") -> Iterator[None]:
    """Verify with ``rules`` (None: the newest) inside the block; ``version`` names the
    server in skip reasons."""
    token = _RULES.set(rules)
    label = _VERSION.set(version)
    try:
        yield
    finally:
        _VERSION.reset(label)
        _RULES.reset(token)


@contextmanager
def for_server(version: str | None) -> Iterator[None]:
    """Verify with the prompt-building rules of Ollama ``version`` inside the block (None:
    keep the rules already in force, the newest by default)."""
    if version is None:
        yield
        return
    from ..ollama_route import parse_server_version, prompt_rules

    with using_rules(prompt_rules(parse_server_version(version)[0]), version):
        yield


def current_rules() -> PromptRules | None:
    """The rules set by :func:`using_rules` (None outside: the newest Ollama)."""
    return _RULES.get()


def current_version() -> str | None:
    """The server version set by :func:`for_server` (None outside: the newest Ollama)."""
    return _VERSION.get() or None


def unset_think_on(rules: PromptRules | None) -> bool:
    """Whether a request without ``think`` reaches a thinking TEMPLATE as ``.Think`` true
    under ``rules`` (None: the newest Ollama, where it does)."""
    return rules is None or rules.think_unset_on


def merges_tool_results(rules: PromptRules | None) -> bool:
    """Whether ``rules`` join consecutive tool results."""
    return rules is not None and rules.merge_tool_messages


def has_consecutive_tool_results(messages: Sequence[Mapping[str, Any]]) -> bool:
    """Whether two tool results follow each other.

    >>> has_consecutive_tool_results([{"role": "tool"}, {"role": "tool"}])
    True
    >>> has_consecutive_tool_results([{"role": "tool"}, {"role": "user"}, {"role": "tool"}])
    False
    """
    roles = [m.get("role") for m in messages]
    return any(a == b == "tool" for a, b in pairwise(roles))


def joined_results_limit(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """The skip reason for a conversation the rules in force make unreproducible, if any."""
    if merges_tool_results(current_rules()) and has_consecutive_tool_results(messages):
        return JOINED_TOOL_RESULTS.format(version=_VERSION.get() or "<= 0.9.5")
    return None


__all__ = [
    "JOINED_TOOL_RESULTS",
    "current_rules",
    "current_version",
    "for_server",
    "has_consecutive_tool_results",
    "joined_results_limit",
    "merges_tool_results",
    "unset_think_on",
    "using_rules",
]
