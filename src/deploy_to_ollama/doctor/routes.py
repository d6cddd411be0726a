"""Doctor checks of the template route (issue 13): which prompt path Ollama 0.30+ takes for the
model, and whether that path is the one that was proven.

- ``template_overridden``: a Go TEMPLATE is present, but Ollama 0.30+ serves the GGUF's Jinja
  instead (it shows more capabilities: ``ollama_route.select_route``), so the TEMPLATE and its
  proof are ignored there.
- ``native_render_mismatch``: on that native path llama.cpp's Jinja engine renders the prompt,
  and it differs from transformers' (``chat_template.native``; the first difference is shown).
- ``library_template_attached``: the TEMPLATE is one of Ollama's library templates, which
  ``ollama create`` attaches when the Modelfile has none (server/model.go
  ``detectChatTemplate``); it was not translated from the fine-tune's template.

``--fix`` switches to the proven route (``proven_route``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

from ..capabilities import go_template_capabilities, jinja_capabilities
from ..ollama_route import ModelFacts, select_route
from .diagnoses import Diagnosis, DoctorContext, ProbeRender

if TYPE_CHECKING:
    from ..chat_template.native import NativeReport, NativeUnavailable
    from ..chat_template.source import TemplateSource

logger = logging.getLogger(__name__)

#: The server generation whose rules the checks apply (an Ollama that has the native path).
NEWEST = "newest"

__all__ = [
    "ROUTE_CHECKS",
    "check_library_template",
    "check_native_render",
    "check_template_overridden",
    "library_template_name",
    "native_report",
    "proven_route",
]


def _jinja(ctx: DoctorContext) -> str | None:
    """The Jinja a 0.30+ server would hand llama-server: the GGUF's own."""
    info = ctx.target.gguf
    return info.chat_template if info is not None and info.chat_template else None


def _served_natively(ctx: DoctorContext) -> bool:
    jinja = _jinja(ctx)
    if jinja is None:
        return False
    facts = ModelFacts(template=ctx.target.template if ctx.has_template else None, jinja=jinja)
    return select_route(facts, NEWEST).path == "native"


def _renderer_parser(ctx: DoctorContext) -> tuple[str, str]:
    """RENDERER and PARSER of an Ollama model (``/api/show``'s modelfile text), else empty."""
    from ..ollama_client import OllamaClient
    from ..roundtrip.capability_check import config_value

    if ctx.target.kind != "ollama":
        return "", ""
    shown = OllamaClient(ctx.target.host).show(ctx.target.label)
    if shown is None:
        return "", ""
    return config_value(shown, "renderer"), config_value(shown, "parser")


def _renderer_overrides(renderer: str, parser: str) -> Diagnosis:
    named = ", ".join(f"{k} {v}" for k, v in (("RENDERER", renderer), ("PARSER", parser)) if v)
    return Diagnosis(
        "template_overridden",
        "warning",
        f"{named} builds the prompt: Ollama ignores this TEMPLATE",
        "The prompt comes from Ollama's built-in renderer for another model family, inherited "
        "from a FROM model or set by create for the architecture, not from the fine-tune's "
        "template.",
        (f"the model's config has {named} (server/create.go copies it from a FROM model)",),
        "`doctor --fix` re-creates the model from its weights blob, which inherits no "
        "RENDERER/PARSER",
        fixable=True,
    )


def check_template_overridden(ctx: DoctorContext) -> list[Diagnosis]:
    """A TEMPLATE that Ollama 0.30+ drops for the GGUF's Jinja, or that a RENDERER/PARSER
    replaces on any server that has them."""
    renderer, parser = _renderer_parser(ctx) if ctx.has_template else ("", "")
    if renderer or parser:
        return [_renderer_overrides(renderer, parser)]
    jinja = _jinja(ctx)
    if jinja is None or not ctx.has_template or not _served_natively(ctx):
        return []
    template = ctx.target.template
    decision = select_route(ModelFacts(template=template, jinja=jinja), NEWEST)
    return [
        Diagnosis(
            "template_overridden",
            "warning",
            "Ollama 0.30+ ignores this TEMPLATE and renders the GGUF's Jinja itself",
            "On a current Ollama the prompt comes from llama.cpp's Jinja engine, not from the "
            "TEMPLATE that was checked; answers can change after upgrading Ollama.",
            (
                decision.reason,
                f"the Jinja shows {list(jinja_capabilities(jinja))}, the TEMPLATE "
                f"{list(go_template_capabilities(template))}",
            ),
            "`doctor --fix` switches to the proven route: a TEMPLATE with the Jinja's "
            "capabilities where one is verified, else the GGUF's Jinja (no TEMPLATE)",
            fixable=True,
        )
    ]


def check_native_render(ctx: DoctorContext) -> list[Diagnosis]:
    """llama.cpp's rendering of the Jinja against transformers', where 0.30+ serves the Jinja."""
    ref = ctx.reference
    if ref is None or ref.source is None or not _served_natively(ctx):
        return []
    report = native_report(ref.source)
    failure = getattr(report, "first_failure", lambda: None)()
    if failure is None:
        return []
    at = failure.position or 0
    expected, actual = failure.expected or "", failure.actual or ""
    render = ProbeRender(failure.probe, expected, actual, at, failure.reason)
    return [
        Diagnosis(
            "native_render_mismatch",
            "error",
            "llama.cpp's Jinja engine renders this chat template differently from transformers",
            "On Ollama 0.30+ the model gets a prompt it was not trained on (spacing, think tags, "
            "tool blocks): weaker or odd answers.",
            (
                f"probe {failure.probe}, first difference at character {at}: transformers "
                f"{expected[max(0, at - 20) : at + 30]!r} vs llama.cpp "
                f"{actual[max(0, at - 20) : at + 30]!r}",
            ),
            "`doctor --fix` switches to the go route when its TEMPLATE is verified; "
            "`template diff SOURCE --native` shows every probe",
            fixable=True,
            probes=(render,),
        )
    ]


@cache
def _library() -> dict[str, str]:
    raw = resources.files(__package__).joinpath("library_templates.json").read_text("utf-8")
    templates: dict[str, str] = json.loads(raw)["templates"]
    return templates


def library_template_name(template: str | None) -> str | None:
    """The Ollama library template ``template`` is, byte for byte, else None.

    >>> library_template_name("{{ .Prompt }}") is None
    True
    """
    if not template:
        return None
    return _library().get(hashlib.sha256(template.encode("utf-8")).hexdigest())


def check_library_template(ctx: DoctorContext) -> list[Diagnosis]:
    """A TEMPLATE ``ollama create`` attached from its library instead of the fine-tune's own."""
    name = library_template_name(ctx.target.template)
    if name is None or _jinja(ctx) is None:
        return []
    return [
        Diagnosis(
            "library_template_attached",
            "warning",
            f"the TEMPLATE is Ollama's library template {name!r}, not the fine-tune's own",
            "`ollama create` picked the closest template it knows when the Modelfile had none; "
            "system prompt, tool format or spacing may not be what the model was trained on.",
            (
                f"the TEMPLATE is byte for byte Ollama's {name!r} (template/index.json, "
                "attached by detectChatTemplate)",
            ),
            "`doctor --fix` writes the translated TEMPLATE (or, where only the Jinja is "
            "proven, a route Ollama 0.30+ serves natively)",
            fixable=True,
        )
    ]


def native_report(source: TemplateSource) -> NativeReport | NativeUnavailable:
    """llama.cpp's engine against transformers; unavailable (never a pass) without llama-server."""
    from ..chat_template.native import NativeUnavailable, verify_native
    from ..errors import DependencyMissingError
    from ..gguf.toolchain import find_toolchain
    from ..settings import Settings

    settings = Settings.from_env()  # the doctor's checks take no settings; read at use
    try:
        binary = find_toolchain(settings.cache_dir, settings.llama_cpp_dir).require_server()
        return verify_native(source, binary)
    except DependencyMissingError as err:
        logger.info("native render not checked: %s", err.message)
        return NativeUnavailable(err.message)


def proven_route(
    source: TemplateSource, template: str, *, verified: bool, version: str | None = None
) -> str:
    """``go`` or ``native``: the route ``--fix`` writes (go when its TEMPLATE is verified and
    0.30+ keeps it; native when llama.cpp's engine is proven; else go, today's default).
    ``version``: the server's, for an Ollama model; before 0.30 only the go route exists."""
    from ..ollama_route import parse_server_version

    if version is not None and not parse_server_version(version)[0].native_path:
        return "go"
    facts = ModelFacts(template=template, jinja=source.template)
    if verified and select_route(facts, NEWEST).path == "rendered":
        return "go"
    report = native_report(source)
    return "native" if report.verified else "go"


#: Registered in ``diagnoses.diagnose`` after its own checks.
ROUTE_CHECKS = (check_template_overridden, check_native_render, check_library_template)
