"""Registrar: names, parameters, and registering with a real Ollama through the CLI and the API."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy_to_ollama.errors import (
    OllamaUnavailableError,
    OutputExistsError,
    RegistrationError,
    UsageError,
)
from deploy_to_ollama.modelfile import Modelfile
from deploy_to_ollama.ollama_client import (
    api_parameters,
    model_exists,
    server_version,
    show_model,
)
from deploy_to_ollama.registrar import register_model, validate_model_name
from support.ollama_server import OllamaServer, free_port, start_server, write_tiny_gguf

TEMPLATE = (
    "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n"
)


class Recorder:
    """A ProgressReporter that records calls and can run a hook on each (fault injection)."""

    def __init__(self, hook: Callable[[str, str], None] | None = None) -> None:
        self.events: list[tuple[str, str]] = []
        self.hook = hook

    def _record(self, event: str, key: str) -> None:
        self.events.append((event, key))
        if self.hook:
            self.hook(event, key)

    def start(self, key: str, description: str, total: float | None = None) -> None:
        self._record("start", key)

    def advance(self, key: str, amount: float = 1, *, completed: float | None = None) -> None:
        self._record("advance", key)

    def done(self, key: str, message: str | None = None) -> None:
        self._record("done", key)

    def keys(self, event: str) -> list[str]:
        return [k for e, k in self.events if e == event]


def _modelfile(**changes: Any) -> Modelfile:
    base: dict[str, Any] = {
        "from_": "./tiny.gguf",
        "template": TEMPLATE,
        "system": "Be brief.",
        "parameters": (("stop", "<|im_end|>"), ("num_thread", "1"), ("temperature", "0.25")),
    }
    return Modelfile(**(base | changes))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("my-model", "my-model:latest"),
        ("My_Model.v2:Q8_0", "My_Model.v2:Q8_0"),
        ("me/tiny", "me/tiny:latest"),
        ("example.com/me/tiny:1b", "example.com/me/tiny:1b"),
    ],
)
def test_valid_names_are_normalised_with_a_tag(name: str, expected: str) -> None:
    assert validate_model_name(name) == expected


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "empty"),
        ("bad name", "may hold only"),
        ("tiny:", "tag after ':' is empty"),
        ("a..b", "'..'"),
        ("my.ns/model", "namespace may not contain '.'"),
        ("h/n/m/x", "more than host/namespace/model"),
        ("x" * 129, "longer than 128"),
        ("über", "may hold only"),
    ],
)
def test_invalid_names_fail_with_one_line_and_a_hint(name: str, problem: str) -> None:
    with pytest.raises(UsageError, match=problem) as info:
        validate_model_name(name)
    assert "\n" not in str(info.value)
    assert info.value.hint and "my-model" in info.value.hint


def test_parameters_are_typed_for_the_api() -> None:
    typed = api_parameters(
        (("stop", "a"), ("num_ctx", "2048"), ("top_p", "0.9"), ("use_mmap", "false"), ("stop", "b"))
    )
    assert typed == {"stop": ["a", "b"], "num_ctx": 2048, "top_p": 0.9, "use_mmap": False}
    with pytest.raises(RegistrationError, match="unknown Ollama parameter 'bogus'"):
        api_parameters((("bogus", "1"),))
    with pytest.raises(RegistrationError, match="num_ctx"):
        api_parameters((("num_ctx", "lots"),))


def test_closed_port_gives_exit_4_and_says_how_to_start_ollama(tmp_path: Path) -> None:
    host = f"127.0.0.1:{free_port()}"
    with pytest.raises(OllamaUnavailableError) as info:
        server_version(host)
    assert info.value.exit_code == 4
    assert info.value.hint and "ollama serve" in info.value.hint
    with pytest.raises(OllamaUnavailableError):
        register_model("x", _modelfile(), base_dir=tmp_path, host=host, method="api")


# --------------------------------------------------------------------------- real server


@pytest.fixture
def model_dir(tmp_path: Path, tiny_gguf: Path) -> Path:
    (tmp_path / "tiny.gguf").symlink_to(tiny_gguf)
    return tmp_path


def _shown(server: OllamaServer, name: str) -> Any:
    shown = show_model(name, server.host)
    assert shown is not None
    return shown


@pytest.mark.ollama
@pytest.mark.parametrize("method", ["api", "cli"])
def test_register_through_each_path_gives_the_same_model(
    ollama_server: OllamaServer,
    model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
) -> None:
    monkeypatch.setenv("PATH", f"{ollama_server.runtime.bin_dir}:{ollama_server.env()['PATH']}")
    recorder = Recorder()
    reg = register_model(
        f"reg-{method}",
        _modelfile(messages=(("user", "hi"), ("assistant", "hello"))),
        base_dir=model_dir,
        host=ollama_server.host,
        method=method,  # type: ignore[arg-type]
        progress=recorder,
    )
    assert (reg.name, reg.method, reg.server_version, reg.replaced) == (
        f"reg-{method}:latest",
        method,
        "0.9.3",
        False,
    )
    shown = _shown(ollama_server, reg.name)
    assert shown["template"] == TEMPLATE
    assert shown["system"] == "Be brief."
    assert [(m["role"], m["content"]) for m in shown["messages"]] == [
        ("user", "hi"),
        ("assistant", "hello"),
    ]
    params = dict(line.split(None, 1) for line in shown["parameters"].splitlines())
    assert params == {"stop": '"<|im_end|>"', "num_thread": "1", "temperature": "0.25"}
    assert recorder.keys("start"), "progress was reported"
    if method == "api":
        assert "upload:tiny.gguf" in recorder.keys("start") or "hash:tiny.gguf" in recorder.keys(
            "done"
        )


@pytest.mark.ollama
def test_existing_model_needs_force(ollama_server: OllamaServer, model_dir: Path) -> None:
    register_model("reg-force", _modelfile(), base_dir=model_dir, host=ollama_server.host)
    with pytest.raises(OutputExistsError, match="already exists") as info:
        register_model(
            "reg-force", _modelfile(system="new"), base_dir=model_dir, host=ollama_server.host
        )
    assert info.value.hint and "--force" in info.value.hint
    assert _shown(ollama_server, "reg-force")["system"] == "Be brief."
    reg = register_model(
        "reg-force",
        _modelfile(system="new"),
        base_dir=model_dir,
        host=ollama_server.host,
        force=True,
    )
    assert reg.replaced
    assert _shown(ollama_server, "reg-force")["system"] == "new"


@pytest.mark.ollama
def test_template_no_modelfile_can_carry_goes_through_the_api(
    ollama_server: OllamaServer, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", f"{ollama_server.runtime.bin_dir}:{ollama_server.env()['PATH']}")
    template = 'say """\n{{ .Prompt }}'
    reg = register_model(
        "reg-quotes", _modelfile(template=template), base_dir=model_dir, host=ollama_server.host
    )
    assert reg.method == "api"
    assert _shown(ollama_server, reg.name)["template"] == template


@pytest.mark.ollama
@pytest.mark.parametrize("method", ["api", "cli"])
def test_ollama_refusal_is_a_registration_error_and_registers_nothing(
    ollama_server: OllamaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    monkeypatch.setenv("PATH", f"{ollama_server.runtime.bin_dir}:{ollama_server.env()['PATH']}")
    (tmp_path / "broken.gguf").write_text("this is not a GGUF file\n")
    with pytest.raises(RegistrationError) as info:
        register_model(
            f"reg-broken-{method}",
            _modelfile(from_="./broken.gguf"),
            base_dir=tmp_path,
            host=ollama_server.host,
            method=method,  # type: ignore[arg-type]
        )
    assert "\n" not in str(info.value)
    assert not model_exists(f"reg-broken-{method}", ollama_server.host)


# --------------------------------------------------------------------------- faults


@pytest.fixture(scope="module")
def fault_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OllamaServer]:
    """A server of our own: these tests kill it."""
    from support.ollama_server import ProvisioningError
    from support.policy import skip_or_fail

    try:
        server = start_server(tmp_path_factory.mktemp("fault-ollama"))
    except ProvisioningError as err:
        skip_or_fail(f"test Ollama server unavailable: {err}")
        raise
    yield server
    server.stop()


@pytest.fixture(scope="module")
def big_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 11 MB, so that an upload takes several chunks (head width 256 runs here)."""
    folder = tmp_path_factory.mktemp("big")
    return write_tiny_gguf(folder / "big.gguf", n_embd=512, n_head=2)


def _killer(server: OllamaServer, when: Callable[[str, str], bool]) -> Callable[[str, str], None]:
    fired: list[bool] = []

    def hook(event: str, key: str) -> None:
        if not fired and when(event, key):
            fired.append(True)
            server.kill()

    return hook


@pytest.mark.ollama
@pytest.mark.parametrize(
    ("phase", "when"),
    [
        ("upload", lambda e, k: e == "advance" and k.startswith("upload:")),
        ("create", lambda e, k: e == "start" and k.startswith("create:")),
    ],
)
def test_server_killed_mid_registration_then_rerun_succeeds(
    fault_server: OllamaServer,
    big_gguf: Path,
    tmp_path: Path,
    phase: str,
    when: Callable[[str, str], bool],
) -> None:
    (tmp_path / "tiny.gguf").symlink_to(big_gguf)
    name = f"fault-{phase}"
    try:
        with pytest.raises(OllamaUnavailableError) as info:
            register_model(
                name,
                _modelfile(),
                base_dir=tmp_path,
                host=fault_server.host,
                method="api",
                progress=Recorder(_killer(fault_server, when)),
            )
        assert "\n" not in str(info.value)
        assert info.value.exit_code == 4
    finally:
        fault_server.restart()
    shown = show_model(name, fault_server.host)
    if phase == "upload":
        assert shown is None, "nothing half-registered"
    elif shown is not None:
        # Ollama writes the manifest last: if the kill came after it, the model is whole.
        assert shown["template"] == TEMPLATE
    reg = register_model(
        name, _modelfile(), base_dir=tmp_path, host=fault_server.host, force=shown is not None
    )
    assert model_exists(reg.name, fault_server.host)
    listing = fault_server.ollama_cli("list").stdout
    assert f"{name}:latest" in listing, json.dumps(listing)
