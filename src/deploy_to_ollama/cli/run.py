"""CLI commands of the run stage: ``chat``, ``compare`` and ``push`` (registered at import)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import RoundTripError, UsageError
from ..progress import NullProgress, ProgressReporter, RichProgress, console
from ._common import HostOpt, JsonOpt, app, fail, print_line, print_result_json, reporting
from ._common import settings as cli_settings

CHAT_EXAMPLES = """
Examples:
  deploy-to-ollama chat my-model
  deploy-to-ollama chat my-model --system "Answer in French."
  deploy-to-ollama chat my-model --prompt "What is the secret word?"   # one answer, for scripts
"""
COMPARE_EXAMPLES = """
Examples:
  deploy-to-ollama compare ./lora_model my-model
  deploy-to-ollama compare ./lora_model my-model --prompt "Hi" --prompt "2+2?" --max-tokens 64
"""
PUSH_EXAMPLES = """
Examples:
  deploy-to-ollama push ./gguf --repo alice/my-model-GGUF          # GGUFs + Modelfile + card
  deploy-to-ollama push ./merged --repo alice/my-model --what merged --private
  deploy-to-ollama push ./lora_model --repo alice/my-lora --what adapter
  deploy-to-ollama push my-model --to-ollama registry.example.com/team/my-model:v1
  deploy-to-ollama push my-model --to-ollama 127.0.0.1:5000/team/my-model --insecure
"""

SystemOpt = Annotated[str | None, typer.Option("--system", help="System prompt.")]


# --------------------------------------------------------------------------- chat


def _stream_answer(events: Iterator[Any]) -> None:
    """Write answer chunks to stdout as they come; speed and notices to stderr."""
    from ..chat import ChatChunk, ChatDone, ChatNotice

    for event in events:
        if isinstance(event, ChatChunk):
            sys.stdout.write(event.text)
            sys.stdout.flush()
        elif isinstance(event, ChatDone):
            sys.stdout.write("\n")
            sys.stdout.flush()
            speed = event.stats.tokens_per_second
            rate = f", {speed:.1f} tokens/s" if speed is not None else ""
            stats = f"[{event.stats.eval_count} tokens{rate}]"
            console.print(stats, style="dim", markup=False, highlight=False)
        elif isinstance(event, ChatNotice):
            console.print(event.message, style="dim", markup=False, highlight=False)


def _lines(interactive: bool) -> Iterator[str]:
    while True:
        try:
            line = console.input(">>> ") if interactive else sys.stdin.readline()
        except EOFError:
            return
        if not interactive and not line:
            return
        yield line.rstrip("\n")


@app.command("chat", epilog=CHAT_EXAMPLES)
def chat_command(
    name: Annotated[str, typer.Argument(help="The Ollama model to chat with.")],
    system: SystemOpt = None,
    host: HostOpt = None,
    prompt: Annotated[
        str | None,
        typer.Option("--prompt", help="Answer this one prompt (streamed to stdout) and exit."),
    ] = None,
) -> None:
    """Chat with a model in the terminal: streaming, /system, /reset, /exit, tokens/s."""
    from ..chat import ChatSession

    session = ChatSession(name, host=host or cli_settings().ollama_host, system=system)
    if prompt is not None:
        _stream_answer(session.ask(prompt))
        return
    interactive = sys.stdin.isatty()
    if interactive:
        console.print(
            "Type /help for commands, /exit to leave.", style="dim", markup=False, highlight=False
        )
    for line in _lines(interactive):
        try:
            _stream_answer(session.handle(line))
        except KeyboardInterrupt:
            if not interactive:
                raise
            sys.stdout.write("\n")
            console.print("(answer interrupted)", style="dim", markup=False)
        if session.finished:
            return


# --------------------------------------------------------------------------- compare


@app.command("compare", epilog=COMPARE_EXAMPLES)
def compare_command(
    source: Annotated[Path, typer.Argument(help="The fine-tune: LoRA adapter or merged model.")],
    name: Annotated[str, typer.Argument(help="The Ollama model exported from it.")],
    prompt: Annotated[
        list[str] | None,
        typer.Option("--prompt", help="User prompt to compare (repeatable)."),
    ] = None,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", help="Token cap on both sides [default: 32].")
    ] = 32,
    system: SystemOpt = None,
    base: Annotated[
        Path | None, typer.Option("--base", help="Base model dir for an adapter.")
    ] = None,
    dtype: Annotated[
        str,
        typer.Option("--dtype", help="transformers dtype: float32 (default), bfloat16, auto."),
    ] = "float32",
    host: HostOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Greedy answers from transformers vs Ollama; exit 3 when they diverge early."""
    from ..compare import DEFAULT_PROMPTS, DTYPES, compare_model

    if max_tokens < 1:
        raise UsageError(f"--max-tokens must be at least 1, got {max_tokens}", hint="e.g. 32")
    if dtype not in DTYPES:
        raise UsageError(f"unknown --dtype {dtype!r}", hint=f"use one of {', '.join(DTYPES)}")
    if prompt is not None and not all(p.strip() for p in prompt):
        raise UsageError("--prompt is empty", hint='e.g. --prompt "What is 2+2?"')
    reporter: ProgressReporter = NullProgress() if json_out else RichProgress(transient=True)
    with reporting(reporter, json_out=json_out):
        report = compare_model(
            source,
            name,
            prompts=tuple(prompt or DEFAULT_PROMPTS),
            max_tokens=max_tokens,
            host=host or cli_settings().ollama_host,
            system=system,
            base=base,
            dtype=dtype,
            progress=reporter,
        )
    if not json_out:
        for line in report.summary_lines():
            typer.echo(line)
    if not report.passed:
        diverged = [r for r in report.results if (r.diverged_at or 0) < report.max_tokens]
        first = next((r for r in diverged if r.diverged_at is not None), None)
        where = f"{first.prompt!r} diverges at token {first.diverged_at}" if first else "diverged"
        fail(
            RoundTripError(
                f"{name} answers differently from transformers: {where} "
                f"(cap {report.max_tokens} tokens)",
                hint=f"`deploy-to-ollama doctor {name} --source {source}` checks the template",
            ),
            report.to_dict(),
        )
    if json_out:
        print_result_json(report.to_dict())


# --------------------------------------------------------------------------- push


@app.command("push", epilog=PUSH_EXAMPLES)
def push_command(
    folder: Annotated[
        Path,
        typer.Argument(
            help="Export folder, merged model or adapter; with --to-ollama: the Ollama model."
        ),
    ],
    repo: Annotated[str | None, typer.Option("--repo", help="Hub repository USER/REPO.")] = None,
    what: Annotated[
        str, typer.Option("--what", help="gguf (GGUFs + Modelfile), merged or adapter.")
    ] = "gguf",
    private: Annotated[bool, typer.Option("--private", help="Create the repo private.")] = False,
    to_ollama: Annotated[
        str | None,
        typer.Option(
            "--to-ollama",
            metavar="HOST/NAMESPACE/MODEL[:TAG]",
            help="Publish the Ollama model to this registry instead of the Hub.",
        ),
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option("--insecure", help="Plain HTTP to the registry (loopback hosts only)."),
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="deploy-report.json of the model, stored beside the tag (with --to-ollama).",
        ),
    ] = None,
    host: HostOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Upload to the Hugging Face Hub in one commit (token: HF_TOKEN or `hf auth login`),
    or with --to-ollama publish an Ollama model to an Ollama registry (`ollama push`)."""
    if to_ollama is not None:
        if repo is not None:
            raise UsageError("--repo and --to-ollama exclude each other", hint="pick one target")
        _push_ollama(
            str(folder), to_ollama, insecure=insecure, report=report, host=host, json_out=json_out
        )
        return
    if repo is None:
        raise UsageError(
            "push needs a target: --repo USER/REPO (Hub) or --to-ollama HOST/NAMESPACE/MODEL",
            hint="e.g. deploy-to-ollama push ./gguf --repo alice/my-model-GGUF",
        )
    if insecure or host is not None or report is not None:
        raise UsageError(
            "--insecure, --report and --host apply only with --to-ollama", hint="drop them"
        )
    from ..publish import check_kind, check_repo_id, push_to_hub

    kind = check_kind(what)
    check_repo_id(repo)
    if json_out:
        from huggingface_hub.utils import disable_progress_bars  # type: ignore[attr-defined]

        disable_progress_bars()
    reporter: ProgressReporter = NullProgress() if json_out else RichProgress(transient=True)
    with reporting(reporter, json_out=json_out):
        result = push_to_hub(folder, repo, what=kind, private=private, progress=reporter)
    if json_out:
        print_result_json({"ok": True, **result.to_dict()})
        return
    console.print(
        f"pushed {len(result.files)} files to {result.repo_url}", markup=False, highlight=False
    )
    typer.echo(result.repo_url)


def _push_ollama(
    name: str,
    target: str,
    *,
    insecure: bool,
    report: Path | None,
    host: str | None,
    json_out: bool,
) -> None:
    """``push NAME --to-ollama TARGET``: copy, push, and say how many bytes moved."""
    from ..deploy_report import read_report_for
    from ..ollama_client import OllamaClient, parse_target, push_to_registry

    parsed = parse_target(target)
    if insecure and not parsed.is_loopback:
        raise UsageError(
            f"--insecure is allowed only for a registry on this machine, not {parsed.host}",
            hint="serve the registry over HTTPS and drop --insecure",
        )
    proof = read_report_for(report, name) if report is not None else None
    client = OllamaClient(host or cli_settings().ollama_host)
    reporter: ProgressReporter = (
        NullProgress() if json_out else RichProgress(byte_units=True, lines_when_not_tty=True)
    )
    with reporting(reporter, json_out=json_out):
        result = push_to_registry(
            client, name, parsed, insecure=insecure, report=proof, progress=reporter
        )
    if json_out:
        print_result_json({"ok": True, **result.to_dict()})
        return
    if result.bytes_reused is None:
        moved = "bytes uploaded and reused unknown: the registry answers only Ollama's sign-in"
    else:
        moved = f"{result.bytes_uploaded} bytes uploaded, {result.bytes_reused} reused by digest"
    print_line(f"pushed {result.target} ({len(result.layers)} blobs, {moved})")
    if result.report_tag:
        print_line(f"deploy report stored as {parsed.host}/{parsed.repository}:{result.report_tag}")
    typer.echo(result.target)
