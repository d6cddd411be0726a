"""Is an Ollama model the base a LoRA was trained on? Architecture, tensor shapes, tokenizer.

``deploy --mode adapter --base-model NAME`` runs a GGUF LoRA on a model the server already has.
llama.cpp applies a LoRA to whatever tensors carry the right names, so a LoRA of another base
of the same family would load and answer nonsense. We compare what ``/api/show`` (verbose)
reports with the LoRA GGUF and the adapter's base config and tokenizer, before registering.
Weights of the same shapes and vocabulary cannot be told apart this way (a base and its
instruct tune); the report says what was compared.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._fs import read_json_object
from .errors import AdapterBaseMismatchError

#: HF config key -> the GGUF ``{arch}.`` key Ollama's model_info reports.
CONFIG_KEYS: tuple[tuple[str, str], ...] = (
    ("hidden_size", "embedding_length"),
    ("num_hidden_layers", "block_count"),
    ("intermediate_size", "feed_forward_length"),
    ("num_attention_heads", "attention.head_count"),
    ("num_key_value_heads", "attention.head_count_kv"),
)
_LORA_SUFFIXES = (".lora_a", ".lora_b")


@dataclass(frozen=True, slots=True)
class BaseMatch:
    """What was compared between the adapter's base and the Ollama model (all equal)."""

    model: str
    architecture: str
    lora_tensors: int
    """LoRA pairs whose target tensor the Ollama model has with the right shape."""
    tokens: int
    """Tokens compared one by one (the local tokenizer's, against the GGUF token list)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "architecture": self.architecture,
            "lora_tensors_checked": self.lora_tensors,
            "tokens_checked": self.tokens,
        }


def read_lora_gguf(path: Path) -> tuple[str, dict[str, tuple[int, ...]]]:
    """``general.architecture`` and tensor shapes (GGUF order) of a GGUF LoRA."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    field = reader.fields.get("general.architecture")
    arch = str(field.contents()) if field is not None else ""
    shapes = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}
    return arch, shapes


def check_same_base(
    model: str,
    shown: Any,
    *,
    lora_gguf: Path,
    base_dir: Path,
    tokenizer_dir: Path,
) -> BaseMatch:
    """Refuse unless ``shown`` (``/api/show`` verbose of ``model``) is the adapter's base.

    Args:
        model: the Ollama model name (for the message).
        shown: its verbose ``/api/show`` (``model_info``, ``tensors``).
        lora_gguf: the adapter converted to a GGUF LoRA.
        base_dir: the HF base the adapter names (its ``config.json``).
        tokenizer_dir: the tokenizer the fine-tune was trained with.

    Raises:
        AdapterBaseMismatchError: the first difference, with the fix.
    """
    info: Mapping[str, Any] = shown.modelinfo or {}
    arch, lora_shapes = read_lora_gguf(lora_gguf)
    theirs = str(info.get("general.architecture") or "")
    if arch != theirs:
        _refuse(model, f"the adapter is for a {arch!r} model, {model} is {theirs or 'unknown'!r}")
    _compare_config(model, arch, info, read_json_object(base_dir / "config.json"))
    checked = _compare_tensors(model, lora_shapes, shown.tensors or ())
    tokens = _compare_tokens(model, info.get("tokenizer.ggml.tokens"), tokenizer_dir)
    return BaseMatch(model=model, architecture=arch, lora_tensors=checked, tokens=tokens)


def _refuse(model: str, why: str) -> None:
    raise AdapterBaseMismatchError(
        f"--base-model {model} is not the adapter's base: {why}",
        hint="pass the Ollama model of the base the LoRA was trained on, or drop --base-model "
        "to register that base from the adapter's base_model_name_or_path",
    )


def _compare_config(
    model: str, arch: str, info: Mapping[str, Any], config: Mapping[str, Any]
) -> None:
    for hf_key, gguf_key in CONFIG_KEYS:
        ours, theirs = config.get(hf_key), info.get(f"{arch}.{gguf_key}")
        if isinstance(ours, int) and isinstance(theirs, int) and ours != theirs:
            _refuse(model, f"{gguf_key} is {theirs} there, the adapter's base has {ours}")


def _compare_tensors(
    model: str, lora: Mapping[str, tuple[int, ...]], tensors: Sequence[Mapping[str, Any]]
) -> int:
    """Each ``X.lora_a`` [in, r] / ``X.lora_b`` [r, out] must meet a base ``X`` of [in, out]."""
    base = {str(t.get("name")): tuple(int(n) for n in t.get("shape") or ()) for t in tensors}
    if not base:
        _refuse(model, "the server reports no tensors for it (verbose /api/show)")
    targets = sorted({n.rsplit(".", 1)[0] for n in lora if n.endswith(_LORA_SUFFIXES)})
    for target in targets:
        a, b = lora.get(f"{target}.lora_a"), lora.get(f"{target}.lora_b")
        shape = base.get(target)
        if shape is None:
            _refuse(model, f"it has no tensor {target}, which the LoRA changes")
        assert shape is not None and a is not None and b is not None
        if len(shape) < 2 or (shape[0], shape[1]) != (a[0], b[-1]):
            want = f"[{a[0]}, {b[-1]}]"
            _refuse(model, f"{target} is {list(shape)} there, the LoRA expects {want}")
    return len(targets)


def local_tokens(tokenizer_dir: Path) -> dict[int, str]:
    """id -> token text of ``tokenizer.json`` (vocab and added tokens), as GGUF stores them."""
    path = tokenizer_dir / "tokenizer.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    vocab = (data.get("model") or {}).get("vocab")
    tokens: dict[int, str] = {}
    if isinstance(vocab, dict):
        tokens = {int(i): str(t) for t, i in vocab.items()}
    elif isinstance(vocab, list):  # unigram: [piece, score] pairs
        tokens = {i: str(entry[0]) for i, entry in enumerate(vocab)}
    for added in data.get("added_tokens") or ():
        tokens[int(added["id"])] = str(added["content"])
    return tokens


def _compare_tokens(model: str, theirs: Any, tokenizer_dir: Path) -> int:
    ours = local_tokens(tokenizer_dir)
    if not ours:
        return 0  # no tokenizer.json to compare with: shapes and architecture were checked
    if not isinstance(theirs, list | tuple) or not theirs:
        _refuse(model, "the server reports no token list for it (verbose /api/show)")
    differ = [i for i, text in sorted(ours.items()) if i >= len(theirs) or theirs[i] != text]
    if differ:
        i = differ[0]
        there = repr(theirs[i]) if i < len(theirs) else "nothing"
        _refuse(
            model,
            f"its tokenizer differs ({len(differ)} of {len(ours)} tokens; id {i} is {there} "
            f"there, {ours[i]!r} in the adapter's tokenizer)",
        )
    return len(ours)


__all__ = ["CONFIG_KEYS", "BaseMatch", "check_same_base", "local_tokens", "read_lora_gguf"]
