"""Round trip: prove a registered model renders like the fine-tune and answers properly.

``reference`` (what the fine-tune renders), ``check`` (asking Ollama, comparing) and ``report``
(the verdict: a check that did not run is never PASSED).
"""

from __future__ import annotations

from .check import (
    COMMON_MARKERS,
    DEFAULT_QUESTION,
    ROUND_TRIP_PROBES,
    check_round_trip,
    compare_probe,
    find_leaks,
    render_with_debug_endpoint,
    render_with_go_renderer,
    run_generation_check,
    stops_from_show,
)
from .reference import (
    Reference,
    load_reference,
    load_reference_for,
    reference_from_gguf,
    reference_from_template,
)
from .report import (
    GenerationCheck,
    ProbeCheck,
    RenderMethod,
    RoundTripReport,
    Verdict,
    raise_for_failure,
)

__all__ = [
    "COMMON_MARKERS",
    "DEFAULT_QUESTION",
    "ROUND_TRIP_PROBES",
    "GenerationCheck",
    "ProbeCheck",
    "Reference",
    "RenderMethod",
    "RoundTripReport",
    "Verdict",
    "check_round_trip",
    "compare_probe",
    "find_leaks",
    "load_reference",
    "load_reference_for",
    "raise_for_failure",
    "reference_from_gguf",
    "reference_from_template",
    "render_with_debug_endpoint",
    "render_with_go_renderer",
    "run_generation_check",
    "stops_from_show",
]
