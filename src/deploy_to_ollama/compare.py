"""Run stage: greedy answers of transformers (merged model, CPU) vs the Ollama model.

Both sides answer the same one-turn chats greedily; we count how many of transformers' tokens
Ollama's answer reproduces before the first difference. An early divergence at f16/q8_0 means
the export, the TEMPLATE or the stops are wrong.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError, MergeError
from .ollama_client import OllamaClient
from .progress import NullProgress, ProgressReporter

logger = logging.getLogger(__name__)

DEFAULT_PROMPTS = ("What is the capital of France?",)
DEFAULT_MAX_TOKENS = 32
DTYPES = ("float32", "bfloat16", "float16", "auto")
#: Fixed seed on the Ollama side; at temperature 0 it only pins down ties.
SEED = 42


@dataclass(frozen=True, slots=True)
class PromptComparison:
    """Both answers to one prompt and where they part."""

    prompt: str
    hf_answer: str
    ollama_answer: str
    hf_token_count: int
    """Tokens transformers generated, its end-of-turn token included."""
    agreed_tokens: int
    """Leading transformers tokens that Ollama's answer reproduces."""
    hf_stopped: bool
    """Transformers ended on an end-of-turn token (not on the token cap)."""
    ollama_done_reason: str | None

    @property
    def diverged_at(self) -> int | None:
        """Index of the first transformers token Ollama did not reproduce (None: all agree)."""
        return None if self.agreed_tokens >= self.hf_token_count else self.agreed_tokens

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "prompt": self.prompt,
            "hf_answer": self.hf_answer,
            "ollama_answer": self.ollama_answer,
            "hf_tokens": self.hf_token_count,
            "agreed_tokens": self.agreed_tokens,
            "diverged_at": self.diverged_at,
            "hf_stopped": self.hf_stopped,
            "ollama_done_reason": self.ollama_done_reason,
        }


@dataclass(frozen=True, slots=True)
class CompareReport:
    """The comparison of every prompt."""

    source: Path
    model: str
    host: str
    max_tokens: int
    results: tuple[PromptComparison, ...] = field(default=())

    @property
    def passed(self) -> bool:
        """No prompt diverged before ``max_tokens`` tokens."""
        return all(r.diverged_at is None or r.diverged_at >= self.max_tokens for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for ``--json``."""
        return {
            "source": str(self.source),
            "model": self.model,
            "host": self.host,
            "max_tokens": self.max_tokens,
            "passed": self.passed,
            "results": [r.to_dict() for r in self.results],
        }

    def summary_lines(self) -> list[str]:
        """A readable side-by-side report."""
        lines: list[str] = []
        for r in self.results:
            where = "all agree" if r.diverged_at is None else f"diverge at token {r.diverged_at}"
            lines += [
                f"prompt: {r.prompt!r}",
                f"  transformers: {r.hf_answer!r}",
                f"  ollama:       {r.ollama_answer!r}",
                f"  {r.agreed_tokens}/{r.hf_token_count} leading tokens agree ({where})",
            ]
        verdict = "PASS" if self.passed else "FAIL: diverged before the token cap"
        lines.append(f"{verdict} ({self.model} vs {self.source}, max {self.max_tokens} tokens)")
        return lines


# --------------------------------------------------------------------------- transformers side


@contextlib.contextmanager
def merged_model_dir(source: Path, *, base: Path | None = None) -> Iterator[Path]:
    """A folder holding the merged HF model: ``source`` itself, or a temp merge of an adapter.

    The merge is the exporter's own (``merge.save_merged``), so transformers sees exactly the
    weights that went into the GGUF.
    """
    from .inputs import resolve_input, source_kind

    kind = source_kind(source)
    if kind == "merged":
        yield source
        return
    if kind == "gguf":
        raise InputError(
            f"{source} is a GGUF: it has no transformers reference",
            hint="pass the fine-tune folder (config.json or adapter_config.json)",
        )
    from .merge import save_merged

    resolved = resolve_input(source, base=base)
    with tempfile.TemporaryDirectory(prefix="dto-compare-") as tmp:
        target = Path(tmp) / "merged"
        save_merged(resolved, target)
        yield target


def _load(model_dir: Path, dtype: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
    except (OSError, ValueError) as err:
        raise MergeError(
            f"transformers cannot load {model_dir}: {err}".splitlines()[0],
            hint="check that the folder holds a complete HF model",
        ) from err
    return model, tokenizer


def _stop_ids(model: Any, tokenizer: Any) -> list[int]:
    """End-of-turn ids: generation_config's eos (may be a list) and the tokenizer's eos."""
    ids: set[int] = set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return sorted(ids)


def generate_greedy(
    model: Any, tokenizer: Any, messages: Sequence[dict[str, str]], max_tokens: int
) -> tuple[list[int], bool]:
    """Greedy token ids for the chat ``messages`` and whether an end-of-turn token ended them."""
    import torch

    prompt = tokenizer.apply_chat_template(
        list(messages), add_generation_prompt=True, tokenize=False
    )
    # The template already writes BOS and other specials: tokenize it verbatim, as Ollama does.
    input_ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    stops = _stop_ids(model, tokenizer)
    with torch.no_grad():
        output = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=max_tokens,
            do_sample=False,
            repetition_penalty=1.0,
            eos_token_id=stops or None,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        )
    ids = [int(i) for i in output[0, input_ids.shape[1] :]]
    stopped = bool(ids) and ids[-1] in stops
    return ids, stopped


def count_agreeing(
    tokenizer: Any, ids: Sequence[int], *, stopped: bool, other: str, other_stopped: bool
) -> int:
    """How many leading ``ids`` the text ``other`` reproduces.

    Compared on text, so the count does not depend on how ``other`` would re-tokenize; a token
    that ends in half a UTF-8 character waits for the next one. The final end-of-turn token
    agrees when ``other`` is exactly the whole answer and also stopped.
    """
    body = list(ids[:-1] if stopped else ids)
    agreed = 0
    for i in range(1, len(body) + 1):
        text = tokenizer.decode(body[:i], skip_special_tokens=False)
        if other.startswith(text):
            agreed = i
        elif not text.endswith("\ufffd"):
            break
    if stopped and agreed == len(body):
        full = tokenizer.decode(body, skip_special_tokens=False)
        if other == full and other_stopped:
            agreed += 1
    return agreed


# --------------------------------------------------------------------------- ollama side


def ollama_greedy(
    client: OllamaClient, model: str, messages: Sequence[dict[str, str]], max_tokens: int
) -> tuple[str, str | None]:
    """Ollama's answer at temperature 0 and a fixed seed, with its ``done_reason``."""
    options = {
        "temperature": 0,
        "seed": SEED,
        "num_predict": max_tokens,
        "top_k": 1,
        "repeat_penalty": 1.0,
    }
    response = client.chat(model, messages, options=options)
    return response.message.content or "", response.done_reason


# --------------------------------------------------------------------------- compare


def compare_model(
    source: Path,
    model: str,
    *,
    prompts: Sequence[str] = DEFAULT_PROMPTS,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    host: str | None = None,
    system: str | None = None,
    base: Path | None = None,
    dtype: str = "float32",
    progress: ProgressReporter | None = None,
) -> CompareReport:
    """Answer ``prompts`` greedily with transformers and with Ollama, and compare the tokens.

    Args:
        source: the fine-tune (LoRA adapter folder or merged model folder).
        model: the Ollama model name.
        prompts: one-turn user prompts.
        max_tokens: token cap on both sides; divergence before it fails the report.
        host: Ollama server (``OLLAMA_HOST`` form).
        system: system prompt sent on both sides.
        base: base model folder for an adapter (else ``base_model_name_or_path``).
        dtype: transformers dtype on CPU; float32 (default) adds no rounding of its own,
            ``bfloat16``/``auto`` halve the memory of large models.
        progress: stage reporter.

    Returns:
        The report; ``passed`` is false on an early divergence (the CLI exits 3).

    Raises:
        InputError: bad source or prompts.
        ModelNotFoundError: the model is missing on the server (exit 1).
        OllamaUnavailableError: the server cannot be reached (exit 4).
        MergeError: the merged model cannot be loaded.
    """
    if max_tokens < 1:
        raise InputError(f"--max-tokens must be at least 1, got {max_tokens}", hint="e.g. 32")
    if not prompts:
        raise InputError("no prompt to compare", hint="pass --prompt TEXT")
    if dtype not in DTYPES:
        raise InputError(f"unknown --dtype {dtype!r}", hint=f"use one of {', '.join(DTYPES)}")
    reporter = progress or NullProgress()
    client = OllamaClient(host)
    head = [{"role": "system", "content": system}] if system else []
    client.require(model)  # fail before loading transformers when the model is missing
    results: list[PromptComparison] = []
    with merged_model_dir(source, base=base) as folder:
        reporter.start("load", "transformers: loading the merged model")
        hf_model, tokenizer = _load(folder, dtype)
        reporter.done("load")
        reporter.start("compare", "comparing answers", total=len(prompts))
        for prompt in prompts:
            messages = [*head, {"role": "user", "content": prompt}]
            results.append(_compare_one(hf_model, tokenizer, client, model, messages, max_tokens))
            reporter.advance("compare")
        reporter.done("compare")
    return CompareReport(
        source=source, model=model, host=client.host, max_tokens=max_tokens, results=tuple(results)
    )


def _compare_one(
    hf_model: Any,
    tokenizer: Any,
    client: OllamaClient,
    model: str,
    messages: list[dict[str, str]],
    max_tokens: int,
) -> PromptComparison:
    ids, stopped = generate_greedy(hf_model, tokenizer, messages, max_tokens)
    answer, reason = ollama_greedy(client, model, messages, max_tokens)
    body = ids[:-1] if stopped else ids
    agreed = count_agreeing(
        tokenizer, ids, stopped=stopped, other=answer, other_stopped=reason == "stop"
    )
    return PromptComparison(
        prompt=messages[-1]["content"],
        hf_answer=tokenizer.decode(body, skip_special_tokens=False),
        ollama_answer=answer,
        hf_token_count=len(ids),
        agreed_tokens=agreed,
        hf_stopped=stopped,
        ollama_done_reason=reason,
    )


__all__ = [
    "CompareReport",
    "PromptComparison",
    "compare_model",
    "count_agreeing",
    "merged_model_dir",
]
