"""The streaming merge equals peft's merge_and_unload exactly, on every LoRA variant."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.errors import OutputExistsError
from deploy_to_ollama.inputs import resolve_input
from deploy_to_ollama.merge import (
    MergedTensors,
    iter_merged_tensors,
    merged_config,
    save_merged,
)
from support.models import LoraFixture


def _peft_reference(base_dir: Path, adapter_dir: Path, *, vocab: int | None = None) -> Any:
    """peft's merge in fp32 (bf16 bases upcast exactly), cast back to the base dtype."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if vocab is not None:
        model.resize_token_embeddings(vocab, mean_resizing=False)
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    return merged.state_dict()


def _max_diff(adapter_dir: Path, base_dir: Path, *, vocab: int | None = None) -> float:
    reference = _peft_reference(base_dir, adapter_dir, vocab=vocab)
    worst = 0.0
    seen = set()
    for name, tensor in iter_merged_tensors(resolve_input(adapter_dir)):
        expected = reference[name].to(tensor.dtype)
        assert tensor.shape == expected.shape, name
        worst = max(worst, float((tensor.float() - expected.float()).abs().max()))
        seen.add(name)
    assert seen, "no tensors merged"
    return worst


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["plain", "rslora"])
def test_llama_merge_matches_peft_exactly(tiny_llama_dir: Path, variant: str) -> None:
    assert _max_diff(tiny_llama_dir / variant, tiny_llama_dir / "base") == 0.0


@pytest.mark.slow
def test_merge_changes_every_targeted_weight(tiny_llama: LoraFixture) -> None:
    from safetensors.torch import load_file

    base = load_file(str(tiny_llama.base_dir / "model.safetensors"))
    changed = {
        name
        for name, tensor in iter_merged_tensors(resolve_input(tiny_llama.adapter_dir))
        if not tensor.equal(base[name])
    }
    assert len(changed) == 2 * 7  # 2 layers x q,k,v,o,gate,up,down
    assert all(name.endswith("_proj.weight") for name in changed)


@pytest.mark.slow
def test_modules_to_save_with_added_tokens_matches_peft(tiny_llama_dir: Path) -> None:
    adapter = tiny_llama_dir / "modules_to_save"
    vocab = merged_config(resolve_input(adapter))["vocab_size"]
    base_vocab = json.loads((tiny_llama_dir / "base" / "config.json").read_text())["vocab_size"]
    assert vocab == base_vocab + 2
    assert _max_diff(adapter, tiny_llama_dir / "base", vocab=vocab) == 0.0


@pytest.mark.slow
def test_qwen2_bf16_tied_embedding_lora_matches_peft(tiny_qwen2: LoraFixture) -> None:
    import torch

    merged = dict(iter_merged_tensors(resolve_input(tiny_qwen2.adapter_dir)))
    assert "lm_head.weight" not in merged  # still tied
    assert merged["model.embed_tokens.weight"].dtype == torch.bfloat16
    assert _max_diff(tiny_qwen2.adapter_dir, tiny_qwen2.base_dir) == 0.0


@pytest.mark.slow
def test_gpt2_fan_in_fan_out_matches_peft(tiny_gpt2: LoraFixture) -> None:
    assert resolve_input(tiny_gpt2.adapter_dir).adapter_config.fan_in_fan_out  # type: ignore[union-attr]
    assert _max_diff(tiny_gpt2.adapter_dir, tiny_gpt2.base_dir) == 0.0


@pytest.mark.slow
def test_save_merged_loads_in_transformers_and_shards(tiny_llama_dir: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_input(tiny_llama_dir / "modules_to_save")
    out = save_merged(resolved, tmp_path / "merged", max_shard_bytes=100_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(tokenizer) == model.config.vocab_size
    assert "chat_template" in json.loads((out / "tokenizer_config.json").read_text())
    assert (out / "generation_config.json").exists()
    streamed = dict(iter_merged_tensors(resolved))
    for name, tensor in model.state_dict().items():
        assert tensor.equal(streamed[name]), name
    with pytest.raises(OutputExistsError):
        save_merged(resolved, out)
    assert save_merged(resolved, out, force=True) == out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


class _Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def start(self, key: str, description: str, total: float | None = None) -> None:
        self.events.append(("start", f"{key}:{total}"))

    def advance(self, key: str, amount: float = 1, *, completed: float | None = None) -> None:
        self.events.append(("advance", key))

    def done(self, key: str, message: str | None = None) -> None:
        self.events.append(("done", key))


def test_merged_input_streams_unchanged_with_progress(tiny_llama: LoraFixture) -> None:
    from safetensors.torch import load_file

    recorder = _Recorder()
    streamed = dict(iter_merged_tensors(resolve_input(tiny_llama.base_dir), progress=recorder))
    base = load_file(str(tiny_llama.base_dir / "model.safetensors"))
    assert streamed.keys() == base.keys()
    assert all(streamed[name].equal(base[name]) for name in base)
    assert recorder.events[0] == ("start", f"merge:{len(base)}")
    assert recorder.events.count(("advance", "merge")) == len(base)
    assert recorder.events[-1] == ("done", "merge")


def test_gguf_input_has_nothing_to_merge(tmp_path: Path) -> None:
    from deploy_to_ollama.errors import InputError

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + bytes(20))
    with pytest.raises(InputError, match="already a GGUF"):
        list(iter_merged_tensors(resolve_input(gguf)))


@pytest.mark.slow
def test_random_access_equals_the_stream_in_any_order(tiny_llama: LoraFixture) -> None:
    resolved = resolve_input(tiny_llama.adapter_dir)
    streamed = dict(iter_merged_tensors(resolved))
    with MergedTensors(resolved) as merged:
        names = merged.names()
        assert names == list(streamed)
        for name in reversed(names):  # the GGUF writer asks in llama.cpp's order, not file order
            assert merged[name].equal(streamed[name]), name
        with pytest.raises(KeyError):
            merged["model.no_such.weight"]


@pytest.mark.slow
def test_row_reader_rows_equal_the_whole_merge(tiny_llama: LoraFixture) -> None:
    """Rows merged alone (the GGUF writer's chunks) are exactly the whole merged tensor's rows."""
    import torch

    resolved = resolve_input(tiny_llama.adapter_dir)
    with MergedTensors(resolved) as merged:
        merged_alone = 0
        for name in merged.names():
            reader = merged.row_reader(name)
            whole = merged[name]
            if reader is None or whole.dim() != 2:
                continue
            merged_alone += not merged.is_unchanged(name)
            rows = [reader(first, 3) for first in range(0, whole.shape[0], 3)]
            assert torch.cat(rows).equal(whole), name
            assert rows[0].dtype == whole.dtype, name
        assert merged_alone, "no LoRA-merged tensor was read row by row"


@pytest.mark.slow
def test_row_readers_are_exact_from_several_threads_and_guard_their_buffer(
    tiny_llama: LoraFixture,
) -> None:
    """The GGUF writer's quantizer threads merge rows of one tensor at once, each its own rows.

    Rows asked for from four threads in any order are exactly the whole merge's; the LoRA
    product buffer is shared from tensor to tensor, so a reader used after a newer one was made
    refuses instead of returning another tensor's values; one dropped with ``release_buffers``
    keeps working.
    """
    from concurrent.futures import ThreadPoolExecutor

    import torch

    resolved = resolve_input(tiny_llama.adapter_dir)
    with MergedTensors(resolved) as merged:
        lora = [n for n in merged.names() if not merged.is_unchanged(n) and merged.row_reader(n)]
        assert len(lora) >= 2, "the fixture has fewer than two LoRA-merged tensors"
        first, second = lora[0], lora[1]
        whole = merged[first]
        reader = merged.row_reader(first)
        assert reader is not None
        starts = list(range(0, whole.shape[0], 2))[::-1]
        with ThreadPoolExecutor(4) as pool:
            rows = dict(zip(starts, pool.map(lambda s: reader(s, 2), starts), strict=True))
        assert torch.cat([rows[s] for s in sorted(rows)]).equal(whole)
        merged.release_buffers()
        assert reader(0, 2).equal(whole[:2])
        assert merged.row_reader(second) is not None
        with pytest.raises(RuntimeError, match="replaced by a newer one"):
            reader(0, 2)
