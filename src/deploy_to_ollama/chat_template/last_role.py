"""A lead-in that names the role of the conversation's last message
(``TemplateShape.lead_after_assistant``).

Llama Guard 3 asks to check the ``'User'`` messages, or the ``'Agent'`` ones where the
conversation ends with an assistant message (its Jinja counts the messages, which alternate
from a user one, so the count says the last role). Ollama continues a final assistant
message, so the TEMPLATE chooses the lead-in by the last message's role.
"""

from __future__ import annotations

from collections.abc import Callable

from .gotext import Act, Lit, Piece
from .shape import A1, U1, U2, TemplateShape, _between, _Renderer
from .source import TemplateSource

#: Whether the last message is an assistant one (false without messages).
ENDS_WITH_ASSISTANT = (
    'and .Messages (eq (index .Messages (len (slice .Messages 1))).Role "assistant")'
)


def observe_lead_after_assistant(source: TemplateSource, shape: TemplateShape) -> str | None:
    """The preamble printed where the last message is an assistant one, when it differs from
    the one before a final user message; None where it does not, or where the sentinel
    conversations of two and four messages (prefilled) and three (a final user message)
    disagree on it.
    """
    if shape.system_mode != "drop" or not shape.head.endswith(shape.user_prefix):
        return None
    render = _Renderer(source)
    ended_by_user = [[("user", U1)], [("user", U1), ("assistant", A1), ("user", U2)]]
    ended_by_assistant = [[("user", U1), ("assistant", A1)], [*ended_by_user[1], ("assistant", A1)]]
    leads: list[set[str]] = []
    for convs, cont in ((ended_by_user, False), (ended_by_assistant, True)):
        found: set[str] = set()
        for messages in convs:
            text = render(messages, gen=not cont, cont=cont)
            split = _between(text, U1) if text else None
            if split is None:
                return None
            found.add(split[0])
        leads.append(found)
    by_user, by_assistant = leads
    if by_user != {shape.head} or len(by_assistant) != 1:
        return None
    lead = by_assistant.pop()
    if lead == shape.head or not lead.endswith(shape.user_prefix):
        return None
    return lead[: len(lead) - len(shape.user_prefix)]


def preamble_by_last_role(shape: TemplateShape, strip: Callable[[str], str]) -> list[Piece]:
    """The preamble (``strip``: without the BOS the tokenizer adds), chosen by the last
    message's role where the Jinja does so.

    >>> shape = TemplateShape("Check 'User':", "U:", "", "", "", "", "", "", "drop")
    >>> preamble_by_last_role(shape, str) == [Lit("Check 'User':")]
    True
    """
    if shape.lead_after_assistant is None:
        return [Lit(strip(shape.preamble))]
    after = Lit(strip(shape.lead_after_assistant))
    plain = Lit(strip(shape.preamble))
    return [Act(f"if {ENDS_WITH_ASSISTANT}"), after, Act("else"), plain, Act("end")]


__all__ = ["ENDS_WITH_ASSISTANT", "observe_lead_after_assistant", "preamble_by_last_role"]
