"""Prove a registered model works: Ollama's prompt equals the reference's, and it answers and stops.

Render check: the prompt Ollama builds for each probe conversation (``_debug_render_only`` on
servers >= 0.11.5, else our Go-template renderer on the TEMPLATE ``/api/show`` reports) must
equal the reference's rendering, token for token with a tokenizer, else text for text.
Generation check: one greedy chat must answer, stop on a stop token, leak no template marker
and (optionally) give the expected answer. All Ollama access goes through ``ollama_client``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from ..chat_template.prompt_diff import first_difference
from ..ollama_client import OllamaClient, ShownModel
from ..progress import NullProgress, ProgressReporter
from .capability_check import check_capabilities
from .reference import Message, Reference, load_reference, reference_from_gguf
from .report import GenerationCheck, ProbeCheck, RenderMethod, RoundTripReport

logger = logging.getLogger(__name__)

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


def render_with_debug_endpoint(host: str, model: str, messages: Sequence[Message]) -> str:
    """Ask a server >= 0.11.5 for the prompt it would build (no generation)."""
    return OllamaClient(host).debug_render(model, messages)


def render_with_go_renderer(template: str, system: str | None, messages: Sequence[Message]) -> str:
    """Render the model's TEMPLATE with our Python port of Ollama's prompt building."""
    from ..chat_template.ollama_prompt import render_ollama_prompt

    return str(render_ollama_prompt(template, list(messages), system=system or None))


def compare_probe(name: str, reference: Reference, expected: str, actual: str) -> ProbeCheck:
    """Compare the reference's rendering with Ollama's: token ids with a tokenizer, else text
    (without the BOS llama.cpp adds itself)."""
    if reference.tokenize is not None:
        matched = reference.ollama_token_ids(actual) == reference.tokenize(expected)
    else:
        matched = reference.prompt_text(expected) == actual
    return ProbeCheck(
        probe=name,
        matched=matched,
        exact_text=expected == actual,
        expected=expected,
        actual=actual,
        first_difference=first_difference(expected, actual),
    )


def stops_from_show(shown: ShownModel) -> list[str]:
    """The ``stop`` values in ``/api/show``'s parameters text (Go ``%#v``-quoted strings).

    >>> stops_from_show(ShownModel(parameters='num_ctx 2048\\nstop "<|im_end|>"\\nstop "a\\\\"b"'))
    ['<|im_end|>', 'a"b']
    """
    stops: list[str] = []
    for line in str(shown.parameters or "").splitlines():
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
    client: OllamaClient,
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
    reply = client.chat(
        model, messages, options={"temperature": 0, "seed": seed, "num_predict": num_predict}
    )
    answer = str(reply.message.content or "")
    done_reason = str(reply.done_reason or "")
    prompt_eval = reply.prompt_eval_count
    expected_tokens = None
    if reference is not None and reference.tokenize is not None:
        expected_tokens = len(reference.tokenize(reference.render(messages)))
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
        prompt_eval_count=prompt_eval,
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
    verify: bool = True,
    progress: ProgressReporter | None = None,
    require_capabilities: bool = True,
) -> RoundTripReport:
    """Check that the registered ``model`` renders like the reference and answers properly.

    Args:
        model: the Ollama model name.
        host: server URL (``OLLAMA_HOST`` form); default 127.0.0.1:11434.
        source: the fine-tune's tokenizer folder for the render check and the token count;
            without it (or ``reference``) only the generation check runs.
        reference: an already loaded ``Reference`` (the pipeline passes its own).
        probes: ``(name, messages)`` conversations for the render check.
        question: the user turn of the generation check.
        expected_answer: when given, the answer (stripped) must equal it exactly.
        num_predict: token cap of the generation; hitting it fails the check.
        seed: sampling seed (temperature is 0 anyway).
        generate: run the generation check.
        verify: a render check that cannot run fails the report (``--no-verify`` turns this
            off; the report then says "NOT verified", never PASSED).
        progress: stage reporter.
        require_capabilities: a capability the reference's Jinja has and ``/api/show`` does
            not list fails the report (``deploy`` passes its ``--strict``; else a warning).

    Returns:
        The report; call ``raise_for_failure`` to turn a failure into exit code 3.

    Raises:
        OllamaUnavailableError: the server cannot be reached (exit 4).
        ModelNotFoundError: the model does not exist (exit 1).
        InputError: ``source`` has no loadable tokenizer or chat template (exit 1).
        DeployError: the server refused a request (exit 1).
    """
    client = OllamaClient(host)
    reporter = progress or NullProgress()
    version = client.version()
    shown = client.require(model)
    if reference is None and source is not None:
        reporter.start("reference", "loading the tokenizer with transformers")
        # A GGUF carries its own reference: its chat template (and tokenizer where readable).
        reference = reference_from_gguf(source) if source.suffix == ".gguf" else None
        reference = reference or load_reference(source)
        reporter.done("reference")
    method, note, checks = _render_checks(client, model, shown, reference, probes, reporter)
    capabilities = None
    if reference is not None and reference.chat_template:
        capabilities = check_capabilities(
            shown, version, reference.chat_template, required=require_capabilities
        )
    generation = None
    if generate:
        reporter.start("generate", f"asking {model} one question (temperature 0)")
        markers = [*stops_from_show(shown), *COMMON_MARKERS]
        if reference is not None:
            markers += list(reference.special_tokens)
        generation = run_generation_check(
            client,
            model,
            question=question,
            markers=markers,
            reference=reference,
            expected_answer=expected_answer,
            num_predict=num_predict,
            seed=seed,
        )
        reporter.done("generate")
    return RoundTripReport(
        model,
        client.host,
        version,
        method,
        note,
        tuple(checks),
        generation,
        require_render=verify,
        reference=reference.origin if reference is not None else None,
        capabilities=capabilities,
    )


def _render_checks(
    client: OllamaClient,
    model: str,
    shown: ShownModel,
    reference: Reference | None,
    probes: Sequence[tuple[str, Sequence[Message]]],
    progress: ProgressReporter,
) -> tuple[RenderMethod, str | None, list[ProbeCheck]]:
    if reference is None:
        return "not_run", "no --source to render with transformers", []
    if not probes:
        return "not_run", "no probe conversations given", []
    version = client.version()
    method: RenderMethod
    if client.supports_debug_render():
        method, note = "debug_render_only", f"Ollama {version} rendered the prompts itself"
    else:
        method = "go_renderer"
        note = f"Ollama {version} predates _debug_render_only; rendered its TEMPLATE ourselves"
    template = str(shown.template or "")
    checks: list[ProbeCheck] = []
    progress.start("render", f"render check ({method})", total=len(probes))
    for name, messages in probes:
        expected = reference.render(messages)
        if method == "debug_render_only":
            actual = client.debug_render(model, messages)
        else:
            actual = render_with_go_renderer(template, shown.system, messages)
        checks.append(compare_probe(name, reference, expected, actual))
        progress.advance("render")
    progress.done("render")
    return method, note, checks


__all__ = [
    "COMMON_MARKERS",
    "DEFAULT_QUESTION",
    "ROUND_TRIP_PROBES",
    "check_round_trip",
    "compare_probe",
    "find_leaks",
    "render_with_debug_endpoint",
    "render_with_go_renderer",
    "run_generation_check",
    "stops_from_show",
]
