"""``deploy``'s calls into ``routing``, the ones that talk to the server: ask its version, run
the proofs it needs and choose (``route_for_deploy``), then decide again from what it registered
(``confirm_deployed_route``). ``routing`` itself stays pure: proofs and versions in, a choice out.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from .ollama_route import parse_server_version
from .route_proof import CURRENT, go_proof, prove_native
from .routing import RouteChoice, RouteRequest, choose_route, confirm_route

if TYPE_CHECKING:
    from .modelfile import TemplateResult
    from .settings import Settings

logger = logging.getLogger(__name__)

__all__ = ["confirm_deployed_route", "route_for_deploy"]


def route_for_deploy(
    requested: RouteRequest,
    *,
    strict: bool,
    host: str,
    source: Path,
    base_dir: Path | None,
    gguf: Path,
    template: TemplateResult,
    jinja: str | None,
    settings: Settings,
) -> RouteChoice:
    """Prove what the user's server needs and choose (``deploy``, after the export).

    The native route is checked on a 0.30+ server when it was asked for or when the go route
    is not proven there; a 0.9.x server has no native path, so it is not checked.
    """
    from .ollama_client import OllamaClient

    version = OllamaClient(host).version()
    go = go_proof(template, jinja)
    native = None
    if parse_server_version(version)[0].native_path and (
        requested == "native" or CURRENT not in go.proven_on()
    ):
        native = prove_native(source, base_dir, gguf, settings, required=requested == "native")
    choice = choose_route(
        requested,
        version=version,
        jinja=jinja,
        go=go,
        native=native,
        template=template.template,
        strict=strict,
    )
    for warning in choice.warnings:
        logger.warning("%s", warning)
    return choice


def confirm_deployed_route(
    choice: RouteChoice, *, host: str, name: str, jinja: str | None, template: str | None = None
) -> RouteChoice:
    """``confirm_route`` on what the server registered (``/api/show`` of ``name``)."""
    from .ollama_client import OllamaClient

    shown = OllamaClient(host).show(name)
    confirmed = confirm_route(choice, shown, jinja=jinja, template=template)
    if confirmed.library_template and not choice.library_template:
        logger.warning("%s", confirmed.warnings[-1])
    return confirmed
