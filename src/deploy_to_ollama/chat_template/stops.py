"""Stop strings for an Ollama model: end-of-turn markers and eos/eot tokens, nothing else.

A stop that ordinary text contains ("\\n", "User", ":") would cut answers short, so every
candidate must look like a marker and must not occur in the probes' natural-language content.
"""

from __future__ import annotations

import re

from .shape import TemplateShape
from .source import TemplateSource

#: Looks like a control marker: ``<|im_end|>``, ``</s>``, ``[INST]``, ``<end_of_turn>``.
MARKER_RE = re.compile(r"^(<[^<>\s]+>|\[/?[A-Z_]+\]|<\|[^|]+\|>)$")
#: A role header on its own line such as ``### Instruction:`` or ``USER:``.
HEADER_RE = re.compile(r"^(#{1,4} ?)?[A-Za-z][A-Za-z _-]{1,30}:$")


def is_safe_stop(stop: str, *, special: frozenset[str] = frozenset()) -> bool:
    """Whether ``stop`` can end generation without cutting normal assistant text.

    >>> is_safe_stop("<|im_end|>"), is_safe_stop("\\n"), is_safe_stop("the")
    (True, False, False)
    >>> is_safe_stop("### Instruction:")
    True
    """
    text = stop.strip()
    if not text or text != stop:
        return False
    if stop in special or MARKER_RE.match(text):
        return True
    return bool(HEADER_RE.match(text)) and _not_in_normal_text(text)


def _not_in_normal_text(text: str) -> bool:
    from .probes import load_probes

    for probe in load_probes():
        for message in probe.messages:
            if text in str(message.get("content") or ""):
                return False
    return True


def _markers(piece: str) -> list[str]:
    """Marker-like lines or tokens of a wrapper string (``"<|im_end|>\\n"`` -> ``<|im_end|>``)."""
    found: list[str] = []
    for line in piece.splitlines():
        line = line.strip()
        if not line:
            continue
        if MARKER_RE.match(line) or HEADER_RE.match(line):
            found.append(line)
            continue
        found += re.findall(r"<\|[^|<>\s]+\|>|<end_of_turn>|<start_of_turn>|</s>|\[/?INST\]", line)
    return found


def infer_stops(source: TemplateSource, shape: TemplateShape | None) -> tuple[str, ...]:
    """Stops: the assistant's end-of-turn marker, the next turn's start, eos/eot tokens.

    Args:
        source: supplies eos/eot/generation_config strings.
        shape: the inferred wrappers (None when inference failed: tokens only).

    Returns:
        De-duplicated stops, end-of-turn first.
    """
    special = frozenset(t for t in (*source.added_tokens, *source.stop_tokens) if t)
    candidates: list[str] = []
    if shape is not None:
        candidates += _markers(shape.assistant_suffix)
        first_user_line = shape.user_prefix.strip().splitlines()[:1]
        candidates += _markers(first_user_line[0]) if first_user_line else []
    candidates += [tok for tok in source.stop_tokens if tok]
    if source.eos_token:
        candidates.append(source.eos_token)
    bos = source.bos_token
    return tuple(
        dict.fromkeys(
            stop for stop in candidates if stop != bos and is_safe_stop(stop, special=special)
        )
    )
