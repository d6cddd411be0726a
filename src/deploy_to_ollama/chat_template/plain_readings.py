"""The plain-chat readings observed on top of the first shape: each is a field of
:class:`TemplateShape` that a sentinel render shows and the emitter prints (a blank assistant
turn's shorter wrapper, a lead-in chosen by the last role, a pad per system message, content
rewrites)."""

from __future__ import annotations

from dataclasses import replace

from .emit_blank import observe_blank_turn
from .emit_fold import observe_folds
from .last_role import observe_lead_after_assistant
from .shape import TemplateShape
from .source import TemplateSource
from .system_pad import observe_system_pad


def with_plain_readings(
    source: TemplateSource, shape: TemplateShape, *, blank: bool = True
) -> TemplateShape:
    """``shape`` with every plain-chat reading the Jinja shows filled in (the blank-turn one
    only with ``blank``)."""
    if blank:
        shape = replace(shape, blank_turn=observe_blank_turn(source, shape))
    shape = replace(shape, lead_after_assistant=observe_lead_after_assistant(source, shape))
    shape = replace(shape, system_pad=observe_system_pad(source, shape))
    return replace(shape, folds=observe_folds(source))


__all__ = ["with_plain_readings"]
