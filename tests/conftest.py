"""Test-wide environment isolation. Fixtures live in ``tests/support`` plugins."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins: list[str] = [
    "support.ollama_server",
    "support.llama_cpp",
    "support.llama_server",
    "support.go_oracle",
    "support.doctor_models",
    "support.models",
    "support.fake_hub",
    "support.push_folders",
    "support.taught_ollama",
    "support.imatrix_tools",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-goldens",
        action="store_true",
        default=False,
        help="rewrite golden files (modelfiles/, tests/golden/) instead of comparing",
    )


@pytest.fixture
def update_goldens(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-goldens"))


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Point every cache at tmp, force offline hub access, plain output."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DTO_CACHE_DIR", str(tmp_path / "dto_cache"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    _isolate_hf_constants(monkeypatch, tmp_path / "hf_home")


def _isolate_hf_constants(monkeypatch: pytest.MonkeyPatch, hf_home: Path) -> None:
    """huggingface_hub reads HF_HOME / HF_HUB_OFFLINE once, at import; point its constants at
    the same places as the variables above (as huggingface_hub's own tests patch them)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HOME", str(hf_home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
