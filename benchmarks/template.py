"""Time translation + full verification per template against a baseline from the same run.

Baseline: transformers rendering the probe suite once (the least any verification costs).
Measured: ``translate_template`` (sentinel inference, candidate emission, Go rendering and
comparison of every probe), warm (transformers caches the compiled Jinja) and cold (first call
after process start, compile included).
Usage: ``.venv/bin/python benchmarks/template.py [--all] [--corpus DIR]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

from deploy_to_ollama.chat_template import TemplateSource, reference_renders, translate_template
from deploy_to_ollama.errors import DeployError

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "chat_templates"
TARGET_S = 0.5


def _sources(corpus: Path, *, every: bool) -> list[tuple[str, str, TemplateSource]]:
    picked: dict[str, tuple[str, str, TemplateSource]] = {}
    rows = []
    for path in sorted(corpus.glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        source = TemplateSource(
            template=record["jinja"],
            origin=path,
            kind="jinja",
            bos_token=record.get("bos_token") or "<s>",
            eos_token=record.get("eos_token") or "</s>",
        )
        row = (record["family"], path.stem, source)
        rows.append(row)
        picked.setdefault(record["family"], row)
    return rows if every else list(picked.values())


def _best_of(fn: object, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        with contextlib.suppress(DeployError):
            fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--all", action="store_true", help="every corpus template (slow)")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    args = parser.parse_args()
    rows = _sources(args.corpus, every=args.all)
    header = f"{'family':22} {'template':46} {'baseline s':>10} {'translate s':>11} {'x':>5}"
    print(header + f" {'cold s':>7}")
    times, colds = [], []
    for family, name, source in rows:
        cold = _best_of(lambda s=source: translate_template(s), repeat=1)  # + Jinja compile
        base = _best_of(lambda s=source: reference_renders(s))
        full = _best_of(lambda s=source: translate_template(s))
        times.append(full)
        colds.append(cold)
        ratio = full / base
        print(f"{family:22} {name[:46]:46} {base:10.3f} {full:11.3f} {ratio:5.1f} {cold:7.3f}")
    for label, values in (("warm", times), ("cold", colds)):
        under = sum(t < TARGET_S for t in values)
        print(
            f"{label}: {len(values)} templates, median {statistics.median(values):.3f} s, "
            f"max {max(values):.3f} s, under {TARGET_S} s: {under}/{len(values)}"
        )


if __name__ == "__main__":
    main()
