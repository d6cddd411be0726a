"""Which quant types the test Ollama server loads and answers with (records ``gguf/loadable.py``).

    PYTHONPATH=src:tests python -m support.loadable_probe [--imatrix] Q4_K_M Q5_K_M IQ4_XS ...

Quantizes a tiny random llama (head width 32, rows of 256) with the toolchain's
``llama-quantize`` (no imatrix; with ``--imatrix``, one computed by the toolchain's
llama-imatrix on the packaged calibration text), registers each type on a fresh test server and
asks for two tokens. Prints one line per type: the GGML types in the file and RUNS or the failure.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from support.ollama_server import OllamaServer, start_server, write_tiny_gguf


def probe(
    server: OllamaServer,
    quantize: Path,
    source: Path,
    quant: str,
    work: Path,
    imatrix: Path | None = None,
) -> str:
    """One type: quantize, ``ollama create``, generate; a line saying how far it got."""
    target = work / f"{quant}.gguf"
    weights = ["--imatrix", str(imatrix)] if imatrix else []
    made = subprocess.run(
        [str(quantize), *weights, str(source), str(target), quant, "1"],
        capture_output=True,
        text=True,
    )
    if made.returncode:
        return f"{quant} QUANTIZE-FAILED {made.stderr.strip().splitlines()[-1:]}"
    lines = made.stderr.splitlines()
    types = sorted(
        {ln.split("converting to ")[1].split()[0] for ln in lines if "converting to " in ln}
    )
    modelfile = work / f"Modelfile.{quant}"
    modelfile.write_text(f"FROM {target}\nPARAMETER num_thread 1\n", encoding="utf-8")
    model = f"probe-{quant.lower()}"
    created = server.ollama_cli("create", model, "-f", str(modelfile))
    if created.returncode:
        return f"{quant} {types} CREATE-FAILED {created.stderr.strip()[-200:]}"
    body = {"model": model, "prompt": "hi", "stream": False, "options": {"num_predict": 2}}
    request = urllib.request.Request(
        f"{server.host}/api/generate",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            done = json.load(response).get("done")
    except OSError as err:
        return f"{quant} {types} GENERATE-FAILED {err}"
    return f"{quant} {types} {'RUNS' if done else 'NOT-DONE'}"


def main(quants: list[str]) -> int:
    from deploy_to_ollama.gguf.imatrix import calibration_text, compute_imatrix
    from deploy_to_ollama.gguf.toolchain import find_toolchain
    from deploy_to_ollama.settings import Settings

    settings = Settings.from_env()
    toolchain = find_toolchain(settings.cache_dir, settings.llama_cpp_dir)
    work = Path(tempfile.mkdtemp(prefix="dto-loadable-"))
    source = write_tiny_gguf(work / "f32.gguf", n_embd=256, n_head=8)
    imatrix: Path | None = None
    if quants and quants[0] == "--imatrix":
        quants = quants[1:]
        text = calibration_text(None)[0]
        imatrix = compute_imatrix(toolchain, source, text, work / "f32.imatrix", dataset="c.txt")
    server = start_server(work / "ollama")
    try:
        for quant in quants:
            print(probe(server, Path(toolchain.quantize), source, quant, work, imatrix))
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
