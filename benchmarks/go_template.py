"""Benchmark: our Go-template engine (parse, execute, Ollama prompt building).

Times, in CPU seconds of this process (the dev machine is shared, wall time is noisy):

* parse of each corpus Ollama template (uncached),
* ``render_ollama_prompt`` of each template over every probe conversation (parse cached, as
  when the translator verifies one template on the whole probe suite).

    python benchmarks/go_template.py [--repeat 3]

Needs ../shared/chat_templates and ../shared/probes (the dev workplace).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

from deploy_to_ollama.chat_template.go_template.builtins import FUNCS
from deploy_to_ollama.chat_template.go_template.parser import parse_trees
from deploy_to_ollama.chat_template.ollama_prompt import render_ollama_prompt
from deploy_to_ollama.errors import DeployError

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _templates() -> list[str]:
    found = []
    for path in sorted((SHARED / "chat_templates").glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("ollama_template"):
            found.append(record["ollama_template"])
        found += [
            alt["ollama_template"]
            for alt in record.get("alternate_ollama_pairings") or []
            if alt.get("ollama_template")
        ]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    templates = _templates()
    probes = json.loads((SHARED / "probes" / "conversations.json").read_text())["conversations"]

    parse_ms = []
    for template in templates:
        start = time.process_time()
        for _ in range(args.repeat):
            parse_trees(template, FUNCS)
        parse_ms.append((time.process_time() - start) / args.repeat * 1000)

    render_ms = []
    for template in templates:
        start = time.process_time()
        for _ in range(args.repeat):
            for probe in probes:
                with contextlib.suppress(DeployError):
                    render_ollama_prompt(template, probe["messages"])
        render_ms.append((time.process_time() - start) / (args.repeat * len(probes)) * 1000)

    def show(name: str, values: list[float]) -> None:
        ordered = sorted(values)
        p95 = ordered[int(len(ordered) * 0.95) - 1]
        print(
            f"{name}: median {statistics.median(values):.3f} ms, p95 {p95:.3f} ms, "
            f"max {max(values):.3f} ms over {len(values)} templates"
        )

    show("parse (uncached)", parse_ms)
    show(f"render_ollama_prompt per probe ({len(probes)} probes, parse cached)", render_ms)
    per_template = [p + r * len(probes) for p, r in zip(parse_ms, render_ms, strict=True)]
    show("parse + all probes, per template", per_template)


if __name__ == "__main__":
    main()
