"""Time and peak RSS of the native-path proof's GGUF reads (issue 13): header-only vs gguf-py.

The proof reads ``tokenizer.chat_template`` twice (``route_proof._gguf_jinja``: one template
reader; ``native.gguf_lacks_template``: native route available). Before: ``gguf.GGUFReader``,
which maps the file and builds a numpy view per field part and per tensor; after:
``gguf.metadata.read_gguf_fields``, the key/value section only. Each side runs in a fresh
process (peak RSS of that process, imports included), ``--runs`` times; best time is shown.
Then the proof itself on the same GGUF (``--serve``): llama-server started on the whole GGUF
(before) or on the stub with its ``tokenizer.*`` keys only (after, ``write_vocabulary_stub``),
every native case rendered and tokenized; wall time with the start, the server's peak RSS
(VmHWM), and whether both reports are the same.
Usage: ``PYTHONPATH=src .venv/bin/python benchmarks/gguf_metadata.py MODEL.gguf [--runs 3]
[--serve]``.
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


def _serve(model: Path, *, stub: bool) -> tuple[float, float, dict[str, object]]:
    """(seconds, llama-server peak RSS MiB, report JSON) of one native proof on ``model``."""
    import tempfile

    from deploy_to_ollama.chat_template.native import native_cases, render_and_compare
    from deploy_to_ollama.chat_template.source import load_template_source
    from deploy_to_ollama.chat_template.thinking import switch_name
    from deploy_to_ollama.gguf.llama_server import start_llama_server
    from deploy_to_ollama.gguf.template_gguf import write_vocabulary_stub
    from deploy_to_ollama.gguf.toolchain import find_toolchain
    from deploy_to_ollama.settings import Settings

    settings = Settings.from_env()
    binary = find_toolchain(settings.cache_dir, settings.llama_cpp_dir).require_server()
    source = load_template_source(model)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        served = write_vocabulary_stub(Path(tmp) / "v.gguf", model) if stub else model
        with start_llama_server(binary, served, Path(tmp)) as server:
            cases = native_cases(source.template, switch=switch_name(source))
            report = render_and_compare(server, source, cases, encode=server.tokenize)
            status = Path(f"/proc/{server.process.pid}/status").read_text()
        seconds = time.perf_counter() - started
    peak = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
    return seconds, peak / 1024, report.to_json()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--side", choices=("before", "after"), help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help="also time the proof itself")
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
    if not args.serve:
        return
    print(f"{'served':<8}{'proof s':>9}{'server peak RSS MiB':>21}")
    (t0, s0, j0), (t1, s1, j1) = _serve(args.model, stub=False), _serve(args.model, stub=True)
    print(f"{'whole':<8}{t0:>9.2f}{s0:>21.0f}\n{'stub':<8}{t1:>9.2f}{s1:>21.0f}")
    print(
        f"stub/whole: time {t1 / t0:.2f}x, server peak RSS {s1 / s0:.3f}x; same report: {j0 == j1}"
    )


if __name__ == "__main__":
    main()
