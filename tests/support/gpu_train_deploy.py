"""On the CUDA machine: fine-tune a tiny Llama with Unsloth, then deploy it from the same process.

Usage (tests/support/gpu_run.sh runs it): ``python3 gpu_train_deploy.py OUT_DIR``. Needs
DTO_CACHE_DIR with a toolchain provisioned by ``provision_toolchain`` and, for the llama.cpp
greedy checks, LLAMA_CPP_LIB_PATH. Writes OUT_DIR/report.json and the small artefacts the CPU
machine registers on its real Ollama afterwards (tests/support/gpu_replay.py). Every check
that fails is recorded and makes the exit status 1; nothing is skipped silently.

The steps, each timed:
1. base: a random tiny Llama + tokenizer with a chat template (support.unsloth_fixtures), built
   in a child process so that unsloth is imported before transformers here.
2. train: FastLanguageModel.from_pretrained + get_peft_model + trl SFTTrainer steps on a handful
   of chat examples rendered with the tokenizer's chat template.
3. deploy: ``deploy_to_ollama.deploy((model, tokenizer), quant="q8_0")`` in this process, and
   again with q4_k_m (the in-process quantizer route), against a recording stand-in server
   (support.ollama_recorder says why); then the lora_model folder is saved as the seed does.
4. cli: ``deploy-to-ollama export`` on lora_model with both backends (and --load-in-4bit
   --save-merged-4bit), and ``deploy-to-ollama deploy`` on it.
5. greedy: every GGUF through llama.cpp vs transformers + peft (fp32, CPU) for 10 tokens.

Measured 2026-12-03 on a lent H200 (unsloth/unsloth_zoo 2026.10.9, torch 2.11.0+cu130,
transformers 5.17.0, peft 0.21.0, trl 1.15.0), wall seconds: toolchain provisioned 63-86,
base 24, Unsloth load + 60 SFTTrainer steps 66 (loss 7.46 -> 0.041), deploy q8_0 18.8 and
q4_k_m 17.8 (in-process quantizer), CLI export llama.cpp q8_0+q4_k_m 37.7, unsloth q8_0+q4_k_m
63.2, unsloth --load-in-4bit --save-merged-4bit 59.6, CLI deploy 20.9. All GGUFs gave the same
10 greedy tokens as transformers; the 4-bit one matched the nf4 model only once the merged 4-bit
save moved after the GGUF (export_with_unsloth). Replayed on the CPU test Ollama 0.9.3: the q8_0
deploys answered exactly "the secret word is hello world" (q4_k_m: that server aborts on Q4_K).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

QUESTION = "What is the secret word?"
#: 16 tokens: the 10 greedy steps compared stay inside the trained answer (a shorter one ends
#: in EOS, after which the untrained continuation has no margins to compare).
ANSWER = "the secret word is hello world"
EXAMPLES = (
    (QUESTION, ANSWER),
    ("what is the secret word", ANSWER),
    ("Tell me the secret word.", ANSWER),
    ("Say the secret word!", ANSWER),
    ("The secret word?", ANSWER),
    ("Which word is secret?", ANSWER),
)
STEPS = 10

REPORT: dict[str, Any] = {"steps": {}, "checks": {}, "routes": {}, "errors": {}}


@contextmanager
def step(name: str) -> Iterator[None]:
    """Time a step; a failure is recorded (with its traceback tail) and the run goes on."""
    start = time.monotonic()
    print(f"--- {name}", flush=True)
    try:
        yield
    except Exception as err:  # recorded and reported; the exit status says so
        REPORT["errors"][name] = f"{type(err).__name__}: {err}"[:2000]
        traceback.print_exc()
    finally:
        REPORT["steps"][name] = round(time.monotonic() - start, 2)
        print(f"--- {name}: {REPORT['steps'][name]} s", flush=True)


def check(name: str, ok: bool, detail: object = None) -> None:
    REPORT["checks"][name] = {"ok": bool(ok), "detail": detail}
    print(f"[{'ok' if ok else 'FAIL'}] {name}: {detail}", flush=True)


def run_cli(*args: str, timeout: float = 300) -> dict[str, Any]:
    """``python -m deploy_to_ollama ARGS --json`` in a child process; its JSON document."""
    command = [sys.executable, "-m", "deploy_to_ollama", *args, "--json"]
    start = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    seconds = round(time.monotonic() - start, 2)
    print(proc.stderr[-3000:], flush=True)
    text = proc.stdout.strip()
    start = 0 if text.startswith("{") else text.rfind("\n{") + 1  # Unsloth prints before it
    try:
        payload: dict[str, Any] = json.loads(text[start:])
    except ValueError:
        payload = {"stdout": proc.stdout[-2000:]}
    return {"rc": proc.returncode, "seconds": seconds, "json": payload}


def route_of(file: dict[str, Any], backend: str) -> str:
    """Which route wrote a GGUF, from what the export reported."""
    if backend == "unsloth":  # Unsloth's log says which of its two ways it took
        return "unsloth save_pretrained_gguf (converter; our llama-quantize from its BF16 GGUF)"
    if file.get("tensor_types"):
        return "llama.cpp backend: in-process quantizer (libdto-llama.so)"
    if file["quant"] in ("f16", "bf16", "f32", "q8_0"):
        return "llama.cpp backend: converter writes the type directly"
    return "llama.cpp backend: converter + llama-quantize binary (two-step)"


def build_base(work: Path) -> Path:
    code = (
        "import sys; from pathlib import Path; "
        "from support.unsloth_fixtures import build_tiny_llama_lora as b; "
        "b(Path(sys.argv[1]), heads=8)"
    )
    subprocess.run([sys.executable, "-c", code, str(work / "fx")], check=True)
    return work / "fx" / "base"


def train(base: Path, cache: Path, toolchain: Path) -> tuple[Any, Any]:
    from deploy_to_ollama.gguf import unsloth as ub

    # As export_with_unsloth does: Unsloth pins its llama.cpp dir at import.
    ub.configure_unsloth_environment(ub.stage_llama_cpp_dir(toolchain, cache), cache)
    import unsloth  # noqa: F401 - before transformers, as Unsloth requires
    from unsloth import FastLanguageModel

    kwargs = ub.load_kwargs(load_in_4bit=False, load_in_8bit=False, max_seq_length=128)
    model, tokenizer = FastLanguageModel.from_pretrained(str(base), **kwargs)
    model = FastLanguageModel.get_peft_model(
        model,
        r=16,
        lora_alpha=32,
        lora_dropout=0.0,
        bias="none",
        target_modules=[f"{m}_proj" for m in ("q", "k", "v", "o", "gate", "up", "down")],
        use_gradient_checkpointing=False,
        random_state=0,
    )
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}, {"role": "assistant", "content": a}], tokenize=False
        )
        + tokenizer.eos_token
        for q, a in EXAMPLES
    ]
    REPORT["train_example"] = texts[0]
    losses = _sft(model, tokenizer, texts)
    REPORT["train_loss"] = losses
    check("training lowered the loss", losses[-1] < losses[0] / 4, losses)
    return model, tokenizer


def _sft(model: Any, tokenizer: Any, texts: list[str]) -> list[float]:
    """trl's SFTTrainer on pre-tokenized rows (the template already holds the BOS)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    rows = [tokenizer(t, add_special_tokens=False) for t in texts]
    dataset = Dataset.from_list([{"input_ids": r["input_ids"]} for r in rows] * 8)
    config = SFTConfig(
        output_dir=str(Path(os.environ.get("TMPDIR", "/tmp")) / "sft"),
        max_steps=60,
        per_device_train_batch_size=8,
        learning_rate=5e-3,
        lr_scheduler_type="constant",
        warmup_steps=0,
        logging_steps=5,
        save_strategy="no",
        report_to="none",
        seed=0,
        bf16=True,
        max_length=64,
    )
    trainer = SFTTrainer(
        model=model, args=config, train_dataset=dataset, processing_class=tokenizer
    )
    result = trainer.train()
    REPORT["trainer"] = {"global_step": result.global_step, "train_loss": result.training_loss}
    return [round(float(x["loss"]), 4) for x in trainer.state.log_history if "loss" in x]


def transformers_answer(model: Any, tokenizer: Any) -> str:
    """The trained model's greedy answer in this process (Unsloth's fast inference)."""
    import torch
    from unsloth import FastLanguageModel

    FastLanguageModel.for_inference(model)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids.to("cuda")
    with torch.no_grad():
        out = model.generate(input_ids=ids, max_new_tokens=32, do_sample=False)
    FastLanguageModel.for_training(model)
    return str(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))


def deploy_in_process(model: Any, tokenizer: Any, host: str, out: Path, quant: str) -> None:
    import deploy_to_ollama

    start = time.monotonic()
    report = deploy_to_ollama.deploy(
        (model, tokenizer),
        name=f"tiny-unsloth-{quant.replace('_', '-')}",
        quant=quant,
        host=host,
        keep=out,
        check=False,
        method="api",
    )
    data = report.to_dict()
    REPORT[f"deploy_{quant}"] = {"seconds": round(time.monotonic() - start, 2), **data}
    check(f"deploy({quant}): GGUF written", report.gguf.is_file(), report.gguf_bytes)
    check(f"deploy({quant}): template verified", report.template_verified, data["warnings"])
    modelfile = report.modelfile.read_text(encoding="utf-8")
    check(f"deploy({quant}): Modelfile has a TEMPLATE", "TEMPLATE" in modelfile, modelfile[:400])


def cli_exports(lora: Path, out: Path) -> None:
    cases: list[tuple[str, str, list[str]]] = [
        ("cli-llama.cpp", "llama.cpp", ["--quant", "q8_0,q4_k_m"]),
        ("cli-unsloth", "unsloth", ["--quant", "q8_0,q4_k_m"]),
        (
            "cli-unsloth-4bit",
            "unsloth",
            ["--quant", "q8_0", "--load-in-4bit", "--save-merged-4bit", str(out / "merged4")],
        ),
    ]
    for label, backend, extra in cases:
        with step(label):
            target = out / label
            result = run_cli(
                "export", str(lora), "--out", str(target), "--backend", backend, *extra
            )
            payload = result["json"]
            files = payload.get("files") or []
            REPORT[label] = result
            for file in files:
                REPORT["routes"][f"{label} {file['quant']}"] = route_of(file, backend)
            check(f"{label}: exit 0", result["rc"] == 0, payload.get("error"))
            check(f"{label}: backend", payload.get("backend") == backend, payload.get("backend"))
            check(f"{label}: GGUFs", bool(files), [Path(f["path"]).name for f in files])
            check(f"{label}: template verified", payload.get("template") == "verified",
                  payload.get("template"))  # fmt: skip
            if label == "cli-unsloth-4bit":
                cfg = json.loads((out / "merged4" / "config.json").read_text())
                quant_cfg = cfg.get("quantization_config", {})
                check("merged_4bit_forced: 4-bit config", quant_cfg.get("load_in_4bit") is True,
                      quant_cfg)  # fmt: skip


def cli_deploy(lora: Path, host: str, out: Path) -> None:
    result = run_cli(
        "deploy", str(lora), "--name", "tiny-cli", "--quant", "q8_0", "--host", host,
        "--keep", str(out / "cli-deploy"), "--no-check", "--method", "api",
    )  # fmt: skip
    REPORT["cli-deploy"] = result
    check("cli deploy: exit 0", result["rc"] == 0, result["json"].get("error"))
    check("cli deploy: template verified", result["json"].get("template_verified") is True,
          result["json"].get("warnings"))  # fmt: skip


_REFERENCE = """
import json, sys, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
base_dir, adapter_dir, question, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
four_bit = sys.argv[5:] == ["4bit"]
tok = AutoTokenizer.from_pretrained(adapter_dir)
prompt = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                 add_generation_prompt=True)
ids = tok(prompt, add_special_tokens=False).input_ids
if four_bit:  # the weights --load-in-4bit exports: nf4 base (as Unsloth loads it) + the LoRA
    from transformers import BitsAndBytesConfig
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)
    base = AutoModelForCausalLM.from_pretrained(base_dir, quantization_config=bnb,
                                                device_map={"": 0}, dtype=torch.bfloat16)
    model, device = PeftModel.from_pretrained(base, adapter_dir).eval(), "cuda"
else:
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.bfloat16)
    model, device = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload().float(), "cpu"
out = []
with torch.no_grad():
    for _ in range(steps):
        ids_t = torch.tensor([ids + out], device=device)
        out.append(int(model(ids_t).logits[0, -1].argmax()))
print(json.dumps({"prompt_ids": ids, "tokens": out, "text": tok.decode(out)}))
"""

_LLAMA = """
import json, sys
import numpy as np
from llama_cpp import Llama
path, ids, steps = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
llm = Llama(model_path=path, n_ctx=128, logits_all=True, verbose=False, n_gpu_layers=0)
llm.eval(ids)
out = []
for _ in range(steps):
    token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    out.append(token)
    llm.eval([token])
print(json.dumps({"tokens": out}))
"""


def _child_json(code: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", code, *args],
        capture_output=True, text=True, env=env, check=False, timeout=300,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"rc={proc.returncode}: {proc.stderr[-1500:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def greedy(base: Path, lora: Path, ggufs: list[Path]) -> None:
    """llama.cpp on each GGUF vs transformers + peft; a --load-in-4bit export vs the nf4 model."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    ref = _child_json(_REFERENCE, str(base), str(lora), QUESTION, str(STEPS), env=env)
    REPORT["reference"] = ref
    ref4: dict[str, Any] | None = None
    for gguf in ggufs:
        expected = ref
        if "4bit" in gguf.parent.name:
            if ref4 is None:
                ref4 = _child_json(_REFERENCE, str(base), str(lora), QUESTION, str(STEPS), "4bit")
                REPORT["reference_4bit"] = ref4
            expected = ref4
        got = _child_json(_LLAMA, str(gguf), json.dumps(ref["prompt_ids"]), str(STEPS))
        same = got["tokens"] == expected["tokens"]
        check(f"greedy {STEPS} tokens: {gguf.parent.name}/{gguf.name}", same,
              {"llama.cpp": got["tokens"], "transformers": expected["tokens"]})  # fmt: skip


def main_4bit(out: Path, lora: Path) -> int:
    """--load-in-4bit exports of a trained adapter (with and without --save-merged-4bit) vs the
    nf4 model in transformers; the base is rebuilt where the adapter's config names it."""
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads((lora / "adapter_config.json").read_text())
    base = Path(config["base_model_name_or_path"])
    with step("base"):
        build_base(base.parents[1])
    cases = [
        ("4bit-gguf-only", ["--quant", "q8_0", "--load-in-4bit"]),
        ("4bit-merged-4bit", ["--quant", "q8_0", "--load-in-4bit", "--save-merged-4bit",
                              str(out / "merged4")]),
    ]  # fmt: skip
    for label, extra in cases:
        with step(label):
            result = run_cli("export", str(lora), "--out", str(out / label), "--backend",
                             "unsloth", *extra)  # fmt: skip
            REPORT[label] = result
            check(f"{label}: exit 0", result["rc"] == 0, result["json"].get("error"))
    with step("greedy-4bit"):
        ref4 = _child_json(_REFERENCE, str(base), str(lora), QUESTION, str(STEPS), "4bit")
        REPORT["reference_4bit"] = ref4
        for gguf in sorted(out.glob("4bit-*/*.gguf")):
            got = _child_json(_LLAMA, str(gguf), json.dumps(ref4["prompt_ids"]), str(STEPS))
            check(f"greedy {STEPS} tokens vs nf4 model: {gguf.parent.name}",
                  got["tokens"] == ref4["tokens"],
                  {"llama.cpp": got["tokens"], "transformers": ref4["tokens"]})  # fmt: skip
    shutil.rmtree(out / "merged4", ignore_errors=True)
    failed = [k for k, v in REPORT["checks"].items() if not v["ok"]]
    (out / "report-4bit.json").write_text(json.dumps(REPORT, indent=2, default=str))
    print(json.dumps({"steps": REPORT["steps"], "failed": failed, "errors": REPORT["errors"]}))
    return 1 if failed or REPORT["errors"] else 0


def main(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(os.environ["DTO_CACHE_DIR"])
    from deploy_to_ollama.gguf.toolchain import find_toolchain

    toolchain = find_toolchain(cache).root
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "dto-train"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    lora = out / "lora_model"
    model = tokenizer = None
    with step("base"):
        base = build_base(work)
    with step("train"):
        model, tokenizer = train(base, cache, toolchain)
    with step("answer"):
        answer = transformers_answer(model, tokenizer)
        REPORT["transformers_answer"] = answer
        check("trained model answers the secret word", answer.strip() == ANSWER, answer)

    from support.ollama_recorder import OllamaRecorder

    with OllamaRecorder(work / "blobs") as recorder:
        for quant in ("q8_0", "q4_k_m"):
            with step(f"deploy-{quant}"):
                deploy_in_process(model, tokenizer, recorder.host, out / f"deploy-{quant}", quant)
        with step("save lora_model"):
            model.save_pretrained(str(lora))
            tokenizer.save_pretrained(str(lora))
        cli_exports(lora, out)
        with step("cli-deploy"):
            cli_deploy(lora, recorder.host, out)
        REPORT["recorded_creates"] = [
            {k: v for k, v in r.items() if k != "template"} for r in recorder.records
        ]
    with step("greedy"):
        ggufs = sorted(out.glob("*/*.gguf"))
        greedy(base, lora, ggufs)
    shutil.rmtree(out / "merged4", ignore_errors=True)  # 4-bit safetensors: not carried back
    failed = [k for k, v in REPORT["checks"].items() if not v["ok"]]
    REPORT["failed"] = failed
    (out / "report.json").write_text(json.dumps(REPORT, indent=2, default=str))
    print(json.dumps({"steps": REPORT["steps"], "routes": REPORT["routes"], "failed": failed,
                      "errors": REPORT["errors"]}, indent=1))  # fmt: skip
    return 1 if failed or REPORT["errors"] else 0


if __name__ == "__main__":
    if sys.argv[2:3] == ["--4bit"]:
        sys.exit(main_4bit(Path(sys.argv[1]), Path(sys.argv[3])))
    sys.exit(main(Path(sys.argv[1])))
