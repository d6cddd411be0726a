"""A tiny GGUF that carries nothing but a chat template and its BOS/EOS strings.

llama-server needs a model to start, and its Jinja engine takes ``bos_token``/``eos_token``
from the model's vocabulary and drops a leading BOS when the vocabulary adds one itself. To
check a template that has no GGUF yet (a model folder, a ``.jinja``), we give llama-server a
random-weight one-layer model (a few hundred KiB, loads in milliseconds) whose vocabulary holds
exactly those token strings and that ``add_bos_token`` flag.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Model width of the stub: the smallest llama.cpp's CPU backend runs without complaint.
N_EMBD = 32
N_HEAD = 2
#: Text of the stand-in for a missing BOS/EOS: an *unused* token, which llama.cpp renders as "".
UNSET = "<dto-unset>"


def _byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values, in byte order."""
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


def write_template_gguf(
    path: Path,
    template: str,
    *,
    bos: str | None,
    eos: str | None,
    add_bos: bool = False,
) -> Path:
    """Write a stub GGUF whose ``tokenizer.chat_template`` is ``template``; atomically.

    ``bos``/``eos`` None: the vocabulary's BOS/EOS is a control token with empty text, so
    ``{{ bos_token }}`` renders as nothing, as an undefined variable does in transformers.
    """
    specials = list(dict.fromkeys([bos or UNSET, eos or UNSET]))
    tokens = [*_byte_symbols(), "Ġt", "he", *specials]  # llama.cpp wants some merges
    types = [1] * 258 + [5 if s == UNSET else 3 for s in specials]

    def tokenizer(writer: Any) -> None:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges(["Ġ t", "h e"])
        writer.add_bos_token_id(tokens.index(bos or UNSET))
        writer.add_eos_token_id(tokens.index(eos or UNSET))
        writer.add_add_bos_token(add_bos)
        writer.add_chat_template(template)

    return _write_stub(path, len(tokens), tokenizer)


def write_vocabulary_stub(path: Path, model: Path) -> Path:
    """Write a stub GGUF carrying every ``tokenizer.*`` key of ``model`` (vocabulary, merges,
    BOS/EOS ids and flags, chat templates), read from its header only; atomically.

    llama-server renders and tokenizes from these keys alone, so ``/apply-template`` and
    ``/tokenize`` answer as on ``model`` while the server maps a few MiB instead of the
    weights (a 1B Q4_K_M: ~960 MiB resident, repacked for the CPU backend).

    Raises:
        InputError: ``model`` is not a readable GGUF.
    """
    from gguf import GGUFValueType

    from .metadata import read_gguf_prefixed

    fields = read_gguf_prefixed(model, "tokenizer.")
    tokens = fields.get("tokenizer.ggml.tokens")
    n_vocab = len(tokens.value) if tokens is not None else 0

    def tokenizer(writer: Any) -> None:
        for key, field in fields.items():
            sub = GGUFValueType(field.item) if field.item is not None else None
            writer.add_key_value(key, field.value, GGUFValueType(field.kind), sub_type=sub)

    return _write_stub(path, n_vocab, tokenizer)


def _write_stub(path: Path, n_vocab: int, tokenizer: Callable[[Any], None]) -> Path:
    """A one-layer llama of width N_EMBD whose tokenizer keys ``tokenizer`` writes."""
    import gguf
    import numpy as np

    n_ff = 2 * N_EMBD
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    writer = gguf.GGUFWriter(str(partial), "llama")
    writer.add_name("dto-template-stub")
    writer.add_context_length(512)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(1)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    tokenizer(writer)
    weights = {
        "token_embd.weight": (n_vocab, N_EMBD),
        "output.weight": (n_vocab, N_EMBD),
        "blk.0.attn_q.weight": (N_EMBD, N_EMBD),
        "blk.0.attn_k.weight": (N_EMBD, N_EMBD),
        "blk.0.attn_v.weight": (N_EMBD, N_EMBD),
        "blk.0.attn_output.weight": (N_EMBD, N_EMBD),
        "blk.0.ffn_gate.weight": (n_ff, N_EMBD),
        "blk.0.ffn_up.weight": (n_ff, N_EMBD),
        "blk.0.ffn_down.weight": (N_EMBD, n_ff),
    }
    for name in ("output_norm.weight", "blk.0.attn_norm.weight", "blk.0.ffn_norm.weight"):
        writer.add_tensor(name, np.ones(N_EMBD, np.float32))
    for name, shape in weights.items():
        writer.add_tensor(name, np.full(shape, 0.01, np.float32))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path
