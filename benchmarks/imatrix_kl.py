"""Benchmark: does an importance matrix lower the KL divergence of q4_k_m / iq4_xs?

A random-weight model has no preferred input directions, so an imatrix cannot help it; this
script first *teaches* a small Llama (hidden 256, rows K-quants can hold) on real text that
ships with every Python install, the standard library's sources, on the CPU. Files are split by
name hash into training text, calibration text (what ``--imatrix auto`` computes on) and a
held-out evaluation text. Then, through our own CLI:

* ``export --quant bf16`` (the reference), ``--quant q4_k_m`` (plain),
* ``export --quant q4_k_m,iq4_xs,q3_k_m,iq3_m --imatrix auto --calibration-data calib.txt``,
* ``--quant q3_k_m`` plain for the 3-bit comparison,

and llama.cpp's ``llama-perplexity --kl-divergence-base`` on the evaluation text for bf16,
``--kl-divergence`` for each quant: mean / median / p99 KL, top-1 agreement, PPL, file size.

    PYTHONPATH=src:tests python benchmarks/imatrix_kl.py --work /tmp/imx-kl \\
        --llama-cpp DIR_WITH_LLAMA_PERPLEXITY_AND_IMATRIX [--steps 300]

Needs torch/transformers (the test extras) and a toolchain with llama-imatrix and
llama-perplexity (``setup`` once it builds them; see ``gguf.imatrix.find_llama_tool``).
Results are in the docstring of the report that ran it (see the bottom of this file).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SEQ, BATCH = 256, 8
STAT_RE = {
    "kl_mean": re.compile(r"Mean\s+KLD:\s+([-\d.]+)"),
    "kl_median": re.compile(r"Median\s+KLD:\s+([-\d.]+)"),
    "kl_p99": re.compile(r"99\.0%\s+KLD:\s+([-\d.]+)"),
    "top1": re.compile(r"Same top p:\s+([-\d.]+)"),
    "perplexity": re.compile(r"Mean PPL\(Q\)\s+:\s+([-\d.]+)"),
}


def split_corpus(work: Path) -> dict[str, Path]:
    """Standard-library sources → train / calib / eval texts (by file-name hash)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts: dict[str, list[str]] = {"train": [], "calib": [], "eval": []}
    for path in sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("*/*.py")):
        if "test" in path.parts or "site-packages" in path.parts:
            continue
        bucket = int(hashlib.sha256(path.name.encode()).hexdigest(), 16) % 20
        name = "calib" if bucket == 0 else "eval" if bucket == 1 else "train"
        try:
            parts[name].append(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            continue
    limits = {"train": 4_000_000, "calib": 60_000, "eval": 40_000}  # characters
    files = {}
    for name, texts in parts.items():
        files[name] = work / f"{name}.txt"
        files[name].write_text("\n".join(texts)[: limits[name]], encoding="utf-8")
    return files


def teach(work: Path, train_text: Path, steps: int) -> tuple[Path, dict[str, float]]:
    """A Llama (hidden 256, 4 layers) trained ``steps`` AdamW steps on the training text."""
    import torch
    from support.models import LLAMA3, ModelSpec, build_base
    from transformers import AutoTokenizer, LlamaForCausalLM

    torch.manual_seed(0)
    torch.set_num_threads(2)
    text = train_text.read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if ln.strip()][:20000]
    spec = ModelSpec(
        LLAMA3, hidden=256, heads=8, kv_heads=2, layers=4, intermediate=768,
        dtype="float32", vocab_size=1024,
    )  # fmt: skip
    model_dir = build_base(spec, work / "model", corpus=lines)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long)
    model = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 30) * 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    losses = []
    started = time.perf_counter()
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - SEQ - 1, (BATCH,))
        batch = torch.stack([ids[s : s + SEQ] for s in starts])
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(float(loss))
    model = model.to(torch.bfloat16)
    model.config.torch_dtype = "bfloat16"
    model.save_pretrained(model_dir)
    facts = {
        "tokens": len(ids),
        "loss_first": round(sum(losses[:10]) / 10, 3),
        "loss_last": round(sum(losses[-10:]) / 10, 3),
        "train_seconds": round(time.perf_counter() - started, 1),
    }
    return model_dir, facts


def export(model: Path, out: Path, quants: str, llama_cpp: Path, *extra: str) -> dict[str, Path]:
    """Our CLI's export; quant name → GGUF path."""
    command = [sys.executable, "-m", "deploy_to_ollama", "export", str(model), "--out", str(out)]
    command += ["--quant", quants, "--llama-cpp", str(llama_cpp), "--json", *extra]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"export failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    report = json.loads(done.stdout)
    return {f["quant"]: Path(f["path"]) for f in report["files"]}


def perplexity(llama_cpp: Path, model: Path, base: Path, eval_text: Path, *, first: bool) -> str:
    tool = llama_cpp / "llama-perplexity"
    command = [str(tool), "-m", str(model), "-f", str(eval_text), "-c", str(SEQ), "-t", "2"]
    command += ["--kl-divergence-base", str(base)]
    if not first:
        command.append("--kl-divergence")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"llama-perplexity failed: {done.stderr[-2000:]}")
    return done.stdout + done.stderr


def stats(output: str) -> dict[str, float]:
    found = {key: pattern.search(output) for key, pattern in STAT_RE.items()}
    return {key: float(match.group(1)) for key, match in found.items() if match}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--llama-cpp", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    texts = split_corpus(work)
    model_dir = work / "model"
    facts: dict[str, Any] = {}
    if not (model_dir / "model.safetensors").is_file() or not (work / "taught.json").is_file():
        model_dir, facts = teach(work, texts["train"], args.steps)
        (work / "taught.json").write_text(json.dumps(facts), encoding="utf-8")
    facts = json.loads((work / "taught.json").read_text(encoding="utf-8"))
    print("taught:", facts, flush=True)

    files = export(model_dir, work / "plain", "bf16,q4_k_m,q3_k_m", args.llama_cpp)
    started = time.perf_counter()
    weighted = export(
        model_dir, work / "imatrix", "q4_k_m,iq4_xs,q3_k_m,iq3_m", args.llama_cpp,
        "--imatrix", "auto", "--calibration-data", str(texts["calib"]),
    )  # fmt: skip
    imatrix_export_s = time.perf_counter() - started
    base = work / "bf16.kld"
    perplexity(args.llama_cpp, files["bf16"], base, texts["eval"], first=True)
    rows = [("q4_k_m", files["q4_k_m"]), ("q3_k_m", files["q3_k_m"])]
    rows += [(f"{q} imatrix", weighted[q]) for q in ("q4_k_m", "iq4_xs", "q3_k_m", "iq3_m")]
    table = []
    for label, path in rows:
        out = perplexity(args.llama_cpp, path, base, texts["eval"], first=False)
        table.append({"quant": label, "bytes": path.stat().st_size, **stats(out)})
    print(f"imatrix export (bf16 + llama-imatrix + 4 quants): {imatrix_export_s:.1f} s")
    print(f"{'quant':<16}{'MB':>7}{'KL mean':>10}{'median':>10}{'p99':>10}{'top1 %':>8}{'PPL':>9}")
    for row in table:
        print(
            f"{row['quant']:<16}{row['bytes'] / 1e6:>7.2f}{row.get('kl_mean', float('nan')):>10.5f}"
            f"{row.get('kl_median', float('nan')):>10.5f}{row.get('kl_p99', float('nan')):>10.4f}"
            f"{row.get('top1', float('nan')):>8.2f}{row.get('perplexity', float('nan')):>9.3f}"
        )
    (work / "results.json").write_text(json.dumps({"taught": facts, "rows": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
