"""A system turn printed wherever a system message stands, and once with empty content where
no message is a system one (``default_block`` with an empty default).

Apriel 1.5's Jinja prints ``'<|system|>\\n' + reasoning_prompt + content + '\\n<|end|>\\n'`` for
each system message, and the same turn without content when the conversation has none: the
sentinel renders show its prompt inside the system wrapper, not as a default system text, so the
first reading takes the whole turn for a preamble and cannot place a later system message.
"""

from __future__ import annotations

from dataclasses import replace

from .shape import TemplateShape


def empty_default_variant(shape: TemplateShape, bos: str) -> TemplateShape | None:
    """``shape`` read as a ``default_block`` template whose default is empty, where the lead-in
    without a system message is the system lead-in with empty content and a later system
    message prints with that same wrapper (None otherwise).

    >>> head = ("<s><|system|>\\nP", "\\n<|end|>\\n<|user|>\\n")
    >>> shape = TemplateShape("<s><|system|>\\nP\\n<|end|>\\n", "<|user|>\\n", "", "", "", "",
    ...     "", "", "drop", head="".join(head), head_system=head,
    ...     mid_system=("<|system|>\\nP", "\\n<|end|>\\n"))
    >>> v = empty_default_variant(shape, "<s>")
    >>> (v.system_mode, v.preamble, v.system_prefix, v.system_suffix, v.default_system)
    ('default_block', '<s>', '<|system|>\\nP', '\\n<|end|>\\n', '')
    """
    if shape.system_mode != "drop" or shape.head_system is None or shape.mid_system is None:
        return None
    before, after = shape.head_system
    if shape.head != before + after or not after.endswith(shape.user_prefix):
        return None
    preamble = bos if bos and before.startswith(bos) else ""
    prefix, suffix = before[len(preamble) :], after[: len(after) - len(shape.user_prefix)]
    if (prefix, suffix) != shape.mid_system or not prefix:
        return None
    return replace(
        shape,
        preamble=preamble,
        system_mode="default_block",
        system_prefix=prefix,
        system_suffix=suffix,
        default_system="",
        head_system=None,
        mid_system=None,
    )


__all__ = ["empty_default_variant"]
