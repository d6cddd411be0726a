"""Chat-template engine: Jinja chat template -> Ollama TEMPLATE, with a proof they agree.

``load_template_source`` reads the template and tokens, ``translate_template`` infers and emits
a ``.Messages`` TEMPLATE plus stops and SYSTEM, ``verify_template`` renders the probe suite
through transformers and through Ollama's prompt building and compares; ``analyse_tools``
says which tool probes can be proven (see ``tools.py``).
"""

from __future__ import annotations

from .hf_render import render_hf
from .probes import Probe, load_probes
from .shape import TemplateShape, infer_shape
from .source import TemplateSource, load_template_source
from .stops import infer_stops, is_safe_stop
from .tools import ToolAnalysis, analyse_tools, verify_tool_probes
from .translate import TranslatedTemplate, translate_template
from .verify import ProbeResult, VerificationReport, reference_renders, verify_template

__all__ = [
    "Probe",
    "ProbeResult",
    "TemplateShape",
    "TemplateSource",
    "ToolAnalysis",
    "TranslatedTemplate",
    "VerificationReport",
    "analyse_tools",
    "infer_shape",
    "infer_stops",
    "is_safe_stop",
    "load_probes",
    "load_template_source",
    "reference_renders",
    "render_hf",
    "translate_template",
    "verify_template",
    "verify_tool_probes",
]
