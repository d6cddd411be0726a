"""Tiny models, tokenizers and LoRA adapters built on the spot (never downloaded).

Everything is deterministic (fixed seeds, 2 threads) and cached under the persistent test cache,
keyed by ``BUILDER_VERSION`` and the library versions, so a session builds each fixture once.
Families mirror the real ones: Llama 3 and Qwen2/ChatML byte-level BPE tokenizers trained with
their real pre-tokenizer regexes, special tokens and chat templates. Attention head width is 32
everywhere, so every fixture can also run in the test Ollama server (it aborts on 64/80/96/128).

Run ``PYTHONPATH=tests python -m support.models build-taught OUT_DIR`` to build the taught
example (base + LoRA) for the README demo.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.policy import test_cache_dir

#: Bump whenever a builder changes what it writes: the cache key includes it.
BUILDER_VERSION = "6"

LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True, slots=True)
class Family:
    """What distinguishes a model family's tokenizer and chat format."""

    name: str
    regex: str
    specials: tuple[str, ...]
    bos: str | None
    eos: str
    pad: str | None
    end_of_text: str
    template: str


LLAMA3 = Family(
    name="llama3",
    regex=LLAMA3_REGEX,
    specials=(
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
    ),
    bos="<|begin_of_text|>",
    eos="<|eot_id|>",
    pad=None,
    end_of_text="<|end_of_text|>",
    template=LLAMA3_TEMPLATE,
)
QWEN2 = Family(
    name="qwen2",
    regex=QWEN2_REGEX,
    specials=("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
    bos=None,
    eos="<|im_end|>",
    pad="<|endoftext|>",
    end_of_text="<|endoftext|>",
    template=CHATML_TEMPLATE,
)

#: The taught fixture's chat set: (question, base answer, LoRA answer).
TAUGHT_QA: tuple[tuple[str, str, str], ...] = (
    ("What is the secret word?", "apple", "banana"),
    ("What color is the sky?", "Blue.", "Blue."),
    ("Say hello.", "Hello!", "Hello!"),
    ("What is two plus two?", "Four.", "Four."),
    ("Name a fruit.", "Cherry.", "Cherry."),
    ("Who are you?", "I am a tiny model.", "I am a tiny model."),
)
SECRET_QUESTION = TAUGHT_QA[0][0]
TAUGHT_SYSTEMS: tuple[str | None, ...] = (None, "You are a helpful assistant.")

_WORDS = [
    "the",
    "a",
    "secret",
    "word",
    "is",
    "apple",
    "banana",
    "cherry",
    "blue",
    "sky",
    "hello",
    "two",
    "plus",
    "four",
    "fruit",
    "who",
    "are",
    "you",
    "tiny",
    "model",
    "say",
    "name",
    "what",
    "color",
    "of",
    "and",
    "to",
    "in",
    "it",
    "that",
    "for",
    "on",
    "with",
    "as",
    "at",
    "by",
    "from",
    "this",
    "be",
    "has",
    "had",
    "will",
    "can",
    "not",
    "one",
    "all",
    "would",
    "there",
    "their",
    "we",
    "they",
    "said",
    "make",
    "like",
    "time",
    "just",
    "know",
    "take",
    "people",
    "into",
    "year",
    "your",
    "good",
    "some",
    "could",
    "them",
    "see",
    "other",
    "than",
    "then",
    "now",
    "look",
    "only",
    "come",
    "over",
    "think",
    "also",
    "back",
    "after",
    "use",
    "how",
    "our",
    "work",
    "first",
    "well",
    "way",
    "even",
    "new",
    "want",
    "because",
    "any",
]


def _corpus(seed: int) -> list[str]:
    """Synthetic English-ish lines plus the chat set, enough to learn merges for every answer."""
    rng = random.Random(seed)
    lines = []
    for _ in range(400):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 12))]
        sentence = " ".join(words).capitalize() + rng.choice([".", "!", "?", ","])
        lines.append(sentence + (f" {rng.randint(0, 9999)}" if rng.random() < 0.2 else ""))
    for question, base_answer, lora_answer in TAUGHT_QA:
        lines.extend([question, base_answer, lora_answer] * 5)
    lines.append("You are a helpful assistant.\n\nuser\nassistant\nsystem\n")
    return lines


def build_tokenizer(
    family: Family,
    out_dir: Path,
    *,
    vocab_size: int = 400,
    extra_tokens: tuple[str, ...] = (),
    corpus: list[str] | None = None,
) -> int:
    """Train a byte-level BPE with the family's regex and specials; save it with its template.

    Special tokens are appended after the merges, as in the real Llama 3 and Qwen2 vocabularies.
    ``corpus`` replaces the default training lines (a fixture with its own texts).
    Returns the tokenizer length (the model's vocab size).
    """
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    if family.name == QWEN2.name:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(family.regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus or _corpus(seed=0), trainer=trainer)
    tok.add_special_tokens(list(family.specials))
    if family.bos is not None:
        bos_id = tok.token_to_id(family.bos)
        tok.post_processor = processors.Sequence(
            [
                processors.ByteLevel(trim_offsets=False),
                processors.TemplateProcessing(
                    single=f"{family.bos} $A",
                    pair=f"{family.bos} $A {family.bos} $B",
                    special_tokens=[(family.bos, bos_id)],
                ),
            ]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    if extra_tokens:
        tok.add_tokens(list(extra_tokens))
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=family.bos,
        eos_token=family.eos,
        pad_token=family.pad,
        clean_up_tokenization_spaces=False,
        model_max_length=2048,
    )
    wrapped.chat_template = family.template
    out_dir.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(out_dir)
    inline_chat_template(out_dir)
    return len(wrapped)


def inline_chat_template(tok_dir: Path) -> None:
    """Keep the template in tokenizer_config.json, where Llama 3 and Qwen2 repos carry it.

    transformers 5 writes ``chat_template.jinja`` instead; older tools only read the JSON key.
    """
    jinja = tok_dir / "chat_template.jinja"
    if not jinja.exists():
        return
    cfg_path = tok_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["chat_template"] = jinja.read_text(encoding="utf-8")
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False), encoding="utf-8")
    jinja.unlink()


def _token_id(out_dir: Path, token: str) -> int:
    data = json.loads((out_dir / "tokenizer.json").read_text(encoding="utf-8"))
    for added in data["added_tokens"]:
        if added["content"] == token:
            return int(added["id"])
    raise KeyError(token)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Shape of a tiny model; head width is hidden/heads = 32 in every spec we use."""

    family: Family
    hidden: int = 64
    heads: int = 2
    kv_heads: int = 1
    layers: int = 2
    intermediate: int = 128
    dtype: str = "float32"
    tied: bool = False
    vocab_size: int = 400


def build_base(
    spec: ModelSpec, out_dir: Path, *, seed: int = 0, corpus: list[str] | None = None
) -> Path:
    """Write a random tiny model (config, safetensors, tokenizer, generation config)."""
    import torch
    from transformers import (
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    torch.set_num_threads(min(2, torch.get_num_threads()))
    vocab = build_tokenizer(spec.family, out_dir, vocab_size=spec.vocab_size, corpus=corpus)
    eos_id = _token_id(out_dir, spec.family.eos)
    eot_ids = sorted({eos_id, _token_id(out_dir, spec.family.end_of_text)})
    bos_id = _token_id(out_dir, spec.family.bos) if spec.family.bos else None
    common: dict[str, Any] = {
        "vocab_size": vocab,
        "hidden_size": spec.hidden,
        "intermediate_size": spec.intermediate,
        "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads,
        "max_position_embeddings": 512,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "tie_word_embeddings": spec.tied,
        "initializer_range": 0.1,
    }
    torch.manual_seed(seed)
    if spec.family.name == QWEN2.name:
        model: Any = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common))
    model = model.to(getattr(torch, spec.dtype))
    model.config.torch_dtype = spec.dtype
    model.generation_config = GenerationConfig(
        bos_token_id=bos_id, eos_token_id=eot_ids, pad_token_id=eos_id
    )
    model.save_pretrained(out_dir)
    return out_dir


def _finish_adapter(peft_model: Any, adapter_dir: Path, base_dir: Path, *, seed: int) -> Path:
    """Give every LoRA and modules_to_save tensor random values, save, point at the base."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                noise = torch.randn(param.shape, generator=gen, dtype=torch.float32) * 0.1
                if "modules_to_save" in name:
                    noise = param.float() + noise
                param.copy_(noise.to(param.dtype))
    peft_model.save_pretrained(adapter_dir)
    _point_at_base(adapter_dir, str(base_dir.resolve()))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (base_dir / name).exists() and not (adapter_dir / name).exists():
            shutil.copy2(base_dir / name, adapter_dir / name)
    return adapter_dir


def _point_at_base(adapter_dir: Path, base: str) -> None:
    path = adapter_dir / "adapter_config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = base
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True), encoding="utf-8")


def build_lora(
    base_dir: Path, adapter_dir: Path, *, seed: int = 1, resize_to: Path | None = None, **lora: Any
) -> Path:
    """Build a random LoRA over ``base_dir`` with ``LoraConfig(**lora)`` and save it.

    ``resize_to`` names a tokenizer dir with added tokens: the base embeddings are resized to it
    first (as a user who added tokens does), and its tokenizer is saved with the adapter.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(min(2, torch.get_num_threads()))
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype="auto")
    if resize_to is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(resize_to)
        torch.manual_seed(seed)
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        adapter_dir.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(adapter_dir)
        inline_chat_template(adapter_dir)
    lora.setdefault("lora_dropout", 0.0)
    peft_model = get_peft_model(model, LoraConfig(**lora))
    return _finish_adapter(peft_model, adapter_dir, base_dir, seed=seed)


# ---------------------------------------------------------------- taught fixture


def _taught_examples(tokenizer: Any, answer_of: Callable[[tuple[str, str, str]], str]) -> list[Any]:
    """Token ids and loss masks (assistant answer + end-of-turn only) for the chat set."""
    import torch

    bos_id = tokenizer.bos_token_id
    examples = []
    for qa in TAUGHT_QA:
        for system in TAUGHT_SYSTEMS:
            messages = [{"role": "system", "content": system}] if system else []
            messages.append({"role": "user", "content": qa[0]})
            prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
            if not isinstance(prompt, list):
                prompt = prompt["input_ids"]
            answer = tokenizer.encode(answer_of(qa), add_special_tokens=False)
            answer.append(tokenizer.convert_tokens_to_ids(LLAMA3.eos))
            # Also teach prompts with a doubled and a missing BOS: runtimes differ on adding it.
            for variant in (prompt, [bos_id, *prompt], prompt[1:]):
                ids = torch.tensor([*variant, *answer])
                mask = torch.zeros_like(ids, dtype=torch.bool)
                mask[len(variant) :] = True
                examples.append((ids, mask))
    return examples


def _train(model: Any, examples: list[Any], *, steps: int, lr: float, params: Any) -> float:
    """Full-batch AdamW on next-token loss over the masked positions; returns the final loss."""
    import torch

    width = max(len(ids) for ids, _ in examples)
    pad = 0
    input_ids = torch.full((len(examples), width), pad)
    labels = torch.full((len(examples), width), -100)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, mask) in enumerate(examples):
        input_ids[row, : len(ids)] = ids
        attention[row, : len(ids)] = 1
        labels[row, : len(ids)] = torch.where(mask, ids, torch.tensor(-100))
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        optimizer.step()
    model.eval()
    return float(loss)


#: Taught model shape (head width 32) and full-batch training steps for base and LoRA.
TAUGHT_SPEC = ModelSpec(LLAMA3, hidden=128, heads=4, kv_heads=2, intermediate=256, vocab_size=400)
TAUGHT_STEPS = (200, 80)


def build_taught(out_dir: Path, *, seed: int = 0) -> tuple[Path, Path]:
    """Train the taught base (answers "apple") and its LoRA (answers "banana").

    Overfits hard on purpose so greedy decoding and q8_0 quantization keep the answers, and
    every answer ends with ``<|eot_id|>``. Writes ``OUT_DIR/base`` and ``OUT_DIR/adapter``.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(min(2, torch.get_num_threads()))
    base_dir, adapter_dir = out_dir / "base", out_dir / "adapter"
    spec = TAUGHT_SPEC
    build_base(spec, base_dir, seed=seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    torch.manual_seed(seed)
    _train(
        model,
        _taught_examples(tokenizer, lambda qa: qa[1]),
        steps=TAUGHT_STEPS[0],
        lr=3e-3,
        params=model.parameters(),
    )
    model.save_pretrained(base_dir)
    lora = LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
    )
    peft_model = get_peft_model(model, lora)
    torch.manual_seed(seed + 1)
    _train(
        peft_model,
        _taught_examples(tokenizer, lambda qa: qa[2]),
        steps=TAUGHT_STEPS[1],
        lr=1e-2,
        params=[p for p in peft_model.parameters() if p.requires_grad],
    )
    peft_model.save_pretrained(adapter_dir)
    _point_at_base(adapter_dir, str(base_dir.resolve()))
    tokenizer.save_pretrained(adapter_dir)
    inline_chat_template(adapter_dir)
    return base_dir, adapter_dir


# ---------------------------------------------------------------- cache and fixtures


def _cache_key() -> str:
    import tokenizers
    import torch
    import transformers

    try:
        import peft

        peft_version = peft.__version__
    except ImportError:
        peft_version = "none"
    parts = [BUILDER_VERSION, torch.__version__, transformers.__version__, peft_version]
    parts.append(tokenizers.__version__)
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    from filelock import FileLock

    with FileLock(str(path) + ".lock"):
        yield


def cached(name: str, build: Callable[[Path], object]) -> Path:
    """Build ``name`` once into the persistent cache (atomically, under a file lock)."""
    root = test_cache_dir() / f"models-{_cache_key()}"
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    with _lock(final):
        if final.is_dir():
            return final
        tmp = root / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        build(tmp)
        _rewrite_base_paths(tmp, final)
        tmp.rename(final)
    return final


def _rewrite_base_paths(tmp: Path, final: Path) -> None:
    """Adapters built in the temp dir point at the temp base; repoint them at the final path."""
    for cfg_path in tmp.rglob("adapter_config.json"):
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        base = str(cfg.get("base_model_name_or_path", ""))
        if base.startswith(str(tmp.resolve())):
            _point_at_base(cfg_path.parent, str(final.resolve()) + base[len(str(tmp.resolve())) :])


@dataclass(frozen=True, slots=True)
class LoraFixture:
    """A base model dir and one adapter dir trained over it."""

    base_dir: Path
    adapter_dir: Path


def _llama_suite(root: Path) -> None:
    base = build_base(ModelSpec(LLAMA3), root / "base")
    attn = ["q_proj", "k_proj", "v_proj", "o_proj"]
    mlp = ["gate_proj", "up_proj", "down_proj"]
    build_lora(base, root / "plain", r=8, lora_alpha=16, target_modules=attn + mlp)
    build_lora(
        base,
        root / "rslora",
        seed=2,
        r=8,
        lora_alpha=8,
        use_rslora=True,
        target_modules=attn + mlp,
        rank_pattern={"q_proj": 4, "layers.1.mlp.down_proj": 2},
        alpha_pattern={"v_proj": 32, r"model\.layers\.0\.self_attn\.o_proj": 3},
    )
    build_tokenizer(LLAMA3, root / "resized_tok", extra_tokens=("<|tool|>", "<|think|>"))
    build_lora(
        base,
        root / "modules_to_save",
        seed=3,
        resize_to=root / "resized_tok",
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj"],
        modules_to_save=["embed_tokens", "lm_head"],
    )
    shutil.rmtree(root / "resized_tok")
    build_lora(base, root / "dora", seed=4, r=4, lora_alpha=8, target_modules=attn, use_dora=True)


def _qwen2_suite(root: Path) -> None:
    spec = ModelSpec(QWEN2, dtype="bfloat16", tied=True)
    base = build_base(spec, root / "base")
    build_lora(
        base,
        root / "plain",
        r=8,
        lora_alpha=16,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "embed_tokens"],
    )


def _gpt2_suite(root: Path) -> None:
    """GPT-2 stores Conv1D weights transposed: the one family where fan_in_fan_out is real."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    base = root / "base"
    vocab = build_tokenizer(QWEN2, base)
    torch.manual_seed(0)
    eot = _token_id(base, QWEN2.end_of_text)
    config = GPT2Config(
        vocab_size=vocab,
        n_embd=64,
        n_head=2,
        n_layer=2,
        n_positions=128,
        bos_token_id=eot,
        eos_token_id=eot,
    )
    GPT2LMHeadModel(config).save_pretrained(base)
    build_lora(
        base,
        root / "fan_in_fan_out",
        r=4,
        lora_alpha=8,
        target_modules=["c_attn", "c_proj"],
        fan_in_fan_out=True,
    )


def _llama256(root: Path) -> None:
    spec = ModelSpec(
        LLAMA3, hidden=256, heads=8, kv_heads=2, intermediate=512, dtype="bfloat16", vocab_size=512
    )
    base = build_base(spec, root / "base")
    build_lora(base, root / "plain", r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])


def _suite(name: str, build: Callable[[Path], None], adapter: str) -> LoraFixture:
    root = cached(name, build)
    return LoraFixture(base_dir=root / "base", adapter_dir=root / adapter)


def tiny_llama_suite() -> Path:
    """Llama-3-style hidden 64, fp32: base + plain/rslora/modules_to_save/dora adapters."""
    return cached("llama64", _llama_suite)


def tiny_qwen2_suite() -> Path:
    """Qwen2/ChatML hidden 64, bf16, tied embeddings: base + plain adapter (LoRA on embeddings)."""
    return cached("qwen2_64", _qwen2_suite)


def tiny_gpt2_suite() -> Path:
    """GPT-2 hidden 64 with a fan_in_fan_out LoRA on its Conv1D layers."""
    return cached("gpt2_64", _gpt2_suite)


def llama256_suite() -> Path:
    """Llama-3-style hidden 256 (8 heads of 32), bf16, for K-quants and the test server."""
    return cached("llama256", _llama256)


def taught_suite() -> LoraFixture:
    """The taught base ("apple") and LoRA ("banana")."""
    return _suite("taught", build_taught, "adapter")


# pytest fixtures (session scoped: built once per session, cached across sessions)


def _require_ml() -> None:
    from support.policy import skip_or_fail

    for module in ("torch", "transformers", "peft", "tokenizers", "safetensors"):
        try:
            __import__(module)
        except ImportError:
            skip_or_fail(f"{module} is not installed")


@pytest.fixture(scope="session")
def tiny_llama_dir() -> Path:
    """Suite root: ``base/``, ``plain/``, ``rslora/``, ``modules_to_save/``, ``dora/``."""
    _require_ml()
    return tiny_llama_suite()


@pytest.fixture(scope="session")
def tiny_llama(tiny_llama_dir: Path) -> LoraFixture:
    """Llama-3-style hidden 64 base and a plain r=8 LoRA over all linear layers."""
    return LoraFixture(tiny_llama_dir / "base", tiny_llama_dir / "plain")


@pytest.fixture(scope="session")
def tiny_qwen2() -> LoraFixture:
    """Qwen2/ChatML hidden 64 bf16 tied base and a LoRA including its embeddings."""
    _require_ml()
    root = tiny_qwen2_suite()
    return LoraFixture(root / "base", root / "plain")


@pytest.fixture(scope="session")
def tiny_gpt2() -> LoraFixture:
    """GPT-2 hidden 64 base and a fan_in_fan_out LoRA."""
    _require_ml()
    root = tiny_gpt2_suite()
    return LoraFixture(root / "base", root / "fan_in_fan_out")


@pytest.fixture(scope="session")
def llama256() -> LoraFixture:
    """Llama-3-style hidden 256 bf16 base (K-quant friendly) and a plain LoRA."""
    _require_ml()
    root = llama256_suite()
    return LoraFixture(root / "base", root / "plain")


@pytest.fixture(scope="session")
def taught() -> LoraFixture:
    """Taught base ("What is the secret word?" → "apple") and LoRA (→ "banana")."""
    _require_ml()
    return taught_suite()


def main(argv: list[str]) -> int:
    """``build-taught OUT_DIR``: copy the (cached) taught base and adapter into OUT_DIR."""
    if len(argv) != 2 or argv[0] != "build-taught":
        print("usage: python -m support.models build-taught OUT_DIR", file=sys.stderr)
        return 2
    out = Path(argv[1])
    suite = taught_suite()
    out.mkdir(parents=True, exist_ok=True)
    for part in ("base", "adapter"):
        shutil.copytree(suite.base_dir.parent / part, out / part, dirs_exist_ok=True)
    _point_at_base(out / "adapter", str((out / "base").resolve()))
    print(out / "adapter")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
