"""Measure issue 13's route target over the corpus: the share of templates whose ``deploy``
route is proven (go or native), per server generation, and that the reported route always
equals ``ollama_route.select_route`` on the Modelfile deploy writes.

Per template of ``../shared/chat_templates`` and server version: the Go translation and its
verification for that server (as the template stage runs it: ``deploy`` passes the user's server
version, whose prompt building the proof must use), llama.cpp's engine on a stub GGUF
(``verify_native``, once: it does not depend on Ollama's version), then ``routing.choose_route``
with ``auto`` for Ollama 0.9.3 and 0.33.0. Prints the shares, the route counts and the unproven
templates' families (``--names``: each unproven template with the route's reason).
Usage: ``PYTHONPATH=src .venv/bin/python benchmarks/routes.py [--corpus DIR] [--limit N]
[--names] [--only GLOB ...]``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import time
from collections import Counter
from pathlib import Path

from deploy_to_ollama.chat_template.native import verify_native
from deploy_to_ollama.chat_template.source import TemplateSource
from deploy_to_ollama.gguf.toolchain import find_toolchain
from deploy_to_ollama.route_proof import auto_route
from deploy_to_ollama.routing import (
    native_proof,
)
from deploy_to_ollama.settings import Settings

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "chat_templates"
VERSIONS = ("0.9.3", "0.33.0")


def _source(path: Path, record: dict[str, object]) -> TemplateSource:
    return TemplateSource(
        template=str(record["jinja"]),
        origin=path,
        kind="jinja",
        bos_token=str(record.get("bos_token") or "<s>"),
        eos_token=str(record.get("eos_token") or "</s>"),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--names", action="store_true", help="list the unproven templates")
    parser.add_argument(
        "--only", action="append", default=[], metavar="GLOB",
        help="measure only the templates whose file name matches (repeatable)",
    )  # fmt: skip
    args = parser.parse_args()
    settings = Settings.from_env()
    binary = find_toolchain(settings.cache_dir, settings.llama_cpp_dir).require_server()
    paths = sorted(args.corpus.glob("*.json"))
    if args.only:
        paths = [p for p in paths if any(fnmatch.fnmatch(p.name, g) for g in args.only)]
    paths = paths[: args.limit or None]
    proven: Counter[str] = Counter()
    routes: Counter[tuple[str, str]] = Counter()
    unproven: Counter[str] = Counter()
    mismatches = 0
    started = time.monotonic()
    for path in paths:
        record = json.loads(path.read_text(encoding="utf-8"))
        source = _source(path, record)
        native = native_proof(verify_native(source, binary))
        for version in VERSIONS:
            choice, agrees = auto_route(source, version, native)
            mismatches += not agrees
            routes[(version, choice.route)] += 1
            if choice.proven:
                proven[version] += 1
            else:
                unproven[f"{version} {record.get('family')}"] += 1
                if args.names:
                    print(f"unproven on {version}: {path.name} ({choice.reason})")
    total = len(paths)
    print(f"{total} templates, {time.monotonic() - started:.0f} s")
    for version in VERSIONS:
        print(
            f"Ollama {version}: route proven for {proven[version]}/{total} "
            f"({proven[version] / total:.1%}); go {routes[(version, 'go')]}, "
            f"native {routes[(version, 'native')]}"
        )
    print(f"reported route differs from select_route: {mismatches}")
    print("unproven by generation and family:", unproven.most_common(15))


if __name__ == "__main__":
    main()
