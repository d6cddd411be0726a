"""_fs.read_json_object: optional side files read as {} when missing, broken or not an object."""

from __future__ import annotations

from pathlib import Path

from deploy_to_ollama._fs import read_json_object


def test_read_json_object(tmp_path: Path) -> None:
    good, bad, array = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    good.write_text('{"temperature": 0.7}', encoding="utf-8")
    bad.write_text("{not json", encoding="utf-8")
    array.write_text("[1, 2]", encoding="utf-8")
    assert read_json_object(good) == {"temperature": 0.7}
    assert read_json_object(bad) == {}
    assert read_json_object(array) == {}
    assert read_json_object(tmp_path / "missing.json") == {}
