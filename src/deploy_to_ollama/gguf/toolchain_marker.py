"""The marker that makes a toolchain dir finished: what was built, what failed and why.

Read by ``toolchain`` to trust a cached toolchain and by ``setup`` to complete one of an older
format (``untried_tools``); written last by a build, so a dir without it is never used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .toolchain_sources import LLAMA_CPP_COMMIT, LLAMA_CPP_PYTHON_VERSION

MARKER_FILE = ".dto-toolchain.json"
#: 2: ``setup`` also tried to build llama-server (the marker says whether it worked).
#: 3: and llama-perplexity and llama-imatrix (``tools`` / ``tool_errors`` say which worked).
MARKER_FORMAT = 3
SERVER_BINARY = "llama-server"
PERPLEXITY_BINARY = "llama-perplexity"
IMATRIX_BINARY = "llama-imatrix"
#: Optional binaries of the same build tree, in build order, with the marker format that first
#: tried each (a toolchain of an older format never tried it: ``setup`` completes it).
OPTIONAL_TOOLS: dict[str, int] = {SERVER_BINARY: 2, PERPLEXITY_BINARY: 3, IMATRIX_BINARY: 3}


@dataclass
class BuildReport:
    """What a build did: seconds per step and, for each optional tool that failed, why."""

    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    """CPU time of the step's tools: unlike wall time, it does not depend on how busy the
    machine was (wall time on an idle machine is about this divided by the build jobs)."""
    tool_errors: dict[str, str] = field(default_factory=dict)
    """Optional tool -> why it did not build (absent: built, or not tried by this build)."""
    patched: list[str] = field(default_factory=list)
    """Source files ``SOURCE_PATCHES`` changed in this build."""

    @property
    def server_error(self) -> str | None:
        """Why llama-server did not build, when it did not."""
        return self.tool_errors.get(SERVER_BINARY)


def untried_tools(marker: dict[str, object]) -> tuple[str, ...]:
    """The optional tools a toolchain with this marker never tried to build (older formats).

    >>> untried_tools({"format": 2})
    ('llama-perplexity', 'llama-imatrix')
    >>> untried_tools({"commit": "0c1e570"})  # format 1: from before llama-server
    ('llama-server', 'llama-perplexity', 'llama-imatrix')
    >>> untried_tools({"format": 3})
    ()
    >>> untried_tools({"format": 2, "tools": {"llama-perplexity": True, "llama-imatrix": False}})
    ()

    A tool the marker names (built or failed) was tried, whatever the format says: a marker
    rewritten for an older reader must not cost a rebuild.
    """
    fmt = marker.get("format", 1)
    version = fmt if isinstance(fmt, int) else 1
    tried = marker.get("tools")
    named = set(tried) if isinstance(tried, dict) else set()
    return tuple(
        tool for tool, since in OPTIONAL_TOOLS.items() if version < since and tool not in named
    )


def write_marker(
    staged: Path,
    report: BuildReport,
    *,
    earlier: dict[str, object] | None = None,
) -> None:
    """Write the marker that makes ``staged`` a finished toolchain (last step of a build).

    Every optional tool has been tried by then (built, or its error is in ``report``).
    ``earlier``: the marker of the toolchain this one completes (its build times are kept, this
    build's go under ``complete_seconds``).
    """
    marker: dict[str, object] = {
        "llama_cpp_python": LLAMA_CPP_PYTHON_VERSION,
        "commit": LLAMA_CPP_COMMIT,
        "format": MARKER_FORMAT,
        "server": (staged / SERVER_BINARY).is_file(),
        "server_error": report.server_error,
        "tools": {tool: (staged / tool).is_file() for tool in OPTIONAL_TOOLS},
        "tool_errors": {tool: report.tool_errors.get(tool) for tool in OPTIONAL_TOOLS},
        "patched": report.patched,
        "build_seconds": report.seconds,
        "build_cpu_seconds": report.cpu_seconds,
    }
    if earlier is not None:
        marker["build_seconds"] = earlier.get("build_seconds", {})
        marker["build_cpu_seconds"] = earlier.get("build_cpu_seconds", {})
        marker["complete_seconds"] = report.seconds
    (staged / MARKER_FILE).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")


def read_marker(root: Path) -> dict[str, object] | None:
    """The marker of a provisioned toolchain, or None when absent or unreadable."""
    try:
        data = json.loads((root / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
