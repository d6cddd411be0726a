"""Time native-path verification of one template, the server already running (target < 0.5 s).

Per template (one per family of the corpus, or ``--all``): the llama-server start on the stub
GGUF (once per template, not counted in the target: the server as Ollama runs it, plus the
render-only one where it renders alike, ``chat_template.native_servers``), then
``render_and_compare`` of every case (probes plus think on/off) through ``/apply-template`` and
transformers, warm (transformers has compiled the Jinja once), and the llama.cpp side alone
(each the median of ``REPEATS`` runs).
``--exact-only``: every case on the server as Ollama runs it (the method before the
render-only server), for comparison. Baseline, same run, same template: the
Go path's proof, ``verify_template`` of the TEMPLATE ``translate_template`` emitted (translation
itself not timed), i.e. what a deploy already spends on proving a route. Prints a table, the
median, the ratios to the baseline (``x go``) and to the target (``x 0.5s``, < 1 is within it)
and how many templates are under the target.
Usage: ``PYTHONPATH=src .venv/bin/python benchmarks/native.py [--all] [--exact-only]
[--corpus DIR]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

from deploy_to_ollama.chat_template.native import (
    native_cases,
    render_and_compare,
    request_body,
)
from deploy_to_ollama.chat_template.native_servers import start_native_renderer
from deploy_to_ollama.chat_template.source import TemplateSource
from deploy_to_ollama.chat_template.translate import translate_template
from deploy_to_ollama.chat_template.verify import verify_template
from deploy_to_ollama.errors import DeployError
from deploy_to_ollama.gguf.llama_server import ApplyTemplateError
from deploy_to_ollama.gguf.template_gguf import write_template_gguf
from deploy_to_ollama.gguf.toolchain import find_toolchain
from deploy_to_ollama.settings import Settings

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "chat_templates"
TARGET_S = 0.5
#: Warm runs per template; the table shows their median.
REPEATS = 3


def _sources(corpus: Path, *, every: bool) -> list[tuple[str, str, TemplateSource]]:
    rows: dict[str, tuple[str, str, TemplateSource]] = {}
    for path in sorted(corpus.glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        source = TemplateSource(
            template=record["jinja"], origin=path, kind="jinja",
            bos_token=record.get("bos_token") or "<s>",
            eos_token=record.get("eos_token") or "</s>",
        )  # fmt: skip
        rows.setdefault(
            path.stem if every else record["family"], (record["family"], path.stem, source)
        )
    return list(rows.values())


def _go_baseline(source: TemplateSource) -> float | None:
    """Seconds for the Go path's proof of the same template (warm), None if untranslatable."""
    try:
        translated = translate_template(source)  # also warms transformers' Jinja cache
    except DeployError:
        return None
    started = time.perf_counter()
    # Both sides rendered afresh, as render_and_compare does (no cached references).
    tools = ".Tools" in translated.template
    verify_template(source, translated.template, system=translated.system, tools=tools)
    return time.perf_counter() - started


def _time_one(
    binary: Path, source: TemplateSource, tmp: Path, *, render_only: bool
) -> tuple[float, float, float, int]:
    """(server start, full verification warm, llama.cpp side alone, cases) in seconds."""
    model = write_template_gguf(tmp / "t.gguf", source.template, bos=source.bos_token,
                                eos=source.eos_token)  # fmt: skip
    started = time.perf_counter()
    with start_native_renderer(binary, model, tmp, render_only=render_only) as server:
        start = time.perf_counter() - started
        cases = native_cases(source.template)
        render_and_compare(server, source, cases)  # warm-up: transformers compiles the Jinja
        fulls, natives = [], []
        for _ in range(REPEATS):  # the median of a few: 2 cores shared with other jobs
            t0 = time.perf_counter()
            render_and_compare(server, source, cases)
            fulls.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for case in cases:
                # a refused case costs its round trip all the same
                with contextlib.suppress(ApplyTemplateError):
                    server.apply_template(request_body(case))
            natives.append(time.perf_counter() - t0)
    return start, statistics.median(fulls), statistics.median(natives), len(cases)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--all", action="store_true", help="every template, not one per family")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument(
        "--exact-only", action="store_true", help="no render-only server (the former method)"
    )
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # translation warnings are not what is measured here
    settings = Settings.from_env()
    binary = find_toolchain(settings.cache_dir, settings.llama_cpp_dir).require_server()
    print(f"{'family':<16}{'template':<40}{'cases':>6}{'start s':>9}{'native s':>10}"
          f"{'llama s':>9}{'go s':>8}{'x go':>6}{'x 0.5s':>7}")  # fmt: skip
    fulls, ratios = [], []
    for family, name, source in _sources(args.corpus, every=args.all):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                start, full, native, cases = _time_one(
                    binary, source, Path(tmp), render_only=not args.exact_only
                )
            except DeployError as err:
                print(f"{family:<16}{name[:39]:<40}  skipped: {str(err)[:60]}")
                continue
        go = _go_baseline(source)
        fulls.append(full)
        ratio = f"{full / go:6.2f}" if go else f"{'-':>6}"
        if go:
            ratios.append(full / go)
        go_text = f"{go:8.3f}" if go is not None else f"{'-':>8}"
        print(f"{family:<16}{name[:39]:<40}{cases:>6}{start:>9.3f}{full:>10.3f}"
              f"{native:>9.3f}{go_text}{ratio}{full / TARGET_S:>7.2f}")  # fmt: skip
    median = statistics.median(fulls)
    under = sum(t < TARGET_S for t in fulls)
    verdict = "within" if median < TARGET_S else "OVER"
    print(f"native verification with a running server: median {median:.3f} s ({verdict} the "
          f"{TARGET_S} s target), max {max(fulls):.3f} s, under {TARGET_S} s: "
          f"{under}/{len(fulls)} templates")  # fmt: skip
    if ratios:
        print(f"baseline (Go path's verify_template, same templates, same run): native/go "
              f"median {statistics.median(ratios):.2f}x over {len(ratios)} templates")  # fmt: skip


if __name__ == "__main__":
    main()
