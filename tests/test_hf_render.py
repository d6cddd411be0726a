"""The reference renderer is transformers' own, sandboxed, with HF's prefill/generation rules."""

from __future__ import annotations

import pytest

from deploy_to_ollama.chat_template import render_hf
from deploy_to_ollama.chat_template.hf_render import check_syntax
from deploy_to_ollama.errors import TemplateRenderError, TemplateSyntaxError

CHATML = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_generation_prompt_defaults_on_after_user() -> None:
    out = render_hf(CHATML, [{"role": "user", "content": "hi"}], tokens={"bos_token": "<s>"})
    assert out == "<s><|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_trailing_assistant_is_continued_not_closed() -> None:
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Sure,"}]
    out = render_hf(CHATML, messages, tokens={"bos_token": ""})
    assert out.endswith("<|im_start|>assistant\nSure,")


def test_same_as_tokenizer_apply_chat_template(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")),
        bos_token="<s>",
        eos_token="</s>",
    )
    tok.chat_template = CHATML
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    expected = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    tokens = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    assert render_hf(CHATML, messages, tokens=tokens) == expected


def test_template_raising_is_a_render_error() -> None:
    template = "{{ raise_exception('roles must alternate') }}"
    with pytest.raises(TemplateRenderError, match="roles must alternate"):
        render_hf(template, [{"role": "user", "content": "x"}])


def test_sandbox_blocks_python_internals(tmp_path) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "pwned"
    template = (
        "{{ ''.__class__.__mro__[1].__subclasses__() }}"
        f"{{{{ cycler.__init__.__globals__.os.system('touch {marker}') }}}}"
    )
    with pytest.raises(TemplateRenderError):
        render_hf(template, [{"role": "user", "content": "x"}])
    assert not marker.exists()


def test_syntax_error_names_line_and_column() -> None:
    with pytest.raises(TemplateSyntaxError) as info:
        check_syntax("{% for m in messages %}\n{{ m.content }\n{% endfor %}")
    assert info.value.line == 2
    assert info.value.column is not None
    assert "line 2" in str(info.value)
