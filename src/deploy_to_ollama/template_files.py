"""The one chat-template reader: which file of a model folder holds the Jinja chat template.

Order (the one transformers loads in, then the base model's as fallback):

1. ``chat_template.jinja``
2. ``chat_template.json`` (``{"chat_template": ...}``)
3. ``tokenizer_config.json`` (``"chat_template": ...``)
4. the same three files in the next folder given (an adapter's base model).

A ``chat_template`` value may be a string or a list of named templates
(``[{"name": ..., "template": ...}]``): the one named ``default`` is used; without ``default``,
the first entry of the list (transformers then needs the name; llama.cpp would write none).
The GGUF metadata, the Modelfile, the round-trip reference and the doctor all read it here.
No third-party imports: the conversion worker imports this module too.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError

logger = logging.getLogger(__name__)

#: Files looked at in a model or adapter folder, in the order they are preferred.
TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json", "tokenizer_config.json")
#: The entry of a list of named templates that is used when present.
DEFAULT_TEMPLATE_NAME = "default"


@dataclass(frozen=True, slots=True)
class FoundTemplate:
    """A chat template and where it was read."""

    text: str
    file: Path
    """The file it came from (``chat_template.jinja``, ``.json`` or ``tokenizer_config.json``)."""
    name: str | None = None
    """The chosen entry of a list of named templates (None for a plain string)."""


def read_text_utf8(path: Path) -> str:
    """The file's text; a one-line InputError when it is not UTF-8."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(
            f"{path} is not UTF-8 (byte {err.start})",
            hint="save the chat template as UTF-8 text",
        ) from err


def read_json_file(path: Path) -> dict[str, Any]:
    """A JSON object file; a one-line InputError naming line and column when it is not one."""
    try:
        data = json.loads(read_text_utf8(path))
    except json.JSONDecodeError as err:
        raise InputError(
            f"{path} is not valid JSON (line {err.lineno}, column {err.colno})",
            hint="fix or regenerate the file",
        ) from err
    if not isinstance(data, dict):
        raise InputError(f"{path} is not a JSON object", hint="fix or regenerate the file")
    return data


def token_text(value: Any) -> str | None:
    """A token as tokenizer_config.json stores it: a string, or an AddedToken dict.

    >>> token_text("<s>"), token_text({"content": "</s>", "special": True}), token_text(3)
    ('<s>', '</s>', None)
    """
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def pick_template(value: Any) -> tuple[str, str | None] | None:
    """The template of a ``chat_template`` value, and the list entry's name it came from.

    >>> pick_template("{{ x }}")
    ('{{ x }}', None)
    >>> pick_template([{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}])
    ('D', 'default')
    >>> pick_template([{"name": "tool_use", "template": "T"}, {"name": "rag", "template": "R"}])
    ('T', 'tool_use')
    """
    if isinstance(value, str):
        return (value, None) if value else None
    if not isinstance(value, list):
        return None
    named = [
        (str(item.get("name")), item["template"])
        for item in value
        if isinstance(item, dict) and isinstance(item.get("template"), str) and item["template"]
    ]
    for name, text in named:
        if name == DEFAULT_TEMPLATE_NAME:
            return text, name
    return (named[0][1], named[0][0]) if named else None


def read_template_file(path: Path) -> FoundTemplate | None:
    """The chat template one file holds (a ``.jinja`` file is the template itself)."""
    if path.suffix == ".jinja":
        text = read_text_utf8(path)
        return FoundTemplate(text, path) if text else None
    picked = pick_template(read_json_file(path).get("chat_template"))
    if picked is None:
        return None
    if picked[1] not in (None, DEFAULT_TEMPLATE_NAME):
        logger.info("%s has no %r chat template; using %r", path, DEFAULT_TEMPLATE_NAME, picked[1])
    return FoundTemplate(picked[0], path, picked[1])


def find_chat_template(*folders: Path | None) -> FoundTemplate | None:
    """The chat template of the first folder that has one, files in ``TEMPLATE_FILES`` order.

    Args:
        folders: e.g. an adapter folder, then its base model folder; None entries are skipped.

    Raises:
        InputError: a template file is not UTF-8 or not valid JSON.
    """
    for folder in folders:
        if folder is None:
            continue
        for name in TEMPLATE_FILES:
            candidate = folder / name
            if candidate.is_file():
                found = read_template_file(candidate)
                if found is not None:
                    return found
    return None


__all__ = [
    "DEFAULT_TEMPLATE_NAME",
    "TEMPLATE_FILES",
    "FoundTemplate",
    "find_chat_template",
    "pick_template",
    "read_json_file",
    "read_template_file",
    "read_text_utf8",
    "token_text",
]
