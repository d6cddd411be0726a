"""CLI commands of the doctor stage (registered on the shared app at import)."""

from __future__ import annotations
