"""Ollama's thinking levels (``think: "high"``) onto the Jinja's ``reasoning_effort``.

gpt-oss prints ``Reasoning: medium`` unless ``reasoning_effort`` says otherwise; Ollama passes
a request's level as ``.ThinkLevel`` (``"medium"`` for ``think: true``, ``""`` for false or
unset on old servers). We find where the Jinja prints the effort by rendering a sentinel
value, replace that text in the TEMPLATE by ``.ThinkLevel`` where it names a level the Jinja
knows, and keep the result only when every level renders as the Jinja does and no packaged
probe changes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import DeployError, TemplateRenderError
from .shape import U1
from .source import TemplateSource

if TYPE_CHECKING:
    from .translate import TranslatedTemplate

logger = logging.getLogger(__name__)

#: The Jinja variable that carries a reasoning level.
EFFORT = "reasoning_effort"
#: Levels a request may send besides the default (Ollama maps ``max`` to ``high``).
LEVELS = ("high", "medium", "low")
MARK = "Zqeffort"


def with_think_levels(
    source: TemplateSource, result: TranslatedTemplate, refs: Mapping[str, Any]
) -> TranslatedTemplate:
    """``result`` with ``.ThinkLevel`` in place of the Jinja's default effort, where that
    verifies; else ``result``."""
    from .ollama_prompt import template_thinks
    from .server_rules import current_rules
    from .switched import accept_thinking

    rules = current_rules()
    if rules is not None and not rules.think_level:
        return result  # the serving Ollama (before v0.11.0) has no .ThinkLevel
    try:
        if not template_thinks(result.template):
            return result
        slot = _effort_slot(source)
        if slot is None:
            return result
        line, value = slot
        if line not in result.template:
            return result
        action = (
            "{{ if eq $.ThinkLevel "
            + " ".join(f'"{level}"' for level in LEVELS)
            + " }}{{ $.ThinkLevel }}{{ else }}"
            + value
            + "{{ end }}"
        )
        template = result.template.replace(line, line.replace(value, action, 1))
        if not _levels_hold(source, template, result.system):
            return result
        accepted = accept_thinking(source, result, template, result.system, refs)
    except DeployError as err:
        logger.info("thinking levels not translated: %s", err)
        return result
    return accepted if accepted is not None else result


def _render(source: TemplateSource, system: str | None, **kwargs: Any) -> str | None:
    from .hf_render import render_hf

    messages = [{"role": "user", "content": U1}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    try:
        return render_hf(
            source.template,
            messages,
            tokens=source.template_variables(),
            add_generation_prompt=True,
            kwargs=kwargs,
        )
    except TemplateRenderError:
        return None


def _effort_slot(source: TemplateSource) -> tuple[str, str] | None:
    """(the line that prints the default effort, the default value), when the Jinja prints
    ``reasoning_effort`` once and the default in its place."""
    default, marked = _render(source, None), _render(source, None, **{EFFORT: MARK})
    if default is None or marked is None or marked.count(MARK) != 1:
        return None
    before, after = marked.split(MARK)
    if not default.startswith(before) or not default.endswith(after) or not after:
        return None
    value = default[len(before) : len(default) - len(after)]
    if value not in LEVELS:
        return None
    left = before[before.rfind("\n") + 1 :]
    right = after[: after.find("\n") + 1] if "\n" in after else after
    if not left.strip():
        return None
    return left + value + right, value


def _levels_hold(source: TemplateSource, template: str, system: str | None) -> bool:
    """Every level, with and without a system message, renders as the Jinja does."""
    from .ollama_prompt import render_ollama_prompt
    from .prompt_diff import strip_bos

    for level in LEVELS:
        for given in (None, "Be terse."):
            want = _render(source, given, **{EFFORT: level})
            messages = [{"role": "user", "content": U1}]
            if given is not None:
                messages.insert(0, {"role": "system", "content": given})
            got = render_ollama_prompt(template, messages, system=system, think=level)
            if want is None:
                return False
            exp, act = strip_bos(want, got, source.bos_token)
            if exp != act:
                return False
    return True


__all__ = ["EFFORT", "LEVELS", "with_think_levels"]
