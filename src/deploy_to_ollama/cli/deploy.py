"""CLI commands of the deploy stage: ``deploy`` (the default), ``register`` and ``check``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .._fs import check_writable_dir
from ..errors import (
    InputNotFoundError,
    RoundTripError,
    TemplateMismatchError,
    UsageError,
)
from ..progress import NullProgress, ProgressReporter, RichProgress
from ._common import ForceOpt, HostOpt, JsonOpt, app, fail, print_line, print_result_json, reporting
from ._common import settings as cli_settings
from .export import CalibrationOpt, ImatrixOpt, check_imatrix_flags

if TYPE_CHECKING:
    from ..roundtrip import RoundTripReport
    from ..routing import RouteChoice

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
NoVerifyOpt = Annotated[
    bool,
    typer.Option(
        "--no-verify",
        help="Accept a render check that cannot run (no tokenizer or chat template to compare "
        "with): report NOT verified instead of exiting 3.",
    ),
]

TemplateRouteOpt = Annotated[
    str,
    typer.Option(
        "--template-route",
        help="Prompt path to deploy for: go (our verified TEMPLATE), native (the GGUF's Jinja "
        "on llama.cpp's engine, Ollama 0.30+), auto (the route proven for the server's "
        "version, preferring one proven on both generations) [default: auto].",
    ),
]
StrictOpt = Annotated[
    bool,
    typer.Option(
        "--strict",
        help="Exit 3 when the deployed model lacks a capability (tools, thinking) its Jinja "
        "chat template has (capabilities_lost); without it that is a prominent warning.",
    ),
]

DEPLOY_EXAMPLES = """
Examples:
  deploy-to-ollama ./lora_model --name my-model
  deploy-to-ollama ./lora_model --name my-model --template-route native --strict
  deploy-to-ollama ./lora_model --name my-model:q8 --quant q8_0 --host 127.0.0.1:11434
  deploy-to-ollama ./merged_model --name my-model --keep ./ollama-export --json
  deploy-to-ollama ./lora_model --name my-model --mode adapter           # FROM base + ADAPTER
  deploy-to-ollama ./lora_2 --name model-2 --mode adapter --base-model my-model-base
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


def parse_parameters(values: list[str]) -> list[tuple[str, str]]:
    """``-p KEY=VALUE`` flags, each checked against Ollama's parameter names and types.

    >>> parse_parameters(["num_thread=4", "stop=</s>"])
    [('num_thread', '4'), ('stop', '</s>')]

    Raises:
        UsageError: not KEY=VALUE, an unknown parameter, or a value of the wrong type.
    """
    from ..stages import check_parameters

    pairs = []
    for value in values:
        key, sep, val = value.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(
                f"--parameter {value!r} is not KEY=VALUE", hint="e.g. --parameter num_thread=4"
            )
        pairs.append((key, val))
    return list(check_parameters(pairs))  # the one check of names, types and Modelfile form


def check_method(value: str) -> Any:
    """``--method`` is one of auto, cli, api."""
    if value not in ("auto", "cli", "api"):
        raise UsageError(f"unknown --method {value!r}", hint="use one of auto, cli, api")
    return value


def check_deploy_quant(quant: str) -> None:
    """``deploy`` builds one GGUF: exactly one known quant name (aliases allowed)."""
    from ..gguf.quants import parse_quant_list

    quants = parse_quant_list(quant)
    if len(quants) > 1:
        raise UsageError(
            f"deploy takes one --quant, got {quant!r}",
            hint="pick one; `deploy-to-ollama export --quant a,b` writes several GGUFs",
        )


def check_numbers(**values: int) -> None:
    """Counts such as ``--num-predict`` must be positive."""
    for flag, value in values.items():
        if value < 1:
            name = "--" + flag.replace("_", "-")
            raise UsageError(f"{name} must be at least 1, got {value}", hint=f"e.g. {name} 64")


def check_paths(**paths: Path | None) -> None:
    """Named paths exist (exit 1 at once, not after the server and the toolchain were asked)."""
    for flag, path in paths.items():
        if path is not None and not path.exists():
            what = "source" if flag == "source" else f"--{flag}"
            raise InputNotFoundError(
                f"{what} {path} does not exist", path=path, hint="check the path"
            )


def round_trip_failed(report: RoundTripReport) -> RoundTripError:
    """The exit-3 error of a failed round trip, its first problem in the message."""
    problems = report.problems
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return RoundTripError(
        f"{report.model} failed its round-trip check: {problems[0] if problems else 'failed'}"
        + more,
        hint=f"`deploy-to-ollama doctor {report.model} --source SOURCE` explains template "
        "problems and can fix them",
    )


def route_failed(route: RouteChoice) -> TemplateMismatchError:
    """The exit-3 error of an unproven route, or of a lost capability under ``--strict``."""
    return TemplateMismatchError(
        route.failure or "template route not proven",
        hint="`deploy-to-ollama template diff SOURCE` (add --native for the GGUF's Jinja) "
        "shows the differences; `doctor NAME --fix` switches to the proven route",
    )


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
    no_verify: NoVerifyOpt = False,
    keep_failed: Annotated[
        bool,
        typer.Option(
            "--keep-failed",
            help="Keep a model that failed its round trip (default: remove it, or restore the "
            "model it replaced).",
        ),
    ] = False,
    method: MethodOpt = "auto",
    template_route: TemplateRouteOpt = "auto",
    strict: StrictOpt = False,
    imatrix: ImatrixOpt = None,
    calibration_data: CalibrationOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            help="merged (one GGUF) | adapter (FROM base + ADAPTER: the base is shared by "
            "digest) | auto (adapter unless the LoRA has full weights) [default: merged].",
        ),
    ] = "merged",
    base_model: Annotated[
        str | None,
        typer.Option(
            "--base-model",
            help="Adapter mode: run on this Ollama model, after checking it is the adapter's "
            "base (default: register NAME-base from the adapter's base).",
        ),
    ] = None,
    expect_base: Annotated[
        str | None,
        typer.Option("--expect-base", help="Adapter mode: the base must answer exactly this."),
    ] = None,
) -> None:
    """Export, register and verify a fine-tune in Ollama (the default command)."""
    from ..adapter_deploy import check_mode
    from ..pipeline import deploy
    from ..routing import check_route_request

    check_mode(mode, base_model)
    if expect_base is not None and mode == "merged":
        raise UsageError("--expect-base needs --mode adapter or auto", hint="add --mode adapter")

    # Flags first (exit 2), before the server, the source or the toolchain are touched.
    route_request = check_route_request(template_route)
    check_deploy_quant(quant)
    imatrix_choice = check_imatrix_flags(quant, imatrix, calibration_data)
    pairs = parse_parameters(parameter or [])
    chosen_method = check_method(method)
    check_numbers(num_predict=num_predict)
    if no_check and (expect is not None or question is not None):
        raise UsageError(
            "--expect and --question set up the round-trip check, which --no-check skips",
            hint="drop --no-check, or drop --expect/--question",
        )
    check_paths(source=Path(source), base=base)
    if keep is not None:
        check_writable_dir(keep, what="--keep")
    settings = cli_settings()
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
            parameters=pairs,
            expected_answer=expect,
            question=question,
            num_predict=num_predict,
            method=chosen_method,
            check=not no_check,
            verify=not no_verify,
            keep_failed=keep_failed,
            cache_dir=settings.cache_dir,
            progress=reporter,
            settings=settings,
            mode=mode,
            base_model=base_model,
            expected_base_answer=expect_base,
            template_route=route_request,
            strict=strict,
            imatrix=imatrix_choice,
        )
    if not quiet and not json_out:
        for line in report.summary_lines():
            print_line(line)
    if report.round_trip is not None and not report.round_trip.passed:
        fail(round_trip_failed(report.round_trip), report.to_dict())
    base_round_trip = report.adapter.base_round_trip if report.adapter else None
    if base_round_trip is not None and not base_round_trip.passed:
        fail(round_trip_failed(base_round_trip), report.to_dict())  # the base failed
    if report.route is not None and report.route.failure is not None:
        fail(route_failed(report.route), report.to_dict())
    if json_out:
        print_result_json(report.to_dict())
    else:
        typer.echo(report.name)


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
    from ..ollama_client import check_local_files
    from ..registrar import register_model

    chosen_method = check_method(method)
    if not modelfile.is_file():
        raise InputNotFoundError(
            f"no Modelfile at {modelfile}", path=modelfile, hint="pass the path of a Modelfile"
        )
    parsed = parse_modelfile(modelfile.read_text(encoding="utf-8"))
    check_local_files(parsed, modelfile.resolve().parent)  # bad input before the server
    reporter = _reporter(json_out=json_out, quiet=quiet)
    with reporting(reporter, json_out=json_out):
        registration = register_model(
            name,
            parsed,
            base_dir=modelfile.resolve().parent,
            host=host or cli_settings().ollama_host,
            force=force,
            method=chosen_method,
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
    no_verify: NoVerifyOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Check a registered model: prompt rendering and one greedy answer (exit 3 on failure)."""
    from ..roundtrip import DEFAULT_QUESTION, check_round_trip

    check_numbers(num_predict=num_predict)
    if source is not None and not source.exists():
        raise InputNotFoundError(
            f"--source {source} does not exist", path=source, hint="pass the fine-tune's folder"
        )
    reporter = _reporter(json_out=json_out, quiet=False)
    with reporting(reporter, json_out=json_out):
        report = check_round_trip(
            name,
            host=host or cli_settings().ollama_host,
            source=source,
            question=question or DEFAULT_QUESTION,
            expected_answer=expect,
            num_predict=num_predict,
            verify=not no_verify,
            progress=reporter,
        )
    if not json_out:
        for line in report.summary_lines():
            print_line(line)
    if not report.passed:
        fail(round_trip_failed(report), report.to_dict())
    if json_out:
        print_result_json(report.to_dict())
