"""``deploy --template-route``: serve our verified Go TEMPLATE or the GGUF's own Jinja, on purpose.

Ollama 0.30+ has two chat paths for a GGUF model (``ollama_route``): *rendered* (Ollama renders
the Go TEMPLATE) and *native* (llama-server renders the GGUF's Jinja with llama.cpp's engine).
A route is *proven* for a server generation when the prompt that generation builds was compared
with transformers and held: the go route by our Go-template verification (and, on 0.30+, only
while Ollama keeps the TEMPLATE: capability parity), the native route by llama-server's
``/apply-template`` on the GGUF we wrote (``chat_template.native``). Before 0.30 every chat is
rendered from the TEMPLATE, so the native route exists only on 0.30+.

The native route's Modelfile has no TEMPLATE, SYSTEM, RENDERER or PARSER and names the GGUF
file in FROM: a RENDERER/PARSER is inherited only from a FROM *model* (server/create.go,
``parseFromModel``'s base config), and a model without a template layer is served natively.
``ollama create`` may still attach a library TEMPLATE (server/model.go ``detectChatTemplate``,
when the Jinja is within edit distance 100 of an entry of template/index.json; no Modelfile
command removes that layer, and ``TEMPLATE ""`` is ignored by ``if r.Template != ""``). So after
registration the route is decided again from what ``/api/show`` reports (``confirm_route``):
the route we report is always the one ``ollama_route.select_route`` gives the registered model.
The calls that ask the server live in ``route_deploy``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from .capabilities import compare_capabilities
from .errors import InputError, TemplateMismatchError, UsageError
from .ollama_route import (
    ModelFacts,
    RouteDecision,
    parse_server_version,
    select_route,
)
from .route_proof import (
    CURRENT,
    LEGACY,
    GoProof,
    NativeProof,
    go_proof,
    native_proof,
    prove_native,
)

if TYPE_CHECKING:
    from .modelfile import Modelfile
    from .ollama_client import ShownModel


Route = Literal["go", "native"]
RouteRequest = Literal["auto", "go", "native"]
ROUTE_CHOICES: tuple[str, ...] = ("auto", "go", "native")

__all__ = [
    "CURRENT",
    "LEGACY",
    "ROUTE_CHOICES",
    "GoProof",
    "NativeProof",
    "Route",
    "RouteChoice",
    "RouteRequest",
    "check_route_for_server",
    "check_route_request",
    "choose_route",
    "confirm_route",
    "export_route",
    "go_proof",
    "library_fallback",
    "modelfile_for_route",
    "native_proof",
    "prove_native",
    "raise_for_route",
    "registered_template_matches",
    "route_modelfile",
]


def check_route_request(value: str) -> RouteRequest:
    """``--template-route`` is one of auto, go, native (a usage error otherwise).

    >>> check_route_request("native")
    'native'
    """
    if value not in ROUTE_CHOICES:
        raise UsageError(
            f"unknown --template-route {value!r}", hint="use one of " + ", ".join(ROUTE_CHOICES)
        )
    return value  # type: ignore[return-value]


# --------------------------------------------------------------------------- the choice


@dataclass(frozen=True, slots=True)
class RouteChoice:
    """The route ``deploy`` takes, why, what backs it and what Ollama will report."""

    route: Route
    requested: RouteRequest
    reason: str
    server_version: str
    generation: str
    """``0.9.x`` or ``0.30+``: the rules of the user's server."""
    capabilities: tuple[str, ...]
    """What ``/api/show`` will list for the model (``ollama_route.select_route``)."""
    go: GoProof
    native: NativeProof | None
    """None when the native route was not checked (a 0.9.x server, route go)."""
    proven: bool
    capabilities_lost: tuple[str, ...] = ()
    """Capabilities the Jinja has and the served model lacks."""
    strict: bool = False
    warnings: tuple[str, ...] = field(default=())
    library_template: bool = False
    """``ollama create`` attached a library TEMPLATE (seen after registration)."""

    @property
    def proof(self) -> str:
        """Which proof backs the route, in one line."""
        if self.route == "go":
            where = ", ".join(self.go.proven_on()) or "no server generation"
            state = "verified" if self.go.verified else "NOT verified"
            return f"Go TEMPLATE {state} against transformers (proven on {where})"
        native = self.native
        if native is None or not native.available:
            why = native.reason if native is not None else "not checked"
            return f"native route unavailable: {why}"
        state = "verified" if native.verified else "NOT verified"
        return (
            f"GGUF Jinja on llama.cpp's engine {state} against transformers "
            f"({native.compared - len(native.differs)}/{native.compared} probes match, "
            f"{native.exact} exact)"
        )

    @property
    def differs(self) -> tuple[str, ...]:
        """The probes that differ on the chosen route."""
        if self.route == "go":
            return self.go.differs
        return self.native.differs if self.native is not None else ()

    @property
    def failure(self) -> str | None:
        """Why ``deploy`` exits 3: the route is unproven, or ``--strict`` and a capability
        was lost; None when neither."""
        if not self.proven:
            return (
                f"template route {self.route} is not proven for Ollama {self.server_version}: "
                + self._difference_text()
            )
        if self.strict and self.capabilities_lost:
            return (
                f"capabilities_lost (--strict): the deployed model lacks "
                f"{', '.join(self.capabilities_lost)} that the Jinja chat template has"
            )
        return None

    def _difference_text(self) -> str:
        parts = []
        if self.go.differs or not self.go.verified:
            parts.append(f"go: {_probe_list(self.go.differs) or self.go.note or 'not verified'}")
        if self.native is not None:
            if not self.native.available:
                parts.append(f"native: unavailable ({self.native.reason})")
            elif not self.native.verified:
                parts.append(f"native: {_probe_list(self.native.differs) or 'not verified'}")
        if self.library_template:
            parts.append("a library TEMPLATE was attached by ollama create")
        return "; ".join(parts) or "no proof ran"

    def to_json(self) -> dict[str, Any]:
        return {
            "template_route": self.route,
            "route_requested": self.requested,
            "route_reason": self.reason,
            "route_proof": self.proof,
            "route_proven": self.proven,
            "server_version": self.server_version,
            "server_generation": self.generation,
            "capabilities": list(self.capabilities),
            "capabilities_lost": list(self.capabilities_lost),
            "proofs": {
                "go": self.go.to_json(),
                "native": self.native.to_json() if self.native is not None else None,
            },
        }

    def summary_lines(self) -> list[str]:
        """The route block of the deploy summary; a lost capability is shouted, not buried."""
        lines = [
            f"route    {self.route} ({self.reason})",
            f"proof    {self.proof}",
            f"caps     {', '.join(self.capabilities) or 'none'} (as Ollama "
            f"{self.server_version} reports them)",
        ]
        if self.capabilities_lost:
            lines.append(
                f"CAPABILITIES LOST  {', '.join(self.capabilities_lost)}: the Jinja has them, the "
                f"deployed model does not{'' if self.strict else ' (--strict makes this exit 3)'}"
            )
        if not self.proven:
            lines.append(f"UNPROVEN  {self._difference_text()}")
        return lines


def _probe_list(probes: Sequence[str]) -> str:
    return f"probes {', '.join(probes)} differ" if probes else ""


def choose_route(
    requested: RouteRequest,
    *,
    version: str | None,
    jinja: str | None,
    go: GoProof,
    native: NativeProof | None,
    template: str | None,
    strict: bool = False,
) -> RouteChoice:
    """Pick the route for a server of ``version`` (pure: the proofs are given).

    auto: the go route when it is proven on both generations (or on the 0.9.x server the
    user has); else the native route when proven on 0.30+; else the better of the two
    (more probes matching), unproven (the caller exits 3). go/native: as asked; on 0.30+ a
    TEMPLATE Ollama replaces by the Jinja is reported as the native route it becomes.

    Raises:
        InputError: native asked for on a server older than 0.30 (it has no native path), or
            the native route is unavailable (no Jinja, one llama.cpp cannot parse).
    """
    parsed, warning = parse_server_version(version)
    warnings = [warning] if warning else []
    current = parsed.native_path
    generation = CURRENT if current else LEGACY
    check_route_for_server(requested, version)
    if requested == "native" and native is not None and not native.available:
        raise InputError(
            f"--template-route native is unavailable: {native.reason}",
            hint="use --template-route go (or auto)",
        )
    route, reason = _pick(requested, go, native, current=current)
    served = template if route == "go" else None
    decision = select_route(ModelFacts(template=served, jinja=jinja), parsed)
    route, reason = _as_served(route, reason, decision)
    proven = generation in (go.proven_on() if route == "go" else _native_proven(native))
    lost = _lost(jinja, decision)
    if route == "go" and not current and not go.kept_on_current:
        warnings.append(
            "template_overridden: on Ollama 0.30+ this TEMPLATE gives way to the GGUF's Jinja "
            "(it shows more capabilities); deploy again there to prove the native route"
        )
    return RouteChoice(
        route=route,
        requested=requested,
        reason=reason,
        server_version=version or "unknown",
        generation=generation,
        capabilities=decision.capabilities,
        go=go,
        native=native,
        proven=proven,
        capabilities_lost=lost,
        strict=strict,
        warnings=tuple(warnings),
    )


def check_route_for_server(requested: str, version: str | None) -> None:
    """Refuse ``--template-route native`` for a server without a native path, before any work.

    Raises:
        InputError: Ollama older than 0.30 renders every chat from the Go TEMPLATE.
    """
    parsed, _ = parse_server_version(version)
    if requested == "native" and not parsed.native_path:
        raise InputError(
            f"--template-route native needs Ollama 0.30 or later; {version} renders every "
            "chat from the Go TEMPLATE",
            hint="use --template-route go (or auto) for this server",
        )


def _native_proven(native: NativeProof | None) -> tuple[str, ...]:
    return native.proven_on() if native is not None else ()


def _pick(
    requested: RouteRequest, go: GoProof, native: NativeProof | None, *, current: bool
) -> tuple[Route, str]:
    if requested == "go":
        return "go", "asked for with --template-route go"
    if requested == "native":
        return "native", "asked for with --template-route native"
    if not current:
        if go.verified:
            return "go", "Ollama before 0.30 renders the Go TEMPLATE, which is verified"
        return "go", "Ollama before 0.30 has only the Go TEMPLATE path (the better one)"
    if CURRENT in go.proven_on():
        return "go", "the Go TEMPLATE is proven on both server generations"
    if CURRENT in _native_proven(native):
        why = "not verified" if not go.verified else "replaced by the Jinja on 0.30+"
        return "native", f"the GGUF's Jinja is proven on llama.cpp's engine; the TEMPLATE is {why}"
    return _better(go, native)


def _better(go: GoProof, native: NativeProof | None) -> tuple[Route, str]:
    """Neither route is proven: the one with fewer differing probes (go on a tie)."""
    if native is None or not native.available or not go.kept_on_current:
        if native is not None and native.available and not go.kept_on_current:
            return "native", "neither route is proven; Ollama 0.30+ replaces the TEMPLATE anyway"
        return "go", "neither route is proven; the native route is unavailable"
    counts = f"{len(go.differs)} probes differ on go, {len(native.differs)} on native"
    if len(native.differs) < len(go.differs):
        return "native", f"neither route is proven; native is the better one: {counts}"
    return "go", f"neither route is proven; go is the better one: {counts}"


def _as_served(route: Route, reason: str, decision: RouteDecision) -> tuple[Route, str]:
    """The route the selection really gives the Modelfile we write (never a different claim)."""
    served: Route = "native" if decision.path == "native" else "go"
    if served == route:
        return route, reason
    return served, f"{reason}, but {decision.reason}"


def _lost(jinja: str | None, decision: RouteDecision) -> tuple[str, ...]:
    """Template capabilities of the Jinja that the served model does not report."""
    jinja_caps = compare_capabilities(jinja, None).jinja
    return tuple(c for c in jinja_caps if c not in decision.capabilities)


# --------------------------------------------------------------------------- Modelfile, server


def modelfile_for_route(choice: RouteChoice, modelfile: Modelfile) -> Modelfile:
    """The Modelfile of the chosen route (``route_modelfile``)."""
    return route_modelfile(choice.route, modelfile)


def route_modelfile(route: Route, modelfile: Modelfile) -> Modelfile:
    """The Modelfile of ``route``: the native one has no TEMPLATE, SYSTEM, RENDERER or PARSER
    (the Jinja renders its own default system prompt; nothing is inherited from FROM a file).
    ``deploy`` and ``export`` both assemble it here."""
    if route == "go":
        return modelfile
    extra = tuple((k, v) for k, v in modelfile.extra if k not in ("renderer", "parser"))
    return replace(modelfile, template=None, system=None, extra=extra)


def export_route(requested: RouteRequest) -> Route:
    """The route ``export`` writes the Modelfile for: no server is asked, so auto is the go
    route (our verified TEMPLATE, which every server generation can render).

    >>> export_route("auto"), export_route("native")
    ('go', 'native')
    """
    return "native" if requested == "native" else "go"


def confirm_route(
    choice: RouteChoice,
    shown: ShownModel | None,
    *,
    jinja: str | None,
    template: str | None = None,
) -> RouteChoice:
    """The choice after ``ollama create``: decided again from what ``/api/show`` reports.

    A library TEMPLATE attached to a native-route model (``detectChatTemplate``) may move it
    to the rendered path with a template nobody verified: the route then becomes what the
    selection says, unproven unless it is the go route with our own TEMPLATE. ``template`` is
    the TEMPLATE the Modelfile had (ours after ``library_fallback``): that one is not attached.
    """
    from .roundtrip.capability_check import facts_from_show

    if shown is None:
        return choice
    facts = facts_from_show(shown, jinja)
    decision = select_route(facts, parse_server_version(choice.server_version)[0])
    attached = choice.route == "native" and facts.template not in (None, template)
    served: Route = "native" if decision.path == "native" else "go"
    if served == choice.route and not attached:
        return replace(choice, capabilities=decision.capabilities)
    proven = choice.proven and served == choice.route
    why = decision.reason
    if attached:
        why = f"ollama create attached a library TEMPLATE (library_template_attached); {why}"
    warnings = (*choice.warnings, f"library_template_attached: {why}") if attached else ()
    return replace(
        choice,
        route=served,
        reason=why,
        capabilities=decision.capabilities,
        proven=proven,
        capabilities_lost=_lost(jinja, decision),
        library_template=attached,
        warnings=warnings or choice.warnings,
    )


def library_fallback(
    choice: RouteChoice, *, jinja: str | None, template: str | None
) -> RouteChoice | None:
    """The route to re-register with our verified TEMPLATE, when ``auto`` took the native route
    and ``ollama create`` attached a library TEMPLATE that leaves it unproven; else None.

    A TEMPLATE in the Modelfile stops ``detectChatTemplate`` (create attaches a library template
    only to a model without one), so our own TEMPLATE takes its place. The route is then what
    the selection gives our TEMPLATE beside the Jinja: the go route where Ollama renders it, the
    native one where the Jinja still wins; it is used only when that route is proven. An asked
    for route (``--template-route native``) is left as the user chose it.
    """
    if choice.requested != "auto" or not choice.library_template or choice.proven:
        return None
    if template is None:
        return None
    candidate = choose_route(
        "go",
        version=None if choice.server_version == "unknown" else choice.server_version,
        jinja=jinja,
        go=choice.go,
        native=choice.native,
        template=template,
        strict=choice.strict,
    )
    if not candidate.proven:
        return None
    served = "Ollama renders it" if candidate.route == "go" else "the GGUF's Jinja still wins"
    reason = (
        "ollama create attached a library TEMPLATE to the native route, which left it unproven; "
        f"re-registered with our verified TEMPLATE ({served})"
    )
    return replace(
        candidate, requested="auto", reason=reason, warnings=(*candidate.warnings, reason)
    )


def registered_template_matches(shown: ShownModel, template: str | None) -> bool:
    """The registered model has the TEMPLATE the Modelfile asks for: the same text, or for a
    Modelfile without one (the native route) no layer or the library one create attaches."""
    from .doctor.routes import library_template_name
    from .roundtrip.capability_check import shown_go_template

    registered = shown_go_template(shown, None)
    if template is None:
        return registered is None or library_template_name(registered) is not None
    return registered == template


def raise_for_route(choice: RouteChoice) -> None:
    """``TemplateMismatchError`` (exit 3) when the route is unproven or ``--strict`` lost a
    capability."""
    failure = choice.failure
    if failure is None:
        return
    raise TemplateMismatchError(
        failure,
        hint="`deploy-to-ollama template diff SOURCE` (and `--native`) shows the differences; "
        "`doctor NAME --fix` switches to the proven route",
    )
