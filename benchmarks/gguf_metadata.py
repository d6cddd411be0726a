"""Time and peak RSS of the native-path proof's GGUF reads (issue 13): header-only vs gguf-py.

The proof reads ``tokenizer.chat_template`` twice (``route_proof._gguf_jinja``: one template
reader; ``native.gguf_lacks_template``: native route available). Before: ``gguf.GGUFReader``,
which maps the file and builds a numpy view per field part and per tensor; after:
``gguf.metadata.read_gguf_fields``, the key/value section only. Each side runs in a fresh
process (peak RSS of that process, imports included), ``--runs`` times; best time is shown.
Usage: ``PYTHONPATH=src .venv/bin/python benchmarks/gguf_metadata.py MODEL.gguf [--runs 3]``.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

#: The reads as main did them before (gguf-py's reader, twice).
BEFORE = """
import sys, time
from gguf import GGUFReader
t = time.perf_counter()
for _ in range(2):
    field = GGUFReader(sys.argv[1]).fields.get("tokenizer.chat_template")
    assert field is not None and str(field.contents())
print(time.perf_counter() - t)
"""
#: The reads the proof does now.
AFTER = """
import sys, time
from pathlib import Path
from deploy_to_ollama.chat_template.native import gguf_lacks_template
from deploy_to_ollama.route_proof import _gguf_jinja
t = time.perf_counter()
assert _gguf_jinja(Path(sys.argv[1])) and gguf_lacks_template(Path(sys.argv[1])) is None
print(time.perf_counter() - t)
"""


def _measure(code: str, model: Path) -> tuple[float, float, float]:
    """(process seconds, read seconds, peak RSS MiB) of a fresh interpreter running ``code``."""
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code, str(model)], check=True, capture_output=True, text=True
    ).stdout
    seconds = time.perf_counter() - started
    # ru_maxrss of the children is the largest of them: run each side in its own parent call.
    return seconds, float(out), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--side", choices=("before", "after"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:  # one side in this process's only children, so ru_maxrss is its own
        code = BEFORE if args.side == "before" else AFTER
        runs = [_measure(code, args.model) for _ in range(args.runs)]
        best = min(runs)
        print(f"{best[0]:.3f} {min(r for _, r, _ in runs):.3f} {max(m for *_, m in runs):.1f}")
        return
    size = args.model.stat().st_size / 2**20
    print(f"{args.model.name}: {size:.0f} MiB, {args.runs} runs per side, fresh process each")
    rows = {}
    for side in ("before", "after"):
        out = subprocess.run(
            [sys.executable, __file__, str(args.model), "--runs", str(args.runs), "--side", side],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        rows[side] = (float(out[0]), float(out[1]), float(out[2]))
    print(f"{'side':<8}{'process s':>11}{'reads s':>9}{'peak RSS MiB':>14}")
    for side, (seconds, reads, rss) in rows.items():
        print(f"{side:<8}{seconds:>11.3f}{reads:>9.3f}{rss:>14.1f}")
    (p0, r0, m0), (p1, r1, m1) = rows["before"], rows["after"]
    print(f"after/before: process {p1 / p0:.2f}x, reads {r1 / r0:.3f}x, peak RSS {m1 / m0:.2f}x")


if __name__ == "__main__":
    main()
