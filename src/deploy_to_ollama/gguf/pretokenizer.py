"""Name the llama.cpp pre-tokenizer of a BPE tokenizer from its ``tokenizer.json``.

llama.cpp's converter identifies the pre-tokenizer by hashing the tokens of a fixed text, so any
retrained or extended vocabulary fails its check ("BPE pre-tokenizer was not recognized"). The
pre-tokenizer itself is a regex that fine-tunes never change, so we read it and map it to the
names llama.cpp knows (src/llama-vocab.cpp ``llm_tokenizer_bpe``), and refuse anything else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConversionError

# The contraction prefix appears as ``(?i:'s|...)`` in tokenizer.json and as the case-expanded
# ``(?:'[sS]|...)`` in llama.cpp; both normalize to this token.
_CONTRACTIONS_CI = (
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)",
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])",
)
_CI = "<CONTRACTIONS_CI>"
_GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

_LETTERS = r"[^\r\n\p{L}\p{N}]?\p{L}+"
_TAIL = r"\s*[\r\n]+|\s+(?!\S)|\s+"
_PUNCT = r" ?[^\s\p{L}\p{N}]+[\r\n]*"

#: Normalized split regex → llama.cpp ``tokenizer.ggml.pre`` name.
SPLIT_REGEX_NAMES: Mapping[str, str] = {
    "|".join((_CI, _LETTERS, r"\p{N}{1,3}", _PUNCT, _TAIL)): "llama-bpe",
    "|".join((_CI, _LETTERS, r"\p{N}", _PUNCT, _TAIL)): "qwen2",
    "|".join(
        (
            _CI,
            r"[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+",
            r"\p{N}",
            r" ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*",
            _TAIL,
        )
    ): "qwen35",
    _GPT2_REGEX: "gpt-2",
}
HINT = (
    "this tokenizer's pre-tokenizer is unknown to llama.cpp; convert with a llama.cpp that "
    "supports it (DTO_LLAMA_CPP_DIR) or keep the base model's pre-tokenizer when retraining"
)


def normalize_regex(pattern: str) -> str:
    r"""Bring a split regex to the form used as key of ``SPLIT_REGEX_NAMES``.

    >>> normalize_regex("(?i:'s|'t|'re|'ve|'m|'ll|'d)|\\p{N}") == _CI + "|\\p{N}"
    True
    """
    for spelled in _CONTRACTIONS_CI:
        pattern = pattern.replace(spelled, _CI)
    return pattern


def _steps(pre: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    if not pre:
        return []
    if pre.get("type") == "Sequence":
        return [step for step in pre.get("pretokenizers", []) if isinstance(step, Mapping)]
    return [pre]


def _classify(steps: list[Mapping[str, Any]]) -> str | None:
    """Return the llama.cpp name for a list of pre-tokenizer steps, or None."""
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        split = steps[0]
        regex = (split.get("pattern") or {}).get("Regex")
        if not isinstance(regex, str) or split.get("invert") or split.get("behavior") != "Isolated":
            return None
        return SPLIT_REGEX_NAMES.get(normalize_regex(regex))
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        # llama.cpp's "starcoder": digits split one by one, then the GPT-2 regex.
        return "starcoder" if steps[1].get("use_regex", True) else None
    return None


def detect_pretokenizer(tokenizer_json: Path) -> str:
    """Return llama.cpp's pre-tokenizer name for a byte-level BPE ``tokenizer.json``.

    Args:
        tokenizer_json: the fast tokenizer file of the (fine-tuned) model.

    Returns:
        A name for ``tokenizer.ggml.pre`` (``llama-bpe``, ``qwen2``, ``qwen35``, ``gpt-2``,
        ``starcoder``).

    Raises:
        ConversionError: the file is missing or its pre-tokenizer matches none of them.
    """
    try:
        data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConversionError(
            f"cannot read the pre-tokenizer from {tokenizer_json}: {err}", hint=HINT
        ) from err
    model_type = (data.get("model") or {}).get("type")
    if model_type != "BPE":
        raise ConversionError(
            f"{tokenizer_json} holds a {model_type} tokenizer, not byte-level BPE", hint=HINT
        )
    name = _classify(_steps(data.get("pre_tokenizer")))
    if name is None:
        summary = json.dumps(data.get("pre_tokenizer"), ensure_ascii=False)[:120]
        raise ConversionError(
            f"unrecognized BPE pre-tokenizer in {tokenizer_json}: {summary}", hint=HINT
        )
    return name
