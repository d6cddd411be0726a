"""Why a template's structure cannot be read: the error of the render that raised (a Jinja
that iterates ``tools`` even when there are none, as Hermes 2 Pro's and Command R's tool-use
templates do), and no invented error where the render ran but printed no message."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy_to_ollama.chat_template import TemplateSource
from deploy_to_ollama.chat_template.shape import infer_shape
from deploy_to_ollama.errors import TemplateTranslationError

TOOLS_ONLY = (
    "{% for tool in tools %}{{ tool.function.name }}\n{% endfor %}"
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
)
#: ``loop_messages`` is never set, so no message is printed (GPT4All's Wizard v1.2).
NO_MESSAGES = "{% for m in loop_messages %}{{ m.content }}{% endfor %}ASSISTANT:"


def _source(template: str) -> TemplateSource:
    return TemplateSource(template=template, origin=Path("t.jinja"), kind="jinja")


def test_a_render_that_raises_says_why() -> None:
    with pytest.raises(TemplateTranslationError) as err:
        infer_shape(_source(TOOLS_ONLY))
    assert str(err.value) == (
        "the template cannot render a single user message "
        "(the chat template raised: 'NoneType' object is not iterable)"
    )


def test_a_render_that_prints_no_message_names_no_error() -> None:
    with pytest.raises(TemplateTranslationError) as err:
        infer_shape(_source(NO_MESSAGES))
    assert str(err.value) == "the template cannot render the user content"
