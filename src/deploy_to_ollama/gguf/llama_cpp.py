"""llama.cpp backend of the exporter: HF model or merged stream → GGUF, then llama-quantize.

Conversion runs our worker (``_convert_worker``) in a child Python that imports the vendored
converter; quantization runs ``llama-quantize``. Every output is written under a temp name and
renamed at the end, so an interrupted export never leaves a file under the final name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._fs import atomic_path
from .._subprocess import STDERR_TAIL_LINES, kill_with_parent, run_tool
from ..errors import ConversionError
from ..inputs import TOKENIZER_FILES
from .quants import QuantType
from .toolchain import Toolchain

logger = logging.getLogger(__name__)

#: Files the converter reads besides the weights (config, tokenizer, generation defaults).
MODEL_SIDE_FILES: tuple[str, ...] = ("config.json", "generation_config.json")
#: Tokens that end a turn in common chat formats; used for ``tokenizer.ggml.eot_token_id``.
END_OF_TURN_TOKENS: tuple[str, ...] = (
    "<|eot_id|>",
    "<|im_end|>",
    "<end_of_turn>",
    "<|end|>",
    "<|end_of_text|>",
    "<|endoftext|>",
)


@dataclass(frozen=True, slots=True)
class TokenIds:
    """The special-token ids we write explicitly into the GGUF."""

    eos: int | None
    eot: int | None


@dataclass(frozen=True, slots=True)
class ConvertFacts:
    """What the conversion found out, for the export report."""

    pretokenizer_detected: str | None
    """The pre-tokenizer we named when llama.cpp's hash check rejected the tokenizer."""
    max_buffered_tensors: int
    """Most merged tensors held at once while streaming (1 means a pure stream)."""
    tensor_types: Mapping[str, int] | None = None
    """Tensors per GGML type when the converter also quantized (in-process quantization)."""
    more_tensor_types: tuple[Mapping[str, int], ...] = ()
    """The same for each of ``run_converter``'s ``more`` outputs, in order."""
    timings: Mapping[str, float] | None = None
    """Seconds per stage of the run (``wall``, ``read``, ``merge``, ``quantize q4_k_m`` ...)."""


def _tokenizer_vocab(tokenizer_dir: Path) -> dict[str, int]:
    path = tokenizer_dir / "tokenizer.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    vocab: dict[str, int] = dict((data.get("model") or {}).get("vocab") or {})
    for added in data.get("added_tokens") or []:
        vocab[added["content"]] = int(added["id"])
    return vocab


def special_token_ids(model_dir: Path, tokenizer_dir: Path, chat_template: str | None) -> TokenIds:
    """Find the eos and end-of-turn ids a chat fine-tune actually stops on.

    eos is the tokenizer's ``eos_token`` (what the trainer appended); eot is the end-of-turn
    marker the chat template emits (``<|eot_id|>``, ``<|im_end|>`` ...), falling back to another id
    from ``generation_config.json``'s ``eos_token_id`` list.
    """
    from ..template_files import token_text

    vocab = _tokenizer_vocab(tokenizer_dir)
    config_path = tokenizer_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    eos_text = token_text(config.get("eos_token"))
    eos = vocab.get(eos_text) if eos_text else None
    eot: int | None = None
    if chat_template:
        for token in END_OF_TURN_TOKENS:
            if token in chat_template and token in vocab:
                eot = vocab[token]
                break
    gen_path = model_dir / "generation_config.json"
    if gen_path.is_file():
        gen_eos = json.loads(gen_path.read_text(encoding="utf-8")).get("eos_token_id")
        ids = gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else []
        if eos is None and ids:
            eos = int(ids[0])
        if eot is None:
            eot = next((int(i) for i in ids if i != eos), None)
    return TokenIds(eos=eos, eot=eot)


def read_chat_template(*folders: Path | None) -> str | None:
    """The Jinja chat template of the first folder that has one (adapter, then base).

    The one reader's rule (``template_files``): ``chat_template.jinja``, ``chat_template.json``,
    ``tokenizer_config.json`` (the ``default`` of a named list, else its first entry). It is
    written over whatever the converter read itself, which prefers tokenizer_config.json.
    """
    from ..template_files import find_chat_template

    found = find_chat_template(*folders)
    return found.text if found else None


def stage_model_dir(
    config_dir: Path, tokenizer_dir: Path, dest: Path, *, config: Mapping[str, Any] | None = None
) -> Path:
    """Gather config and tokenizer files (no weights) into ``dest`` for the converter.

    ``config`` replaces ``config.json`` (the merged model's: vocab grown, embeddings untied).
    """
    dest.mkdir(parents=True, exist_ok=True)
    for name in MODEL_SIDE_FILES:
        if (config_dir / name).is_file():
            shutil.copy2(config_dir / name, dest / name)
    for name in TOKENIZER_FILES:
        source = tokenizer_dir / name
        if not source.is_file():
            source = config_dir / name
        if source.is_file():
            shutil.copy2(source, dest / name)
    if config is not None:
        (dest / "config.json").write_text(json.dumps(dict(config), indent=2), encoding="utf-8")
    return dest


def _worker_env(toolchain: Toolchain) -> dict[str, str]:
    env = toolchain.python_env()
    # The worker imports deploy_to_ollama from wherever this process found it.
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], package_root])
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def run_converter(
    toolchain: Toolchain,
    *,
    model_dir: Path,
    outfile: Path,
    outtype: str,
    name: str | None,
    chat_template: str | None,
    token_ids: TokenIds,
    merge_input: Path | None = None,
    merge_base: Path | None = None,
    quantize: QuantType | None = None,
    more: Sequence[tuple[QuantType, Path]] = (),
    on_progress: Callable[[int, int], None] | None = None,
) -> ConvertFacts:
    """Convert to a GGUF of ``outtype`` (f32/f16/bf16/q8_0) at ``outfile``, atomically.

    With ``quantize`` (and a toolchain with ``quant_library``), ``outtype`` is the 16-bit type
    the tensors pass through and the file written is already quantized, as llama-quantize would
    have made it from that 16-bit GGUF (see ``_fused_writer``).

    Args:
        toolchain: the llama.cpp toolchain whose converter we import.
        model_dir: dir with config + tokenizer (and the weights unless ``merge_input``).
        outfile: the final GGUF path.
        outtype: converter output type.
        name: ``general.name``.
        chat_template: written as ``tokenizer.chat_template``.
        token_ids: eos/eot ids written explicitly.
        merge_input: an adapter dir: stream the merged tensors from it instead of files.
        merge_base: the base dir for ``merge_input`` (as ``--base``).
        quantize: a llama-quantize type to write instead of ``outtype``.
        more: with ``quantize``, further (type, final path) outputs written in the same run
            from the same merged tensors (each file as if exported alone).
        on_progress: called with (tensors written, tensors in the file) as the file grows.

    Raises:
        ConversionError: the converter refused or failed (message and hint from the worker).
    """
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(tempfile.TemporaryDirectory(prefix="dto-convert-"))
        tmp = stack.enter_context(atomic_path(outfile))
        # Every file under a temp name until the worker succeeded: all renamed, or none.
        more_tmp = [(quant, stack.enter_context(atomic_path(path))) for quant, path in more]
        spec_path = Path(work) / "spec.json"
        spec = {
            "toolchain": str(toolchain.root),
            "model_dir": str(model_dir),
            "outfile": str(tmp),
            "outtype": outtype,
            "name": name,
            "chat_template": chat_template,
            "eos_token_id": token_ids.eos,
            "eot_token_id": token_ids.eot,
            "input": str(merge_input) if merge_input else None,
            "base": str(merge_base) if merge_base else None,
            "quantize": _quantize_request(toolchain, quantize) if quantize else None,
            "more_outputs": [
                {"outfile": str(path), "quantize": _quantize_request(toolchain, quant)}
                for quant, path in more_tmp
            ],
        }
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        command = [sys.executable, "-m", "deploy_to_ollama.gguf._convert_worker", str(spec_path)]
        result, stage = _run_worker(command, _worker_env(toolchain), on_progress)
        if result.returncode != 0:
            raise _worker_failure(spec_path, command, result, stage)
        for path in (tmp, *(path for _, path in more_tmp)):
            os.chmod(path, 0o644)
        facts = json.loads(spec_path.with_suffix(".result.json").read_text(encoding="utf-8"))
    return ConvertFacts(
        pretokenizer_detected=facts.get("pretokenizer_detected"),
        max_buffered_tensors=int(facts.get("max_buffered_tensors", 0)),
        tensor_types=facts.get("tensor_types"),
        more_tensor_types=tuple(facts.get("more_tensor_types") or ()),
        timings=facts.get("timings"),
    )


def _run_worker(
    command: list[str], env: dict[str, str], on_progress: Callable[[int, int], None] | None
) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run the worker, passing its progress lines on; stderr is kept for error messages.

    Returns the finished process and the last stage the worker announced.
    """
    from ._convert_worker import PROGRESS_PREFIX, STAGE_PREFIX

    stage = "convert"
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8") as stderr:
        proc = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            preexec_fn=kill_with_parent,
        )
        assert proc.stdout is not None
        with proc:
            try:
                for line in proc.stdout:
                    if line.startswith(STAGE_PREFIX):
                        stage = line.removeprefix(STAGE_PREFIX).strip()
                    elif on_progress is not None and line.startswith(PROGRESS_PREFIX):
                        done, total = line.removeprefix(PROGRESS_PREFIX).split()
                        on_progress(int(done), int(total))
            except BaseException:
                # Ctrl-C (or any error) here: stop the worker now, as subprocess.run would,
                # instead of waiting for it to finish a conversion nobody will use.
                proc.kill()
                raise
        stderr.seek(0)
        return subprocess.CompletedProcess(command, proc.returncode, "", stderr.read()), stage


def _quantize_request(toolchain: Toolchain, quant: QuantType) -> dict[str, Any]:
    """The worker's in-process quantization order: type, per-role overrides, library."""
    library = toolchain.quant_library
    if library is None:
        raise ConversionError(
            f"{toolchain.root} has no quantizer library", hint="rerun `deploy-to-ollama setup`"
        )
    flags = dict(zip(quant.quantize_args[::2], quant.quantize_args[1::2], strict=True))
    return {
        "name": quant.name,
        "type": quant.llama_name,
        "output_type": flags.get("--output-tensor-type"),
        "token_embedding_type": flags.get("--token-embedding-type"),
        "library": str(library),
        "kernel": str(toolchain.kernel_library) if toolchain.kernel_library else None,
        "threads": usable_cpus(),
    }


def usable_cpus() -> int:
    """CPUs this process may run on (a container's affinity mask, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _worker_failure(
    spec_path: Path, command: list[str], result: subprocess.CompletedProcess[str], stage: str
) -> ConversionError:
    tail = "\n".join(result.stderr.strip().splitlines()[-STDERR_TAIL_LINES:])
    error_file = spec_path.with_suffix(".error.json")
    if error_file.is_file():
        info = json.loads(error_file.read_text(encoding="utf-8"))
        error = ConversionError(
            f"GGUF conversion failed: {info['message']}",
            hint=info.get("hint"),
            command=command,
            stderr_tail=tail,
        )
        error.in_process_quantization = bool(info.get("in_process_quantization"))
        return error
    last = tail.splitlines()[-1] if tail else f"exit code {result.returncode}"
    error = ConversionError(
        f"GGUF conversion failed: {last}",
        hint="rerun with -vv to see the converter's output",
        command=command,
        stderr_tail=tail,
    )
    error.in_process_quantization = stage == "quantize"  # crashed inside the library
    return error


def quantize_gguf(
    toolchain: Toolchain,
    source: Path,
    target: Path,
    quant: QuantType,
    *,
    imatrix: Path | None = None,
) -> Path:
    """Quantize ``source`` (f16/bf16/f32 GGUF) to ``quant`` at ``target`` with llama-quantize.

    ``imatrix`` is passed as ``--imatrix`` as given (llama-quantize records the path string in
    the GGUF's ``quantize.imatrix.file``).

    Raises:
        ConversionError: llama-quantize failed (last stderr lines in the error).
    """
    threads = str(max(1, os.cpu_count() or 1))
    command: list[str | Path] = [
        toolchain.quantize,
        *(("--imatrix", str(imatrix)) if imatrix is not None else ()),
        *quant.quantize_args,
        source,
        "TMP",
        quant.llama_name,
        threads,
    ]
    with atomic_path(target) as tmp:
        command[command.index("TMP")] = tmp
        run_tool(
            command,
            what=f"llama-quantize to {quant.name}",
            hint="check free disk space, or rerun `deploy-to-ollama setup --force`",
            die_with_parent=True,
        )
        os.chmod(tmp, 0o644)
    return target
