"""Chat-template engine: Jinja chat template -> Ollama TEMPLATE, with a proof they agree.

``load_template_source`` reads the template and tokens, ``translate_template`` infers and emits
a ``.Messages`` TEMPLATE plus stops and SYSTEM, ``verify_template`` renders the probe suite
through transformers and through Ollama's prompt building and compares.
"""

from __future__ import annotations

from .hf_render import render_hf
from .probes import Probe, load_probes
from .source import TemplateSource, load_template_source
from .stops import infer_stops, is_safe_stop
from .translate import TemplateShape, TranslatedTemplate, infer_shape, translate_template
from .verify import ProbeResult, VerificationReport, reference_renders, verify_template

__all__ = [
    "Probe",
    "ProbeResult",
    "TemplateShape",
    "TemplateSource",
    "TranslatedTemplate",
    "VerificationReport",
    "infer_shape",
    "infer_stops",
    "is_safe_stop",
    "load_probes",
    "load_template_source",
    "reference_renders",
    "render_hf",
    "translate_template",
    "verify_template",
]
