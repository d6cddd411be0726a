"""``deploy-to-ollama doctor``: explain (and with ``--fix`` repair) chat-template problems.

Exit codes: 0 healthy (no errors; warnings may be shown), 3 problems found (or still present
after ``--fix``; ``TemplateMismatchError``, or ``RoundTripError`` when the fixed model fails its
round trip), 1 bad input, 2 usage error, 4 Ollama unreachable.

``--json`` prints one document on stdout. Schema (``schema_version`` 1; keys are only added)::

    {
      "ok": true,                      # false when exit_code != 0 (then: error, error_type, hint)
      "schema_version": 1,
      "exit_code": 0 | 3,
      "target": {"kind": "ollama"|"gguf"|"modelfile"|"hf", "name": str,
                 "template": str|null, "system": str|null, "stops": [str],
                 "parameters": [[name, value]],
                 "route": "go"|"native"|null,  # the prompt path, where known
                 "server_version": str|null},  # the serving Ollama's, for its prompt rules
      "reference": {"origin": "source"|"gguf"|"hf_target"|null, "location": str|null,
                    "note": str, "disagreement": str|null},
      "healthy": bool,                 # no diagnosis of severity "error"
      "diagnoses": [{"code": str, "severity": "error"|"warning"|"info", "title": str,
                     "symptom": str, "evidence": [str], "fix": str, "fixable": bool,
                     "probes": [{"probe": str, "expected": str, "actual": str,
                                 "first_difference": int|null, "summary": str|null,
                                 "tier": "exact"|"json_equivalent"|"differs"|null,
                                 "actual_difference": int|null}]}],  # index in "actual"
      "fix": null | {"modelfile": str|null, "registered": str|null, "changes": [str],
                     "translation_verified": bool,
                     "after": {"healthy": bool, "diagnoses": [...]}|null,
                     "round_trip": <RoundTripReport.to_dict()>|null}
    }

Diagnosis codes: no_template, template_mismatch, generation_prompt_missing, double_bos,
default_system_lost, system_duplicated, eot_not_stop, stop_in_answers, tools_missing,
tools_extra, tool_prompt_mismatch, thinking_prompt_mismatch (tool / thinking conversations
rendered both ways, every probe with its tier), sampling_conflict, reference_disagreement,
no_reference, capabilities_lost,
template_overridden, native_render_mismatch, library_template_attached (the last three: which
prompt path Ollama 0.30+ takes, ``doctor/routes.py``; ``--fix`` switches to the proven route).
With exit 3 the document above also carries ``"ok": false``, ``error``, ``error_type`` and
``hint``. On other failures: ``{"ok": false, "error": str, "error_type": str, "hint": str|null,
"exit_code": int}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel

from ..errors import (
    DeployError,
    InputError,
    InputNotFoundError,
    ReplaceRefusedError,
    RoundTripError,
    TemplateMismatchError,
    UsageError,
)
from ._common import ForceOpt, HostOpt, JsonOpt, app, fail, print_result_json
from ._common import settings as cli_settings

if TYPE_CHECKING:
    from ..doctor import Diagnosis, DoctorReport, FixResult
    from ..roundtrip import RoundTripReport

DOCTOR_EXAMPLES = """
\b
Examples:
  deploy-to-ollama doctor my-model
  deploy-to-ollama doctor my-model --source ./lora_model
  deploy-to-ollama doctor my-model --source ./lora_model --fix --name my-model-fixed
  deploy-to-ollama doctor my-model --fix --force
  deploy-to-ollama doctor ./model-q8_0.gguf --json
  deploy-to-ollama doctor ./Modelfile --source ./lora_model --fix
"""

#: The report stays readable in a 100-column terminal.
REPORT_WIDTH = 100
_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


@app.command("doctor", epilog=DOCTOR_EXAMPLES)
def doctor_command(
    target: Annotated[
        str, typer.Argument(help="Ollama model name, .gguf file, Modelfile, or fine-tune folder.")
    ],
    source: Annotated[
        Path | None,
        typer.Option("--source", help="Fine-tune folder whose tokenizer is the reference."),
    ] = None,
    fix: Annotated[
        bool, typer.Option("--fix", help="Write a corrected Modelfile and apply it.")
    ] = False,
    name: Annotated[
        str | None, typer.Option("--name", help="With --fix: register the fix under this name.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="With --fix: where to write the Modelfile.")
    ] = None,
    skip_generation: Annotated[
        bool,
        typer.Option("--skip-generation", help="With --fix: round-trip render check only."),
    ] = False,
    force: ForceOpt = False,
    host: HostOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Explain why a model misbehaves in Ollama (template, stops, BOS, system, sampling)."""
    check_doctor_flags(fix=fix, name=name, out=out, skip_generation=skip_generation)
    failure, payload = _run(
        target,
        source,
        fix=fix,
        name=name,
        out=out,
        generate=not skip_generation,
        force=force,
        host=host or cli_settings().ollama_host,
        json_out=json_out,
    )
    if failure is not None:
        fail(failure, payload)
    if json_out:
        print_result_json(payload)


def check_doctor_flags(
    *, fix: bool, name: str | None, out: Path | None, skip_generation: bool
) -> None:
    """Flags that only mean something with ``--fix`` (exit 2 before anything is read)."""
    needs_fix = [
        flag
        for flag, given in (
            ("--name", name is not None),
            ("--out", out is not None),
            ("--skip-generation", skip_generation),
        )
        if given
    ]
    if needs_fix and not fix:
        verb = "needs" if len(needs_fix) == 1 else "need"
        raise UsageError(f"{' and '.join(needs_fix)} {verb} --fix", hint="add --fix, or drop them")
    if name is not None:
        from ..registrar import validate_model_name

        validate_model_name(name)  # exit 1 now, not after the examination


def _run(
    target: str,
    source: Path | None,
    *,
    fix: bool,
    name: str | None,
    out: Path | None,
    generate: bool,
    force: bool,
    host: str,
    json_out: bool,
) -> tuple[DeployError | None, dict[str, Any]]:
    from ..doctor import examine

    if source is not None and not source.exists():
        raise InputNotFoundError(
            f"--source {source} does not exist", path=source, hint="pass the fine-tune's folder"
        )
    if fix and name is None and not force and not Path(target).expanduser().exists():
        # Checked before any work: an Ollama model is only replaced when the user says so.
        raise ReplaceRefusedError(
            f"--fix would replace the Ollama model {target}",
            hint="pass --force to re-create it under the same name, or --name NEW",
        )
    report = examine(target, source=source, host=host)
    payload: dict[str, Any] = {"ok": True, **report.to_dict(), "fix": None}
    stdout = Console(width=REPORT_WIDTH, highlight=False, soft_wrap=False)
    if not json_out:
        render_report(stdout, report)
    failure: DeployError | None = None if report.healthy else problems_found(report)
    if fix and any(d.fixable for d in report.diagnoses):
        failure, payload["fix"] = _fix(
            report, source, name, out, generate, force, host, stdout, json_out
        )
    elif fix and not json_out:
        stdout.print("Nothing to fix.")
    payload["exit_code"] = failure.exit_code if failure is not None else 0
    return failure, payload


def problems_found(report: DoctorReport, *, after_fix: bool = False) -> TemplateMismatchError:
    """The exit-3 error of an unhealthy examination, naming the diagnoses."""
    codes = [d.code for d in report.diagnoses if d.severity == "error"]
    state = "still has" if after_fix else "has"
    return TemplateMismatchError(
        f"{report.target.label} {state} {len(codes)} problem(s): {', '.join(codes) or 'see above'}",
        hint="run with --fix (and --source DIR) to repair them"
        if not after_fix
        else "see the re-check above; `deploy-to-ollama template diff` shows the prompts",
    )


def _fix(
    report: DoctorReport,
    source: Path | None,
    name: str | None,
    out: Path | None,
    generate: bool,
    force: bool,
    host: str,
    stdout: Console,
    json_out: bool,
) -> tuple[DeployError | None, dict[str, Any]]:
    from ..doctor import apply_fix, plan_fix, reexamine

    ref = report.choice.reference
    if ref is None:
        raise InputError(
            "--fix needs a reference template and none was found",
            hint="pass --source the fine-tune's folder (tokenizer files with a chat template)",
        )
    plan = plan_fix(report.target, ref, report.diagnoses)
    result = apply_fix(report.target, plan, name=name, force=force, host=host, out=out)
    recheck = result.registered or (str(result.modelfile_path) if result.modelfile_path else None)
    after = reexamine(report, recheck, host=host) if recheck else None
    round_trip = None
    if result.registered and (source is not None or generate):
        from ..roundtrip import check_round_trip

        # Without --source the re-examination above already compared the fixed TEMPLATE with
        # the reference; the round trip then only proves the model answers ("NOT verified").
        round_trip = check_round_trip(
            result.registered,
            host=host,
            source=source,
            generate=generate,
            verify=source is not None,
        )
    failure: DeployError | None = None
    if after is not None and not after.healthy:
        failure = problems_found(after, after_fix=True)
    elif after is None and not plan.translation_verified:
        failure = TemplateMismatchError(
            "the fixed TEMPLATE is not verified on the template engine's probes",
            hint="`deploy-to-ollama template diff SOURCE --against MODELFILE` shows the prompts",
        )
    elif round_trip is not None and not round_trip.passed:
        failure = RoundTripError(
            f"{result.registered} failed its round-trip check after the fix: "
            + "; ".join(round_trip.problems[:1]),
            hint="the report above lists every problem",
        )
    if not json_out:
        render_fix(stdout, result, after, round_trip)
    data = {
        "modelfile": str(result.modelfile_path) if result.modelfile_path else None,
        "registered": result.registered,
        "changes": list(result.plan.changes),
        "translation_verified": result.plan.translation_verified,
        "after": {"healthy": after.healthy, "diagnoses": [d.to_dict() for d in after.diagnoses]}
        if after is not None
        else None,
        "round_trip": round_trip.to_dict() if round_trip is not None else None,
    }
    return failure, data


# --------------------------------------------------------------------------- human report


def render_report(console: Console, report: DoctorReport) -> None:
    """Print the examination: target, reference, then each diagnosis as a panel."""
    target = report.target
    console.print(f"[bold]doctor[/] {escape(target.label)} ({target.kind})")
    console.print(f"  {escape(report.choice.note)}")
    problems = [d for d in report.diagnoses if d.severity != "info"]
    for diagnosis in report.diagnoses:
        console.print(_panel(diagnosis))
    if report.healthy and not problems:
        console.print("[green]Healthy:[/] the TEMPLATE, stops, BOS and SYSTEM match the reference.")
    elif report.healthy:
        console.print("[green]No errors[/] (warnings above).")
    else:
        errors = sum(d.severity == "error" for d in report.diagnoses)
        console.print(
            f"[bold red]{errors} problem(s) found.[/] "
            "Run with --fix (and --source DIR) to repair them."
        )


def _panel(diagnosis: Diagnosis) -> Panel:
    lines = [
        f"[dim]{diagnosis.code}[/]",
        f"[bold]Symptom:[/] {escape(diagnosis.symptom)}",
        *(f"  • {escape(e)}" for e in diagnosis.evidence),
    ]
    for probe in diagnosis.probes[:1]:
        lines += _side_by_side(
            probe.expected, probe.actual, probe.first_difference, probe.actual_difference
        )
    lines.append(f"[bold]Fix:[/] {escape(diagnosis.fix)}")
    style = _STYLE[diagnosis.severity]
    title = f"[{style}]{diagnosis.severity.upper()}[/] {escape(diagnosis.title)}"
    return Panel("\n".join(lines), title=title, title_align="left", width=REPORT_WIDTH)


def _side_by_side(
    expected: str, actual: str, at: int | None, actual_at: int | None = None
) -> list[str]:
    """The reference and Ollama's prompt around the first difference (highlighted); Ollama's
    own index where JSON of another layout shifted it."""

    def snippet(text: str, pos: int) -> str:
        head, tail = text[max(0, pos - 30) : pos], text[pos : pos + 40]
        return f"{escape(repr(head)[1:-1])}[reverse]{escape(repr(tail)[1:-1])}[/]"

    pos = at or 0
    return [
        f"  reference: …{snippet(expected, pos)}",
        f"  Ollama:    …{snippet(actual, pos if actual_at is None else actual_at)}",
    ]


def render_fix(
    console: Console,
    result: FixResult,
    after: DoctorReport | None,
    round_trip: RoundTripReport | None,
) -> None:
    """Print what --fix changed and whether the re-check passed."""
    console.print("[bold]Fix applied[/]")
    verified = (
        "yes"
        if result.plan.translation_verified
        else "[yellow]no[/] (see `deploy-to-ollama template diff`)"
    )
    console.print(f"  translated TEMPLATE verified on the template engine's probes: {verified}")
    for change in result.plan.changes:
        console.print(f"  • {escape(change)}")
    if result.modelfile_path:
        console.print(f"  Modelfile: {escape(str(result.modelfile_path))}")
    if result.registered:
        console.print(f"  registered: {escape(result.registered)} (existing weights blob reused)")
    if after is not None:
        verdict = "[green]healthy[/]" if after.healthy else "[bold red]still has problems[/]"
        console.print(f"  re-check: {verdict}")
        for diagnosis in after.diagnoses:
            console.print(f"    {diagnosis.severity}: {escape(diagnosis.title)}")
    if round_trip is not None:
        for line in round_trip.summary_lines():
            console.print(f"  {escape(line)}")


__all__ = ["doctor_command", "render_fix", "render_report"]
