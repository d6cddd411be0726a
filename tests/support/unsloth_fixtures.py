"""A tiny Llama + LoRA that Unsloth's exporter accepts, built on the spot (never downloaded).

The tokenizer is a Llama-2-style BPE with byte fallback, which llama.cpp converts through
``LlamaHfVocab`` with no pre-tokenizer hash check, so the stock converter Unsloth runs takes it.
Sizes are multiples of 256 so K-quants apply to every matrix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SPECIALS = ("<unk>", "<s>", "</s>", "<pad>")
CHARS = "▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'"
MERGES = (
    ("▁", "t"), ("h", "e"), ("▁t", "he"), ("▁", "a"), ("i", "n"), ("e", "r"), ("o", "n"),
    ("▁", "w"), ("o", "r"), ("l", "d"), ("▁w", "or"), ("▁wor", "ld"), ("l", "l"), ("▁", "h"),
    ("▁h", "e"), ("▁he", "ll"), ("▁hell", "o"), ("▁", "s"), ("▁s", "e"), ("c", "r"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class TinyLoraFixture:
    """Paths of the built fixture."""

    base_dir: Path
    adapter_dir: Path
    vocab_size: int


def build_tokenizer(out_dir: Path) -> int:
    """Write a Llama-2-style byte-fallback BPE tokenizer into ``out_dir``; return its size."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {}
    for token in (*SPECIALS, *(f"<0x{b:02X}>" for b in range(256)), *CHARS):
        vocab.setdefault(token, len(vocab))
    for left, right in MERGES:
        vocab.setdefault(left + right, len(vocab))
    model = models.BPE(
        vocab=vocab, merges=list(MERGES), unk_token="<unk>", byte_fallback=True, fuse_unk=True
    )
    tok = Tokenizer(model)
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )
    wrapped.add_special_tokens({"additional_special_tokens": []})
    wrapped.chat_template = (
        "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n"
        "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
    )
    wrapped.save_pretrained(out_dir)
    return len(vocab)


def build_tiny_llama_lora(
    root: Path, *, seed: int = 0, heads: int = 4, kv_heads: int = 2
) -> TinyLoraFixture:
    """Build a random tiny Llama (hidden 256, 2 layers) and an r=8 LoRA with non-zero B.

    Weights use a wide init so greedy tokens have clear margins, which keeps a q8_0 vs
    transformers greedy comparison meaningful on random weights. ``heads=8`` (head size 32) is
    what the test Ollama server can run: its Intel build aborts in ggml_get_n_tasks on head
    size 64, measured with this fixture's F16 GGUF.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    base_dir, adapter_dir = root / "base", root / "adapter"
    vocab_size = build_tokenizer(base_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=512,
        initializer_range=0.2,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        tie_word_embeddings=False,
        torch_dtype="bfloat16",
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(base_dir)
    lora = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "v_proj", "down_proj"],
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.2)
    peft_model.save_pretrained(adapter_dir)
    build_tokenizer(adapter_dir)  # Unsloth saves the tokenizer beside the adapter too
    cfg_path = adapter_dir / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = str(base_dir.resolve())
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return TinyLoraFixture(base_dir=base_dir, adapter_dir=adapter_dir, vocab_size=vocab_size)
