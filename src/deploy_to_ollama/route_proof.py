"""The proofs a template route rests on (``routing``): our Go TEMPLATE against transformers
(verified at translation time; kept by Ollama 0.30+ only at capability parity) and the GGUF's
Jinja on llama.cpp's engine against transformers (``chat_template.native``, on the GGUF we wrote:
one template reader, so the proof is of the Jinja the TEMPLATE was translated from).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .ollama_route import ModelFacts, ServerVersion, select_route

if TYPE_CHECKING:
    from .chat_template.native import NativeReport, NativeUnavailable
    from .chat_template.source import TemplateSource
    from .modelfile import TemplateResult
    from .routing import RouteChoice
    from .settings import Settings

#: The two server generations a route can be proven for.
LEGACY, CURRENT = "0.9.x", "0.30+"
#: A version of the newest generation, for asking the selection about it.
_NEWEST = ServerVersion("newest", (99, 0, 0), newest=True)

__all__ = [
    "CURRENT",
    "LEGACY",
    "GoProof",
    "NativeProof",
    "auto_route",
    "go_proof",
    "native_proof",
    "prove_native",
    "translated_go_proof",
]


@dataclass(frozen=True, slots=True)
class GoProof:
    """Our TEMPLATE against transformers (Go-template verification at translation time)."""

    verified: bool
    differs: tuple[str, ...] = ()
    """Probes whose prompt differs."""
    note: str | None = None
    kept_on_current: bool = True
    """Ollama 0.30+ keeps rendering the TEMPLATE (it does not prefer the GGUF's Jinja)."""

    def proven_on(self) -> tuple[str, ...]:
        if not self.verified:
            return ()
        return (LEGACY, CURRENT) if self.kept_on_current else (LEGACY,)

    def to_json(self) -> dict[str, Any]:
        return {
            "verified": self.verified,
            "differs": list(self.differs),
            "kept_on_current": self.kept_on_current,
            "proven_on": list(self.proven_on()),
        }


@dataclass(frozen=True, slots=True)
class NativeProof:
    """The GGUF's Jinja on llama.cpp's engine against transformers (``/apply-template``)."""

    available: bool
    verified: bool = False
    differs: tuple[str, ...] = ()
    exact: int = 0
    compared: int = 0
    reason: str | None = None
    """Why the native route is unavailable (no Jinja, llama.cpp cannot parse it, ...)."""

    def proven_on(self) -> tuple[str, ...]:
        return (CURRENT,) if self.available and self.verified else ()

    def to_json(self) -> dict[str, Any]:
        return {
            "available": self.available,
            "verified": self.verified,
            "differs": list(self.differs),
            "exact": self.exact,
            "compared": self.compared,
            "reason": self.reason,
            "proven_on": list(self.proven_on()),
        }


def go_proof(template: TemplateResult, jinja: str | None) -> GoProof:
    """The go route's proof from the template stage, and whether 0.30+ keeps the TEMPLATE."""
    kept = select_route(ModelFacts(template=template.template, jinja=jinja), _NEWEST)
    return GoProof(
        verified=template.verified,
        differs=tuple(getattr(template, "differs", ()) or ()),
        note=template.note,
        kept_on_current=kept.path == "rendered",
    )


def translated_go_proof(source: TemplateSource, version: str) -> tuple[str, GoProof]:
    """The TEMPLATE the template stage writes for a server of ``version`` and its go-route
    proof; a Jinja that cannot be translated gives Ollama's bare prompt, unproven (for the
    corpus measurements: ``benchmarks/routes.py``, ``tests/test_corpus_routes.py``)."""
    from .chat_template.translate import translate_template
    from .errors import DeployError
    from .modelfile import TemplateResult

    try:
        translated = translate_template(source, server_version=version)
    except DeployError:
        fallback = TemplateResult("{{ .Prompt }}", (), None, verified=False)
        return fallback.template, go_proof(fallback, source.template)
    differs = tuple(p.probe for p in translated.report.probes if p.status == "differs")
    result = TemplateResult(translated.template, (), None, translated.verified, differs=differs)
    return translated.template, go_proof(result, source.template)


def auto_route(
    source: TemplateSource, version: str, native: NativeProof
) -> tuple[RouteChoice, bool]:
    """The route ``deploy --template-route auto`` takes for ``source`` on a server of
    ``version``, and whether it agrees with the reproduced selection on the Modelfile written
    (the corpus measurements: ``benchmarks/routes.py``, ``tests/test_corpus_routes.py``)."""
    from .modelfile import Modelfile
    from .routing import choose_route, modelfile_for_route

    template, go = translated_go_proof(source, version)
    choice = choose_route(
        "auto", version=version, jinja=source.template, go=go, native=native, template=template
    )
    written = modelfile_for_route(choice, Modelfile("./m.gguf", template=template))
    decision = select_route(ModelFacts(template=written.template, jinja=source.template), version)
    return choice, choice.route == ("native" if decision.path == "native" else "go")


def native_proof(report: NativeReport | NativeUnavailable) -> NativeProof:
    """``chat_template.native``'s result as a route proof."""
    from .chat_template.native import NativeUnavailable

    if isinstance(report, NativeUnavailable):
        return NativeProof(available=False, reason=report.reason)
    ran = [p for p in report.probes if p.status != "skipped"]
    return NativeProof(
        available=True,
        verified=report.verified,
        differs=tuple(p.probe for p in ran if p.status == "differs"),
        exact=report.exact,
        compared=len(ran),
    )


def prove_native(
    source: Path, base_dir: Path | None, gguf: Path, settings: Settings, *, required: bool
) -> NativeProof:
    """Verify the GGUF's Jinja through llama-server, on the GGUF we wrote (one template
    reader: the GGUF carries the Jinja the TEMPLATE was translated from).

    Raises:
        DependencyMissingError: no usable llama-server, when the native route was asked for
            (``required``); otherwise the route is reported unavailable and go is used.
    """
    from .chat_template import load_template_source
    from .chat_template.native import verify_native
    from .errors import DependencyMissingError, TemplateNotFoundError
    from .gguf.toolchain import find_toolchain

    try:
        template_source = load_template_source(source)
    except TemplateNotFoundError:
        if base_dir is None:
            raise
        template_source = load_template_source(base_dir)
    embedded = _gguf_jinja(gguf)
    if embedded is not None and embedded != template_source.template:
        # One template reader: the proof must be of the Jinja the TEMPLATE was translated from.
        return NativeProof(
            available=False,
            reason=f"{gguf.name}'s tokenizer.chat_template is not the template the TEMPLATE "
            f"was translated from ({template_source.origin})",
        )
    try:
        binary = find_toolchain(settings.cache_dir, settings.llama_cpp_dir).require_server()
        return native_proof(verify_native(template_source, binary, gguf=gguf))
    except DependencyMissingError as err:
        if required:
            raise
        why = f"{err.message} ({err.hint})" if err.hint else err.message
        return NativeProof(available=False, reason=why)


def _gguf_jinja(gguf: Path) -> str | None:
    """``tokenizer.chat_template`` of ``gguf`` (None without one)."""
    from .gguf.metadata import read_gguf_fields

    text = read_gguf_fields(gguf, ["tokenizer.chat_template"]).get("tokenizer.chat_template")
    return text if isinstance(text, str) and text else None
