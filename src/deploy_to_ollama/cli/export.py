"""CLI commands of the export stage (registered on the shared app at import)."""

from __future__ import annotations
