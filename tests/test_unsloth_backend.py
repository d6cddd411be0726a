"""The Unsloth backend: CPU-side contract tests everywhere, a real export on a CUDA machine.

The ``gpu`` tests run on the lent device through tests/support/gpu_run.sh, which provisions
llama.cpp (same vendored revision as ``deploy-to-ollama setup``) and points DTO_LLAMA_CPP_DIR
at it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.errors import (
    ConversionError,
    DependencyMissingError,
    InputError,
    OutputExistsError,
    UsageError,
)
from deploy_to_ollama.gguf import unsloth as ub
from support.policy import skip_or_fail

# --- CPU-side contract --------------------------------------------------------------------


def _fake_toolchain(root: Path) -> Path:
    """A llama.cpp dir with the files Unsloth checks for (contents irrelevant to these tests)."""
    (root / "gguf-py" / "gguf").mkdir(parents=True)
    (root / "gguf-py" / "gguf" / "__init__.py").write_text("")
    (root / "conversion").mkdir()
    (root / "conversion" / "__init__.py").write_text("")
    (root / "conversion" / "__pycache__").mkdir()
    (root / "conversion" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    for name in ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py"):
        (root / name).write_text("# converter\n")
    quantize = root / "llama-quantize"
    quantize.write_text("#!/bin/sh\necho usage\n")
    quantize.chmod(quantize.stat().st_mode | stat.S_IXUSR)
    return root


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["Q8_0"], ("q8_0",)),
        (["quantized", "q4_k_m", "Q4_K_M"], ("q4_k_m",)),
        (["fast_quantized", "not_quantized"], ("q8_0", None)),
        ([" q5_K_m "], ("q5_k_m",)),
    ],
)
def test_quant_names_are_case_insensitive_and_aliases_resolve(
    names: list[str], expected: tuple[str | None, ...]
) -> None:
    assert ub.resolve_unsloth_quants(names) == expected


def test_unknown_quant_lists_the_valid_ones() -> None:
    with pytest.raises(UsageError) as info:
        ub.resolve_unsloth_quants(["q9_z"])
    assert "q9_z" in str(info.value)
    assert info.value.hint is not None
    assert "q4_k_m" in info.value.hint
    assert "not_quantized" in info.value.hint


def test_empty_quant_list_is_refused() -> None:
    with pytest.raises(UsageError):
        ub.resolve_unsloth_quants([])


def test_load_kwargs_default_to_exact_16bit_weights() -> None:
    kwargs = ub.load_kwargs(load_in_4bit=False, load_in_8bit=False, max_seq_length=128)
    # Unsloth's own default is load_in_4bit=True: we must override it explicitly.
    assert kwargs["load_in_4bit"] is False
    assert kwargs["load_in_8bit"] is False
    assert kwargs["load_in_16bit"] is True
    assert kwargs["max_seq_length"] == 128


def test_load_kwargs_4bit_turns_16bit_off() -> None:
    kwargs = ub.load_kwargs(load_in_4bit=True, load_in_8bit=False, max_seq_length=64)
    assert (kwargs["load_in_4bit"], kwargs["load_in_16bit"]) == (True, False)


def test_load_in_4bit_and_8bit_together_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="exclude each other"):
        ub.load_kwargs(load_in_4bit=True, load_in_8bit=True, max_seq_length=64)


def test_outputs_map_back_to_requested_quants_in_order() -> None:
    files = ["/w/model_gguf/tiny.BF16.gguf", "/w/model_gguf/tiny.Q4_K_M.gguf"]
    got = ub.match_unsloth_outputs(files, ["q4_k_m", None], "bf16")
    assert got == (
        (Path("/w/model_gguf/tiny.Q4_K_M.gguf"), "q4_k_m"),
        (Path("/w/model_gguf/tiny.BF16.gguf"), "bf16"),
    )


def test_missing_output_is_a_conversion_error_naming_what_was_written() -> None:
    with pytest.raises(ConversionError) as info:
        ub.match_unsloth_outputs(["/w/tiny.BF16.gguf"], ["q8_0"], "bf16")
    assert "Q8_0" in str(info.value)
    assert "bf16" in str(info.value)


def test_incomplete_toolchain_names_every_missing_file(tmp_path: Path) -> None:
    (tmp_path / "convert_hf_to_gguf.py").write_text("")
    with pytest.raises(DependencyMissingError) as info:
        ub.check_llama_cpp_dir(tmp_path)
    message = str(info.value)
    assert "llama-quantize" in message
    assert "gguf-py/gguf/__init__.py" in message
    assert "convert_hf_to_gguf.py" not in message.split("lacks", 1)[1]
    assert info.value.exit_code == 4


def test_non_executable_quantizer_is_refused(tmp_path: Path) -> None:
    root = _fake_toolchain(tmp_path / "ll")
    (root / "llama-quantize").chmod(0o644)
    with pytest.raises(DependencyMissingError, match="not executable"):
        ub.check_llama_cpp_dir(root)


def test_staged_copy_is_complete_writable_and_leaves_the_toolchain_alone(tmp_path: Path) -> None:
    src = _fake_toolchain(tmp_path / "toolchain")
    before = sorted(p.relative_to(src) for p in src.rglob("*"))
    staged = ub.stage_llama_cpp_dir(src, tmp_path / "cache")
    assert staged == ub.staged_llama_cpp_dir(src, tmp_path / "cache")
    ub.check_llama_cpp_dir(staged)
    assert os.access(staged / "llama-quantize", os.X_OK)
    # The quantizer is linked so a shared-lib build still finds its libs beside the real binary.
    assert (staged / "llama-quantize").resolve() == (src / "llama-quantize").resolve()
    assert not list(staged.rglob("*.pyc")), "stale bytecode must not travel into the copy"
    (staged / "unsloth_convert_hf_to_gguf.py").write_text("patched")  # what Unsloth does
    assert sorted(p.relative_to(src) for p in src.rglob("*")) == before


def test_restaging_is_stable_and_refreshes_the_copy(tmp_path: Path) -> None:
    # unsloth_zoo freezes its llama.cpp dir at import: a second export must reuse the same dir.
    src = _fake_toolchain(tmp_path / "toolchain")
    first = ub.stage_llama_cpp_dir(src, tmp_path / "cache")
    (src / "convert_hf_to_gguf.py").write_text("# rebuilt converter\n")
    second = ub.stage_llama_cpp_dir(src, tmp_path / "cache")
    assert first == second
    assert (second / "convert_hf_to_gguf.py").read_text() == "# rebuilt converter\n"
    assert (second / "llama-quantize").is_symlink()
    other = _fake_toolchain(tmp_path / "other-toolchain")
    assert ub.staged_llama_cpp_dir(other, tmp_path / "cache") != first


@pytest.mark.parametrize("task_type", [None, "SEQ_CLS"])
def test_adapter_without_causal_lm_task_type_is_refused(
    tmp_path: Path, task_type: str | None
) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps({"task_type": task_type}))
    with pytest.raises(InputError) as info:
        ub.check_adapter_task_type(tmp_path)
    assert repr(task_type) in str(info.value)
    assert info.value.hint is not None
    assert "CAUSAL_LM" in info.value.hint


def test_causal_lm_adapter_and_merged_model_dirs_pass_the_task_check(tmp_path: Path) -> None:
    ub.check_adapter_task_type(tmp_path)  # no adapter_config.json: a merged model dir
    (tmp_path / "adapter_config.json").write_text(json.dumps({"task_type": "CAUSAL_LM"}))
    ub.check_adapter_task_type(tmp_path)


def test_unreadable_adapter_config_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text("{not json")
    with pytest.raises(InputError, match="not readable JSON"):
        ub.check_adapter_task_type(tmp_path)


def test_environment_pins_unsloth_to_our_llama_cpp_and_offline(tmp_path: Path) -> None:
    env = ub.unsloth_environment(tmp_path / "ll", tmp_path / "cache")
    root = str((tmp_path / "ll").resolve())
    assert env["UNSLOTH_LLAMA_CPP_PATH"] == root
    assert env["UNSLOTH_LLAMA_CPP_SCRIPTS_DIR"] == root
    assert env["UNSLOTH_LLAMA_CPP_OFFLINE"] == "1"
    assert env["UNSLOTH_AUTO_INSTALL"] == "0"
    assert env["UNSLOTH_COMPILE_LOCATION"].startswith(str(tmp_path / "cache"))


def test_configure_sets_the_environment_when_unsloth_is_not_imported(tmp_path: Path) -> None:
    environ: dict[str, str] = {}
    ub.configure_unsloth_environment(tmp_path / "ll", tmp_path / "c", environ, modules={})
    assert environ["UNSLOTH_LLAMA_CPP_PATH"] == str((tmp_path / "ll").resolve())


def test_configure_refuses_when_unsloth_already_froze_another_dir(tmp_path: Path) -> None:
    zoo = types.SimpleNamespace(LLAMA_CPP_DEFAULT_DIR=str(tmp_path / "elsewhere"))
    environ: dict[str, str] = {}
    with pytest.raises(DependencyMissingError, match="imported before"):
        ub.configure_unsloth_environment(
            tmp_path / "ll", tmp_path / "c", environ, modules={"unsloth_zoo.llama_cpp": zoo}
        )
    assert environ == {}, "nothing may be half-set after a refusal"


def test_configure_accepts_unsloth_already_pointing_at_our_dir(tmp_path: Path) -> None:
    (tmp_path / "ll").mkdir()
    zoo = types.SimpleNamespace(LLAMA_CPP_DEFAULT_DIR=str(tmp_path / "ll"))
    environ: dict[str, str] = {}
    ub.configure_unsloth_environment(
        tmp_path / "ll", tmp_path / "c", environ, modules={"unsloth_zoo.llama_cpp": zoo}
    )
    assert environ["UNSLOTH_LLAMA_CPP_OFFLINE"] == "1"


def test_availability_check_never_imports_unsloth() -> None:
    was_loaded = "unsloth" in sys.modules
    result = ub.unsloth_availability()
    assert ("unsloth" in sys.modules) == was_loaded
    if importlib.util.find_spec("unsloth") is None:
        assert result.available is False
        assert "unsloth" in result.reason


def test_export_validates_flags_before_anything_heavy(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        ub.export_with_unsloth(
            tmp_path / "missing-adapter",
            tmp_path / "out",
            quants=["q4_k_mm"],
            llama_cpp_dir=tmp_path / "no-llama",
            cache_dir=tmp_path / "cache",
        )
    assert not (tmp_path / "out").exists()


def test_export_refuses_an_existing_merged_dir_without_force(tmp_path: Path) -> None:
    (tmp_path / "merged").mkdir()
    with pytest.raises(OutputExistsError, match="already exists") as info:
        ub.export_with_unsloth(
            tmp_path / "adapter",
            tmp_path / "out",
            quants=["q8_0"],
            llama_cpp_dir=_fake_toolchain(tmp_path / "ll"),
            cache_dir=tmp_path / "cache",
            save_merged=tmp_path / "merged",
        )
    assert info.value.hint is not None
    assert "--force" in info.value.hint


@pytest.mark.skipif(ub.unsloth_availability().available, reason="this host can run Unsloth")
def test_export_without_cuda_or_unsloth_says_use_llama_cpp(tmp_path: Path) -> None:
    with pytest.raises(DependencyMissingError) as info:
        ub.export_with_unsloth(
            tmp_path / "adapter",
            tmp_path / "out",
            quants=["q8_0"],
            llama_cpp_dir=_fake_toolchain(tmp_path / "ll"),
            cache_dir=tmp_path / "cache",
        )
    assert info.value.hint is not None
    assert "--backend llama.cpp" in info.value.hint
    assert "unsloth" not in sys.modules


def _cli_env(tmp_path: Path, *, hide_unsloth: bool, stand_in_unsloth: bool) -> dict[str, str]:
    """Environment for a CLI child on an empty cache, where pip cannot fetch anything.

    ``stand_in_unsloth`` puts importable ``unsloth``/``unsloth_zoo`` packages on the path whose
    import exits 99: the availability check must find them without importing them.
    ``hide_unsloth`` drops the folder a real unsloth is installed in (the GPU machine's).
    """
    paths = [p for p in sys.path if p]
    spec = importlib.util.find_spec("unsloth")
    if hide_unsloth and spec is not None and spec.origin is not None:
        # The same folder seen through links, minus unsloth: its other packages stay importable.
        site = Path(spec.origin).parents[1]
        mirror = tmp_path / "site-without-unsloth"
        mirror.mkdir()
        for entry in site.iterdir():
            if not entry.name.startswith(("unsloth", "unsloth_zoo")):
                (mirror / entry.name).symlink_to(entry)
        paths = [str(mirror) if Path(p).resolve() == site.resolve() else p for p in paths]
    if stand_in_unsloth:
        fake = tmp_path / "stand-in"
        for name in ("unsloth", "unsloth_zoo"):
            (fake / name).mkdir(parents=True)
            (fake / name / "__init__.py").write_text("raise SystemExit(99)\n")
        paths.insert(0, str(fake))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DTO_", "UNSLOTH_"))}
    env.update(
        PYTHONPATH=os.pathsep.join(paths),
        DTO_CACHE_DIR=str(tmp_path / "cache"),
        PIP_NO_INDEX="1",  # were the toolchain provisioned first, pip would fail fast here
        PIP_FIND_LINKS="",
    )
    if stand_in_unsloth:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("unsloth without CUDA", "no CUDA GPU is visible to torch"),
        ("CUDA (where present) without unsloth", "python package 'unsloth' is missing"),
    ],
)
def test_cli_unsloth_backend_that_cannot_run_is_one_line_exit_4(
    tmp_path: Path, case: str, reason: str
) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"task_type": "CAUSAL_LM"}))
    stand_in = case.startswith("unsloth without")
    env = _cli_env(tmp_path, hide_unsloth=not stand_in, stand_in_unsloth=stand_in)
    command = [sys.executable, "-m", "deploy_to_ollama", "export", str(adapter)]
    command += ["--out", str(tmp_path / "out"), "--backend", "unsloth", "--quant", "q8_0"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 4, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    assert errors == [f"Error: the unsloth backend cannot run: {reason}"], proc.stderr
    assert any(line.startswith("Hint:") and "--backend llama.cpp" in line for line in lines)
    assert "Traceback" not in proc.stderr
    # Refused before any heavy work: no llama.cpp provisioned, no output folder.
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    assert not (tmp_path / "out").exists()


# --- GPU: a real export through Unsloth -------------------------------------------------

#: GGUF general.file_type values (llama.cpp LLAMA_FTYPE_*).
FILE_TYPES = {"f16": 1, "q8_0": 7, "q4_k_m": 15}
TENSOR_TYPES = {"f16": "F16", "q8_0": "Q8_0", "q4_k_m": "Q4_K"}


def _require_gpu_stack() -> Path:
    availability = ub.unsloth_availability()
    if not availability.available:
        skip_or_fail(f"unsloth backend unavailable: {availability.reason}")
    llama_dir = os.environ.get("DTO_LLAMA_CPP_DIR")
    if not llama_dir:
        skip_or_fail("DTO_LLAMA_CPP_DIR is unset (tests/support/gpu_run.sh provisions it)")
    return Path(str(llama_dir))


def _gguf_summary(path: Path, llama_dir: Path) -> dict[str, Any]:
    sys.path.insert(0, str(llama_dir / "gguf-py"))
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def scalar(key: str) -> Any:
        field = reader.fields[key]
        return field.contents()

    return {
        "arch": scalar("general.architecture"),
        "file_type": scalar("general.file_type"),
        "n_vocab": len(reader.fields["tokenizer.ggml.tokens"].data),
        "eos": scalar("tokenizer.ggml.eos_token_id"),
        "tensor_types": sorted({t.tensor_type.name for t in reader.tensors}),
        "chat_template": scalar("tokenizer.chat_template"),
    }


_REFERENCE_SCRIPT = """
import json, sys, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
base_dir, adapter_dir = sys.argv[1], sys.argv[2]
ids, steps = json.loads(sys.argv[3]), int(sys.argv[4])
base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.bfloat16)
merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload().float().eval()
out, first = [], None
with torch.no_grad():
    for _ in range(steps):
        logits = merged(torch.tensor([ids + out])).logits[0, -1]
        first = logits.tolist() if first is None else first
        out.append(int(logits.argmax()))
print(json.dumps({"tokens": out, "logits": first}))
"""


def _reference_greedy(fixture: Any, prompt_ids: list[int], steps: int) -> tuple[list[int], Any]:
    """Greedy tokens and first-step logits from plain transformers + peft's merge (CPU, fp32).

    Runs in a fresh interpreter: importing unsloth patches transformers' Llama in-process.
    """
    import numpy as np

    args = [str(fixture.base_dir), str(fixture.adapter_dir), json.dumps(prompt_ids), str(steps)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "-c", _REFERENCE_SCRIPT, *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["tokens"], np.array(result["logits"], dtype=np.float32)


_LLAMA_CPP_SCRIPT = """
import json, sys
import numpy as np
from llama_cpp import Llama
path, ids, steps = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
llm = Llama(model_path=path, n_ctx=64, logits_all=True, verbose=True, n_gpu_layers=0)
llm.eval(ids)
first = np.array(llm.scores[llm.n_tokens - 1]).tolist()
out = []
for _ in range(steps):
    token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    out.append(token)
    llm.eval([token])
print(json.dumps({"tokens": out, "logits": first}))
"""


def _llama_cpp_greedy(path: Path, prompt_ids: list[int], steps: int) -> tuple[list[int], Any]:
    """Greedy tokens and first-step logits from llama.cpp, in a fresh interpreter.

    In the pytest process (torch + unsloth loaded) llama_model_load_from_file segfaulted on
    the device; a separate process keeps llama.cpp's native code away from those libraries.
    """
    import numpy as np

    args = [str(path), json.dumps(prompt_ids), str(steps)]
    proc = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", _LLAMA_CPP_SCRIPT, *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, f"llama.cpp rc={proc.returncode}: {proc.stderr[-2000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["tokens"], np.array(result["logits"], dtype=np.float32)


@pytest.fixture(scope="module")
def unsloth_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the module: unsloth pins its llama.cpp dir once per process."""
    return tmp_path_factory.mktemp("unsloth-cache")


@pytest.mark.gpu
@pytest.mark.slow
def test_unsloth_exports_f16_q8_0_q4_k_m_that_match_transformers(
    tmp_path: Path, unsloth_cache: Path
) -> None:
    llama_dir = _require_gpu_stack()
    from transformers import AutoTokenizer

    from support.unsloth_fixtures import build_tiny_llama_lora

    fixture = build_tiny_llama_lora(tmp_path / "fx")
    out = tmp_path / "out"
    result = ub.export_with_unsloth(
        fixture.adapter_dir,
        out,
        quants=["f16", "Q8_0", "quantized"],
        llama_cpp_dir=llama_dir,
        cache_dir=unsloth_cache,
        max_seq_length=256,
        save_merged=tmp_path / "merged",
    )
    assert [g.quant for g in result.ggufs] == ["f16", "q8_0", "q4_k_m"]
    names = ["base.F16.gguf", "base.Q8_0.gguf", "base.Q4_K_M.gguf"]
    assert [g.path.name for g in result.ggufs] == names
    assert sorted(p.name for p in out.iterdir()) == sorted(names), (
        "the scratch dir (staged llama.cpp, merge) must be gone"
    )
    # Unsloth froze our staged llama.cpp at import, proving the env was set first.
    zoo = sys.modules["unsloth_zoo.llama_cpp"]
    staged = ub.staged_llama_cpp_dir(llama_dir, unsloth_cache)
    assert Path(zoo.LLAMA_CPP_DEFAULT_DIR) == staged.resolve()
    assert (staged / "llama-quantize").is_file()

    report: dict[str, Any] = {"seconds": result.seconds}
    for gguf in result.ggufs:
        summary = _gguf_summary(gguf.path, llama_dir)
        assert summary["arch"] == "llama"
        assert summary["file_type"] == FILE_TYPES[gguf.quant]
        assert summary["n_vocab"] == fixture.vocab_size
        assert summary["eos"] == 2
        assert "assistant:" in summary["chat_template"]
        assert TENSOR_TYPES[gguf.quant] in summary["tensor_types"]
        report[gguf.quant] = {"size": gguf.size_bytes, **summary}

    merged_cfg = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert merged_cfg["architectures"] == ["LlamaForCausalLM"]
    assert list((tmp_path / "merged").glob("*.safetensors"))

    _keep_artifacts(result.ggufs)
    tokenizer = AutoTokenizer.from_pretrained(fixture.base_dir)
    prompt = tokenizer("hello world, the secret is").input_ids
    ref_tokens, ref_logits = _reference_greedy(fixture, prompt, 10)
    if importlib.util.find_spec("llama_cpp") is None:
        skip_or_fail("llama_cpp (llama-cpp-python) is missing: GGUF logits not compared")
    for gguf in result.ggufs:
        tokens, logits = _llama_cpp_greedy(gguf.path, prompt, 10)
        delta = float(abs(ref_logits - logits).max())
        report[gguf.quant].update(tokens=tokens, max_abs_dlogit=delta)
    report["reference_tokens"] = ref_tokens
    _write_report(report)
    # f16 is lossless enough for exact greedy agreement (measured on CPU: max|dlogit| 0.017).
    assert report["f16"]["tokens"] == ref_tokens
    assert report["f16"]["max_abs_dlogit"] < 0.05
    # This fixture's random weights have top-2 margins of ~0.3 while q8_0 moves logits by ~0.7
    # (the same GGUF bytes as llama.cpp's own converter on peft's merge, checked on CPU), so only
    # the first token and a bound are asserted; taught fixtures with real margins go further.
    assert report["q8_0"]["tokens"][0] == ref_tokens[0]
    assert report["q8_0"]["max_abs_dlogit"] < 1.5
    assert len(report["q4_k_m"]["tokens"]) == 10


@pytest.mark.gpu
@pytest.mark.slow
def test_unsloth_4bit_load_exports_and_saves_merged_4bit(
    tmp_path: Path, unsloth_cache: Path
) -> None:
    llama_dir = _require_gpu_stack()
    if importlib.util.find_spec("bitsandbytes") is None:
        skip_or_fail("bitsandbytes is missing: --load-in-4bit cannot be tested")
    from support.unsloth_fixtures import build_tiny_llama_lora

    fixture = build_tiny_llama_lora(tmp_path / "fx")
    result = ub.export_with_unsloth(
        fixture.adapter_dir,
        tmp_path / "out",
        quants=["q8_0"],
        llama_cpp_dir=llama_dir,
        cache_dir=unsloth_cache,
        load_in_4bit=True,
        max_seq_length=256,
        save_merged=tmp_path / "merged4",
        merged_method="merged_4bit_forced",
    )
    (gguf,) = result.ggufs
    summary = _gguf_summary(gguf.path, llama_dir)
    assert summary["file_type"] == FILE_TYPES["q8_0"]
    cfg = json.loads((tmp_path / "merged4" / "config.json").read_text())
    assert cfg.get("quantization_config", {}).get("load_in_4bit") is True
    _write_report({"4bit": {"seconds": result.seconds, "size": gguf.size_bytes}}, "4bit")


def _keep_artifacts(ggufs: Sequence[ub.UnslothGguf]) -> None:
    """Copy the (tiny) GGUFs next to the report, so they can be inspected off the device."""
    target = os.environ.get("DTO_GPU_REPORT_DIR")
    if target:
        for gguf in ggufs:
            shutil.copy2(gguf.path, Path(target, gguf.path.name))


def _write_report(report: dict[str, Any], name: str = "export") -> None:
    target = os.environ.get("DTO_GPU_REPORT_DIR")
    if target:
        Path(target, f"unsloth-{name}.json").write_text(json.dumps(report, indent=2, default=str))
