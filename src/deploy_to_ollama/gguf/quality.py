"""Measured quality of quantized GGUFs: KL divergence from the 16-bit GGUF, top-1, perplexity.

Computed with llama.cpp's own ``llama-perplexity`` (built by ``setup`` from the same pinned
sources as the quantizer): one run over the evaluation text on the 16-bit reference with
``--kl-divergence-base FILE`` saves its log-probabilities, then one run per quantized file with
``--kl-divergence`` compares every scored token's distribution with the reference's. The numbers
are llama.cpp's (``Mean KLD``, ``Median KLD``, ``99.0% KLD``, ``Same top p``, ``Mean PPL(Q)``),
read from its output; nothing is estimated here.

llama-perplexity scores the second half of each context window (the first half is context), so
``tokens`` is ``chunks * (n_ctx - 1 - n_ctx // 2)``: the tokens the statistics are over.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConversionError, InputError
from .toolchain import LLAMA_CPP_COMMIT, PERPLEXITY_BINARY, Toolchain

logger = logging.getLogger(__name__)

#: Tokens measured by default: a few thousand (the packaged text has about this many).
DEFAULT_EVAL_TOKENS = 4096
#: The context window of each chunk (llama-perplexity's own default).
DEFAULT_CTX = 512
#: Smallest context a short text may fall back to: two chunks of it must score >= 100 tokens,
#: below which llama-perplexity prints no statistics.
MIN_CTX = 128
#: Default limit on the estimated time of a measurement, in minutes (``--measure-minutes``).
DEFAULT_BUDGET_MINUTES = 30.0
#: Assumed CPU throughput of llama.cpp's forward pass per core, in FLOP/s, for the budget
#: estimate only (no number in the report depends on it). Chosen low so the estimate errs on
#: the slow side; not yet calibrated on a 1B model.
FLOPS_PER_CORE = 30e9
#: Runs of llama-perplexity before a cut-off output is an error (see ``_run``).
ATTEMPTS = 3
_FLOAT = r"(-?(?:\d+\.?\d*|nan|inf))"
_PATTERNS = {
    "kl_mean": re.compile(r"^Mean\s+KLD:\s*" + _FLOAT, re.M),
    "kl_median": re.compile(r"^Median\s+KLD:\s*" + _FLOAT, re.M),
    "kl_p99": re.compile(r"^99\.0%\s+KLD:\s*" + _FLOAT, re.M),
    "top1": re.compile(r"^Same top p:\s*" + _FLOAT, re.M),
    "perplexity": re.compile(r"^Mean PPL\(Q\)\s*:\s*" + _FLOAT, re.M),
}
_FINAL_PPL = re.compile(r"Final estimate: PPL = " + _FLOAT)
_CHUNKS = re.compile(r"(?:computing|calculating perplexity) over (\d+) chunks, n_ctx=(\d+)")
_TOO_SHORT = re.compile(r"tokenizes to only (\d+) tokens")


@dataclass(frozen=True, slots=True)
class Quality:
    """One file's measured quality against the reference (``--json``'s ``quality`` object)."""

    kl_mean: float
    kl_median: float
    kl_p99: float
    top1: float
    """Fraction of scored tokens whose most likely next token is the reference's."""
    perplexity: float
    tokens: int
    reference: str
    """File name of the 16-bit GGUF compared against."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kl_mean": self.kl_mean,
            "kl_median": self.kl_median,
            "kl_p99": self.kl_p99,
            "top1": self.top1,
            "perplexity": self.perplexity,
            "tokens": self.tokens,
            "reference": self.reference,
        }


@dataclass(frozen=True, slots=True)
class QualityReport:
    """A measurement of several files against one reference."""

    files: dict[Path, Quality]
    reference: Path
    reference_perplexity: float
    eval_source: str
    tokens: int
    seconds: float
    tool: str = f"llama-perplexity --kl-divergence (llama.cpp {LLAMA_CPP_COMMIT})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "reference": self.reference.name,
            "reference_perplexity": self.reference_perplexity,
            "eval": self.eval_source,
            "tokens": self.tokens,
            "seconds": round(self.seconds, 1),
            "files": {p.name: q.to_dict() for p, q in self.files.items()},
        }

    def table_lines(self, sizes: dict[Path, int] | None = None) -> list[str]:
        """The summary table: one row per file, the reference first (KL 0 by definition)."""
        sizes = sizes or {}
        width = max(len(p.name) for p in (self.reference, *self.files))
        lines = [
            f"quality over {self.tokens:,} tokens of {self.eval_source}, "
            f"measured with {self.tool} in {self.seconds:.1f} s",
            f"{'file':<{width}} {'size':>9} {'KL mean':>8} {'median':>8} {'p99':>8} "
            f"{'top1':>7} {'PPL':>9}",
            f"{self.reference.name:<{width}} {_size(self.reference, sizes):>9} {'(ref)':>8} "
            f"{'':>8} {'':>8} {'':>7} {self.reference_perplexity:>9.3f}",
        ]
        for path, q in self.files.items():
            lines.append(
                f"{path.name:<{width}} {_size(path, sizes):>9} {q.kl_mean:>8.5f} "
                f"{q.kl_median:>8.5f} {q.kl_p99:>8.5f} {q.top1:>7.2%} {q.perplexity:>9.3f}"
            )
        return lines


def _size(path: Path, sizes: dict[Path, int]) -> str:
    size = sizes.get(path)
    if size is None and path.is_file():
        size = path.stat().st_size
    return f"{size / 1e6:,.1f} MB" if size is not None else ""


def estimate_minutes(parameters: int, tokens: int, files: int, cores: int | None = None) -> float:
    """About how long measuring ``files`` GGUFs (plus the reference) takes on this machine.

    Two FLOPs per parameter per token (the forward pass), at ``FLOPS_PER_CORE`` per core.

    >>> round(estimate_minutes(1_000_000_000, 4096, 5, cores=2), 1)
    13.7
    """
    cores = cores or os.cpu_count() or 1
    flops = 2.0 * parameters * tokens * (files + 1)
    return flops / (cores * FLOPS_PER_CORE) / 60.0


def check_budget(parameters: int, tokens: int, files: int, minutes: float) -> None:
    """Refuse a measurement estimated to take longer than ``minutes``, saying how to raise it.

    Raises:
        InputError: over the budget (before anything is exported).
    """
    if tokens < 2 * MIN_CTX:
        raise InputError(f"--eval-tokens {tokens} is too few to measure",
                         hint=f"use at least {2 * MIN_CTX}")  # fmt: skip
    estimate = estimate_minutes(parameters, tokens, files)
    if estimate <= minutes:
        return
    fits = int(tokens * minutes / estimate) // DEFAULT_CTX * DEFAULT_CTX
    fewer = f"--eval-tokens {fits}, or " if fits >= 2 * DEFAULT_CTX else ""
    raise InputError(
        f"measuring {files} file(s) of a {parameters / 1e9:.2f}B-parameter model over {tokens:,} "
        f"tokens would take about {estimate:.0f} min, over the {minutes:g} min budget",
        hint=f"{fewer}raise the budget: --measure-minutes {max(minutes, estimate) * 1.2:.0f}",
    )


def measure(
    files: Sequence[Path],
    reference: Path,
    *,
    toolchain: Toolchain,
    text: str,
    eval_source: str,
    work_dir: Path,
    eval_tokens: int = DEFAULT_EVAL_TOKENS,
    threads: int | None = None,
    on_file: Callable[[Path], None] | None = None,
) -> QualityReport:
    """Measure each of ``files`` against the 16-bit ``reference`` over ``text``.

    Args:
        files: the quantized GGUFs.
        reference: the 16-bit (f16/bf16) GGUF of the same model.
        toolchain: where llama-perplexity is.
        text: the evaluation text (``eval_data.load_eval_text``).
        eval_source: where the text came from, for the report.
        work_dir: where the reference's log-probabilities go (removed afterwards).
        eval_tokens: at most this many tokens are evaluated.
        threads: CPU threads (default: all).
        on_file: called before each file is measured (progress).

    Raises:
        DependencyMissingError: no llama-perplexity (the message says how to get it).
        InputError: the text is too short even for the smallest context.
        ConversionError: llama-perplexity failed (its last line is in the message).
    """
    binary = toolchain.require_tool(PERPLEXITY_BINARY, needed_for="export works without --measure")
    started = time.monotonic()
    work_dir.mkdir(parents=True, exist_ok=True)
    text_file = work_dir / f"eval-{os.getpid()}.txt"
    base = work_dir / f"reference-{os.getpid()}.kld"
    text_file.write_text(text, encoding="utf-8")
    common = ["-t", str(threads or os.cpu_count() or 1), "--no-warmup"]
    try:
        if on_file is not None:
            on_file(reference)
        ref_ppl, ctx, chunks = _reference_run(
            binary, reference, text_file, base, eval_tokens, common
        )
        results: dict[Path, Quality] = {}
        for path in files:
            if on_file is not None:
                on_file(path)
            argv: list[str | Path] = ["-m", path, "--kl-divergence-base", base,
                                      "--kl-divergence", "-c", str(ctx), *common]  # fmt: skip
            out = _run(binary, argv, what=f"measuring {path.name}", done=_PATTERNS["top1"])
            results[path] = parse_kl_output(out, reference=reference.name, path=path)
    finally:
        text_file.unlink(missing_ok=True)
        base.unlink(missing_ok=True)
    return QualityReport(
        files=results,
        reference=reference,
        reference_perplexity=ref_ppl,
        eval_source=eval_source,
        tokens=chunks * (ctx - 1 - ctx // 2),
        seconds=time.monotonic() - started,
    )


def _reference_run(binary: Path, reference: Path, text_file: Path, base: Path, eval_tokens: int,
                   common: list[str]) -> tuple[float, int, int]:  # fmt: skip
    """Run the reference once, saving its log-probabilities; return (PPL, n_ctx, chunks).

    A text shorter than two default contexts is measured with a smaller context (down to
    ``MIN_CTX``), so a short ``--eval-data`` still gives numbers; shorter than that is an error.
    """
    ctx = DEFAULT_CTX
    while True:
        chunks = max(2, eval_tokens // ctx)
        argv: list[str | Path] = ["-m", reference, "-f", text_file, "--kl-divergence-base", base,
                                  "-c", str(ctx), "--chunks", str(chunks), *common]  # fmt: skip
        try:
            out = _run(binary, argv, what=f"measuring the reference {reference.name}",
                       done=_FINAL_PPL)  # fmt: skip
        except _TooShortError as short:
            smaller = (short.tokens // 2) // 16 * 16
            if smaller >= MIN_CTX and smaller < ctx:
                ctx = smaller
                continue
            raise InputError(
                f"the evaluation text is only {short.tokens} tokens; measuring needs at least "
                f"{2 * MIN_CTX}",
                hint="give a longer --eval-data (a few thousand tokens), or drop it to use the "
                "packaged held-out text",
            ) from None
        ppl = _FINAL_PPL.search(out)
        found = _CHUNKS.search(out)
        if ppl is None or found is None:
            raise ConversionError(
                f"llama-perplexity printed no perplexity for {reference.name}",
                hint="rerun with -v to see its output",
                stderr_tail=out[-2000:],
            )
        return float(ppl.group(1)), int(found.group(2)), int(found.group(1))


class _TooShortError(Exception):
    def __init__(self, tokens: int) -> None:
        super().__init__(tokens)
        self.tokens = tokens


def _run(binary: Path, args: Sequence[str | Path], *, what: str, done: re.Pattern[str]) -> str:
    """Run llama-perplexity; return its output (stdout and stderr: it logs to both).

    Its last lines are printed by a logger thread that the process does not wait for at exit
    (llama.cpp issue 22142: "logs may be lost if not flushed before the program exits"), so on
    a busy machine the statistics at the end are sometimes cut off. Up to ``ATTEMPTS`` runs,
    until the line ``done`` matches; the toolchain ``setup`` builds carries a patch that waits
    for the logger (see ``toolchain_sources.SOURCE_PATCHES``), so there one run suffices.
    """
    from .._subprocess import kill_with_parent

    argv = [str(binary), *(str(a) for a in args)]
    out = ""
    for attempt in range(1, ATTEMPTS + 1):
        logger.debug("running %s", " ".join(argv))
        proc = subprocess.run(argv, capture_output=True, text=True, errors="replace",
                              check=False, preexec_fn=kill_with_parent)  # fmt: skip
        out = proc.stdout + proc.stderr
        if proc.returncode != 0 or _TOO_SHORT.search(out) or done.search(out):
            break
        logger.info("%s: llama-perplexity's output was cut off (attempt %d)", what, attempt)
    return _checked(out, proc.returncode, argv, what)


def _checked(out: str, returncode: int, argv: list[str], what: str) -> str:
    if short := _TOO_SHORT.search(out):
        raise _TooShortError(int(short.group(1)))
    if returncode != 0:
        lines = [line for line in out.strip().splitlines() if line.strip()]
        errors = [line for line in lines if "error" in line.lower() or "failed" in line.lower()]
        last = (errors or lines or [f"exit code {returncode}"])[-1].strip()
        raise ConversionError(f"{what} failed: {last}", hint="rerun with -v to see its output",
                              command=argv, stderr_tail="\n".join(lines[-20:]))  # fmt: skip
    return out


def parse_kl_output(out: str, *, reference: str, path: Path) -> Quality:
    """llama-perplexity's ``--kl-divergence`` statistics as a ``Quality``.

    Raises:
        ConversionError: a statistic is missing (llama-perplexity returns 0 even when it stops
            early, e.g. on a vocabulary that differs from the reference's) or not a number.
    """
    values: dict[str, float] = {}
    for key, pattern in _PATTERNS.items():
        found = pattern.search(out)
        value = float(found.group(1)) if found else float("nan")
        if value != value or value in (float("inf"), float("-inf")):
            errors = [ln for ln in out.splitlines() if "error" in ln.lower()]
            why = errors[-1].strip() if errors else f"no {key.replace('_', ' ')} in its output"
            raise ConversionError(f"measuring {path.name} against {reference} failed: {why}",
                                  hint="rerun with -v to see llama-perplexity's output",
                                  stderr_tail=out[-2000:])  # fmt: skip
        values[key] = value
    found_chunks = _CHUNKS.search(out)
    tokens = 0
    if found_chunks is not None:
        chunks, ctx = int(found_chunks.group(1)), int(found_chunks.group(2))
        tokens = chunks * (ctx - 1 - ctx // 2)
    return Quality(
        kl_mean=values["kl_mean"],
        kl_median=values["kl_median"],
        kl_p99=values["kl_p99"],
        top1=round(values["top1"] / 100.0, 6),
        perplexity=values["perplexity"],
        tokens=tokens,
        reference=reference,
    )


__all__ = [
    "DEFAULT_BUDGET_MINUTES",
    "DEFAULT_EVAL_TOKENS",
    "Quality",
    "QualityReport",
    "check_budget",
    "estimate_minutes",
    "measure",
    "parse_kl_output",
]
