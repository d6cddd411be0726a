"""A user turn's suffix that ends with the opening of an ordinary assistant turn.

Command R7B prints ``<|START_RESPONSE|>`` at the start of every assistant turn without tool
calls and ``<|START_THINKING|>...<|START_ACTION|>`` at the start of one with calls. The plain
shape gives ``<|START_RESPONSE|>`` to the user suffix (every assistant turn seen there opens
with it), so a turn with calls seems to open unlike all others. Moving that last marker from
the user suffix to the assistant prefix gives the tool reading a shape in which the turn with
calls shares the header and then opens its own way (``ToolShape.opening``). The moved shape's
TEMPLATE must still match every probe the plain one matched.
"""

from __future__ import annotations

from dataclasses import replace

from .shape import MARKER_RE, TemplateShape

#: The reason ``tool_shape`` gives when a turn with calls does not start like other turns.
OPENS_UNLIKE = "an assistant turn with tool calls opens unlike other turns"


def marker_moved(shape: TemplateShape) -> TemplateShape | None:
    """``shape`` with the marker that ends its user suffix moved to the assistant prefixes;
    None when the user suffix does not end with a marker (or is only one).

    >>> shape = TemplateShape("", "<|USER|>", "<|END|><|BOT|><|RESP|>", "<|END|><|BOT|>",
    ...                       "", "", "", "<|END|>", "block")
    >>> moved = marker_moved(shape)
    >>> moved.user_suffix, moved.assistant_prefix, moved.assistant_prefix_last
    ('<|END|><|BOT|>', '<|RESP|>', '<|RESP|>')
    >>> marker_moved(replace(shape, user_suffix="\\n")) is None
    True
    """
    suffix = shape.user_suffix
    found = [m for m in MARKER_RE.finditer(suffix) if m.end() == len(suffix)]
    if not found or found[-1].start() == 0:
        return None
    marker = suffix[found[-1].start() :]
    return replace(
        shape,
        user_suffix=suffix[: found[-1].start()],
        assistant_prefix=marker + shape.assistant_prefix,
        assistant_prefix_last=marker + shape.assistant_prefix_last,
    )


__all__ = ["OPENS_UNLIKE", "marker_moved"]
