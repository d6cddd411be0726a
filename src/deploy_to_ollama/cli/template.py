"""CLI commands of the template stage (registered on the shared app at import)."""

from __future__ import annotations
