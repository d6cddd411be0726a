"""Export stamps: the resume record beside the GGUFs (``resume.StateFile`` format).

The stamp is keyed by the input's content key plus the quants, mode, name and tool versions.
Each GGUF is recorded (name, size, mtime) as soon as it is under its final name, so a rerun of
an interrupted export keeps the finished quants and makes only the rest; once every file is
written the result is recorded too and an identical rerun reuses the whole export. A changed
input still needs ``--force``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..resume import StateFile

logger = logging.getLogger(__name__)

#: Bump when the stamp layout or what the fingerprint covers changes.
STAMP_FORMAT = 2
_STAGE = "export"


def stamp_path(out_dir: Path, stem: str) -> Path:
    """Hidden (``select_files`` and Ollama ignore it), one per stem so exports can share a dir.

    >>> stamp_path(Path("out"), "bot").name
    '.bot.dto-export.json'
    """
    return out_dir / f".{stem}.dto-export.json"


@dataclass
class ExportStamp:
    """The resume record of one export (``stem`` in ``out_dir``) for one fingerprint.

    ``key`` is the fingerprint or the call that computes it, made on first use: with no
    export recorded under this stem nothing can be reused whatever the key, so a first export
    needs it only when its first file is recorded (the caller hashes the input meanwhile).
    """

    state: StateFile
    key: str | Callable[[], str]

    @classmethod
    def open(cls, out_dir: Path, stem: str, fingerprint: str | Callable[[], str]) -> ExportStamp:
        state = StateFile.load(out_dir, stamp_path(out_dir, stem).name)
        return cls(state, fingerprint)

    @property
    def fingerprint(self) -> str:
        if not isinstance(self.key, str):
            self.key = self.key()
        return self.key

    def _entry(self) -> dict[str, Any] | None:
        if not isinstance(self.state.data.get(_STAGE), dict):
            return None  # nothing recorded: no fingerprint needed to say so
        entry = self.state.get(_STAGE, self.fingerprint)
        if entry is None or entry.get("format") != STAMP_FORMAT:
            return None
        return entry

    def finished(self, planned: Iterable[Path]) -> set[Path]:
        """The planned files an earlier run of this export wrote and nobody changed since."""
        entry = self._entry()
        if entry is None:
            return set()
        recorded = {o["name"]: o for o in entry.get("outputs", []) if isinstance(o, dict)}
        done: set[Path] = set()
        for target in planned:
            mark = recorded.get(target.name)
            if mark is None or not target.is_file():
                continue
            stat = target.stat()
            if (stat.st_size, stat.st_mtime_ns) == (mark.get("size"), mark.get("mtime_ns")):
                done.add(target)
            else:
                logger.info("%s changed since it was exported", target)
        return done

    def result(self, planned: Sequence[Path]) -> dict[str, Any] | None:
        """The recorded result when the whole export is done and its outputs are untouched."""
        entry = self._entry()
        if entry is None or not isinstance(entry.get("result"), dict):
            return None
        if self.finished(planned) != set(planned):
            return None
        recorded = sorted(o.get("name") for o in entry.get("outputs", []))
        if recorded != sorted(p.name for p in planned):
            return None
        result: dict[str, Any] = entry["result"]
        return result

    def record_file(self, path: Path) -> None:
        """Note one finished output (called right after it got its final name)."""
        entry = self._entry() or {"format": STAMP_FORMAT, "outputs": [], "result": None}
        outputs = [o for o in entry.get("outputs", []) if o.get("name") != path.name]
        stat = path.stat()
        outputs.append({"name": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
        values = {k: v for k, v in entry.items() if k != "key"}
        values["outputs"] = outputs
        self.state.put(_STAGE, self.fingerprint, **values)

    def record_result(self, files: Sequence[Path], result: dict[str, Any]) -> None:
        """Note the whole export as done: exactly ``files``, with ``result``."""
        for path in files:
            self.record_file(path)
        entry = self._entry() or {}
        names = {p.name for p in files}
        outputs = [o for o in entry.get("outputs", []) if o.get("name") in names]
        self.state.put(
            _STAGE, self.fingerprint, format=STAMP_FORMAT, outputs=outputs, result=result
        )


__all__ = ["STAMP_FORMAT", "ExportStamp", "stamp_path"]
