"""The export stamp computes its fingerprint only when a recorded export must be compared.

Why it matters: the fingerprint covers the SHA-256 of the input's weights; a first export (no
stamp under its stem) starts its converter while that hash runs, and asks for it only when it
records its first file. The key it records is the one an eager caller would have.
"""

from __future__ import annotations

from pathlib import Path

from deploy_to_ollama.gguf._stamp import ExportStamp


class _Key:
    """A fingerprint call that counts how often it is made."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return self.value


def test_nothing_recorded_needs_no_fingerprint(tmp_path: Path) -> None:
    key = _Key("fp-1")
    stamp = ExportStamp.open(tmp_path, "bot", key)
    planned = [tmp_path / "bot.Q4_K_M.gguf"]
    assert stamp.result(planned) is None
    assert stamp.finished(planned) == set()
    assert key.calls == 0


def test_recording_asks_once_and_keys_like_an_eager_stamp(tmp_path: Path) -> None:
    key = _Key("fp-1")
    out = tmp_path / "bot.Q4_K_M.gguf"
    out.write_bytes(b"GGUF")
    lazy = ExportStamp.open(tmp_path, "bot", key)
    lazy.record_result([out], {"name": "bot"})
    assert key.calls == 1
    assert ExportStamp.open(tmp_path, "bot", "fp-1").result([out]) == {"name": "bot"}
    assert ExportStamp.open(tmp_path, "bot", "fp-2").result([out]) is None


def test_a_recorded_export_is_compared_under_the_fingerprint(tmp_path: Path) -> None:
    out = tmp_path / "bot.Q4_K_M.gguf"
    out.write_bytes(b"GGUF")
    ExportStamp.open(tmp_path, "bot", "fp-1").record_result([out], {"name": "bot"})
    other = _Key("fp-2")
    assert ExportStamp.open(tmp_path, "bot", other).result([out]) is None
    assert other.calls == 1
    same = _Key("fp-1")
    assert ExportStamp.open(tmp_path, "bot", same).finished([out]) == {out}
    assert same.calls == 1
