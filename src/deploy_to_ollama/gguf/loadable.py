"""Quant types that known Ollama builds cannot load, keyed by the version the server reports.

Why: such a GGUF exports fine and then fails late, at ``ollama create`` or (worse) when the
server aborts on the first prompt. A deploy compares the chosen type with this table as soon as
it knows the server's version and warns before any heavy work.

Only measured facts go in the table, each with how it was measured. A version string is not a
build: the same ``/api/version`` may come from a stock Ollama that loads the type, so the
warning names the build it is about.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .quants import QUANT_TYPES


@dataclass(frozen=True, slots=True)
class KnownBuild:
    """An Ollama build and the quant types (file types, our spelling) it cannot load."""

    version: str
    """What its ``/api/version`` answers."""
    build: str
    cannot_load: frozenset[str]
    can_load: frozenset[str]
    """Types measured to load and answer on the same build (the hint offers those we export)."""
    how_known: str


KNOWN_BUILDS: tuple[KnownBuild, ...] = (
    KnownBuild(
        version="0.9.3",
        build="the IPEX-LLM Ollama 0.9.3 of PyPI bigdl-core-cpp 2.7.0b20260110 on CPU",
        cannot_load=frozenset({"q4_0", "q4_k_m", "q4_k_s"}),
        can_load=frozenset(
            {"f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q5_k_s", "q5_0", "q5_1", "q4_1"}
            | {"q3_k_m", "q2_k", "iq4_nl", "iq4_xs", "iq3_m", "iq3_s", "iq3_xs", "iq3_xxs"}
            | {"iq2_m", "iq2_s", "iq2_xs", "iq2_xxs", "iq1_m", "iq1_s"}
        ),
        # `python -m support.loadable_probe Q4_K_M Q4_0 IQ4_NL ...` on 2026-12-03 (no imatrix),
        # then `... loadable_probe --imatrix IQ4_XS IQ4_NL IQ3_M IQ3_S IQ3_XS IQ3_XXS IQ2_M IQ2_S
        # IQ2_XS IQ2_XXS IQ1_M IQ1_S Q4_K_M` the same day: every IQ type created and answered
        # (their mixes hold iq*/q2_K/q5_K/q6_K, IQ3_M also q4_K tensors); Q4_K_M failed again
        # with HTTP 500 at the first prompt.
        how_known=(
            "`ollama create` succeeds, then the runner aborts on the first prompt (HTTP 500); "
            "measured on our test server"
        ),
    ),
)


def _same_version(reported: str, known: str) -> bool:
    """``0.9.3`` matches ``0.9.3`` and build-suffixed ``0.9.3-rc1`` / ``0.9.3+ipex``, not 0.9.30.

    >>> _same_version("0.9.3", "0.9.3"), _same_version("0.9.3-ipexllm", "0.9.3")
    (True, True)
    >>> _same_version("0.9.30", "0.9.3"), _same_version("0.12.0", "0.9.3")
    (False, False)
    """
    reported = reported.strip().removeprefix("v")
    return reported == known or reported.startswith((f"{known}-", f"{known}+"))


def load_warnings(quants: Iterable[str], server_version: str | None) -> list[str]:
    """One warning per chosen quant that a known build with this version cannot load.

    >>> load_warnings(["q5_k_m"], "0.9.3"), load_warnings(["q4_k_m"], "0.12.6")
    ([], [])
    >>> print(load_warnings(["Q4_K_M"], "0.9.3")[0])  # doctest: +ELLIPSIS
    q4_k_m: the IPEX-LLM Ollama 0.9.3 ... cannot load it (...); stock Ollama builds can. \
On that build choose one of bf16, f16, ..., q5_k_m, q5_k_s, q6_k, q8_0.
    """
    if not server_version:
        return []
    warnings: list[str] = []
    for quant in (q.strip().lower() for q in quants):
        for known in KNOWN_BUILDS:
            if quant in known.cannot_load and _same_version(server_version, known.version):
                choices = ", ".join(sorted(known.can_load & set(QUANT_TYPES)))
                warnings.append(
                    f"{quant}: {known.build} cannot load it ({known.how_known}); stock "
                    f"Ollama builds can. On that build choose one of {choices}."
                )
    return warnings


__all__ = ["KNOWN_BUILDS", "KnownBuild", "load_warnings"]
