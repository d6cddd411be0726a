"""The reference side of the round trip: how the fine-tune renders (and tokenizes) a chat.

From a tokenizer folder (or a GGUF whose vocabulary transformers can read), transformers renders
and tokenizes, so probes compare token ids. From a chat template alone (a ``.gguf`` carries one
in ``tokenizer.chat_template``) the probes compare text, without the BOS llama.cpp adds itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from ..chat_template.source import TemplateSource

Message = dict[str, Any]


@dataclass(frozen=True)
class Reference:
    """How the fine-tune renders and tokenizes a conversation."""

    render: Callable[[Sequence[Message]], str]
    tokenize: Callable[[str], list[int]] | None
    """transformers' tokenizer; None when only the template is known (text-level checks)."""
    bos_token: str | None
    adds_bos: bool
    """The tokenizer prepends BOS itself, so llama.cpp will too (and the TEMPLATE omits it)."""
    bos_token_id: int | None
    special_tokens: tuple[str, ...]
    origin: str = "transformers"
    """Where the reference came from, for the report."""
    chat_template: str | None = None
    """The Jinja it renders with: what Ollama derives capabilities from (``check``)."""

    def ollama_token_ids(self, prompt: str) -> list[int]:
        """Token ids llama.cpp feeds the model for ``prompt`` (BOS added like the tokenizer)."""
        if self.tokenize is None:
            raise ValueError("this reference has no tokenizer")
        ids = self.tokenize(prompt)
        if self.adds_bos and self.bos_token_id is not None and ids[:1] != [self.bos_token_id]:
            ids = [self.bos_token_id, *ids]
        return ids

    def prompt_text(self, rendered: str) -> str:
        """``rendered`` as Ollama should send it: without the BOS llama.cpp adds itself."""
        if self.adds_bos and self.bos_token and rendered.startswith(self.bos_token):
            return rendered[len(self.bos_token) :]
        return rendered


def load_reference(source: Path, *, chat_template: str | None = None) -> Reference:
    """Load the fine-tune's tokenizer and chat template with transformers.

    ``chat_template`` (the one reader's choice, ``ResolvedInput.chat_template``) replaces the
    tokenizer's own, so the reference renders with the template the GGUF and Modelfile carry.

    Raises:
        InputError: the folder has no tokenizer or chat template transformers can load.
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source))
    except (OSError, ValueError) as err:
        raise InputError(
            f"cannot load a tokenizer from {source}: {err}".splitlines()[0],
            hint="pass --source a folder with tokenizer files (the adapter or model dir)",
        ) from err
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    if not getattr(tokenizer, "chat_template", None):
        raise InputError(
            f"{source} has no chat template", hint="pass --source the fine-tune's folder"
        )
    return _from_tokenizer(tokenizer, f"tokenizer in {source}")


def _from_tokenizer(tokenizer: Any, origin: str, *, adds_bos: bool | None = None) -> Reference:
    def render(messages: Sequence[Message]) -> str:
        chat = [dict(m) for m in messages]
        try:
            text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        except Exception as err:  # the Jinja raised on this conversation
            # A template that renders only with tools offered (Hermes 2 Pro's tool use): the
            # notebook's prompt without tools is the one with an empty list, as the TEMPLATE
            # prints it (chat_template/tools_required.py); anything else raises as it did.
            try:
                text = tokenizer.apply_chat_template(
                    chat, tokenize=False, add_generation_prompt=True, tools=[]
                )
            except Exception:
                raise err from None
        return str(text)

    def tokenize(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    bos_id = tokenizer.bos_token_id
    if adds_bos is None:
        probe_ids = list(tokenizer("a")["input_ids"])
        adds_bos = bos_id is not None and probe_ids[:1] == [bos_id]
    specials = tuple(
        t for t in dict.fromkeys(tokenizer.all_special_tokens + _added_specials(tokenizer)) if t
    )
    jinja = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None
    return Reference(
        render, tokenize, tokenizer.bos_token, adds_bos, bos_id, specials, origin, jinja
    )


def _added_specials(tokenizer: Any) -> list[str]:
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return [str(tok.content) for tok in decoder.values() if getattr(tok, "special", False)]


def reference_from_template(source: TemplateSource) -> Reference:
    """A text-level reference from a chat template and its tokens (e.g. a GGUF's own).

    Rendering is transformers' (``render_hf``); there is no tokenizer, so probes compare text.
    """
    from ..chat_template.hf_render import render_hf
    from ..chat_template.tools_required import needs_tools, tools_view
    from ..errors import TemplateRenderError

    variables = source.template_variables()
    asked: dict[str, bool] = {}  # whether the template needs tools, asked once

    def render(messages: Sequence[Message]) -> str:
        args: dict[str, Any] = {"tokens": variables, "add_generation_prompt": True}
        try:
            return render_hf(source.template, messages, **args)
        except TemplateRenderError:
            if not asked.setdefault("needs_tools", needs_tools(source)):
                raise
        # Renders only with tools offered: the prompt without tools is the one with an empty
        # list, as the TEMPLATE prints it (chat_template/tools_required.py).
        with tools_view():
            return render_hf(source.template, messages, **args)

    specials = tuple(dict.fromkeys((*source.added_tokens, *source.stop_tokens)))
    return Reference(
        render=render,
        tokenize=None,
        bos_token=source.bos_token,
        adds_bos=bool(source.add_bos_token),
        bos_token_id=None,
        special_tokens=specials,
        origin=f"chat template in {source.origin} (text only, no tokenizer)",
        chat_template=source.template,
    )


def reference_from_gguf(path: Path) -> Reference | None:
    """The reference a GGUF carries: its chat template, with its own tokenizer when
    transformers can read it (``gguf_file=``), else at text level; None without a template.

    llama.cpp decides BOS by ``tokenizer.ggml.add_bos_token``, so that key wins over what the
    converted tokenizer does.
    """
    from ..chat_template.source import load_template_source
    from ..errors import TemplateNotFoundError

    try:
        source = load_template_source(path)
    except TemplateNotFoundError:
        return None
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except Exception as err:  # transformers converts only some GGUF vocabularies
        logger.info("transformers cannot read the tokenizer of %s (%s)", path, err)
        return reference_from_template(source)
    tokenizer.chat_template = source.template
    return _from_tokenizer(
        tokenizer, f"chat template and tokenizer in {path}", adds_bos=source.add_bos_token
    )


def load_reference_for(
    tokenizer_dir: Path | None, gguf: Path | None, *, chat_template: str | None = None
) -> Reference | None:
    """The best reference available: transformers on ``tokenizer_dir``, else what the GGUF
    carries (``reference_from_gguf``), else None (nothing to compare with: not verified).
    """
    if tokenizer_dir is not None:
        return load_reference(tokenizer_dir, chat_template=chat_template)
    if gguf is not None:
        return reference_from_gguf(gguf)
    return None


__all__ = [
    "Reference",
    "load_reference",
    "load_reference_for",
    "reference_from_gguf",
    "reference_from_template",
]
