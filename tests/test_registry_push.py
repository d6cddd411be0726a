"""``push NAME --to-ollama HOST/NAMESPACE/MODEL``: publish to a real registry, pull elsewhere.

The registry is Debian's ``docker-registry`` (CNCF distribution 2.8) on 127.0.0.1, started per
test by ``support.registry``; the Ollama servers are real 0.9.3 builds. The stand-ins are the
static file server the registry redirects blob downloads to (see ``support.registry`` for why
Ollama 0.9.3 cannot pull without that redirect) and, in the bearer-auth case, the ``/token``
file it also serves.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy_to_ollama.errors import RegistryError, UsageError
from deploy_to_ollama.ollama_client import OllamaClient, parse_target, push_to_registry
from deploy_to_ollama.ollama_client.registry import MANIFEST_V2, RegistryWriter
from deploy_to_ollama.roundtrip import check_round_trip
from support.ollama_server import (
    TINY_OLLAMA_TEMPLATE,
    OllamaServer,
    free_port,
    start_server,
    write_tiny_gguf,
)
from support.registry import Registry, running_registry

pytestmark = pytest.mark.ollama


def _cli(server: OllamaServer, *args: str, path: bool = True) -> subprocess.CompletedProcess[str]:
    """``deploy-to-ollama ARGS`` against ``server`` (with or without the ollama CLI on PATH)."""
    env = server.env()
    if not path:
        env["PATH"] = os.defpath
    return subprocess.run(
        [sys.executable, "-m", "deploy_to_ollama", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _register(server: OllamaServer, gguf: Path, name: str) -> None:
    """A chat model from ``gguf`` with the tiny ChatML TEMPLATE (``ollama create``)."""
    modelfile = gguf.with_suffix(".Modelfile")
    template = TINY_OLLAMA_TEMPLATE.replace('"', '\\"')
    modelfile.write_text(
        f'FROM {gguf}\nTEMPLATE """{template}"""\nPARAMETER stop <|im_end|>\n'
        "PARAMETER num_thread 1\n"
    )
    proc = server.ollama_cli("create", name, "-f", str(modelfile))
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def source_model(ollama_server: OllamaServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("push-src")
    _register(ollama_server, write_tiny_gguf(folder / "push.gguf", seed=7), "push-src")
    return "push-src"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with running_registry(tmp_path / "registry") as reg:
        yield reg


@pytest.fixture
def second_server(tmp_path: Path) -> Iterator[OllamaServer]:
    """Another Ollama with its own OLLAMA_MODELS: the machine that pulls."""
    server = start_server(tmp_path / "puller")
    try:
        yield server
    finally:
        server.stop()


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, proc.stderr
    assert any(line.startswith("Hint: ") for line in proc.stderr.splitlines()), proc.stderr
    return errors[0]


# --------------------------------------------------------------------------- push, pull, prove


@pytest.mark.slow
def test_push_then_pull_into_a_second_server_round_trips(
    ollama_server: OllamaServer,
    source_model: str,
    registry: Registry,
    second_server: OllamaServer,
    tiny_tokenizer_dir: Path,
) -> None:
    target = f"{registry.address}/team/tiny:v1"
    first = _cli(ollama_server, "push", source_model, "--to-ollama", target, "--insecure", "--json")
    assert first.returncode == 0, first.stderr
    pushed = json.loads(first.stdout)
    layers: dict[str, int] = pushed["layers"]
    total = sum(layers.values())
    assert pushed["method"] == "cli" and len(layers) == 4  # config, model, template, params
    assert pushed["upload"] == {"bytes_uploaded": total, "bytes_reused": 0}
    # The registry serves exactly these blobs under the tag (complete manifest).
    assert registry.catalog() == ["team/tiny"] and registry.tags("team/tiny") == ["v1"]
    manifest = registry.get_json("/v2/team/tiny/manifests/v1", accept=MANIFEST_V2)
    assert {str(x["digest"]) for x in [manifest["config"], *manifest["layers"]]} == set(layers)  # type: ignore[list-item, index]

    # A rerun sends nothing: every blob is skipped by digest.
    again = _cli(ollama_server, "push", source_model, "--to-ollama", target, "--insecure", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["upload"] == {"bytes_uploaded": 0, "bytes_reused": total}

    # The second machine pulls it and gets the same manifest digest ...
    theirs = OllamaClient(second_server.host)
    steps = list(theirs.pull(target, insecure=True))  # /api/pull through our client
    assert steps[-1].status == "success"
    pulled = {step.digest for step in steps if step.digest}
    assert pulled == set(layers)  # every blob came down from the registry
    digests = {m.model: m.digest for m in theirs.list().models}
    assert f"sha256:{digests[target]}" == pushed["manifest_digest"]
    # ... and the round trip runs there: the prompt is transformers' rendering, token for token,
    # and the answer is the source server's answer (same weights, temperature 0, same seed).
    second_server.mark_log()
    report = check_round_trip(
        target, host=second_server.host, source=tiny_tokenizer_dir, probes=(), num_predict=6
    )
    gen = report.generation
    assert gen is not None and not gen.warnings
    assert gen.prompt_eval_count == gen.expected_prompt_tokens
    assert len(second_server.prompts()) == 1
    mine = OllamaClient(ollama_server.host).chat(
        source_model,
        [{"role": "user", "content": gen.question}],
        options={"temperature": 0, "seed": 42, "num_predict": 6},
    )
    assert gen.answer == (mine.message.content or "").strip()


@pytest.mark.slow
def test_ollama_0_9_3_cannot_pull_from_a_registry_that_serves_blobs_inline(
    ollama_server: OllamaServer, source_model: str, second_server: OllamaServer, tmp_path: Path
) -> None:
    """Why the tests' registry redirects blob downloads (support/registry.py): without it the
    push works and every pull fails (server/download.go returns ``resp.Location()``)."""
    with running_registry(tmp_path / "inline", redirect=False) as reg:
        target = f"{reg.address}/team/tiny:v1"
        pushed = _cli(ollama_server, "push", source_model, "--to-ollama", target, "--insecure")
        assert pushed.returncode == 0, pushed.stderr
        with pytest.raises(RegistryError, match="no Location header in response"):
            list(OllamaClient(second_server.host).pull(target, insecure=True))
        assert not OllamaClient(second_server.host).exists(target)


@pytest.mark.slow
def test_api_path_pushes_a_new_tag_reusing_every_blob(
    ollama_server: OllamaServer, source_model: str, registry: Registry, tmp_path: Path
) -> None:
    client = OllamaClient(ollama_server.host)
    first = push_to_registry(
        client,
        source_model,
        parse_target(f"{registry.address}/team/tiny:a"),
        insecure=True,
        method="api",
    )
    assert first.method == "api" and first.bytes_reused == 0
    assert first.bytes_uploaded == first.bytes_total > 300_000
    # Same model, another tag: the registry already has every blob.
    second = push_to_registry(
        client,
        source_model,
        parse_target(f"{registry.address}/team/tiny:b"),
        insecure=True,
        method="api",
    )
    assert (second.bytes_uploaded, second.bytes_reused) == (0, first.bytes_total)
    # Another model of the same repository: only its own blobs move.
    _register(ollama_server, write_tiny_gguf(tmp_path / "other.gguf", seed=8), "push-other")
    third = push_to_registry(
        client,
        "push-other",
        parse_target(f"{registry.address}/team/tiny:c"),
        insecure=True,
        method="api",
    )
    shared = set(third.layers) & set(first.layers)
    assert third.bytes_reused == sum(third.layers[d] for d in shared) > 0  # template, params
    assert third.bytes_uploaded > 300_000  # its weights
    assert sorted(registry.tags("team/tiny")) == ["a", "b", "c"]


@pytest.mark.slow
@pytest.mark.parametrize("path", [True, False], ids=["cli", "api"])
def test_text_output_has_a_line_per_blob_and_the_byte_counts(
    ollama_server: OllamaServer, source_model: str, registry: Registry, path: bool
) -> None:
    target = f"{registry.address}/team/tiny:text"
    proc = _cli(ollama_server, "push", source_model, "--to-ollama", target, "--insecure", path=path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{target}\n"
    manifest = registry.get_json("/v2/team/tiny/manifests/text", accept=MANIFEST_V2)
    blobs = [manifest["config"], *manifest["layers"]]  # type: ignore[list-item]
    for blob in blobs:
        assert f"pushing {str(blob['digest'])[7:19]}" in proc.stderr, proc.stderr  # type: ignore[index]
    total = sum(int(blob["size"]) for blob in blobs)  # type: ignore[index]
    assert f"pushed {target} (4 blobs, {total} bytes uploaded, 0 reused by digest)" in proc.stderr


@pytest.mark.slow
def test_deploy_report_travels_beside_the_tag(
    ollama_server: OllamaServer, source_model: str, registry: Registry, tmp_path: Path
) -> None:
    report = tmp_path / "deploy-report.json"
    data = {"model": "push-src:latest", "template": {"verified": False}, "probes": []}
    report.write_text(json.dumps(data))
    target = f"{registry.address}/team/tiny:r"
    args = ("push", source_model, "--to-ollama", target, "--insecure", "--json")
    proc = _cli(ollama_server, *args, "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["report_tag"] == "r.deploy-report"
    assert sorted(registry.tags("team/tiny")) == ["r", "r.deploy-report"]
    writer = RegistryWriter(parse_target(target), insecure=True)
    assert writer.read_report() == data  # through the registry's blob redirect, byte for byte

    other = tmp_path / "other.json"
    other.write_text(json.dumps(data | {"model": "someone-else"}))
    target = f"{registry.address}/team/wrong:r"
    refused = _cli(ollama_server, *args[:3], target, "--insecure", "--report", str(other))
    assert refused.returncode == 1
    assert "is the report of 'someone-else', not of 'push-src'" in _one_line_error(refused)
    assert registry.tags("team/wrong") == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "moment",
    ["POST /v2/team/big/blobs/uploads/", "PUT /v2/team/big/blobs/uploads/"],
    ids=["during-the-weights", "after-the-weights"],
)
def test_push_killed_with_kill_9_leaves_no_tag_and_a_rerun_completes(
    ollama_server: OllamaServer, registry: Registry, tmp_path: Path, moment: str
) -> None:
    """Kill the push while the weights upload (nothing to reuse) or right after they landed
    (the rerun skips them by digest and sends only the small blobs)."""
    _register(ollama_server, write_tiny_gguf(tmp_path / "big.gguf", n_embd=512, seed=9), "big")
    target = f"{registry.address}/team/big:v1"
    log = registry.workdir / "registry.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy_to_ollama", "push", "big", "--to-ollama", target,
         "--insecure", "--json"],
        env=ollama_server.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    # Freeze the registry at that moment (its access log shows the first blob's request),
    # kill the push (its whole process group, the ollama CLI included), let the registry go on.
    assert registry.process is not None
    deadline = time.monotonic() + 120
    while moment not in log.read_text(errors="replace"):
        assert proc.poll() is None and time.monotonic() < deadline, registry.log_tail()
        time.sleep(0.005)
    os.kill(registry.process.pid, signal.SIGSTOP)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    os.kill(registry.process.pid, signal.SIGCONT)
    assert proc.returncode == -signal.SIGKILL
    # Nothing half-pushed is served as a model: no tag, no manifest.
    assert registry.tags("team/big") == []
    assert registry.status("/v2/team/big/manifests/v1") == 404

    rerun = _cli(ollama_server, "push", "big", "--to-ollama", target, "--insecure", "--json")
    assert rerun.returncode == 0, rerun.stderr
    result = json.loads(rerun.stdout)
    layers: dict[str, int] = result["layers"]
    weights = max(layers.values())
    uploaded, reused = result["upload"]["bytes_uploaded"], result["upload"]["bytes_reused"]
    assert uploaded + reused == sum(layers.values()) and weights > 10_000_000
    if moment.startswith("PUT"):  # the weights were committed before the kill
        assert (uploaded, reused) == (sum(layers.values()) - weights, weights)
    assert registry.tags("team/big") == ["v1"]


# --------------------------------------------------------------------------- refusals


def test_insecure_is_refused_for_a_remote_registry(ollama_server: OllamaServer) -> None:
    proc = _cli(ollama_server, "push", "x", "--to-ollama", "registry.example.com/t/m", "--insecure")
    assert proc.returncode == 2
    assert "only for a registry on this machine" in _one_line_error(proc)
    with pytest.raises(UsageError):
        push_to_registry(
            OllamaClient(ollama_server.host), "x", parse_target("10.0.0.1:5000/t/m"), insecure=True
        )


def test_target_must_be_host_namespace_model(ollama_server: OllamaServer) -> None:
    proc = _cli(ollama_server, "push", "x", "--to-ollama", "team/model")
    assert proc.returncode == 2
    assert "HOST/NAMESPACE/MODEL" in _one_line_error(proc)
    assert _cli(ollama_server, "push", "x").returncode == 2  # neither --repo nor --to-ollama


def test_unreachable_registry_exits_4(ollama_server: OllamaServer, source_model: str) -> None:
    target = f"127.0.0.1:{free_port()}/team/tiny"
    proc = _cli(ollama_server, "push", source_model, "--to-ollama", target, "--insecure")
    assert proc.returncode == 4
    assert "cannot reach the registry" in _one_line_error(proc)
    assert not OllamaClient(ollama_server.host).exists(f"{target}:latest")  # nothing copied


def test_missing_model_exits_1(ollama_server: OllamaServer, registry: Registry) -> None:
    target = f"{registry.address}/team/none"
    proc = _cli(ollama_server, "push", "no-such-model", "--to-ollama", target, "--insecure")
    assert proc.returncode == 1
    assert "no-such-model" in _one_line_error(proc)
    assert registry.catalog() == []


def _stored_tags(registry: Registry, repository: str) -> list[str]:
    """Tags with a manifest, read from the registry's storage (its API wants a token here)."""
    root = registry.storage / "docker/registry/v2/repositories" / repository / "_manifests/tags"
    return sorted(p.name for p in root.glob("*")) if root.is_dir() else []


def test_registry_with_basic_auth_is_refused_in_one_line(
    ollama_server: OllamaServer, source_model: str, tmp_path: Path
) -> None:
    with running_registry(tmp_path / "basic", auth="basic") as reg:
        target = f"{reg.address}/team/tiny"
        proc = _cli(ollama_server, "push", source_model, "--to-ollama", target, "--insecure")
        assert proc.returncode == 1
        assert "refused access (HTTP 401, auth scheme Basic)" in _one_line_error(proc)
        assert _stored_tags(reg, "team/tiny") == []
        assert not OllamaClient(ollama_server.host).exists(f"{target}:latest")


@pytest.mark.slow
def test_bearer_registry_is_left_to_ollamas_own_sign_in(
    ollama_server: OllamaServer, source_model: str, tmp_path: Path
) -> None:
    """A registry that wants a bearer token (as ollama.com does): Ollama fetches it with its
    signed request; we cannot read the registry, so the byte counts are unknown, not guessed."""
    with running_registry(tmp_path / "bearer", auth="bearer") as reg:
        target = f"{reg.address}/team/tiny:v1"
        args = ("push", source_model, "--to-ollama", target, "--insecure")
        proc = _cli(ollama_server, *args, "--json")
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        assert result["upload"] == {"bytes_uploaded": None, "bytes_reused": None}
        assert result["manifest_digest"] is None and len(result["layers"]) == 4
        assert _stored_tags(reg, "team/tiny") == ["v1"]
        text = _cli(ollama_server, *args)
        assert "bytes uploaded and reused unknown" in text.stderr, text.stderr
    with running_registry(tmp_path / "refused", auth="bearer-refused") as reg:
        target = f"{reg.address}/team/tiny:v1"
        proc = _cli(ollama_server, "push", source_model, "--to-ollama", target, "--insecure")
        assert proc.returncode == 1, proc.stderr
        assert f"pushing {target} failed" in _one_line_error(proc)
        assert _stored_tags(reg, "team/tiny") == []


@pytest.mark.parametrize("path", [True, False], ids=["cli", "api"])
def test_read_only_registry_refuses_the_upload_and_serves_no_tag(
    ollama_server: OllamaServer, source_model: str, tmp_path: Path, path: bool
) -> None:
    with running_registry(tmp_path / "ro", read_only=True) as reg:
        target = f"{reg.address}/team/tiny:v1"
        proc = _cli(
            ollama_server, "push", source_model, "--to-ollama", target, "--insecure", path=path
        )
        assert proc.returncode == 1, proc.stderr
        line = _one_line_error(proc)
        assert f"pushing {target} failed" in line and "405" in line, line
        assert reg.tags("team/tiny") == []
        assert not OllamaClient(ollama_server.host).exists(target)  # the local alias is gone


def test_registry_with_broken_storage_answers_500_and_serves_no_tag(
    ollama_server: OllamaServer, source_model: str, tmp_path: Path
) -> None:
    with running_registry(tmp_path / "broken", broken_storage=True) as reg:
        target = f"{reg.address}/team/tiny:v1"
        proc = _cli(ollama_server, "push", source_model, "--to-ollama", target, "--insecure")
        assert proc.returncode == 1, proc.stderr
        line = _one_line_error(proc)
        assert "HTTP 500" in line, line
        assert reg.status("/v2/team/tiny/manifests/v1") != 200  # no manifest is served
        assert not OllamaClient(ollama_server.host).exists(target)  # the local alias is gone


def test_a_server_that_is_no_registry_answers_404(
    ollama_server: OllamaServer, source_model: str
) -> None:
    # The Ollama server itself is no registry: its /v2/ is a 404.
    target = f"127.0.0.1:{ollama_server.port}/team/tiny"
    proc = _cli(ollama_server, "push", source_model, "--to-ollama", target, "--insecure")
    assert proc.returncode == 1
    assert "answered HTTP 404 on /v2/" in _one_line_error(proc)
    assert not OllamaClient(ollama_server.host).exists(f"{target}:latest")  # nothing copied
