"""The evaluation text of ``export --measure``: the user's ``--eval-data`` or the packaged text.

``--eval-data FILE`` is either JSONL chat data (``.jsonl``: one ``{"messages": [...]}`` per line,
the fine-tune's own training format), rendered with the model's chat template through
transformers so the measurement sees what the model sees, or plain UTF-8 text. Without it, the
held-out text that ships with the package (``eval_text.txt``: ten short pieces of prose
written for this project, about 3,000 words, under the package's Apache-2.0 licence) is
used. Bad files fail here, before any GGUF is written, with one line that says what to fix.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import InputError, InputNotFoundError

#: The packaged held-out text (a resource of this package).
PACKAGED_TEXT = "eval_text.txt"
#: Keys a chat record may keep its turns under (TRL/OpenAI ``messages``, ShareGPT-style
#: ``conversations`` with ``role``/``content``).
_TURN_KEYS = ("messages", "conversations")


@dataclass(frozen=True, slots=True)
class EvalText:
    """The text to measure on and where it came from (said in the report)."""

    text: str
    source: str
    """``packaged held-out text``, ``FILE (plain text)`` or ``FILE (N conversations, chat
    template, special tokens out)``."""


def packaged_text() -> str:
    """The held-out text that ships with the package."""
    return (resources.files("deploy_to_ollama.gguf") / PACKAGED_TEXT).read_text(encoding="utf-8")


def load_eval_text(path: Path | None, *, tokenizer_dir: Path | None = None,
                   chat_template: str | None = None) -> EvalText:  # fmt: skip
    """Read ``--eval-data`` (or the packaged text when ``path`` is None) into the eval text.

    Args:
        path: the user's file; ``.jsonl`` means chat data, anything else plain text.
        tokenizer_dir: the model's tokenizer (needed to render chat data).
        chat_template: the template the export puts into the GGUF (default: the tokenizer's).

    Raises:
        InputNotFoundError: no such file.
        InputError: empty, not UTF-8, not JSONL where ``.jsonl`` is claimed, or chat data
            without a tokenizer to render it.
    """
    if path is None:
        return EvalText(packaged_text(), "packaged held-out text")
    raw = _read_bytes(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(
            f"--eval-data {path} is not UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start})",
            hint=f"convert it, e.g. iconv -f latin1 -t utf-8 {path} > eval.txt",
        ) from err
    if not text.strip():
        raise InputError(
            f"--eval-data {path} is empty",
            hint="give a text or .jsonl chat file of a few thousand tokens, or drop --eval-data "
            "to use the packaged held-out text",
        )
    if path.suffix.lower() != ".jsonl":
        return EvalText(text, f"{path.name} (plain text)")
    conversations = parse_chat_jsonl(text, path)
    rendered = render_conversations(conversations, tokenizer_dir, chat_template, path)
    source = f"{path.name} ({len(conversations)} conversations, chat template, special tokens out)"
    return EvalText(rendered, source)


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise InputNotFoundError(f"--eval-data {path} does not exist", hint="check the path")
    if path.is_dir():
        raise InputError(f"--eval-data {path} is a folder", hint="give a .jsonl or text file")
    try:
        return path.read_bytes()
    except OSError as err:
        raise InputError(f"--eval-data {path} cannot be read: {err.strerror}",
                         hint="check its permissions") from err  # fmt: skip


def parse_chat_jsonl(text: str, path: Path) -> list[list[dict[str, Any]]]:
    """The conversations of a JSONL chat file, each a list of ``{"role", "content"}`` turns.

    >>> parse_chat_jsonl('{"messages": [{"role": "user", "content": "Hi"}]}\\n', Path("a.jsonl"))
    [[{'role': 'user', 'content': 'Hi'}]]

    Raises:
        InputError: a line is not a JSON object with a list of role/content turns (the message
            names the line).
    """
    records = jsonl_records(
        text,
        what=f"--eval-data {path} is not JSONL",
        hint='one JSON object per line, {"messages": [{"role": ..., "content": ...}]}; '
        "or rename it to .txt to measure on it as plain text",
    )
    return [_turns(record, path, number) for number, record in records]


def jsonl_records(text: str, *, what: str, hint: str) -> Iterator[tuple[int, object]]:
    """(line number, value) of each non-blank line of a JSON Lines text, counted from 1.

    One reader for the JSONL files users give (``--eval-data``, ``--imatrix`` calibration text).

    >>> list(jsonl_records('{"a": 1}\\n\\n[2]\\n', what="x", hint="y"))
    [(1, {'a': 1}), (3, [2])]

    Raises:
        InputError: ``"{what}: line N is not JSON (why)"`` with ``hint``, for the first line
            that is not JSON.
    """
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{what}: line {number} is not JSON ({err.msg})", hint=hint) from err
        yield number, record


def _turns(record: object, path: Path, number: int) -> list[dict[str, Any]]:
    turns = next((record[k] for k in _TURN_KEYS if isinstance(record, dict) and k in record), None)
    if (
        not isinstance(turns, list)
        or not turns
        or not all(isinstance(t, dict) and "role" in t and "content" in t for t in turns)
    ):
        raise InputError(
            f"--eval-data {path}: line {number} has no list of chat turns",
            hint='each line needs {"messages": [{"role": "user", "content": "..."}, ...]}; '
            "or rename the file to .txt to measure on it as plain text",
        )
    return [dict(t) for t in turns]


def render_conversations(
    conversations: list[list[dict[str, Any]]],
    tokenizer_dir: Path | None,
    chat_template: str | None,
    path: Path,
) -> str:
    """Render each conversation with the model's chat template (transformers), one after the
    other: the text the fine-tune was trained on, as its template lays it out."""
    if tokenizer_dir is None:
        raise InputError(
            f"--eval-data {path} is chat data, and this model has no tokenizer files to render it",
            hint="give the text as plain text (a .txt file)",
        )
    from transformers import AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    template = chat_template or getattr(tokenizer, "chat_template", None)
    if not template:
        raise InputError(
            f"--eval-data {path} is chat data, and this model has no chat template",
            hint="give the text as plain text (a .txt file)",
        )
    parts = [
        str(tokenizer.apply_chat_template(turns, chat_template=template, tokenize=False))
        for turns in conversations
    ]
    return strip_special_tokens("\n".join(parts), _special_tokens(tokenizer))


def _special_tokens(tokenizer: Any) -> list[str]:
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    found = {str(t.content) for t in added.values() if getattr(t, "special", False)}
    found.update(str(t) for t in getattr(tokenizer, "all_special_tokens", []) or [])
    return sorted(found, key=len, reverse=True)


def strip_special_tokens(text: str, specials: list[str]) -> str:
    """The rendered chat without its special tokens (``<|im_start|>`` ...).

    Why: llama-perplexity tokenizes its input as text (special tokens are not parsed), so a
    marker would become a run of ordinary tokens the model never saw there and dominate the
    perplexity; the words of the template (role names, separators) stay.

    >>> strip_special_tokens("<|im_start|>user\\nHi<|im_end|>", ["<|im_start|>", "<|im_end|>"])
    'user\\nHi'
    """
    for token in specials:
        if token:
            text = text.replace(token, "")
    return text


__all__ = ["EvalText", "load_eval_text", "packaged_text", "parse_chat_jsonl"]
