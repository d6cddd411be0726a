"""Run stage: a streaming multi-turn chat with a registered Ollama model.

The session keeps the history and understands ``/system``, ``/reset`` and ``/exit``; it yields
events (text chunks, a final answer with tokens per second, notices) and never prints.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .ollama_client import ChatResponse, OllamaClient

logger = logging.getLogger(__name__)

#: Words that end the interactive chat (``/bye`` is what ``ollama run`` uses).
EXIT_COMMANDS = frozenset({"/exit", "/bye", "/quit"})
HELP_TEXT = (
    "/system TEXT  set the system prompt (empty: remove it) and start over\n"
    "/reset        forget the conversation (keeps the system prompt)\n"
    "/exit         leave (also /bye, Ctrl-D)"
)


@dataclass(frozen=True, slots=True)
class ChatStats:
    """Ollama's counters for one answer."""

    eval_count: int
    """Tokens generated."""
    eval_duration_ns: int
    prompt_eval_count: int
    """Prompt tokens Ollama evaluated (0 when its cache already held them)."""
    done_reason: str | None

    @property
    def tokens_per_second(self) -> float | None:
        """Generation speed, from ``eval_count / eval_duration`` as ``ollama run --verbose``."""
        if self.eval_duration_ns <= 0:
            return None
        return self.eval_count / (self.eval_duration_ns / 1e9)


@dataclass(frozen=True, slots=True)
class ChatChunk:
    """A piece of the answer as it streams."""

    text: str


@dataclass(frozen=True, slots=True)
class ChatDone:
    """The whole answer, once the stream ended."""

    answer: str
    stats: ChatStats


@dataclass(frozen=True, slots=True)
class ChatNotice:
    """The reply to a slash command."""

    kind: Literal["system", "reset", "exit", "help", "unknown"]
    message: str


ChatEvent = ChatChunk | ChatDone | ChatNotice


@dataclass
class ChatSession:
    """A conversation with one Ollama model.

    Args:
        model: the Ollama model name.
        host: server URL (``OLLAMA_HOST`` form); default ``127.0.0.1:11434``.
        system: system prompt; None keeps the model's own SYSTEM.
        options: Ollama options for every answer (``temperature``, ``seed``, ``num_predict``).

    Raises:
        InvalidHostError: ``host`` is not an address (exit 2).
    """

    model: str
    host: str | None = None
    system: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    history: list[dict[str, str]] = field(default_factory=list)
    finished: bool = False

    def __post_init__(self) -> None:
        self.client = OllamaClient(self.host)
        self.host = self.client.host

    @property
    def messages(self) -> list[dict[str, str]]:
        """What the next request sends before the new user turn."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + [dict(m) for m in self.history]

    def reset(self) -> None:
        """Forget the conversation; the system prompt stays."""
        self.history.clear()

    def ask(self, text: str) -> Iterator[ChatChunk | ChatDone]:
        """Send a user turn and stream the answer.

        The turn and the answer join the history only once the answer is complete, so an
        interrupted answer (Ctrl-C, dropped server) leaves the history as it was.

        Raises:
            ModelNotFoundError: the model does not exist on the server (exit 1).
            OllamaUnavailableError: the server cannot be reached.
            DeployError: the server answered with another error.
        """
        messages = [*self.messages, {"role": "user", "content": text}]
        parts: list[str] = []
        final: ChatResponse | None = None
        for part in self.client.chat_stream(self.model, messages, options=self.options):
            piece = part.message.content or ""
            if piece:
                parts.append(piece)
                yield ChatChunk(piece)
            if part.done:
                final = part
        answer = "".join(parts)
        self.history += [
            {"role": "user", "content": text},
            {"role": "assistant", "content": answer},
        ]
        yield ChatDone(answer=answer, stats=_stats(final))

    def handle(self, line: str) -> Iterator[ChatEvent]:
        """Act on one line typed by the user: a slash command or a chat turn."""
        text = line.strip()
        if not text:
            return
        if not text.startswith("/"):
            yield from self.ask(line)
            return
        command, _, rest = text.partition(" ")
        if command in EXIT_COMMANDS:
            self.finished = True
            yield ChatNotice("exit", "bye")
        elif command == "/reset":
            self.reset()
            yield ChatNotice("reset", "conversation cleared")
        elif command == "/system":
            self.system = rest.strip() or None
            self.reset()
            message = "system prompt removed" if self.system is None else "system prompt set"
            yield ChatNotice("system", f"{message}; conversation cleared")
        elif command in ("/help", "/?"):
            yield ChatNotice("help", HELP_TEXT)
        else:
            yield ChatNotice("unknown", f"unknown command {command}; /help lists them")


def _stats(final: ChatResponse | None) -> ChatStats:
    if final is None:
        return ChatStats(0, 0, 0, None)
    return ChatStats(
        eval_count=int(final.eval_count or 0),
        eval_duration_ns=int(final.eval_duration or 0),
        prompt_eval_count=int(final.prompt_eval_count or 0),
        done_reason=final.done_reason,
    )
