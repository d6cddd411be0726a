"""Prove a registered model works: Ollama's prompt equals transformers', and it answers and stops.

Render check: the prompt Ollama builds for each probe conversation (``_debug_render_only`` on
servers >= 0.11.5, else our Go-template renderer on the TEMPLATE ``/api/show`` reports) must
equal transformers' rendering token for token. Generation check: one greedy chat must answer,
stop on a stop token, leak no template marker and (optionally) give the expected answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from .chat_template.verify import first_difference
from .errors import OllamaUnavailableError, RoundTripError
from .progress import NullProgress, ProgressReporter
from .registrar import server_version, show_model
from .settings import normalize_host

logger = logging.getLogger(__name__)

Message = dict[str, Any]
RenderMethod = Literal["debug_render_only", "go_renderer", "not_run"]

#: First Ollama release whose /api/chat honours ``_debug_render_only`` (api/types.go).
DEBUG_RENDER_MIN_VERSION = (0, 11, 5)

#: Conversations the render check compares; same-role runs are avoided because Ollama merges
#: them by design (that limit is the template verifier's business, not the deployment's).
ROUND_TRIP_PROBES: tuple[tuple[str, tuple[Message, ...]], ...] = (
    ("single_user", ({"role": "user", "content": "What is the secret word?"},)),
    (
        "system_user",
        (
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Hi!\nTwo lines, unicode: é 字 🙂"},
        ),
    ),
    (
        "multi_turn",
        (
            {"role": "user", "content": "Name a fruit."},
            {"role": "assistant", "content": "Apple."},
            {"role": "user", "content": "Another one, please."},
        ),
    ),
)

#: Marker text of common chat formats; none belongs in an answer.
COMMON_MARKERS = (
    "<|im_start|>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|begin_of_text|>",
    "<|endoftext|>",
    "<|end|>",
    "<|user|>",
    "<|assistant|>",
    "<start_of_turn>",
    "<end_of_turn>",
    "[INST]",
    "[/INST]",
    "</s>",
    "{{ .",
)

DEFAULT_QUESTION = "What is the secret word?"


# --------------------------------------------------------------------------- report


@dataclass(frozen=True, slots=True)
class ProbeCheck:
    """One probe conversation rendered by Ollama and by transformers."""

    probe: str
    matched: bool
    """Equal token ids (after the BOS the tokenizer itself adds)."""
    exact_text: bool
    expected: str
    actual: str
    first_difference: int | None = None
    """Character offset of the first difference, None when the texts are equal."""


@dataclass(frozen=True, slots=True)
class GenerationCheck:
    """One greedy chat turn against the registered model."""

    question: str
    answer: str
    done_reason: str
    prompt_eval_count: int | None
    expected_prompt_tokens: int | None
    leaks: tuple[str, ...]
    expected_answer: str | None
    problems: tuple[str, ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RoundTripReport:
    """Everything ``check_round_trip`` found; ``passed`` decides the exit code."""

    model: str
    host: str
    server_version: str
    render_method: RenderMethod
    render_note: str | None
    probes: tuple[ProbeCheck, ...]
    generation: GenerationCheck | None
    warnings: tuple[str, ...] = field(default=())

    @property
    def render_verified(self) -> bool:
        return self.render_method != "not_run" and all(p.matched for p in self.probes)

    @property
    def problems(self) -> list[str]:
        """Failed checks, one line each."""
        out = [
            f"probe {p.probe}: Ollama's prompt differs from transformers' at character "
            f"{p.first_difference}"
            for p in self.probes
            if not p.matched
        ]
        if self.generation is not None:
            out += list(self.generation.problems)
        return out

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data |= {
            "passed": self.passed,
            "render_verified": self.render_verified,
            "problems": self.problems,
        }
        return data

    def summary_lines(self) -> list[str]:
        """A short human report (the CLI prints it on stderr)."""
        lines = [f"round trip of {self.model} on {self.host} (Ollama {self.server_version})"]
        if self.render_method == "not_run":
            lines.append(f"  render check: not run ({self.render_note})")
        else:
            ok = sum(p.matched for p in self.probes)
            lines.append(
                f"  render check ({self.render_method}): {ok}/{len(self.probes)} probes match"
            )
            for probe in self.probes:
                if not probe.matched:
                    lines.append(f"    {probe.probe}: {_diff_snippet(probe)}")
        gen = self.generation
        if gen is not None:
            lines.append(
                f"  generation: {gen.answer.strip()[:80]!r} (done_reason={gen.done_reason}, "
                f"prompt tokens {gen.prompt_eval_count} vs {gen.expected_prompt_tokens} expected)"
            )
            lines += [f"    problem: {p}" for p in gen.problems]
            lines += [f"    warning: {w}" for w in gen.warnings]
        lines += [f"  warning: {w}" for w in self.warnings]
        lines.append("  PASSED" if self.passed else "  FAILED")
        return lines


def _diff_snippet(probe: ProbeCheck) -> str:
    at = probe.first_difference or 0
    lo = max(0, at - 20)
    return (
        f"at {at}: transformers {probe.expected[lo : at + 30]!r} "
        f"vs Ollama {probe.actual[lo : at + 30]!r}"
    )


def raise_for_failure(report: RoundTripReport) -> None:
    """Raise ``RoundTripError`` (exit 3) naming the first failed check, when any failed."""
    problems = report.problems
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise RoundTripError(
            f"round trip of {report.model} failed: {problems[0]}{more}",
            hint="run `deploy-to-ollama check NAME --source DIR` for the full report; "
            "`deploy-to-ollama template diff` shows template differences",
        )


# --------------------------------------------------------------------------- reference side


@dataclass(frozen=True)
class Reference:
    """transformers' side: how the fine-tune renders and tokenizes a conversation."""

    render: Callable[[Sequence[Message]], str]
    tokenize: Callable[[str], list[int]]
    bos_token: str | None
    adds_bos: bool
    """The tokenizer prepends BOS itself, so llama.cpp will too (and the TEMPLATE omits it)."""
    bos_token_id: int | None
    special_tokens: tuple[str, ...]

    def ollama_token_ids(self, prompt: str) -> list[int]:
        """Token ids llama.cpp feeds the model for ``prompt`` (BOS added like the tokenizer)."""
        ids = self.tokenize(prompt)
        if self.adds_bos and self.bos_token_id is not None and ids[:1] != [self.bos_token_id]:
            ids = [self.bos_token_id, *ids]
        return ids


def load_reference(source: Path, *, chat_template: str | None = None) -> Reference:
    """Load the fine-tune's tokenizer and chat template with transformers.

    ``chat_template`` (the one reader's choice, ``ResolvedInput.chat_template``) replaces the
    tokenizer's own, so the reference renders with the template the GGUF and Modelfile carry.

    Raises:
        RoundTripError: the source has no tokenizer or chat template transformers can load.
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source))
    except (OSError, ValueError) as err:
        raise RoundTripError(
            f"cannot load a tokenizer from {source}: {err}".splitlines()[0],
            hint="pass --source a folder with tokenizer files (the adapter or model dir)",
        ) from err
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    if not getattr(tokenizer, "chat_template", None):
        raise RoundTripError(
            f"{source} has no chat template", hint="pass --source the fine-tune's folder"
        )

    def render(messages: Sequence[Message]) -> str:
        text = tokenizer.apply_chat_template(
            [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
        )
        return str(text)

    def tokenize(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    bos_id = tokenizer.bos_token_id
    probe_ids = list(tokenizer("a")["input_ids"])
    adds_bos = bos_id is not None and probe_ids[:1] == [bos_id]
    specials = tuple(
        t for t in dict.fromkeys(tokenizer.all_special_tokens + _added_specials(tokenizer)) if t
    )
    return Reference(render, tokenize, tokenizer.bos_token, adds_bos, bos_id, specials)


def _added_specials(tokenizer: Any) -> list[str]:
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return [str(tok.content) for tok in decoder.values() if getattr(tok, "special", False)]


# --------------------------------------------------------------------------- Ollama side


def parse_version(text: str) -> tuple[int, ...]:
    """``"0.11.5-rc1"`` -> ``(0, 11, 5)``; unknown parts count as 0.

    >>> parse_version("0.9.3"), parse_version("0.11.5-rc1"), parse_version("dev")
    ((0, 9, 3), (0, 11, 5), (0,))
    """
    parts: list[int] = []
    for piece in text.split("-")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _post_json(host: str, path: str, payload: Mapping[str, Any], timeout: float) -> dict[str, Any]:
    try:
        with httpx.Client(base_url=host, timeout=httpx.Timeout(timeout, connect=5.0)) as http:
            response = http.post(path, json=dict(payload))
    except httpx.HTTPError as err:
        raise OllamaUnavailableError(
            f"lost the Ollama server at {host} during the round trip ({type(err).__name__})",
            host=host,
            hint="check that `ollama serve` is running, then rerun `deploy-to-ollama check`",
        ) from err
    if response.status_code != 200:
        raise RoundTripError(
            f"{path} answered {response.status_code}: {response.text[:200]}",
            hint="check the server log; the model may not load on this server",
        )
    result: dict[str, Any] = response.json()
    return result


def render_with_debug_endpoint(host: str, model: str, messages: Sequence[Message]) -> str:
    """Ask a server >= 0.11.5 for the prompt it would build (no generation).

    The ``ollama`` Python client does not expose ``_debug_render_only``, so this is plain HTTP;
    the answer carries ``_debug_info.rendered_template`` (api/types.go ``DebugInfo``).
    """
    body = _post_json(
        host,
        "/api/chat",
        {"model": model, "messages": list(messages), "stream": False, "_debug_render_only": True},
        timeout=120,
    )
    info = body.get("_debug_info") or body.get("debug_info") or {}
    if "rendered_template" not in info:
        raise RoundTripError(
            f"{host} ignored _debug_render_only (no _debug_info in its answer)",
            hint="upgrade Ollama to 0.11.5 or later, or rely on the Go-renderer fallback",
        )
    return str(info["rendered_template"])


def render_with_go_renderer(template: str, system: str | None, messages: Sequence[Message]) -> str:
    """Render the model's TEMPLATE with our Python port of Ollama's prompt building."""
    from .chat_template.ollama_prompt import render_ollama_prompt

    return str(render_ollama_prompt(template, list(messages), system=system or None))


# --------------------------------------------------------------------------- checks


def compare_probe(name: str, reference: Reference, expected: str, actual: str) -> ProbeCheck:
    """Compare transformers' rendering with Ollama's at token level (text equality reported)."""
    expected_ids = reference.tokenize(expected)
    matched = reference.ollama_token_ids(actual) == expected_ids
    return ProbeCheck(
        probe=name,
        matched=matched,
        exact_text=expected == actual,
        expected=expected,
        actual=actual,
        first_difference=first_difference(expected, actual),
    )


def stops_from_show(shown: Mapping[str, Any]) -> list[str]:
    """The ``stop`` values in ``/api/show``'s parameters text (Go ``%#v``-quoted strings).

    >>> stops_from_show({"parameters": 'num_ctx    2048\\nstop    "<|im_end|>"\\nstop "a\\\\"b"'})
    ['<|im_end|>', 'a"b']
    """
    stops: list[str] = []
    for line in str(shown.get("parameters") or "").splitlines():
        key, _, value = line.strip().partition(" ")
        if key == "stop":
            stops.append(_go_unquote(value.strip()))
    return stops


def _go_unquote(value: str) -> str:
    """Undo Go's ``%#v`` quoting for the escapes JSON shares with it."""
    try:
        decoded = json.loads(value)
    except ValueError:
        return value.strip('"')
    return decoded if isinstance(decoded, str) else value


def find_leaks(answer: str, markers: Sequence[str]) -> tuple[str, ...]:
    """Markers (stop strings, special tokens, template syntax) found in ``answer``.

    >>> find_leaks("banana<|im_end|>", ["<|im_end|>", "</s>"])
    ('<|im_end|>',)
    """
    return tuple(m for m in dict.fromkeys(markers) if m and m in answer)


def run_generation_check(
    host: str,
    model: str,
    *,
    question: str,
    markers: Sequence[str],
    reference: Reference | None,
    expected_answer: str | None,
    num_predict: int,
    seed: int,
) -> GenerationCheck:
    """One greedy chat turn; see the module docstring for what must hold."""
    messages = [{"role": "user", "content": question}]
    body = _post_json(
        host,
        "/api/chat",
        {
            "model": model,
            "messages": messages,
            "stream": False,
            "options": {"temperature": 0, "seed": seed, "num_predict": num_predict},
        },
        timeout=900,
    )
    answer = str((body.get("message") or {}).get("content") or "")
    done_reason = str(body.get("done_reason") or "")
    prompt_eval = body.get("prompt_eval_count")
    expected_tokens = len(reference.tokenize(reference.render(messages))) if reference else None
    leaks = find_leaks(answer, markers)
    problems: list[str] = []
    warnings: list[str] = []
    if not answer.strip():
        problems.append("the answer is empty")
    if done_reason != "stop":
        problems.append(
            f"done_reason is {done_reason!r}, not 'stop': the model ran into the "
            f"num_predict cap of {num_predict} instead of emitting a stop token"
        )
    if leaks:
        problems.append(f"template text leaked into the answer: {', '.join(leaks)}")
    if expected_answer is not None and answer.strip() != expected_answer:
        problems.append(f"expected the answer {expected_answer!r}, got {answer.strip()!r}")
    if expected_tokens is not None and prompt_eval != expected_tokens:
        warnings.append(
            f"Ollama evaluated {prompt_eval} prompt tokens, transformers' rendering has "
            f"{expected_tokens} (a cached prefix also lowers Ollama's count)"
        )
    return GenerationCheck(
        question=question,
        answer=answer,
        done_reason=done_reason,
        prompt_eval_count=int(prompt_eval) if isinstance(prompt_eval, int) else None,
        expected_prompt_tokens=expected_tokens,
        leaks=leaks,
        expected_answer=expected_answer,
        problems=tuple(problems),
        warnings=tuple(warnings),
    )


def check_round_trip(
    model: str,
    *,
    host: str | None = None,
    source: Path | None = None,
    reference: Reference | None = None,
    probes: Sequence[tuple[str, Sequence[Message]]] = ROUND_TRIP_PROBES,
    question: str = DEFAULT_QUESTION,
    expected_answer: str | None = None,
    num_predict: int = 64,
    seed: int = 42,
    generate: bool = True,
    progress: ProgressReporter | None = None,
) -> RoundTripReport:
    """Check that the registered ``model`` renders like transformers and answers properly.

    Args:
        model: the Ollama model name.
        host: server URL (``OLLAMA_HOST`` form); default 127.0.0.1:11434.
        source: the fine-tune's folder (tokenizer + chat template) for the render check and the
            token count; without it (or ``reference``) only the generation check runs.
        reference: an already loaded ``Reference`` (the pipeline passes its own).
        probes: ``(name, messages)`` conversations for the render check.
        question: the user turn of the generation check.
        expected_answer: when given, the answer (stripped) must equal it exactly.
        num_predict: token cap of the generation; hitting it fails the check.
        seed: sampling seed (temperature is 0 anyway).
        generate: run the generation check.
        progress: stage reporter.

    Returns:
        The report; call ``raise_for_failure`` to turn a failure into exit code 3.

    Raises:
        OllamaUnavailableError: the server cannot be reached.
        RoundTripError: the model does not exist or the server refused a request.
    """
    url = normalize_host(host)
    reporter = progress or NullProgress()
    version = server_version(url)
    shown = show_model(model, url)
    if shown is None:
        raise RoundTripError(
            f"model {model} does not exist on {url}",
            hint="register it first (`deploy-to-ollama SOURCE --name NAME`) or check the name",
        )
    if reference is None and source is not None:
        reporter.start("reference", "loading the tokenizer with transformers")
        reference = load_reference(source)
        reporter.done("reference")
    method, note, checks = _render_checks(url, model, version, shown, reference, probes, reporter)
    generation = None
    if generate:
        reporter.start("generate", f"asking {model} one question (temperature 0)")
        markers = [*stops_from_show(shown), *COMMON_MARKERS]
        if reference is not None:
            markers += list(reference.special_tokens)
        generation = run_generation_check(
            url,
            model,
            question=question,
            markers=markers,
            reference=reference,
            expected_answer=expected_answer,
            num_predict=num_predict,
            seed=seed,
        )
        reporter.done("generate")
    return RoundTripReport(model, url, version, method, note, tuple(checks), generation)


def _render_checks(
    url: str,
    model: str,
    version: str,
    shown: Mapping[str, Any],
    reference: Reference | None,
    probes: Sequence[tuple[str, Sequence[Message]]],
    progress: ProgressReporter,
) -> tuple[RenderMethod, str | None, list[ProbeCheck]]:
    if reference is None:
        return "not_run", "no --source to render with transformers", []
    if not probes:
        return "not_run", "no probe conversations given", []
    method: RenderMethod
    if parse_version(version) >= DEBUG_RENDER_MIN_VERSION:
        method, note = "debug_render_only", f"Ollama {version} rendered the prompts itself"
    else:
        method = "go_renderer"
        note = f"Ollama {version} predates _debug_render_only; rendered its TEMPLATE ourselves"
    template = str(shown.get("template") or "")
    system = shown.get("system")
    checks: list[ProbeCheck] = []
    progress.start("render", f"render check ({method})", total=len(probes))
    for name, messages in probes:
        expected = reference.render(messages)
        if method == "debug_render_only":
            actual = render_with_debug_endpoint(url, model, messages)
        else:
            actual = render_with_go_renderer(template, system, messages)
        checks.append(compare_probe(name, reference, expected, actual))
        progress.advance("render")
    progress.done("render")
    return method, note, checks


__all__ = [
    "DEBUG_RENDER_MIN_VERSION",
    "ROUND_TRIP_PROBES",
    "GenerationCheck",
    "ProbeCheck",
    "Reference",
    "RoundTripReport",
    "check_round_trip",
    "compare_probe",
    "find_leaks",
    "load_reference",
    "parse_version",
    "raise_for_failure",
    "render_with_debug_endpoint",
    "render_with_go_renderer",
    "run_generation_check",
    "stops_from_show",
]
