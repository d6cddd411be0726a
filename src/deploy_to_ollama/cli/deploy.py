"""CLI commands of the deploy stage: ``deploy`` (the default), ``register`` and ``check``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import InputNotFoundError, UsageError
from ..progress import NullProgress, ProgressReporter, RichProgress, console
from ..settings import Settings
from ._common import ForceOpt, HostOpt, JsonOpt, app, print_result_json, reporting

QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print only the model name on success.")
]
NameOpt = Annotated[
    str, typer.Option("--name", "-n", help="Ollama model name, e.g. my-model:q8_0.")
]
MethodOpt = Annotated[
    str,
    typer.Option(
        "--method",
        help="How to register: cli (`ollama create`), api (HTTP), auto (cli when on PATH).",
    ),
]
ExpectOpt = Annotated[
    str | None,
    typer.Option("--expect", help="Fail the check unless the answer is exactly this text."),
]
QuestionOpt = Annotated[
    str | None, typer.Option("--question", help="User turn of the generation check.")
]
NumPredictOpt = Annotated[
    int, typer.Option("--num-predict", help="Token cap of the generation check [default: 64].")
]

DEPLOY_EXAMPLES = """
Examples:
  deploy-to-ollama ./lora_model --name my-model
  deploy-to-ollama ./lora_model --name my-model:q8 --quant q8_0 --host 127.0.0.1:11434
  deploy-to-ollama ./merged_model --name my-model --keep ./ollama-export --json
"""
REGISTER_EXAMPLES = """
Examples:
  deploy-to-ollama register ./ollama-export/Modelfile --name my-model
  deploy-to-ollama register ./Modelfile --name my-model --force --method api
"""
CHECK_EXAMPLES = """
Examples:
  deploy-to-ollama check my-model --source ./lora_model
  deploy-to-ollama check my-model --source ./lora_model --expect banana --json
"""


def _reporter(*, json_out: bool, quiet: bool) -> ProgressReporter:
    return NullProgress() if json_out or quiet else RichProgress()


def _parameters(values: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key.strip():
            raise UsageError(
                f"--parameter {value!r} is not KEY=VALUE", hint="e.g. --parameter num_thread=4"
            )
        pairs.append((key.strip(), val))
    return pairs


def _method(value: str) -> Any:
    if value not in ("auto", "cli", "api"):
        raise UsageError(f"unknown --method {value!r}", hint="use one of auto, cli, api")
    return value


@app.command("deploy", epilog=DEPLOY_EXAMPLES)
def deploy_command(
    source: Annotated[str, typer.Argument(help="LoRA adapter dir, merged model dir or GGUF.")],
    name: NameOpt,
    quant: Annotated[
        str, typer.Option("--quant", help="GGUF quant type [default: q4_k_m].")
    ] = "q4_k_m",
    host: HostOpt = None,
    force: ForceOpt = False,
    keep: Annotated[
        Path | None, typer.Option("--keep", help="Keep the GGUF and Modelfile in this folder.")
    ] = None,
    base: Annotated[
        Path | None, typer.Option("--base", help="Base model dir for an adapter.")
    ] = None,
    parameter: Annotated[
        list[str] | None,
        typer.Option(
            "--parameter", "-p", help="Extra Modelfile PARAMETER as KEY=VALUE (repeatable)."
        ),
    ] = None,
    expect: ExpectOpt = None,
    question: QuestionOpt = None,
    num_predict: NumPredictOpt = 64,
    no_check: Annotated[
        bool, typer.Option("--no-check", help="Skip the round-trip check.")
    ] = False,
    method: MethodOpt = "auto",
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Export, register and verify a fine-tune in Ollama (the default command)."""
    from ..pipeline import deploy

    settings = Settings.from_env()
    reporter = _reporter(json_out=json_out, quiet=quiet)
    with reporting(reporter, json_out=json_out):
        report = deploy(
            source,
            name=name,
            quant=quant,
            host=host or settings.ollama_host,
            force=force,
            keep=keep,
            base=base,
            parameters=_parameters(parameter or []),
            expected_answer=expect,
            question=question,
            num_predict=num_predict,
            method=_method(method),
            check=not no_check,
            cache_dir=settings.cache_dir,
            progress=reporter,
            settings=settings,
        )
    if json_out:
        print_result_json(report.to_dict())
    elif quiet:
        typer.echo(report.name)
    else:
        for line in report.summary_lines():
            console.print(line, markup=False, highlight=False)
        typer.echo(report.name)
    if not report.passed:
        raise typer.Exit(3)


@app.command("register", epilog=REGISTER_EXAMPLES)
def register_command(
    modelfile: Annotated[Path, typer.Argument(help="The Modelfile to register.")],
    name: NameOpt,
    host: HostOpt = None,
    force: ForceOpt = False,
    method: MethodOpt = "auto",
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Register an existing Modelfile with Ollama (``ollama create`` or the HTTP API)."""
    from ..modelfile import parse_modelfile
    from ..registrar import register_model

    if not modelfile.is_file():
        raise InputNotFoundError(
            f"no Modelfile at {modelfile}", path=modelfile, hint="pass the path of a Modelfile"
        )
    parsed = parse_modelfile(modelfile.read_text(encoding="utf-8"))
    reporter = _reporter(json_out=json_out, quiet=quiet)
    with reporting(reporter, json_out=json_out):
        registration = register_model(
            name,
            parsed,
            base_dir=modelfile.resolve().parent,
            host=host or Settings.from_env().ollama_host,
            force=force,
            method=_method(method),
            progress=reporter,
        )
    if json_out:
        print_result_json(
            {
                "ok": True,
                "name": registration.name,
                "host": registration.host,
                "method": registration.method,
                "server_version": registration.server_version,
                "replaced": registration.replaced,
            }
        )
    else:
        typer.echo(registration.name)


@app.command("check", epilog=CHECK_EXAMPLES)
def check_command(
    name: Annotated[str, typer.Argument(help="The Ollama model to check.")],
    source: Annotated[
        Path | None,
        typer.Option("--source", help="Fine-tune folder (tokenizer + chat template)."),
    ] = None,
    host: HostOpt = None,
    expect: ExpectOpt = None,
    question: QuestionOpt = None,
    num_predict: NumPredictOpt = 64,
    json_out: JsonOpt = False,
) -> None:
    """Check a registered model: prompt rendering and one greedy answer (exit 3 on failure)."""
    from ..roundtrip import DEFAULT_QUESTION, check_round_trip

    if source is not None and not source.exists():
        raise InputNotFoundError(
            f"--source {source} does not exist", path=source, hint="pass the fine-tune's folder"
        )
    reporter = _reporter(json_out=json_out, quiet=False)
    with reporting(reporter, json_out=json_out):
        report = check_round_trip(
            name,
            host=host or Settings.from_env().ollama_host,
            source=source,
            question=question or DEFAULT_QUESTION,
            expected_answer=expect,
            num_predict=num_predict,
            progress=reporter,
        )
    if json_out:
        print_result_json(report.to_dict())
    else:
        for line in report.summary_lines():
            console.print(line, markup=False, highlight=False)
    if not report.passed:
        raise typer.Exit(3)
