"""Session fixture: the pinned llama.cpp toolchain, in the same place the product keeps it.

One cache key for the same pinned inputs: the tests use the toolchain ``deploy-to-ollama
setup`` and ``make demo`` provision (``$XDG_CACHE_HOME/deploy-to-ollama``, or the user's
``DTO_CACHE_DIR`` as it was when pytest started), so ``make test`` after ``make demo`` builds
nothing. The per-test ``DTO_CACHE_DIR`` (tmp) still isolates every other cached artefact, and
the product's build lock lets parallel runs share the one build. ``DTO_LLAMA_CPP_DIR`` overrides.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from support.policy import skip_or_fail

#: The environment as pytest started, before ``_isolated_env`` points DTO_CACHE_DIR at tmp.
_START_ENV = dict(os.environ)


def shared_cache_dir() -> Path:
    """The user's deploy-to-ollama cache dir: setup, the demo and the tests share llama.cpp."""
    from deploy_to_ollama.settings import Settings

    return Settings.from_env(_START_ENV).cache_dir


def _sdist_available() -> bool:
    from deploy_to_ollama.gguf.toolchain import SDIST_NAME

    return (shared_cache_dir() / "src" / SDIST_NAME).exists()


def provision_shared(*, with_server: bool) -> object:
    """The shared toolchain (built on first use, minutes; see ``provision_toolchain``).

    ``with_server`` asks for what ``setup`` provisions: llama-server, llama-perplexity and
    llama-imatrix (a cached toolchain from before them is completed once, under the lock).
    """
    from deploy_to_ollama.errors import DeployError
    from deploy_to_ollama.gguf.toolchain import provision_toolchain

    external = _START_ENV.get("DTO_LLAMA_CPP_DIR")
    if external:
        return provision_toolchain(shared_cache_dir(), llama_cpp_dir=Path(external)).toolchain
    if shutil.which("cmake") is None and not _sdist_available():
        skip_or_fail("cmake and the llama-cpp-python sdist are needed to build llama.cpp")
    try:
        return provision_toolchain(
            shared_cache_dir(), jobs=2, with_server=with_server, with_tools=with_server
        ).toolchain
    except DeployError as err:
        skip_or_fail(f"llama.cpp toolchain unavailable: {err}")
        raise


@pytest.fixture(scope="session")
def llama_cpp_toolchain() -> object:
    """A usable ``Toolchain`` (provisioned on first use; the build takes minutes)."""
    return provision_shared(with_server=False)


@pytest.fixture(scope="session")
def llama_cpp_full_toolchain() -> object:
    """The toolchain as ``setup`` provisions it: with llama-server, llama-perplexity and
    llama-imatrix (a cached one from before them is completed on first use: minutes)."""
    return provision_shared(with_server=True)


# --------------------------------------------------------------- GGUF check (item 7) helpers


def gguf_fields(path: Path, toolchain: object) -> dict[str, object]:
    """Metadata of a GGUF, read with the toolchain's vendored gguf-py."""
    import sys

    root = Path(toolchain.root)  # type: ignore[attr-defined]
    sys.path.insert(0, str(root / "gguf-py"))
    try:
        import gguf

        reader = gguf.GGUFReader(str(path))
        out: dict[str, object] = {k: f.contents() for k, f in reader.fields.items()}
        out["_tensor_types"] = {t.name: t.tensor_type.name for t in reader.tensors}
        return out
    finally:
        sys.path.remove(str(root / "gguf-py"))


def _llama(path: Path) -> object:
    try:
        from llama_cpp import Llama
    except ImportError:
        skip_or_fail("llama-cpp-python is not installed (pip install llama-cpp-python==0.3.36)")
    return Llama(
        model_path=str(path), n_ctx=128, logits_all=True, verbose=False, n_threads=2, seed=0
    )


def gguf_greedy(path: Path, prompt: list[int], steps: int = 10) -> tuple[list[int], object]:
    """Greedy tokens from llama.cpp and the logits of every prompt position (numpy array)."""
    import numpy as np

    llm = _llama(path)
    llm.reset()  # type: ignore[attr-defined]
    llm.eval(prompt)  # type: ignore[attr-defined]
    prompt_logits = np.array(llm.scores[: len(prompt)], dtype=np.float32)  # type: ignore[attr-defined]
    tokens: list[int] = []
    for _ in range(steps):
        last = llm.scores[llm.n_tokens - 1]  # type: ignore[attr-defined]
        nxt = int(np.argmax(last))
        tokens.append(nxt)
        llm.eval([nxt])  # type: ignore[attr-defined]
    llm.close()  # type: ignore[attr-defined]
    return tokens, prompt_logits


def hf_greedy(model_dir: Path, prompt: list[int], steps: int = 10) -> tuple[list[int], object]:
    """The same with transformers in float32 (the reference)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = torch.tensor([prompt])
    with torch.no_grad():
        prompt_logits = model(ids).logits[0].numpy()
        tokens: list[int] = []
        for _ in range(steps):
            nxt = int(model(ids).logits[0, -1].argmax())
            tokens.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return tokens, prompt_logits


def peft_merged(base_dir: Path, adapter_dir: Path, out_dir: Path) -> Path:
    """The oracle merge: peft ``merge_and_unload`` + ``save_pretrained`` (+ tokenizer files)."""
    import shutil as _shutil

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype="auto")
    tok_dir = adapter_dir if (adapter_dir / "tokenizer.json").exists() else base_dir
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(tok_dir))
    if vocab != model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(vocab, mean_resizing=False)
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    with torch.no_grad():
        merged.save_pretrained(out_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tok_dir / name).exists():
            _shutil.copy2(tok_dir / name, out_dir / name)
    if (base_dir / "generation_config.json").exists():
        _shutil.copy2(base_dir / "generation_config.json", out_dir / "generation_config.json")
    return out_dir
