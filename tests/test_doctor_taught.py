"""Doctor end to end on a model that really answers: the taught fixture (its LoRA says "banana")
registered with a TEMPLATE of another family is diagnosed, and ``--fix`` makes it answer right."""

from __future__ import annotations

import json
from typing import Any

import pytest

from deploy_to_ollama.cli import main
from support.taught_ollama import taught_in_ollama  # noqa: F401  session fixture

pytestmark = [pytest.mark.slow, pytest.mark.ollama]


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return int(info.value.code or 0), json.loads(capsys.readouterr().out)


def test_wrong_family_diagnosed_and_fixed_with_a_full_round_trip(
    taught_in_ollama: Any,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    taught = taught_in_ollama
    common = ["--source", str(taught.adapter_dir), "--host", taught.host, "--json"]
    code, doc = _main(["doctor", taught.name, *common], capsys)
    assert code == 0 and doc["diagnoses"] == [], doc["diagnoses"]

    code, doc = _main(["doctor", taught.wrong_name, *common], capsys)
    assert code == 3
    mismatch = doc["diagnoses"][0]
    assert mismatch["code"] == "template_mismatch"
    assert "another model family" in mismatch["evidence"][0]

    fixed = "doctor-taught-fixed"
    code, doc = _main(["doctor", taught.wrong_name, *common, "--fix", "--name", fixed], capsys)
    round_trip = doc["fix"]["round_trip"]
    assert code == 0, round_trip["problems"]
    assert round_trip["passed"] and round_trip["render_verified"]
    assert round_trip["generation"]["done_reason"] == "stop"
    assert round_trip["generation"]["answer"].strip() == "banana"
