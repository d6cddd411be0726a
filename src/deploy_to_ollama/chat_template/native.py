"""Prove the prompt of Ollama's *native* chat path: llama.cpp's Jinja engine vs transformers.

On Ollama 0.30+ a model whose GGUF Jinja shows more capabilities than its Go TEMPLATE is served
by llama-server rendering the Jinja itself, with llama.cpp's own engine (``common/jinja``), not
Python's jinja2. Nothing guarantees both engines print the same prompt, so we render every
probe through both: llama-server's ``/apply-template`` (the chat endpoint's body: messages,
tools, ``chat_template_kwargs``) on a GGUF carrying the template, and transformers.

Tiers, per probe, by the Go path's own rule (``verify.json_equivalent``, one rule for both):
``exact`` (byte-identical, modulo one leading BOS, which llama.cpp drops when its vocabulary
adds BOS itself: ``bos_stripped`` says so) and ``json_equivalent`` (identical outside the JSON
values the Jinja printed with ``tojson``, each of which parses to the same object on both
sides); anything else differs, JSON-looking text the template wrote literally included.
``verified`` only when every probe transformers can render is one of the two, and at least
one was compared.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol, cast

from ..errors import InputError, TemplateRenderError
from ..gguf.llama_server import (
    ApplyTemplateError,
    ChatTemplateRejectedError,
    LlamaServerError,
)
from ..gguf.template_gguf import write_vocabulary_stub
from .native_servers import NativeRenderer, start_native_renderer
from .probes import Probe, load_probes
from .prompt_diff import first_difference, strip_bos, token_encoder
from .source import TemplateSource
from .thinking import switch_name
from .verify import json_equivalent

Status = Literal["match", "differs", "skipped"]
Tier = Literal["exact", "json_equivalent"]
#: Characters of context shown either side of the first difference.
SNIPPET = 40
#: Messages of the thinking probes (a finished turn, then a question).
_THINK_BASE = "system_multi_turn"
#: ``/apply-template`` requests in flight at once (llama-server has at least 3 HTTP threads).
NATIVE_REQUESTS = 4


class PromptRenderer(Protocol):
    """What renders a chat-endpoint body into llama.cpp's prompt (a server, or the pair of
    ``native_servers.NativeRenderer``)."""

    def apply_template(self, body: dict[str, Any]) -> str:
        """The prompt for ``body``; raises ``ApplyTemplateError`` where llama.cpp refuses."""
        ...


@dataclass(frozen=True, slots=True)
class NativeCase:
    """One conversation as both engines get it: a probe plus template kwargs."""

    id: str
    probe: Probe
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    switch: str = "enable_thinking"
    """The Jinja variable that carries ``think`` (``thinking.switch_name``)."""

    @property
    def reference_probe(self) -> Probe:
        """The probe as transformers renders this case: its thinking switch as ``think``
        (how the Go path's verifier passes the kwarg), none where the case sends none."""
        return replace(self.probe, think=self.kwargs.get(self.switch))


@dataclass(frozen=True, slots=True)
class NativeProbeResult:
    """The outcome of one case on the native path."""

    probe: str
    status: Status
    public: bool
    tier: Tier | None = None
    bos_stripped: bool = False
    position: int | None = None
    reason: str | None = None
    token_match: bool | None = None
    token_delta: int | None = None
    """Token count of llama.cpp's prompt minus transformers' (json_equivalent probes)."""
    expected: str | None = None
    """transformers' prompt."""
    actual: str | None = None
    """llama.cpp's prompt."""

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` form: snippets around the difference, not the whole prompts."""
        differs = self.status == "differs"
        return {
            "probe": self.probe,
            "status": self.status,
            "public": self.public,
            "tier": self.tier,
            "bos_stripped": self.bos_stripped,
            "position": self.position,
            "expected": _snippet(self.expected, self.position) if differs else None,
            "actual": _snippet(self.actual, self.position) if differs else None,
            "reason": self.reason,
            "token_match": self.token_match,
            "token_delta": self.token_delta,
        }


def _snippet(text: str | None, position: int | None) -> str | None:
    at = position or 0
    return text[max(0, at - SNIPPET) : at + SNIPPET] if text is not None else None


@dataclass(frozen=True, slots=True)
class NativeReport:
    """Per-case results of one template on llama.cpp's engine."""

    probes: tuple[NativeProbeResult, ...]
    token_level: bool = False

    @property
    def verified(self) -> bool:
        """Every compared case is exact or json_equivalent, and at least one was compared."""
        ran = [p for p in self.probes if p.status != "skipped"]
        return bool(ran) and all(p.status == "match" for p in ran)

    @property
    def exact(self) -> int:
        """How many cases were byte-identical (modulo BOS)."""
        return sum(p.tier == "exact" for p in self.probes)

    def first_failure(self) -> NativeProbeResult | None:
        """The first case that differs."""
        return next((p for p in self.probes if p.status == "differs"), None)

    def to_json(self) -> dict[str, Any]:
        """``{"available": true, "verified": ..., "exact": n, "probes": [...]}``."""
        return {
            "available": True,
            "verified": self.verified,
            "exact": self.exact,
            "token_level": self.token_level,
            "probes": [p.to_json() for p in self.probes],
        }


@dataclass(frozen=True, slots=True)
class NativeUnavailable:
    """The native path could not be checked, and why (never a silent pass)."""

    reason: str

    verified = False

    def to_json(self) -> dict[str, Any]:
        """``{"available": false, "verified": false, "reason": ...}``."""
        return {"available": False, "verified": False, "reason": self.reason}


def native_cases(
    template: str, probes: Sequence[Probe] | None = None, *, switch: str = "enable_thinking"
) -> tuple[NativeCase, ...]:
    """Every probe, plus think on/off variants where the Jinja reads its thinking switch.

    ``switch``: the variable ``think`` maps onto, as the Go path's verifier passes it
    (``thinking.switch_name``: ``reasoning`` for Command-A): transformers gets the setting
    under that name, llama-server gets what Ollama sends, ``enable_thinking`` (``request_body``),
    so a Jinja switched by another name is not switched on the native path, a difference the
    proof shows. Without the kwarg each engine uses its own default (transformers: undefined;
    llama-server: its ``enable_thinking`` setting), which is itself a thing to prove.
    """
    suite = tuple(probes or load_probes())
    reads = switch in template

    def kwargs(*, think: bool | None) -> dict[str, Any]:
        return {} if think is None or not reads else {switch: think}

    # A probe that sets ``think`` sends it as the switch where the Jinja reads it.
    cases = [NativeCase(p.id, p, kwargs(think=p.think), switch) for p in suite]
    base = next((p for p in suite if p.id == _THINK_BASE), None)
    if base is not None and reads:
        cases += [
            NativeCase(f"think_{str(on).lower()}", base, kwargs(think=on), switch)
            for on in (True, False)
        ]
    return tuple(cases)


def verify_native(
    source: TemplateSource,
    server_binary: Path,
    *,
    gguf: Path | None = None,
    work_dir: Path | None = None,
    log_dir: Path | None = None,
    probes: Sequence[Probe] | None = None,
) -> NativeReport | NativeUnavailable:
    """Render every case through llama-server and transformers and compare.

    Args:
        source: the Jinja template and its tokens (what transformers renders with).
        server_binary: the toolchain's ``llama-server``.
        gguf: the GGUF we wrote: served as a stub with its ``tokenizer.*`` keys (vocabulary,
            chat templates, BOS/EOS, flags), read from its header, and no real weights;
            default: a stub GGUF carrying ``source``'s template, BOS/EOS and add-BOS flag
            (what llama.cpp's engine takes from a GGUF).
        work_dir: where the stub GGUF goes (default: a temporary dir, removed afterwards).
        log_dir: where the server log goes (default: ``$TMPDIR/dto-llama-server``); it is
            removed after a good run and kept, named in the error, after a failed start.
        probes: the probe suite (default: the packaged one).

    Returns:
        The report, or why the native path is unavailable (no Jinja in the GGUF; a template
        llama.cpp's engine cannot parse, with its message).

    Raises:
        LlamaServerError: llama-server did not start for another reason (names its log).
    """
    if gguf is not None and (missing := gguf_lacks_template(gguf)) is not None:
        return NativeUnavailable(missing)
    logs = log_dir or Path(tempfile.gettempdir()) / "dto-llama-server"
    with tempfile.TemporaryDirectory(prefix="dto-native-", dir=work_dir) as tmp:
        # The GGUF we wrote, by its tokenizer keys only: llama-server renders and tokenizes
        # from them, and would otherwise load (and repack) every weight of a real model.
        model = (
            write_vocabulary_stub(Path(tmp) / "vocabulary.gguf", gguf)
            if gguf is not None
            else _stub(source, Path(tmp) / "template.gguf")
        )
        try:
            # The server Ollama runs, plus a render-only one where it renders alike (fast).
            server = start_native_renderer(server_binary, model, logs)
        except ChatTemplateRejectedError as err:
            return NativeUnavailable(err.message)
        with server:
            # The GGUF we wrote has the real vocabulary: llama.cpp's own tokenizer can check tokens.
            encode = server.tokenize if gguf is not None else None
            cases = native_cases(source.template, probes, switch=switch_name(source))
            report = render_and_compare(server, source, cases, encode=encode)
        server.remove_logs()  # kept only when a server failed
        return report


def try_verify_native(
    source: TemplateSource, server_binary: Path, **options: Any
) -> NativeReport | NativeUnavailable:
    """:func:`verify_native`, with a llama-server that does not start as a reason, not an error.

    For a caller that has another route (``deploy`` keeps the Go TEMPLATE): the native route is
    then unavailable, and the reason names the server's log. ``options`` as for verify_native.
    """
    try:
        return verify_native(source, server_binary, **options)
    except LlamaServerError as err:
        return NativeUnavailable(err.message)


def _stub(source: TemplateSource, path: Path) -> Path:
    from ..gguf.template_gguf import write_template_gguf

    return write_template_gguf(
        path,
        source.template,
        bos=source.bos_token,
        eos=source.eos_token,
        add_bos=bool(source.add_bos_token),
    )


def gguf_lacks_template(path: Path) -> str | None:
    """Why ``path`` cannot take the native path (no ``tokenizer.chat_template``), else None."""
    from ..gguf.metadata import read_gguf_fields

    # The header alone: a 1B GGUF is not mapped tensor by tensor to learn one string.
    template = read_gguf_fields(path, ["tokenizer.chat_template"]).get("tokenizer.chat_template")
    if not isinstance(template, str) or not template.strip():
        return f"{path} has no tokenizer.chat_template: llama-server would use its own default"
    return None


def render_and_compare(
    server: PromptRenderer,
    source: TemplateSource,
    cases: Sequence[NativeCase],
    *,
    encode: Callable[[str], list[int]] | None = None,
) -> NativeReport:
    """Compare every case on a running server (the part timed by ``benchmarks/native.py``).

    Token level with the source's tokenizer.json, else with ``encode`` where given.
    """
    from concurrent.futures import ThreadPoolExecutor

    encode = token_encoder(source) or encode
    # llama.cpp's side costs 1-2 ms a request on the render-only server, 2-100 ms on the exact
    # one (it analyses the template on each request): ask for every prompt at once (llama-server
    # answers on several HTTP threads) while transformers renders here, so they overlap.
    # The cases only the exact server renders (tens of ms each) are asked for first.
    bodies = [_body(case) for case in cases]
    order = sorted(range(len(cases)), key=lambda i: _renders_fast(server, bodies[i]))
    with ThreadPoolExecutor(max_workers=NATIVE_REQUESTS, thread_name_prefix="dto-native") as pool:
        futures = {i: pool.submit(_native_prompt, server, bodies[i]) for i in order}
        results = tuple(
            _check(source, case, futures[i].result, encode) for i, case in enumerate(cases)
        )
    return NativeReport(results, token_level=encode is not None)


def _body(case: NativeCase) -> dict[str, Any] | InputError:
    """The body Ollama sends for ``case``, or why no Ollama request can carry it (content that
    is not a string, tool-call arguments that are not a JSON object)."""
    try:
        return request_body(case)
    except InputError as err:
        return err


def _renders_fast(server: PromptRenderer, body: dict[str, Any] | InputError) -> bool:
    if isinstance(body, InputError):
        return False
    return isinstance(server, NativeRenderer) and server.renders_alike(body)


def _native_prompt(
    server: PromptRenderer, body: dict[str, Any] | InputError
) -> str | ApplyTemplateError | InputError:
    """llama.cpp's prompt for a body, or its refusal, or why Ollama cannot send the
    conversation (each a per-case outcome, not an error)."""
    if isinstance(body, InputError):
        return body
    try:
        return server.apply_template(body)
    except ApplyTemplateError as err:
        return err


def request_body(case: NativeCase) -> dict[str, Any]:
    """The chat-endpoint body Ollama's native path sends for ``case`` (``native_request``:
    no earlier reasoning, arguments as Go's JSON text, tools as ``api.Tool``, ``think`` as
    ``enable_thinking`` whatever switch the Jinja reads)."""
    from .native_request import native_body

    think = case.kwargs.get(case.switch, case.probe.think)
    return native_body(case.probe.messages, case.probe.tools or None, think=think)


def render_reference(source: TemplateSource, case: NativeCase) -> str:
    """transformers' prompt for ``case`` (raises ``TemplateRenderError`` where it refuses)."""
    from .hf_render import render_hf

    # transformers passes chat-template kwargs as template variables, like the tokens.
    variables = cast(Mapping[str, str], {**source.template_variables(), **case.kwargs})
    return render_hf(
        source.template,
        [dict(m) for m in case.probe.messages],
        tokens=variables,
        tools=[dict(t) for t in case.probe.tools] or None,
    )


def _check(
    source: TemplateSource,
    case: NativeCase,
    native: Callable[[], str | ApplyTemplateError | InputError],
    encode: Callable[[str], list[int]] | None,
) -> NativeProbeResult:
    public = case.probe.public
    try:
        expected = render_reference(source, case)
    except TemplateRenderError as err:
        return NativeProbeResult(case.id, "skipped", public, reason=f"transformers: {err}")
    actual = native()
    if isinstance(actual, InputError):
        why = f"Ollama's API cannot carry this conversation: {actual.message}"
        return NativeProbeResult(case.id, "skipped", public, reason=why)
    if isinstance(actual, ApplyTemplateError):
        return NativeProbeResult(
            case.id, "differs", public, reason=f"llama.cpp refuses: {actual}", expected=expected
        )
    tier, stripped, position = compare_prompts(source, case, expected, actual)
    token_match = token_delta = None
    if encode is not None and tier is not None:
        exp_ids, act_ids = encode(expected), encode(actual)
        token_match, token_delta = exp_ids == act_ids, len(act_ids) - len(exp_ids)
    return NativeProbeResult(
        case.id,
        "match" if tier is not None else "differs",
        public,
        tier=tier,
        bos_stripped=stripped,
        position=position,
        token_match=token_match,
        token_delta=token_delta,
        expected=expected,
        actual=actual,
    )


def compare_prompts(
    source: TemplateSource, case: NativeCase, expected: str, actual: str
) -> tuple[Tier | None, bool, int | None]:
    """(tier or None, whether one leading BOS was dropped, first differing character).

    ``json_equivalent`` is the Go path's rule (:func:`verify.json_equivalent`): only the spans
    the Jinja printed with ``tojson`` may differ, and only in layout. A JSON-looking span the
    template wrote as text must match byte for byte.
    """
    exp, act = strip_bos(expected, actual, source.bos_token)
    stripped = (exp, act) != (expected, actual)
    position = first_difference(exp, act)
    if position is None:
        return "exact", stripped, None
    if json_equivalent(source, case.reference_probe, expected, act):
        return "json_equivalent", stripped, position
    return None, stripped, position
