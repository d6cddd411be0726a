"""The tiny fixtures are what the other tests assume they are: shapes, tokenizers, behaviour."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from support.models import SECRET_QUESTION, TAUGHT_QA, LoraFixture


def _config(model_dir: Path) -> dict[str, Any]:
    return dict(json.loads((model_dir / "config.json").read_text(encoding="utf-8")))


def test_every_fixture_has_head_width_32(
    tiny_llama: LoraFixture, tiny_qwen2: LoraFixture, llama256: LoraFixture, taught: LoraFixture
) -> None:
    for fixture in (tiny_llama, tiny_qwen2, llama256, taught):
        cfg = _config(fixture.base_dir)
        assert cfg["hidden_size"] // cfg["num_attention_heads"] == 32
    assert _config(llama256.base_dir)["hidden_size"] % 256 == 0


def test_tokenizers_use_the_family_regex_and_template(
    tiny_llama: LoraFixture, tiny_qwen2: LoraFixture
) -> None:
    from transformers import AutoTokenizer

    llama = AutoTokenizer.from_pretrained(tiny_llama.base_dir)
    ids = llama.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert ids == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert llama("hello")["input_ids"][0] == llama.convert_tokens_to_ids("<|begin_of_text|>")
    qwen = AutoTokenizer.from_pretrained(tiny_qwen2.base_dir)
    text = qwen.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    # Llama 3 groups digits by three, Qwen2 splits every digit.
    llama_pre = llama.backend_tokenizer.pre_tokenizer.pre_tokenize_str("123456")
    qwen_pre = qwen.backend_tokenizer.pre_tokenizer.pre_tokenize_str("123456")
    assert [piece for piece, _ in llama_pre] == ["123", "456"]
    assert len(qwen_pre) == 6
    tok_cfg = json.loads((tiny_llama.base_dir / "tokenizer_config.json").read_text())
    assert "chat_template" in tok_cfg
    gen = json.loads((tiny_llama.base_dir / "generation_config.json").read_text())
    assert llama.convert_tokens_to_ids("<|eot_id|>") in gen["eos_token_id"]


def test_fixtures_are_deterministic(tmp_path: Path, tiny_llama: LoraFixture) -> None:
    from support.models import LLAMA3, ModelSpec, build_base

    rebuilt = build_base(ModelSpec(LLAMA3), tmp_path / "base")
    for name in ("model.safetensors", "tokenizer.json"):
        assert (rebuilt / name).read_bytes() == (tiny_llama.base_dir / name).read_bytes()


def _answer(model: Any, tokenizer: Any, question: str, system: str | None = None) -> str:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": question})
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    out = model.generate(ids, max_new_tokens=16, do_sample=False, eos_token_id=eot)
    return str(tokenizer.decode(out[0, ids.shape[1] :]))


@pytest.mark.slow
def test_taught_base_says_apple_and_lora_says_banana(taught: LoraFixture) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(taught.adapter_dir)
    base = AutoModelForCausalLM.from_pretrained(taught.base_dir)
    for question, base_answer, _ in TAUGHT_QA:
        assert _answer(base, tokenizer, question) == base_answer + "<|eot_id|>"
    system = "You are a helpful assistant."
    assert _answer(base, tokenizer, SECRET_QUESTION, system) == "apple<|eot_id|>"
    tuned = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(taught.base_dir), taught.adapter_dir
    )
    for question, _, lora_answer in TAUGHT_QA:
        assert _answer(tuned, tokenizer, question) == lora_answer + "<|eot_id|>"


def _min_margin(model: Any, tokenizer: Any, answer_index: int) -> float:
    """Smallest gap between the taught token and the best other token over all answers."""
    import torch

    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    worst = float("inf")
    for qa in TAUGHT_QA:
        messages = [{"role": "user", "content": qa[0]}]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        if not isinstance(prompt, list):
            prompt = prompt["input_ids"]
        answer = [*tokenizer.encode(qa[answer_index], add_special_tokens=False), eot]
        with torch.no_grad():
            logits = model(torch.tensor([[*prompt, *answer]])).logits[0]
        for step, token in enumerate(answer):
            row = logits[len(prompt) - 1 + step].clone()
            taught_logit = float(row[token])
            row[token] = float("-inf")
            worst = min(worst, taught_logit - float(row.max()))
    return worst


@pytest.mark.slow
def test_taught_answers_have_wide_margins(taught: LoraFixture) -> None:
    """q8_0 moves logits of these models by ~1e-2; a margin of 4 keeps greedy answers stable."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(taught.adapter_dir)
    base = AutoModelForCausalLM.from_pretrained(taught.base_dir)
    assert _min_margin(base, tokenizer, 1) > 4.0
    tuned = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(taught.base_dir), taught.adapter_dir
    )
    assert _min_margin(tuned, tokenizer, 2) > 4.0


def test_build_taught_cli_copies_a_self_contained_example(
    taught: LoraFixture, tmp_path: Path
) -> None:
    from support.models import main

    assert main(["build-taught", str(tmp_path / "demo")]) == 0
    cfg = json.loads((tmp_path / "demo" / "adapter" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str((tmp_path / "demo" / "base").resolve())
    assert (tmp_path / "demo" / "base" / "model.safetensors").exists()
    assert main(["oops"]) == 2
