"""Re-render a translation's claims in real Go: the one check the template tests share.

A claimed probe holds when Go's text/template, through Ollama's prompt building, renders the
TEMPLATE as the Jinja did: byte for byte (modulo one leading BOS) for an ``exact`` claim, as the
same JSON objects for a ``json_equivalent`` one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from deploy_to_ollama.chat_template import load_probes
from deploy_to_ollama.chat_template.prompt_diff import strip_bos
from deploy_to_ollama.chat_template.verify import json_equivalent
from support.go_oracle import GoOracle, to_ollama_api_messages


def go_case(result: Any, probe: Any) -> dict[str, Any]:
    """The Go oracle's request that renders ``probe`` through ``result``'s TEMPLATE."""
    case: dict[str, Any] = {
        "kind": "ollama",
        "template": result.template,
        "messages": to_ollama_api_messages(list(probe.messages)),
        "system": result.system or "",
        "think": probe.think,
    }
    if probe.tools:
        case["tools"] = list(probe.tools)
    return case


def jinja_probe(probe: Any, claim: Any) -> Any:
    """The probe as the Jinja side of ``claim`` rendered it: a request without think that the
    server sends as think true (``ProbeResult.unset_think_on``) with the thinking switch on."""
    return replace(probe, think=True) if claim.unset_think_on else probe


def go_mismatches(
    go_oracle: GoOracle,
    source: Any,
    result: Any,
    claims: Sequence[Any] | None = None,
    *,
    extra: Iterable[Any] = (),
    bos: str | None = None,
    same_as_port: bool = False,
) -> list[str]:
    """Probe ids among ``claims`` (default: every matching probe of ``result``) whose Go
    rendering does not hold in its tier; ``extra`` probes are looked up too; ``bos``: the
    leading token to ignore (default: the source's); ``same_as_port``: Go's text must also be
    the one our port rendered for the claim, byte for byte."""
    probes = {p.id: p for p in (*load_probes(), *extra)}
    if claims is None:
        claims = [p for p in result.report.probes if p.status == "match"]
    cases = [go_case(result, probes[c.probe]) for c in claims]
    wrong = []
    for claim, go in zip(claims, go_oracle.run(cases), strict=True):
        whole = claim.expected or ""
        exp, act = strip_bos(whole, go.output, bos or source.bos_token)
        if claim.tier == "exact":
            holds = exp == act
        else:  # json_equivalent takes the Jinja's text as rendered (it allows the BOS itself)
            holds = json_equivalent(source, jinja_probe(probes[claim.probe], claim), whole, act)
        if same_as_port and go.output != claim.actual:
            holds = False
        if go.failed or not holds:
            wrong.append(claim.probe)
    return wrong


__all__ = ["go_case", "go_mismatches", "jinja_probe"]
