"""``deploy-to-ollama template show|diff``: translate a chat template, or compare one.

``show`` prints the Modelfile fragment (TEMPLATE, PARAMETER stop, SYSTEM); ``--json`` prints
``{"template": str, "stop": [str], "system": str|null, "verified": bool, "probes": [...],
"warnings": [str], "capabilities": {"jinja": [str], "template": [str], "lost": [str],
"parity": bool}, "native": {...}}``, where ``native`` is llama.cpp's rendering of the Jinja (Ollama
0.30+'s native path, see ``chat_template/native.py``): ``{"available": true, "verified": bool,
"exact": int, "probes": [...]}``, or ``{"available": false, "reason": str}`` without a
llama-server; it does not change the exit code, which the Go TEMPLATE decides. ``diff`` renders
every probe through transformers and through a given Modelfile or TEMPLATE file (or, with
``--native``, through llama.cpp's engine) and shows both with the first difference highlighted.
Exit codes: 0 verified, 3 not verified (``TemplateMismatchError``; the best template is still
printed, and under ``--json`` the document carries ``ok: false``, ``error`` and ``hint``), 1 bad
input, 2 usage error, 4 ``diff --native`` without a usable llama-server (the message names the log).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import (
    DependencyMissingError,
    InputError,
    InputNotFoundError,
    TemplateMismatchError,
    UsageError,
)
from ._common import JsonOpt, app, fail, print_line, print_result_json
from ._common import settings as cli_settings

if TYPE_CHECKING:
    from ..chat_template import ProbeResult, TemplateSource, TranslatedTemplate, VerificationReport
    from ..chat_template.native import NativeProbeResult, NativeReport, NativeUnavailable

TEMPLATE_EXAMPLES = """
\b
Examples:
  deploy-to-ollama template ./my-lora
  deploy-to-ollama template ./model.gguf --json
  deploy-to-ollama template ./chat_template.jinja --bos "<s>" --eos "</s>"
  deploy-to-ollama template diff ./my-lora --against ./Modelfile
  deploy-to-ollama template diff ./my-lora --native
"""

template_app = typer.Typer(
    name="template",
    help="Translate a chat template into an Ollama TEMPLATE and prove it matches.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(template_app, name="template")

SourceArg = Annotated[
    Path,
    typer.Argument(help="Model or adapter folder, .gguf, or a .jinja chat template file."),
]
BosOpt = Annotated[
    str | None, typer.Option("--bos", help="BOS token string (overrides the source's).")
]
EosOpt = Annotated[
    str | None, typer.Option("--eos", help="EOS token string (overrides the source's).")
]

OllamaVersionOpt = Annotated[
    str | None,
    typer.Option(
        "--ollama-version",
        help="Verify with this Ollama release's prompt building (e.g. 0.9.3: consecutive "
        "tool results joined); default: the newest.",
    ),
]


def checked_version(value: str | None) -> str | None:
    """``--ollama-version`` as given, refused (exit 2) when it is not a version number."""
    from ..ollama_route import parse_server_version

    if value is not None and parse_server_version(value)[1] is not None:
        fail(UsageError(f"--ollama-version {value!r} is not an Ollama version",
                        hint="give a release such as 0.9.3 or 0.33.0"))  # fmt: skip
    return value


def not_verified(report: VerificationReport, source: Path) -> TemplateMismatchError:
    """The exit-3 error of a translation that does not reproduce the Jinja template."""
    return TemplateMismatchError(
        "the Ollama TEMPLATE does not reproduce the chat template of "
        f"{source}: {_first_difference(report)}",
        hint="save the printed fragment as a Modelfile and run "
        f"`deploy-to-ollama template diff {source} --against Modelfile` to see both prompts",
    )


@template_app.command("show", epilog=TEMPLATE_EXAMPLES)
def show_command(
    source: SourceArg,
    bos: BosOpt = None,
    eos: EosOpt = None,
    ollama_version: OllamaVersionOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Print the Ollama TEMPLATE, stops and SYSTEM for SOURCE's chat template."""
    from ..chat_template import load_template_source, translate_template

    version = checked_version(ollama_version)
    loaded = load_template_source(source, bos=bos, eos=eos)
    result = translate_template(loaded, server_version=version)
    # Warnings (double BOS, not verified) reach stderr through the log handler.
    if not json_out:
        sys.stdout.write(modelfile_fragment(result))
        _summary(result.report)
    payload = translation_json(result, jinja=loaded.template)
    if json_out:
        payload["native"] = native_json(loaded)
    if not result.verified:
        fail(not_verified(result.report, source), payload)
    if json_out:
        print_result_json(payload)


def native_json(loaded: TemplateSource) -> dict[str, Any]:
    """The ``native`` section: llama.cpp's engine vs transformers, or why it was not checked."""
    from ..chat_template.native import NativeUnavailable

    try:
        return run_native(loaded).to_json()
    except DependencyMissingError as err:
        return NativeUnavailable(
            f"{err.message} ({err.hint})" if err.hint else err.message
        ).to_json()


def run_native(loaded: TemplateSource) -> NativeReport | NativeUnavailable:
    """Verify ``loaded`` on llama-server (raises ``DependencyMissingError`` without one)."""
    from ..chat_template.native import verify_native
    from ..gguf.toolchain import find_toolchain

    settings = cli_settings()
    binary = find_toolchain(settings.cache_dir, settings.llama_cpp_dir).require_server()
    return verify_native(loaded, binary)


def translation_json(result: TranslatedTemplate, *, jinja: str | None = None) -> dict[str, Any]:
    """The ``--json`` document of ``template show`` (``capabilities`` when ``jinja`` is given:
    what Ollama derives from the Jinja and from the TEMPLATE, see ``capabilities.py``)."""
    from ..chat_template.think_generations import thinking_json

    extra: dict[str, Any] = {}
    if jinja is not None:
        from ..capabilities import compare_capabilities

        extra["capabilities"] = compare_capabilities(jinja, result.template).to_json()
    return {
        "template": result.template,
        "stop": list(result.stop),
        "system": result.system,
        "verified": result.verified,
        "probes": [p.to_json() for p in result.report.probes],
        "exact_probes": result.report.exact_count,
        "json_equivalent_probes": result.report.json_equivalent_count,
        "warnings": list(result.warnings),
        "tools_inert": result.tools_inert,
        "ollama_version": result.report.server_version,
        "thinking": thinking_json(result.report),
    } | extra


def modelfile_fragment(result: TranslatedTemplate) -> str:
    """TEMPLATE, PARAMETER stop and SYSTEM lines, quoted the way Ollama's parser reads them."""
    from ..modelfile import quote_value

    lines = [f"TEMPLATE {quote_value(result.template, what='TEMPLATE', prefer_block=True)}"]
    lines += [f"PARAMETER stop {quote_value(stop, what='stop')}" for stop in result.stop]
    if result.system is not None:
        lines.append(f"SYSTEM {quote_value(result.system, what='SYSTEM', prefer_block=True)}")
    return "\n".join(lines) + "\n"


def _first_difference(report: VerificationReport) -> str:
    failure = report.first_failure()
    if failure is None:
        return "no probe could be compared"
    return f"probe {failure.probe} differs at character {failure.position}"


def _summary(report: VerificationReport) -> None:
    ran = [p for p in report.probes if p.status != "skipped"]
    matched = sum(p.status == "match" for p in ran)
    verdict = "verified" if report.verified else "NOT verified"
    tiers = f" ({report.exact_count} exact, {report.json_equivalent_count} json_equivalent)"
    print_line(
        f"{verdict}: {matched}/{len(ran)} probes match{tiers}, "
        f"{len(report.probes) - len(ran)} skipped"
    )
    from ..chat_template.think_generations import thinking_note

    note = thinking_note(report.thinking_holds_for, default_off=report.thinking_default_off)
    if note is not None:
        print_line(f"warning: {note}")
    failure = report.first_failure()
    if failure is not None:
        print_line(
            f"first difference: probe {failure.probe} at character {failure.position}; "
            "run `deploy-to-ollama template diff` to see it"
        )


@template_app.command("diff", epilog=TEMPLATE_EXAMPLES)
def diff_command(
    source: SourceArg,
    against: Annotated[
        Path | None,
        typer.Option("--against", help="A Modelfile (its TEMPLATE and SYSTEM) or a TEMPLATE file."),
    ] = None,
    native: Annotated[
        bool,
        typer.Option(
            "--native",
            help="Compare with llama.cpp's Jinja engine (llama-server), "
            "the prompt of Ollama 0.30+'s native path, instead of a TEMPLATE.",
        ),
    ] = False,
    bos: BosOpt = None,
    eos: EosOpt = None,
    ollama_version: OllamaVersionOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show, per probe, transformers' and Ollama's prompt with the first difference marked."""
    if against is None and not native:
        fail(UsageError("Missing option '--against' (or --native)",
                        hint="`template diff SOURCE --against Modelfile`, or `... --native` to "
                        "compare with llama.cpp's Jinja engine"))  # fmt: skip
    if against is not None and native:
        fail(UsageError("--against and --native exclude each other",
                        hint="run `template diff` once with each"))  # fmt: skip
    from ..chat_template import load_template_source, verify_template

    version = checked_version(ollama_version)
    if against is None:
        _native_diff(load_template_source(source, bos=bos, eos=eos), source, json_out=json_out)
        return
    template, system = read_against(against)
    report = verify_template(
        load_template_source(source, bos=bos, eos=eos),
        template,
        system=system,
        server_version=version,
    )
    payload = {
        "verified": report.verified,
        "ollama_version": report.server_version,
        "probes": [
            p.to_json() | {"expected_text": p.expected, "actual_text": p.actual}
            for p in report.probes
        ],
    }
    if not json_out:
        _print_diff(report)
        _summary(report)
    if not report.verified:
        fail(
            TemplateMismatchError(
                f"{against} does not reproduce the chat template of {source}: "
                + _first_difference(report),
                hint="fix the TEMPLATE, or take the one `deploy-to-ollama template "
                f"{source}` prints",
            ),
            payload,
        )
    if json_out:
        print_result_json(payload)


def _native_diff(loaded: TemplateSource, source: Path, *, json_out: bool) -> None:
    """``diff --native``: transformers' and llama.cpp's prompt per probe; exit 3 if they differ."""
    from ..chat_template.native import NativeUnavailable

    report = run_native(loaded)
    if isinstance(report, NativeUnavailable):
        fail(
            TemplateMismatchError(
                f"native path unavailable for {source}: {report.reason}",
                hint="use the Go TEMPLATE route",
            ),
            report.to_json(),
        )
    payload = report.to_json() | {"probes": [
        p.to_json() | {"expected_text": p.expected, "actual_text": p.actual} for p in report.probes
    ]}  # fmt: skip
    ran = [p for p in report.probes if p.status != "skipped"]
    if not json_out:
        _print_diff(report, right="llama.cpp (native Jinja)")
        print_line(f"native {'verified' if report.verified else 'NOT verified'}: "
                   f"{sum(p.status == 'match' for p in ran)}/{len(ran)} probes match "
                   f"({report.exact} exact), {len(report.probes) - len(ran)} skipped")  # fmt: skip
    failure = report.first_failure()
    if failure is not None:
        fail(TemplateMismatchError(
            f"llama.cpp's Jinja engine renders the chat template of {source} differently from "
            f"transformers: probe {failure.probe} differs at character {failure.position}"
            + (f" ({failure.reason})" if failure.reason else ""),
            hint="deploy on the Go TEMPLATE route, which is verified separately",
        ), payload)  # fmt: skip
    if not report.verified:
        fail(TemplateMismatchError(f"no probe could be compared for {source} on llama.cpp",
                                   hint="check the chat template"), payload)  # fmt: skip
    if json_out:
        print_result_json(payload)


def read_against(path: Path) -> tuple[str, str | None]:
    """(TEMPLATE, SYSTEM) from a Modelfile, or the whole file as a TEMPLATE."""
    from ..modelfile import parse_modelfile

    if not path.is_file():
        raise InputNotFoundError(
            f"{path} does not exist", path=path, hint="pass a Modelfile or a TEMPLATE file"
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{path} is not UTF-8", hint="save it as UTF-8 text") from err
    if _looks_like_modelfile(text):
        modelfile = parse_modelfile(text)
        if modelfile.template is None:
            raise InputError(
                f"{path} has no TEMPLATE", hint="add a TEMPLATE, or pass the template file itself"
            )
        return modelfile.template, modelfile.system
    return text, None


def _looks_like_modelfile(text: str) -> bool:
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        return stripped.split()[0].upper() in {"FROM", "TEMPLATE", "SYSTEM", "PARAMETER"}
    return False


def _print_diff(
    report: VerificationReport | NativeReport, *, right: str = "Ollama (TEMPLATE)"
) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Console(file=sys.stdout, highlight=False, soft_wrap=False)
    for probe in report.probes:
        if probe.status == "skipped":
            out.print(f"[skipped] {probe.probe}: {probe.reason}", markup=False)
            continue
        if probe.status == "match":
            out.print(f"[match]   {probe.probe}", markup=False)
            continue
        where = f"at character {probe.position}" if probe.position is not None else ""
        out.print(f"[differs] {probe.probe} {where} {probe.reason or ''}".rstrip(), markup=False)
        table = Table("transformers (Jinja)", right, show_lines=False, expand=True)
        table.add_row(*_highlighted(probe))
        out.print(table)


def _highlighted(probe: ProbeResult | NativeProbeResult) -> tuple[Any, Any]:
    """Both renderings, the part from the first difference on in reverse video."""
    from rich.text import Text

    cells = []
    for text in (probe.expected or "", probe.actual or ""):
        at = probe.position if probe.position is not None else len(text)
        cell = Text(text[:at])
        cell.append(text[at:] or "⏎(end)", style="reverse")
        cells.append(cell)
    return cells[0], cells[1]
