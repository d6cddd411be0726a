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
``--model DIR`` takes a model ``teach`` trained elsewhere (a GPU: the CPU takes hours).

Measured 2026-12-03: ``teach`` on one H200, 4000 steps in 152 s (training loss 5.67 -> 0.19
nats/byte), 19.7M weights; then this script on the 2-core dev box (shared, busy). imatrix from
32 chunks of 512 bytes of calib.txt (files never trained on); KL over eval.txt (40,000 bytes,
156 chunks of 256, other files never trained on); ``± se`` is llama-perplexity's standard error
of the mean (unpaired). The imatrix export (bf16 + llama-imatrix + 4 quants) took 182 s.

    quant                MB   KL mean     ± se    median       p99  top1 %      PPL
    q4_k_m            11.31   0.02763  0.00058   0.00016    0.3661   95.36    2.995
    q4_k_m imatrix    11.31   0.02703  0.00057   0.00015    0.3827   95.55    2.987
    iq4_xs imatrix    10.24   0.03341  0.00070   0.00019    0.4617   94.92    2.989
    q3_k_m             9.28   0.08400  0.00168   0.00060    1.1192   92.42    3.049
    q3_k_m imatrix     9.28   0.08022  0.00160   0.00048    1.1272   92.45    3.040
    iq3_m imatrix      8.62   0.08639  0.00166   0.00062    1.1037   91.76    3.046

Honest reading: at the same size the imatrix lowers mean KL a little, 2.2% for q4_k_m (about
one standard error: not a clear win on this model) and 4.5% for q3_k_m (about two), with
slightly better top-1 and PPL but a slightly worse 99th percentile. iq4_xs is 9.5% smaller
than q4_k_m and has 21% more KL, so it does *not* beat plain q4_k_m at the same size here;
iq3_m is 7% smaller than q3_k_m at 3% more KL than plain q3_k_m. A 20M-weight byte-level
model is far from the 7B+ models imatrix quants were tuned on; rerun on the fine-tune itself.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import shutil
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
    "kl_mean_se": re.compile(r"Mean\s+KLD:\s+[-\d.]+\s+±\s+([-\d.]+)"),
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
        bucket = _bucket(path)
        name = "calib" if bucket == 0 else "eval" if bucket == 1 else "train"
        try:
            parts[name].append(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            continue
    limits = {"train": 0, "calib": 60_000, "eval": 40_000}  # characters (train: `teach`)
    files = {}
    for name, texts in parts.items():
        files[name] = work / f"{name}.txt"
        files[name].write_text("\n".join(texts)[: limits[name]], encoding="utf-8")
    return files


LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def teach(out: Path, *, steps: int = 4000) -> dict[str, float]:
    """Train a byte-level Llama (hidden 512, 6 layers, 19.7M weights) on the stdlib sources.

    Token id = byte value (256 = BOS, 257 = EOS), so the device needs no tokenizer; the
    tokenizer is added afterwards (``byte_tokenizer``). Run on a GPU: 4000 steps of 64 x 512
    bytes took 152 s on one H200 (loss 5.67 -> 0.19 nats/byte); the corpus skips the files the
    calibration and evaluation texts come from (same name-hash rule as ``split_corpus``).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    data = b""
    for path in sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("*/*.py")):
        if "test" in path.parts or "site-packages" in path.parts or _bucket(path) < 2:
            continue
        data += path.read_bytes() + b"\n"
    ids = torch.tensor(list(data), dtype=torch.long, device=device)
    config = LlamaConfig(
        vocab_size=258, hidden_size=512, intermediate_size=1536, num_hidden_layers=6,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=1024,
        bos_token_id=256, eos_token_id=257, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * s / steps)),
    )
    started, losses = time.perf_counter(), []
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - 513, (64,), device=device)
        batch = torch.stack([ids[i : i + 512] for i in starts])
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model = model.to(torch.bfloat16)
    model.config.torch_dtype = "bfloat16"
    model.save_pretrained(out, max_shard_size="15MB")
    return {"loss_first": losses[0], "loss_last": losses[-1],
            "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip


def byte_tokenizer(model_dir: Path) -> None:
    """A byte-level BPE whose token ids are the byte values (as ``teach`` trained on).

    llama.cpp refuses a BPE vocabulary without merges, so it gets one that never applies to
    text (bytes 0x00 0x01 → id 258), and the model a zero row for that id.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = _bytes_to_unicode()
    vocab = {alphabet[b]: b for b in range(256)}
    vocab |= {"<|begin_of_text|>": 256, "<|end_of_text|>": 257, alphabet[0] + alphabet[1]: 258}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[(alphabet[0], alphabet[1])]))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
            ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>"])
    tokenizer.save(str(model_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|end_of_text|>",
        "add_bos_token": False,
        "model_max_length": 1024,
    }
    (model_dir / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")


def pad_vocab(model_dir: Path, size: int) -> None:
    """Give the embedding and output matrices zero rows up to ``size`` tokens."""
    import torch
    from safetensors.torch import load_file, save_file

    for shard in sorted(model_dir.glob("*.safetensors")):
        tensors = load_file(shard)
        changed = False
        for name in ("model.embed_tokens.weight", "lm_head.weight"):
            if name in tensors and tensors[name].shape[0] < size:
                rows = tensors[name]
                pad = torch.zeros(size - rows.shape[0], rows.shape[1], dtype=rows.dtype)
                tensors[name], changed = torch.cat([rows, pad]), True
        if changed:
            save_file(tensors, shard, metadata={"format": "pt"})
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["vocab_size"] = size
    config_path.write_text(json.dumps(config, indent=1), encoding="utf-8")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte → printable character table (what ByteLevel pre-tokenizers emit)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    keep += range(ord("®"), ord("ÿ") + 1)
    table, extra = {}, 0
    for byte in range(256):
        if byte in keep:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


def _bucket(path: Path) -> int:
    return int(hashlib.sha256(path.name.encode()).hexdigest(), 16) % 20


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
    parser.add_argument("--model", type=Path, help="a model `teach` trained elsewhere (GPU)")
    parser.add_argument("--steps", type=int, default=4000)
    args = parser.parse_args()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    texts = split_corpus(work)
    model_dir = work / "model"
    facts: dict[str, Any] = {}
    if args.model is None:
        facts = teach(model_dir, steps=args.steps)
    else:
        shutil.copytree(args.model, model_dir, dirs_exist_ok=True)
    byte_tokenizer(model_dir)
    pad_vocab(model_dir, 259)
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
    print(
        f"{'quant':<16}{'MB':>7}{'KL mean':>10}{'± se':>9}{'median':>10}{'p99':>10}"
        f"{'top1 %':>8}{'PPL':>9}"
    )
    for row in table:
        print(
            f"{row['quant']:<16}{row['bytes'] / 1e6:>7.2f}{row.get('kl_mean', float('nan')):>10.5f}"
            f"{row.get('kl_mean_se', float('nan')):>9.5f}"
            f"{row.get('kl_median', float('nan')):>10.5f}{row.get('kl_p99', float('nan')):>10.4f}"
            f"{row.get('top1', float('nan')):>8.2f}{row.get('perplexity', float('nan')):>9.3f}"
        )
    (work / "results.json").write_text(json.dumps({"taught": facts, "rows": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
