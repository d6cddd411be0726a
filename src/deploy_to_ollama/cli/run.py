"""CLI commands of the run stage (registered on the shared app at import)."""

from __future__ import annotations
