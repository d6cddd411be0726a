"""Render a chat template exactly as transformers does (the reference side of verification).

We call transformers' own ``render_jinja_template``: the same sandboxed Jinja environment,
``raise_exception``/``strftime_now``/``tojson``, and ``continue_final_message`` handling.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from ..errors import TemplateRenderError, TemplateSyntaxError
from .final_user import neutral_render
from .tools_required import tools_view_on


def render_hf(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    tokens: Mapping[str, str] | None = None,
    tools: Sequence[Mapping[str, Any]] | None = None,
    add_generation_prompt: bool | None = None,
    continue_final_message: bool | None = None,
    kwargs: Mapping[str, Any] | None = None,
    mark_json: bool = False,
) -> str:
    """Render ``messages`` through ``template`` like ``apply_chat_template(tokenize=False)``.

    Args:
        template: the Jinja chat template.
        messages: HF/OpenAI-format messages.
        tokens: special-token variables (``bos_token``, ``eos_token`` ...).
        tools: tool JSON schemas, passed as ``tools``.
        add_generation_prompt: default: true unless the last message is the assistant's.
        continue_final_message: default: true when the last message is the assistant's (prefill).
        kwargs: extra template variables a caller passes to ``apply_chat_template``
            (``enable_thinking``).
        mark_json: wrap every ``tojson`` output in :data:`JSON_OPEN`/:data:`JSON_CLOSE`, so a
            verifier knows which spans are JSON values (see :func:`split_marked`).

    Returns:
        The prompt text.

    Raises:
        TemplateSyntaxError: the template does not parse (with its line).
        TemplateRenderError: the template raised, or reached for Python internals (the sandbox
            stops it before anything runs).
    """
    import jinja2
    from jinja2.exceptions import SecurityError
    from transformers.utils.chat_template_utils import render_jinja_template

    last_is_assistant = bool(messages) and messages[-1].get("role") == "assistant"
    if add_generation_prompt is None:
        add_generation_prompt = not last_is_assistant
    if continue_final_message is None:
        continue_final_message = last_is_assistant
    # transformers passes the tokenizer's special tokens as extra template variables.
    variables: dict[str, Any] = {**(kwargs or {}), **(tokens or {})}
    listed: list[Any] | None = [dict(t) for t in tools] if tools else None
    if listed is None and tools_view_on():
        listed = []  # a template that needs tools, read with an empty list (tools_required)
    try:
        with _marked_tojson(template, enabled=mark_json) as outputs, _pinned_strftime(template):
            rendered: Any = render_jinja_template(
                conversations=[_as_written(template, messages)],
                tools=listed,
                chat_template=template,
                add_generation_prompt=add_generation_prompt,
                continue_final_message=continue_final_message,
                **variables,
            )[0]
    except jinja2.TemplateSyntaxError as err:
        raise TemplateSyntaxError(
            f"Jinja syntax error at line {err.lineno}: {err.message}",
            line=err.lineno,
            hint="fix the chat template; transformers cannot load it either",
        ) from err
    except SecurityError as err:
        raise TemplateRenderError(
            f"the chat template reached for Python internals and was stopped: {err}",
            hint="this template is unsafe; use the base model's original chat template",
        ) from err
    except Exception as err:  # any raise_exception / TypeError / ValueError from the template
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise TemplateRenderError(
            f"the chat template raised: {message}",
            hint="the template rejects this conversation",
        ) from err
    if mark_json and (JSON_OPEN in rendered[0] or JSON_CLOSE in rendered[0]):
        raise TemplateRenderError(
            "the rendering holds the private-use characters that mark JSON values",
            hint="JSON tiers are unavailable for this conversation",
        )
    text = mark_json_values(str(rendered[0]), outputs) if mark_json else str(rendered[0])
    # The inference's view of a final user turn (final_user.py); off for references.
    return neutral_render(text, messages, continued=continue_final_message)


def _as_written(template: str, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The messages as the fine-tune's notebook gives them to ``template``: text content as
    one text part where the template prints text only from parts (``reads_parts_only``)."""
    if not reads_parts_only(template):
        return [dict(m) for m in messages]
    return [
        {**m, "content": [{"type": "text", "text": m["content"]}]}
        if isinstance(m.get("content"), str)
        else dict(m)
        for m in messages
    ]


#: The text of the sentinel message that tells how a template reads content.
_PART_SENTINEL = "Zqpartsentinel"


@functools.lru_cache(maxsize=256)
def reads_parts_only(template: str) -> bool:
    """Whether ``template`` prints a message's text only when it comes as a list of parts
    (``[{"type": "text", "text": ...}]``) and prints nothing of (or raises on) the same text
    as a string: vision templates such as Idefics3's and Llama Guard 3 Vision's walk
    ``message['content']`` as parts, so a string's characters print nothing. A notebook (the
    model's processor) passes parts; Ollama's TEMPLATE gets the text as ``.Content``. So the
    reference renders parts for such a template, and nothing changes for any other."""
    from transformers.utils.chat_template_utils import render_jinja_template

    def shows(content: Any) -> bool:
        try:
            rendered = render_jinja_template(
                conversations=[[{"role": "user", "content": content}]],
                chat_template=template,
                add_generation_prompt=True,
                bos_token="<s>",
                eos_token="</s>",
            )[0][0]
        except Exception:  # a template that raises on it does not print it
            return False
        return _PART_SENTINEL in str(rendered)

    return not shows(_PART_SENTINEL) and shows([{"type": "text", "text": _PART_SENTINEL}])


@contextmanager
def _pinned_strftime(template: str) -> Iterator[None]:
    """Give the template a ``strftime_now`` that reads the day pinned by ``dates.pinned_day``
    (nothing changes outside such a block): verification renders a date-printing template on
    a second, fixed day to prove the TEMPLATE follows the date instead of holding today's."""
    from .dates import pinned, prints_date

    day = pinned()
    if day is None or not prints_date(template):
        yield
        return
    from transformers.utils.chat_template_utils import _compile_jinja_template

    env = _compile_jinja_template(template).environment
    original = env.globals["strftime_now"]
    env.globals["strftime_now"] = day.strftime
    try:
        yield
    finally:
        env.globals["strftime_now"] = original


def caller_variables(template: str) -> frozenset[str]:
    """The variables ``template`` reads that neither it nor transformers' environment defines:
    what a caller may pass to ``apply_chat_template`` (messages, tools, the tokens, and the
    template's own switches)."""
    import jinja2.meta
    from transformers.utils.chat_template_utils import _compile_jinja_template

    env = _compile_jinja_template(template).environment
    names = jinja2.meta.find_undeclared_variables(env.parse(template))
    return frozenset(names - set(env.globals))


#: Private-use characters around each ``tojson`` output in a marked rendering.
JSON_OPEN = "\ue000"
JSON_CLOSE = "\ue001"


@contextmanager
def _marked_tojson(template: str, *, enabled: bool) -> Iterator[list[str]]:
    """Record every ``tojson`` output while rendering (transformers' cached environment gets a
    recording filter for the duration; compiled Jinja looks filters up at render time).

    Recording instead of printing marks keeps the rendering byte-identical, also where the
    template slices or pastes onto the JSON (``tojson[:-1] + ', "id": ...}'``).
    """
    outputs: list[str] = []
    if not enabled:
        yield outputs
        return
    from transformers.utils.chat_template_utils import _compile_jinja_template

    env = _compile_jinja_template(template).environment
    original = env.filters["tojson"]

    def recording(*args: Any, **kw: Any) -> Any:
        result = original(*args, **kw)
        outputs.append(str(result))
        return result

    env.filters["tojson"] = recording
    try:
        yield outputs
    finally:
        env.filters["tojson"] = original


def mark_json_values(text: str, outputs: Sequence[str]) -> str:
    """Put :data:`JSON_OPEN`/:data:`JSON_CLOSE` around each JSON value the template printed
    from ``tojson`` output: found in order, widened to the whole JSON value starting there
    (a template may cut the last brace and paste more keys on). An output not found after
    the previous one is looked for from the start, clear of the spans already taken: a
    template may compute JSON first and print it later (Mistral's ``ns.functions``, printed
    in the last user turn, after the tool calls it recorded afterwards).

    >>> mark_json_values('a {"x": 1} b', ['{"x": 1}'])
    'a \ue000{"x": 1}\ue001 b'
    >>> mark_json_values('{"x": 1, "id": 2}', ['{"x": 1}'])
    '\ue000{"x": 1, "id": 2}\ue001'
    >>> mark_json_values('[1] b [2] c', ['[2]', '[1]'])
    '\ue000[1]\ue001 b \ue000[2]\ue001 c'
    """
    spans: list[tuple[int, int]] = []
    pos = 0
    for out in outputs:
        span = _json_span(text, out, pos, spans) or _json_span(text, out, 0, spans)
        if span is not None:
            spans.append(span)
            pos = span[1]
    for start, end in sorted(spans, reverse=True):
        text = text[:start] + JSON_OPEN + text[start:end] + JSON_CLOSE + text[end:]
    return text


def _json_span(
    text: str, out: str, pos: int, taken: Sequence[tuple[int, int]]
) -> tuple[int, int] | None:
    """The first whole JSON value at or after ``pos`` that starts with ``out`` (or ``out``
    less its last character) and overlaps none of ``taken``."""
    import json

    decoder = json.JSONDecoder()
    for needle in (out, out[:-1]) if len(out) > 1 else (out,):
        at = text.find(needle, pos)
        while at >= 0:
            try:
                _, end = decoder.raw_decode(text, at)
            except ValueError:
                end = -1
            if end >= at + len(needle) and all(end <= s or at >= e for s, e in taken):
                return at, end
            at = text.find(needle, at + 1)
    return None


def split_marked(text: str) -> list[tuple[bool, str]] | None:
    """Cut a marked rendering into (is_json, text) pieces; None when markers do not pair up.

    >>> split_marked("a\ue000{}\ue001b")
    [(False, 'a'), (True, '{}'), (False, 'b')]
    >>> split_marked("a\ue000{") is None
    True
    """
    pieces: list[tuple[bool, str]] = []
    pos = 0
    while True:
        start = text.find(JSON_OPEN, pos)
        if start < 0:
            break
        end = text.find(JSON_CLOSE, start)
        inner = text[start + 1 : end] if end >= 0 else ""
        if end < 0 or JSON_OPEN in inner or JSON_CLOSE in text[pos:start]:
            return None
        pieces += [(False, text[pos:start]), (True, inner)]
        pos = end + 1
    if JSON_CLOSE in text[pos:]:
        return None
    pieces.append((False, text[pos:]))
    return [piece for piece in pieces if piece[0] or piece[1]]


def check_syntax(template: str) -> None:
    """Parse ``template`` with transformers' environment; raise on a syntax error.

    Raises:
        TemplateSyntaxError: with the line number and the offending line.
    """
    import jinja2
    from transformers.utils.chat_template_utils import _compile_jinja_template

    try:
        _compile_jinja_template(template)
    except jinja2.TemplateSyntaxError as err:
        lines = template.splitlines()
        text = lines[err.lineno - 1].strip() if 0 < err.lineno <= len(lines) else ""
        column = _guess_column(lines, err.lineno)
        raise TemplateSyntaxError(
            f"Jinja syntax error at line {err.lineno}, column {column}: {err.message}"
            + (f" in {text[:60]!r}" if text else ""),
            line=err.lineno,
            column=column,
            hint="fix the chat template; transformers cannot load it either",
        ) from err


def _guess_column(lines: list[str], lineno: int) -> int:
    """Jinja reports only lines; point at the line's last tag opener, where parsing stopped."""
    if not 0 < lineno <= len(lines):
        return 1
    line = lines[lineno - 1]
    positions = [line.rfind(opener) for opener in ("{%", "{{")]
    best = max(positions)
    return best + 1 if best >= 0 else 1
