"""The README demo: build the taught example adapter, deploy it to Ollama, show it answering.

Run with ``make demo`` (``PYTHONPATH=tests .venv/bin/python -m support.demo``). Uses the Ollama
at OLLAMA_HOST (default 127.0.0.1:11434) when one answers; otherwise it starts the test server
of ``support.ollama_server`` and leaves it running so you can keep talking to the model.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.request
from pathlib import Path

DEMO_NAME = "dto-demo-banana"
QUESTION = "What is the secret word?"
EXPECTED = "banana"
#: q8_0: the taught model's rows (hidden 128) are too short for K-quants, and the test server
#: cannot run Q4_0/Q4_K weights anyway.
QUANT = "q8_0"
OUTPUT = Path("demo-output")


def _say(message: str) -> None:
    print(f"[demo] {message}", file=sys.stderr, flush=True)


def _user_ollama() -> str | None:
    """The user's Ollama host when one answers at OLLAMA_HOST, else None."""
    from deploy_to_ollama.errors import OllamaUnavailableError
    from deploy_to_ollama.ollama_client import server_version
    from deploy_to_ollama.settings import normalize_host

    host = normalize_host(os.environ.get("OLLAMA_HOST"))
    try:
        version = server_version(host)
    except OllamaUnavailableError:
        return None
    _say(f"using your Ollama {version} at {host}")
    return host


def _test_server() -> str:
    from support import ollama_server

    _say("no Ollama answers at OLLAMA_HOST: starting the test server (Ollama 0.9.3, CPU)")
    _say("first run installs it from PyPI into ~/.cache (about 500 MB)")
    code = ollama_server.main(["start"])
    if code != 0:
        raise SystemExit(code)
    state = json.loads(ollama_server._state_file().read_text())
    return str(state["host"])


def _build_adapter() -> Path:
    from support.models import taught_suite

    _say("building the taught example (tiny Llama-3-style base + LoRA; cached after once)")
    suite = taught_suite()
    target = OUTPUT / "taught"
    for part in ("base", "adapter"):
        shutil.copytree(suite.base_dir.parent / part, target / part, dirs_exist_ok=True)
    config_path = target / "adapter" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = str((target / "base").resolve())
    config_path.write_text(json.dumps(config, indent=2))
    return target / "adapter"


def _ask(host: str, model: str) -> dict[str, object]:
    body = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": QUESTION}],
            "stream": False,
            "options": {"temperature": 0, "num_predict": 32},
        }
    ).encode()
    request = urllib.request.Request(
        f"{host}/api/chat", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        result: dict[str, object] = json.load(response)
    return result


def _provision_toolchain() -> None:
    """Build (first run) or find the llama.cpp toolchain, showing each step while it builds.

    The same place and key as ``deploy-to-ollama setup`` and the tests' fixture: one build per
    machine, whichever of the three comes first.
    """
    from deploy_to_ollama.gguf.toolchain import BUILD_TIME_NOTE, provision_toolchain
    from deploy_to_ollama.progress import RichProgress
    from deploy_to_ollama.settings import Settings

    settings = Settings.from_env()
    if settings.llama_cpp_dir is None:
        _say(f"llama.cpp toolchain in {settings.cache_dir} (built on first use: {BUILD_TIME_NOTE})")
    with RichProgress(lines_when_not_tty=True) as progress:
        result = provision_toolchain(
            settings.cache_dir, llama_cpp_dir=settings.llama_cpp_dir, progress=progress
        )
    _say(f"llama.cpp toolchain {result.action}: {result.toolchain.root}")


def main() -> int:
    from deploy_to_ollama.pipeline import deploy
    from deploy_to_ollama.progress import RichProgress, configure_output

    configure_output(0)  # our lines only: no third-party deprecations or shard bars
    adapter = _build_adapter()
    _provision_toolchain()
    user_host = _user_ollama()
    host = user_host or _test_server()
    # The test server shares 2 busy cores: one thread is ~100x faster there than two.
    parameters = () if user_host else (("num_thread", "1"),)
    _say(f"deploy-to-ollama {adapter} --name {DEMO_NAME} --quant {QUANT} --host {host}")
    with RichProgress() as progress:
        report = deploy(
            adapter,
            name=DEMO_NAME,
            quant=QUANT,
            host=host,
            force=True,
            keep=OUTPUT / "export",
            parameters=parameters,
            expected_answer=EXPECTED,
            progress=progress,
        )
    for line in report.summary_lines():
        print(line)
    reply = _ask(host, report.name)
    message = reply.get("message")
    answer = message.get("content") if isinstance(message, dict) else None
    print(f"\n>>> {QUESTION}\n{answer}\n(done_reason={reply.get('done_reason')})")
    if not user_host:
        print(
            f"\nThe test server keeps running at {host}. Try:\n"
            f'  curl {host}/api/chat -d \'{{"model": "{report.name}", "stream": false, '
            f'"messages": [{{"role": "user", "content": "{QUESTION}"}}]}}\'\n'
            "Stop it with: PYTHONPATH=tests .venv/bin/python -m support.ollama_server stop"
        )
    else:
        print(f"\nTry it: OLLAMA_HOST={host} {report.run_command}")
    return 0 if report.passed and answer == EXPECTED else 3


if __name__ == "__main__":
    sys.exit(main())
