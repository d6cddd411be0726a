"""Ollama Modelfiles: their syntax (``syntax``) and what we put into them (``assembly``)."""

from .assembly import (
    GENERATION_PARAMETERS,
    MAX_SENSIBLE_CONTEXT,
    SAMPLING_PARAMETERS,
    TemplateResult,
    assemble_modelfile,
    format_number,
    header_comment,
    model_parameters,
    num_ctx_parameter,
    parameters_from_generation_config,
    relative_from,
    stop_parameters,
)
from .syntax import (
    COMMANDS,
    MESSAGE_ROLES,
    Modelfile,
    parse_modelfile,
    quote_value,
    render_modelfile,
    scan_commands,
)

__all__ = [
    "COMMANDS",
    "GENERATION_PARAMETERS",
    "MAX_SENSIBLE_CONTEXT",
    "MESSAGE_ROLES",
    "SAMPLING_PARAMETERS",
    "Modelfile",
    "TemplateResult",
    "assemble_modelfile",
    "format_number",
    "header_comment",
    "model_parameters",
    "num_ctx_parameter",
    "parameters_from_generation_config",
    "parse_modelfile",
    "quote_value",
    "relative_from",
    "render_modelfile",
    "scan_commands",
    "stop_parameters",
]
