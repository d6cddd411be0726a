"""CLI commands of the deploy stage (registered on the shared app at import)."""

from __future__ import annotations
