"""``deploy-report.json``: what a deploy proved, written beside its Modelfile so it travels.

Why a file: a model that is pushed (to the Hub or an Ollama registry) loses the terminal output
that said whether its template was verified. The report keeps the facts a puller needs (probes
and whether each matched, the Ollama version the check ran on, the round trip's verdict, the
capabilities Ollama derives from the TEMPLATE) and ``summary_markdown`` turns them into the
short section the model card shows. Every value is copied from the run's own results; nothing
here decides a verdict.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._fs import read_json_object, write_text_atomic
from ._version import __version__
from .capabilities import go_template_capabilities
from .errors import InputError, InputNotFoundError
from .modelfile import parse_modelfile

if TYPE_CHECKING:
    from .reports import DeployReport
    from .roundtrip import RoundTripReport

REPORT_NAME = "deploy-report.json"
SCHEMA = 1


def report_data(report: DeployReport) -> dict[str, Any]:
    """The JSON document of ``report`` (see the module docstring for why these fields)."""
    modelfile = parse_modelfile(report.modelfile.read_text(encoding="utf-8"))
    rt = report.round_trip
    data = {
        "schema": SCHEMA,
        "tool": f"deploy-to-ollama {__version__}",
        "model": report.name,
        "quant": report.quant,
        "gguf_bytes": report.gguf_bytes,
        "template": {"verified": report.template_verified},
        "probes": [{"probe": p.probe, "matched": p.matched} for p in rt.probes] if rt else [],
        "capabilities": list(report.route.capabilities)
        if report.route
        else ["completion", *go_template_capabilities(modelfile.template)],
        "template_route": report.route.to_json() if report.route else None,
        "ollama_versions_checked": [rt.server_version] if rt else [],
        "thinking_holds_for": report.to_dict()["thinking_holds_for"],
        "round_trip": _round_trip_data(rt, full=True),
        "warnings": list(report.warnings),
    }
    return data | _quant_data(report.gguf) | _adapter_data(report)


#: What llama-quantize (and our quantizer, byte for byte) records in a GGUF quantized with an
#: importance matrix, under ``quantize.imatrix.``; the report's names for them.
_IMATRIX_KEYS = {"file": "file", "dataset": "dataset", "entries_count": "entries",
                 "chunks_count": "chunks"}  # fmt: skip


def _quant_data(gguf: Path) -> dict[str, Any]:
    """``imatrix`` read from the deployed GGUF's header and ``quality`` from ``quality.json``
    beside it (``export --measure``): only what the file itself carries, so a report never
    claims an imatrix or numbers of another file.
    """
    out: dict[str, Any] = {}
    if (imatrix := gguf_imatrix(gguf)) is not None:
        out["imatrix"] = imatrix
    if (quality := measured_quality(gguf)) is not None:
        out["quality"] = quality
    return out


def gguf_imatrix(path: Path) -> dict[str, Any] | None:
    """The ``quantize.imatrix.*`` facts of the GGUF at ``path``; None without (or unreadable)."""
    if path.suffix.lower() != ".gguf" or not path.is_file():
        return None
    import gguf

    try:
        fields = gguf.GGUFReader(str(path)).fields
    except (ValueError, OSError, IndexError):
        return None
    found: dict[str, Any] = {}
    for key, name in _IMATRIX_KEYS.items():
        field = fields.get(f"quantize.imatrix.{key}")
        if field is not None:
            value = field.contents()
            found[name] = int(value) if isinstance(value, int) else str(value)
    return found or None


def measured_quality(path: Path) -> dict[str, Any] | None:
    """``path``'s row of the ``quality.json`` beside it, with what it was measured against.

    None when there is none, or when the row was measured on a file of another size (the GGUF
    was re-exported since without ``--measure``).
    """
    from .measuring import QUALITY_FILE

    try:
        data = json.loads((path.parent / QUALITY_FILE).read_text(encoding="utf-8"))
        row = data["files"][path.name]
        if row.get("bytes") != path.stat().st_size:
            return None
        return {
            "kl_mean": row["kl_mean"],
            "kl_median": row["kl_median"],
            "kl_p99": row["kl_p99"],
            "top1": row["top1"],
            "perplexity": row["perplexity"],
            "reference": data["reference"],
            "reference_perplexity": data["reference_perplexity"],
            "eval": data["eval"],
            "tokens": data["tokens"],
            "tool": data["tool"],
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _adapter_data(report: DeployReport) -> dict[str, Any]:
    """``deploy --mode adapter``: the base it runs on, what was uploaded, the base's check."""
    facts = report.adapter
    if facts is None:
        return {}
    return {
        "adapter": {
            "base_model": facts.base_model,
            "base_check": facts.base_check,
            "upload": dict(facts.upload),
            "base_round_trip": _round_trip_data(facts.base_round_trip, full=False),
        }
    }


def _round_trip_data(rt: RoundTripReport | None, *, full: bool) -> dict[str, Any] | None:
    """A round trip's verdict; ``full`` adds how it was checked and the whole generation.

    The base's check in ``--mode adapter`` is shown short (verdict and answer): the puller
    needs to know the base held, the fine-tune's own round trip carries the details.
    """
    if rt is None:
        return None
    gen = rt.generation
    data: dict[str, Any] = {"verdict": rt.verdict, "passed": rt.passed}
    if not full:
        return data | {"answer": gen.answer if gen is not None else None}
    return data | {
        "render_method": rt.render_method,
        "render_verified": rt.render_verified,
        "reference": rt.reference,
        "problems": list(rt.problems),
        "generation": None
        if gen is None
        else {
            "question": gen.question,
            "answer": gen.answer,
            "done_reason": gen.done_reason,
            "prompt_eval_count": gen.prompt_eval_count,
            "expected_prompt_tokens": gen.expected_prompt_tokens,
        },
    }


def write_deploy_report(report: DeployReport) -> Path:
    """Write ``deploy-report.json`` beside ``report.modelfile`` (atomically) and return it."""
    path = report.modelfile.parent / REPORT_NAME
    write_text_atomic(path, json.dumps(report_data(report), indent=2) + "\n")
    return path


def read_report_for(path: Path, model: str) -> bytes:
    """The bytes of ``path``, refused unless it is a deploy report of ``model``.

    Raises:
        InputNotFoundError: there is no such file (exit 1).
        InputError: it is no deploy report, or the report of another model (exit 1).
    """
    if not path.is_file():
        raise InputNotFoundError(
            f"--report {path} does not exist",
            path=path,
            hint="deploy writes deploy-report.json beside the model's Modelfile (see --keep)",
        )
    data = read_json_object(path)
    if "template" not in data or "model" not in data:
        raise InputError(
            f"--report {path} is not a deploy-report.json",
            hint="pass the deploy-report.json that deploy wrote beside the model's Modelfile",
        )
    if _with_tag(str(data["model"])) != _with_tag(model):
        raise InputError(
            f"--report {path} is the report of {data['model']!r}, not of {model!r}",
            hint="pass the report of the model you push",
        )
    return path.read_bytes()


def _with_tag(name: str) -> str:
    """Ollama's default tag made explicit, case folded as Ollama compares names.

    >>> _with_tag("Bot"), _with_tag("127.0.0.1:5000/t/bot:v1")
    ('bot:latest', '127.0.0.1:5000/t/bot:v1')
    """
    return (name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest").lower()


def summary_markdown(data: dict[str, Any]) -> str:
    """A short human summary of a ``deploy-report.json`` for a model card.

    >>> print(summary_markdown({"template": {"verified": False}, "probes": [],
    ...     "ollama_versions_checked": [], "round_trip": None, "capabilities": ["completion"]}))
    - Chat template: **NOT verified**
    - Round trip: not run
    - Capabilities (from the TEMPLATE): completion
    """
    probes = data.get("probes") or []
    template = "verified" if (data.get("template") or {}).get("verified") else "**NOT verified**"
    if probes:
        matched = sum(1 for p in probes if p.get("matched"))
        template += f" ({matched}/{len(probes)} probe conversations render identically)"
    rt = data.get("round_trip")
    versions = ", ".join(data.get("ollama_versions_checked") or [])
    check = "not run" if rt is None else f"{rt.get('verdict')} on Ollama {versions}"
    lines = [f"- Chat template: {template}", f"- Round trip: {check}"]
    gen = (rt or {}).get("generation")
    if gen and gen.get("prompt_eval_count") is not None:
        lines.append(
            f"- Prompt tokens: {gen['prompt_eval_count']} in Ollama vs "
            f"{gen.get('expected_prompt_tokens')} in transformers"
        )
    lines += _quant_lines(data)
    adapter = data.get("adapter")
    if isinstance(adapter, dict):
        base_rt = adapter.get("base_round_trip") or {}
        verdict = base_rt.get("verdict", "not run")
        lines.append(f"- Adapter on base `{adapter.get('base_model')}`: base round trip {verdict}")
    capabilities = ", ".join(data.get("capabilities") or []) or "none"
    lines.append(f"- Capabilities (from the TEMPLATE): {capabilities}")
    held = data.get("thinking_holds_for")
    if held:  # a generation of Ollama treats a request without think its own way
        lines.append(f"- Thinking verified for Ollama {', '.join(held)}")
    return "\n".join(lines)


def _quant_lines(data: dict[str, Any]) -> list[str]:
    """The card's lines for the imatrix and the measured quality, when the report has them.

    >>> lines = _quant_lines({"imatrix": {"dataset": "wiki.txt", "entries": 154},
    ...     "quality": {"kl_mean": 0.0123, "top1": 0.95, "perplexity": 7.1, "tokens": 2040,
    ...     "eval": "wiki.txt", "reference": "m.F16.gguf", "reference_perplexity": 7.0}})
    >>> lines[0]
    '- Quantized with an importance matrix: 154 entries, computed on wiki.txt'
    >>> lines[1][:60]
    '- Quality (measured): KL mean 0.01230, top-1 95.00%, perplex'
    >>> _quant_lines({})
    []
    """
    lines = []
    imatrix = data.get("imatrix")
    if isinstance(imatrix, dict):
        on = f", computed on {imatrix['dataset']}" if imatrix.get("dataset") else ""
        lines.append(
            f"- Quantized with an importance matrix: {imatrix.get('entries', '?')} entries{on}"
        )
    q = data.get("quality")
    if isinstance(q, dict):
        lines.append(
            f"- Quality (measured): KL mean {q['kl_mean']:.5f}, top-1 {q['top1']:.2%}, "
            f"perplexity {q['perplexity']:.4f} ({q['reference']}: "
            f"{q['reference_perplexity']:.4f}) over {q['tokens']:,} tokens of {q['eval']}"
        )
    return lines


__all__ = [
    "REPORT_NAME",
    "gguf_imatrix",
    "measured_quality",
    "read_report_for",
    "report_data",
    "summary_markdown",
    "write_deploy_report",
]
