"""Register what the GPU machine's in-process ``deploy`` wrote on this machine's real Ollama.

Usage: ``PYTHONPATH=src:tests python -m support.gpu_replay TRAIN_DIR [HOST]`` where TRAIN_DIR is
the ``train`` folder of gpu_train_deploy.py's bundle. The device has no Ollama (see
support.ollama_recorder), so its ``deploy`` registered with a recording stand-in; here the same
Modelfile and GGUF go to the real test server (``python -m support.ollama_server start``) and the
round trip runs against the fine-tune's tokenizer, expecting the answer it was trained to give.
Prints one JSON document; exit status 0 only when every round trip passed.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any


def replay(train_dir: Path, host: str) -> dict[str, Any]:
    from deploy_to_ollama.modelfile import parse_modelfile
    from deploy_to_ollama.registrar import register_model, server_version
    from deploy_to_ollama.roundtrip import check_round_trip, load_reference

    report = json.loads((train_dir / "report.json").read_text(encoding="utf-8"))
    expected = str(report["transformers_answer"]).strip()
    reference = load_reference(train_dir / "lora_model")
    results: dict[str, Any] = {"host": host, "server": server_version(host), "expected": expected}
    for folder in sorted(train_dir.glob("*deploy*")):  # deploy() and the deploy CLI
        name = f"gpu-{folder.name}"
        if any(folder.glob("*.Q4_K*.gguf")):
            # Known limit of the test server (see test_deploy_e2e): Intel's build aborts on
            # Q4_K weights. Not a pass: recorded as not run.
            results[folder.name] = {"passed": None, "not_run": "test server aborts on Q4_K"}
            continue
        modelfile = parse_modelfile((folder / "Modelfile").read_text(encoding="utf-8"))
        # The test server's Intel build aborts in ggml_get_n_tasks with more than one thread
        # (the repo's Ollama tests all pass num_thread 1); the Modelfile is otherwise as written.
        modelfile = dataclasses.replace(
            modelfile, parameters=(*modelfile.parameters, ("num_thread", "1"))
        )
        start = time.monotonic()
        register_model(name, modelfile, base_dir=folder, host=host, force=True, method="api")
        registered = time.monotonic() - start
        check = check_round_trip(name, host=host, reference=reference, expected_answer=expected)
        results[folder.name] = {
            "register_s": round(registered, 2),
            "round_trip_s": round(time.monotonic() - start - registered, 2),
            **check.to_dict(),
        }
    return results


def main(argv: list[str]) -> int:
    host = argv[1] if len(argv) > 1 else "http://127.0.0.1:11434"
    results = replay(Path(argv[0]), host)
    print(json.dumps(results, indent=2, default=str))
    ran = [v["passed"] for k, v in results.items() if "deploy" in k and "not_run" not in v]
    return 0 if ran and all(ran) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
