"""A lead-in stripped together with the first user message (``TemplateShape.head_joined``).

Llama 2 variants build the first turn as ``'<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' + content``
and ``strip()`` the whole, so a blank first message takes the lead-in's trailing whitespace with
it. Ollama has no way to take back printed text: the TEMPLATE prints the lead-in without that
whitespace and prints it in the first user turn, before the content, only where the content is
not blank (``emit_trim.trimmed``'s ``lead``).
"""

from __future__ import annotations

from .shape import TemplateShape


def joined_head(
    shape: TemplateShape, head: str, after: str, inline: str | None
) -> tuple[str, str, str, str]:
    """(lead-in without a system message, text after the system content, and what the first
    user turn prints before non-blank content with and without a system message).

    >>> shape = TemplateShape("", "", "", "", "", "", "", "", "drop", head_joined=True)
    >>> joined_head(shape, "[INST] <<SYS>>\\nD\\n<</SYS>>\\n\\n", "\\n<</SYS>>\\n\\n", None)
    ('[INST] <<SYS>>\\nD\\n<</SYS>>', '\\n<</SYS>>', '\\n\\n', '\\n\\n')
    >>> from dataclasses import replace
    >>> joined_head(replace(shape, head_joined=False), "H\\n", "A\\n", None)
    ('H\\n', 'A\\n', '', '')
    """
    if not shape.head_joined or inline is not None:
        return head, after, "", ""
    kept_head, kept_after = head.rstrip(), after.rstrip()
    return kept_head, kept_after, after[len(kept_after) :], head[len(kept_head) :]
