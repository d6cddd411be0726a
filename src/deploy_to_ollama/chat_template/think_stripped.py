"""Reasoning stripped from earlier turns, where the generation prompt opens no block.

DeepSeek R1's Jinja prints no reasoning at all: it drops what an assistant's content holds up
to ``</think>`` and lets the model open the block itself (its generation prompt ends with the
assistant opening only, unlike the distills' ``<think>\\n``, :func:`.switched._opened`). The
TEMPLATE already prints the same (Ollama hands it the content without the reasoning); what it
lacks is ``.Thinking`` in the messages loop, from which Ollama infers the tags it separates
the model's reasoning with. We take the tags from the renders: a closing tag the Jinja names
is proven when ``<tag>R</tag>A`` prints exactly as ``A`` does, so the Jinja treats the text
up to it, opening tag included, as reasoning; the tags are then declared in a branch that
prints nothing, and the thinking probes must verify.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import TemplateRenderError
from .shape import A1, R1, U1, U2
from .source import TemplateSource

if TYPE_CHECKING:
    from .translate import TranslatedTemplate

#: A closing tag the Jinja template names in its text (``'</think>'``).
NAMED_CLOSING_RE = re.compile(r"</([A-Za-z_]{1,20})>")


def stripped_tags(source: TemplateSource) -> tuple[str, str] | None:
    """(opening, closing) of the reasoning block the Jinja template strips from earlier
    assistant turns, proven by renders; None where no named tag is stripped that way.

    >>> from pathlib import Path
    >>> strip = ("{% for m in messages %}{{ m['content'].split('</think>')[-1] }}|"
    ...          "{% endfor %}")
    >>> stripped_tags(TemplateSource(strip, Path("t"), "jinja"))
    ('<think>', '</think>')
    >>> stripped_tags(TemplateSource(strip.replace("[-1]", "[0]"), Path("t"), "jinja")) is None
    True
    """
    names = dict.fromkeys(NAMED_CLOSING_RE.findall(source.template))
    for later in (False, True):
        plain = _render(source, A1, later=later)
        if plain is None or A1 not in plain:
            continue
        for name in names:
            opening, closing = f"<{name}>", f"</{name}>"
            if _render(source, opening + R1 + closing + A1, later=later) == plain:
                return opening, closing
    return None


#: A later exchange after the turn that holds the block: a Jinja may strip only turns before
#: the last assistant turn (LFM2.5), which Ollama's earlier turns always are.
_LATER = (
    {"role": "assistant", "content": "Zqasstlater"},
    {"role": "user", "content": "Zquserlater"},
)


def _render(source: TemplateSource, content: str, *, later: bool = False) -> str | None:
    from .hf_render import render_hf

    turns = [
        {"role": "user", "content": U1},
        {"role": "assistant", "content": content},
        {"role": "user", "content": U2},
        *(_LATER if later else ()),
    ]
    try:
        return render_hf(source.template, turns, tokens=source.template_variables())
    except TemplateRenderError:
        return None


def with_stripped_thinking(
    source: TemplateSource, result: TranslatedTemplate, refs: Mapping[str, Any]
) -> TranslatedTemplate | None:
    """``result`` with the stripped block's tags declared, where that verifies the thinking
    probes and loses nothing (None: no such tags, or they do not verify)."""
    from .ollama_prompt import template_thinks
    from .switched import accept_thinking, declaration

    if template_thinks(result.template):
        return None
    tags = stripped_tags(source)
    if tags is None:
        return None
    template = result.template + declaration(*tags)
    return accept_thinking(source, result, template, result.system, refs)


__all__ = ["NAMED_CLOSING_RE", "stripped_tags", "with_stripped_thinking"]
