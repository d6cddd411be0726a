"""How two prompts are compared, for both proofs (the Go TEMPLATE's and llama.cpp's): one
leading BOS allowed on one side, the first differing character, JSON values compared by value
(``true`` kept apart from ``1``), and the tokenizer the token-level check uses.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from .source import TemplateSource

logger = logging.getLogger(__name__)

__all__ = ["first_difference", "json_pieces_match", "same_json", "strip_bos", "token_encoder"]


def strip_bos(expected: str, actual: str, bos: str | None) -> tuple[str, str]:
    """Remove one leading BOS where exactly one side has it.

    >>> strip_bos("<s>hi", "hi", "<s>")
    ('hi', 'hi')
    """
    if bos and expected.startswith(bos) != actual.startswith(bos):
        return expected.removeprefix(bos), actual.removeprefix(bos)
    return expected, actual


def first_difference(a: str, b: str) -> int | None:
    """Index of the first differing character, or None when equal.

    >>> first_difference("abc", "abd"), first_difference("ab", "abc"), first_difference("a", "a")
    (2, 2, None)
    """
    if a == b:
        return None
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def json_pieces_match(pieces: Sequence[tuple[bool, str]], actual: str) -> bool:
    """Match ``actual`` against literal and JSON pieces: literals byte for byte, JSON by value.

    >>> json_pieces_match([(False, "a "), (True, '{"x": 1, "y": [true]}'), (False, "!")],
    ...                   'a {"y":[true],"x":1}!')
    True
    >>> json_pieces_match([(True, '{"x": 1}')], '{"x":true}')
    False
    """
    decoder = json.JSONDecoder()
    pos = 0
    for is_json, text in pieces:
        if not is_json:
            if not actual.startswith(text, pos):
                return False
            pos += len(text)
            continue
        try:
            want = json.loads(text)
            got, end = decoder.raw_decode(actual, pos)
        except ValueError:
            return False
        if not same_json(want, got):
            return False
        pos = end
    return pos == len(actual)


def same_json(a: Any, b: Any) -> bool:
    """JSON equality that keeps ``true`` apart from ``1`` (Python's ``==`` does not).

    >>> same_json({"a": [1, 2.0]}, {"a": [1.0, 2]}), same_json([True], [1]), same_json(1, "1")
    (True, False, False)
    """
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def token_encoder(source: TemplateSource) -> Callable[[str], list[int]] | None:
    """A ``str -> ids`` function from the source's tokenizer.json, if there is one (the
    token-level check of both proofs, the Go TEMPLATE's and llama.cpp's)."""
    if source.tokenizer_file is None:
        return None
    try:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(source.tokenizer_file))
    except Exception as err:  # a broken tokenizer.json only disables the token-level check
        logger.warning("token-level check disabled: %s", err)
        return None

    def encode(text: str) -> list[int]:
        return list(tokenizer.encode(text, add_special_tokens=False).ids)

    return encode
