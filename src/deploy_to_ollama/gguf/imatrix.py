"""Importance matrices (llama.cpp's imatrix): computed on calibration text, cached, checked.

An imatrix tells the quantizer how much each input column of a weight matrix is used by this
model's activations, so the rounding error goes where it costs least; the IQ types are built
around one. ``--imatrix auto`` runs ``llama-imatrix`` on the export's 16-bit GGUF and a
calibration text and caches the result beside the export, keyed by the content of both;
``--imatrix FILE`` reuses one (llama-imatrix's GGUF or legacy ``.dat`` format). Either is
checked against the model first: llama-quantize quietly skips entries whose names it cannot
find, so an imatrix of another model would give a plain quant under an imatrix label.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import struct
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .._fs import atomic_path
from .._subprocess import run_tool
from ..errors import ConversionError, InputError, InputNotFoundError
from .eval_data import jsonl_records
from .toolchain import Toolchain

logger = logging.getLogger(__name__)

#: Tokens per chunk llama-imatrix evaluates (its ``-c``).
IMATRIX_CTX = 512
#: llama-imatrix refuses fewer than two chunks (tools/imatrix/imatrix.cpp, compute_imatrix).
MIN_TOKENS = 2 * IMATRIX_CTX
#: At most this many chunks are evaluated: bounds the cost (16K tokens) whatever the text.
MAX_CHUNKS = 32
#: The packaged calibration text, used when neither --calibration-data nor --eval-data is given.
PACKAGED_TEXT = "imatrix_calibration.txt"
#: Cached imatrices are named ``<stem>.<key>.imatrix`` (not ``.gguf``: ``push`` uploads those).
CACHE_SUFFIX = ".imatrix"
#: Bumped when what goes into the cache key changes.
_KEY_FORMAT = 1
_NEED_RE = re.compile(r"you need at least (\d+) tokens")
_HAVE_RE = re.compile(r"tokenizes to only (\d+) tokens")


@dataclass(frozen=True, slots=True)
class ImatrixChoice:
    """What ``--imatrix`` asked for: computed (``auto``) or a file."""

    file: Path | None = None
    """The imatrix to reuse; None means ``auto``."""
    calibration: Path | None = None
    """The text ``auto`` computes on (``--calibration-data``, else ``--eval-data``)."""

    @property
    def auto(self) -> bool:
        return self.file is None

    def fingerprint(self) -> str:
        """What shapes the output bytes: the file's or the calibration text's content."""
        if self.file is not None:
            return f"file:{self.file}:{_file_sha256(self.file)}"  # the path is in the GGUF too
        return "auto:" + hashlib.sha256(calibration_text(self.calibration)[0].encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Imatrix:
    """An imatrix ready for llama-quantize."""

    path: Path
    entries: int
    computed: bool
    """True when ``auto`` ran llama-imatrix now (False: a given file or a cache hit)."""
    calibration: str | None = None
    """Where ``auto``'s text came from (a path, or ``packaged``)."""
    seconds: float = 0.0


def parse_imatrix_option(
    value: str | None, calibration: Path | None = None, eval_data: Path | None = None
) -> ImatrixChoice | None:
    """``--imatrix auto|FILE`` (+ ``--calibration-data`` / ``--eval-data``), checked early.

    Raises:
        InputNotFoundError: FILE or the calibration file does not exist.
        InputError: the calibration text is empty or not UTF-8.
    """
    if value is None:
        return None
    text_file = calibration or eval_data
    if text_file is not None and not text_file.is_file():
        raise InputNotFoundError(
            f"calibration text {text_file} does not exist", path=text_file, hint="check the path"
        )
    if value.strip().lower() == "auto":
        choice = ImatrixChoice(calibration=text_file)
        calibration_text(text_file)  # empty, not UTF-8, bad JSONL: now, not after the convert
        return choice
    path = Path(value)
    if not path.is_file():
        raise InputNotFoundError(
            f"imatrix {path} does not exist",
            path=path,
            hint="pass --imatrix auto to compute one, or the path of a llama-imatrix output",
        )
    read_imatrix_entries(path)  # a file that is no imatrix fails here
    return ImatrixChoice(file=path)


def calibration_text(path: Path | None) -> tuple[str, str]:
    """The calibration text and where it came from (``packaged`` for ours).

    A ``.jsonl`` file (fine-tune data) gives the strings of each record, one per line.

    Raises:
        InputError: empty, not UTF-8, or not JSONL where ``.jsonl`` is claimed.
    """
    if path is None:
        data = resources.files(__package__).joinpath("data", PACKAGED_TEXT).read_bytes()
        return data.decode("utf-8"), "packaged"
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(
            f"calibration text {path} is not UTF-8 (byte {err.start})",
            hint="convert it to UTF-8, e.g. iconv -t utf-8",
        ) from err
    if path.suffix == ".jsonl":
        text = _jsonl_strings(text, path)
    if not text.strip():
        raise InputError(f"calibration text {path} is empty", hint="pass a file with some text")
    return text, str(path)


def _jsonl_strings(text: str, path: Path) -> str:
    records = jsonl_records(
        text,
        what=f"calibration text {path}",
        hint="a .jsonl file holds one JSON object per line; pass plain text as .txt",
    )
    return "\n".join(s for _, record in records for s in _strings(record))


def _strings(value: object) -> list[str]:
    """Every string inside a JSON value, in order (message contents, ``text`` fields ...).

    >>> _strings({"messages": [{"role": "user", "content": "hi"}], "n": 1})
    ['user', 'hi']
    """
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def find_llama_tool(toolchain: Toolchain, name: str) -> Path:
    """A llama.cpp tool (``llama-imatrix``, ``llama-perplexity``) of this toolchain.

    One lookup rule for every optional tool: ``Toolchain.require_tool`` (the root, where
    ``setup`` puts its binaries, or ``build/bin`` of a user's checkout).

    Raises:
        DependencyMissingError: the toolchain has no such binary (the reason and the fix).
    """
    return toolchain.require_tool(name, needed_for="quants without --imatrix work without it")


def resolve_imatrix(
    choice: ImatrixChoice,
    toolchain: Toolchain,
    model: Path,
    out_dir: Path,
    stem: str,
    *,
    tokenizer_dir: Path | None = None,
) -> Imatrix:
    """The imatrix for the 16-bit GGUF ``model``: the given file, or the cached/computed one.

    ``tokenizer_dir`` (the model's HF tokenizer) lets a too-short calibration text fail before
    llama-imatrix runs: its own message is logged by a thread that may not flush it at exit.

    Raises:
        InputError: the file is for another model, or the calibration text is too short.
        DependencyMissingError: ``auto`` and the toolchain has no llama-imatrix.
        ConversionError: llama-imatrix failed.
    """
    if choice.file is not None:
        entries = check_imatrix(choice.file, model)
        return Imatrix(path=choice.file, entries=entries, computed=False)
    text, origin = calibration_text(choice.calibration)
    target = out_dir / f"{stem}.{imatrix_key(model, text)[:16]}{CACHE_SUFFIX}"
    if target.is_file():
        logger.info("reusing the imatrix %s (same model and calibration text)", target.name)
        return Imatrix(target, check_imatrix(target, model), computed=False, calibration=origin)
    check_token_count(text, tokenizer_dir)
    started = time.perf_counter()
    compute_imatrix(toolchain, model, text, target, dataset=_dataset_name(choice.calibration))
    seconds = time.perf_counter() - started
    entries = check_imatrix(target, model)
    return Imatrix(target, entries, computed=True, calibration=origin, seconds=seconds)


def check_token_count(text: str, tokenizer_dir: Path | None) -> int | None:
    """Tokens of ``text`` with the model's tokenizer (None without a ``tokenizer.json``).

    Raises:
        InputError: fewer than ``MIN_TOKENS`` (llama-imatrix's two chunks).
    """
    if tokenizer_dir is None or not (tokenizer_dir / "tokenizer.json").is_file():
        return None
    from tokenizers import Tokenizer

    count = len(Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json")).encode(text).ids)
    if count < MIN_TOKENS:
        raise _short_text_error(str(MIN_TOKENS), f"{count} tokens")
    return count


def _short_text_error(need: str, got: str) -> InputError:
    return InputError(
        f"calibration text too short for the imatrix: llama-imatrix needs at least "
        f"{need} tokens (2 chunks of {IMATRIX_CTX}), the text has {got}",
        hint="pass a longer --calibration-data (a few thousand words of the model's domain)",
    )


def _dataset_name(calibration: Path | None) -> str:
    """The text's name as the imatrix records it (``quantize.imatrix.dataset`` in the GGUF)."""
    if calibration is None:
        return PACKAGED_TEXT
    return (
        calibration.with_suffix(".txt").name if calibration.suffix == ".jsonl" else calibration.name
    )


def imatrix_key(model: Path, text: str) -> str:
    """Content hash of the model GGUF, the calibration text and llama-imatrix's settings."""
    digest = hashlib.sha256(f"{_KEY_FORMAT}:{IMATRIX_CTX}:{MAX_CHUNKS}:".encode())
    digest.update(_file_sha256(model).encode())
    digest.update(hashlib.sha256(text.encode()).digest())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def compute_imatrix(
    toolchain: Toolchain, model: Path, text: str, target: Path, *, dataset: str
) -> Path:
    """Run llama-imatrix on ``text`` (at most ``MAX_CHUNKS`` chunks) and write ``target``.

    The text is written under ``dataset`` in a temp folder and llama-imatrix runs there, so the
    name it records is that bare file name, not a temp path.

    Raises:
        InputError: the text tokenizes to fewer than ``MIN_TOKENS`` tokens.
        ConversionError: llama-imatrix failed otherwise.
    """
    tool = find_llama_tool(toolchain, "llama-imatrix")
    with (
        tempfile.TemporaryDirectory(prefix="dto-imatrix-") as work,
        atomic_path(target) as tmp,
    ):
        (Path(work) / dataset).write_text(text, encoding="utf-8")
        command: list[str | Path] = [
            tool, "-m", model.resolve(), "-f", dataset, "-o", tmp.resolve(),
            "--output-format", "gguf", "-c", str(IMATRIX_CTX), "--chunks", str(MAX_CHUNKS),
            "--no-ppl", "-t", str(_threads()),
        ]  # fmt: skip
        try:
            run_tool(
                command,
                what="llama-imatrix",
                cwd=Path(work),
                hint=f"the calibration text needs at least {MIN_TOKENS} tokens; rerun with -vv "
                "to see llama-imatrix's output",
                die_with_parent=True,
            )
        except ConversionError as err:
            raise _too_short(err, text) or err from err
        os.chmod(tmp, 0o644)
    return target


def _too_short(err: ConversionError, text: str) -> InputError | None:
    need = _NEED_RE.search(err.stderr_tail)
    if need is None:
        return None
    have = _HAVE_RE.search(err.stderr_tail)
    got = f"{have.group(1)} tokens" if have else f"{len(text.split())} words"
    return _short_text_error(need.group(1), got)


def _threads() -> int:
    from .llama_cpp import usable_cpus

    return usable_cpus()


def read_imatrix_entries(path: Path) -> dict[str, int]:
    """Tensor name → number of values, from a GGUF imatrix or a legacy ``.dat`` one.

    Raises:
        InputError: the file is neither.
    """
    with path.open("rb") as handle:
        magic = handle.read(4)
    try:
        if magic == b"GGUF":
            return _gguf_entries(path)
        return _legacy_entries(path.read_bytes())
    except (struct.error, UnicodeDecodeError, ValueError, IndexError) as err:
        raise InputError(
            f"{path} is not an imatrix (neither GGUF nor llama-imatrix's .dat format)",
            hint="pass a file written by llama-imatrix, or --imatrix auto",
        ) from err


def _gguf_entries(path: Path) -> dict[str, int]:
    import gguf

    reader = gguf.GGUFReader(str(path))
    entries: dict[str, int] = {}
    for tensor in reader.tensors:
        if tensor.name.endswith(".in_sum2"):
            entries[tensor.name.removesuffix(".in_sum2")] = int(tensor.n_elements)
    if not entries:
        raise InputError(
            f"{path} is a GGUF but holds no imatrix (no .in_sum2 tensors)",
            hint="pass a file written by llama-imatrix, not a model",
        )
    return entries


def _legacy_entries(data: bytes) -> dict[str, int]:
    """Parse llama-imatrix's legacy format (common/imatrix-loader.cpp, load_legacy).

    >>> blob = struct.pack("<i", 1) + struct.pack("<i", 3) + b"abc" + struct.pack("<ii", 1, 2)
    >>> _legacy_entries(blob + struct.pack("<2f", 1.0, 2.0))
    {'abc': 2}
    """
    (count,) = struct.unpack_from("<i", data, 0)
    if count < 1:
        raise ValueError("no entries")
    offset, entries = 4, {}
    for _ in range(count):
        (length,) = struct.unpack_from("<i", data, offset)
        name = data[offset + 4 : offset + 4 + length].decode("utf-8")
        offset += 4 + length
        _ncall, nval = struct.unpack_from("<ii", data, offset)
        offset += 8 + 4 * nval
        if nval < 1 or offset > len(data):
            raise ValueError("truncated")
        entries[name] = nval
    return entries


def model_matrix_sizes(model: Path) -> dict[str, int]:
    """Tensor name → values an imatrix entry needs (``ne[0] * ne[2]``), from a model GGUF."""
    import gguf

    reader = gguf.GGUFReader(str(model))
    sizes: dict[str, int] = {}
    for tensor in reader.tensors:
        ne = [int(d) for d in tensor.shape]
        sizes[tensor.name] = ne[0] * (ne[2] if len(ne) > 2 else 1)
    return sizes


def check_imatrix(path: Path, model: Path) -> int:
    """Check that the imatrix ``path`` was made for ``model``; return its entry count.

    llama-quantize stops only on a size mismatch and skips names it does not find, so an
    imatrix of a different model with other tensor names would silently not be used.

    Raises:
        InputError: no entry names a tensor of the model, or one's size differs from it.
    """
    entries = read_imatrix_entries(path)
    sizes = model_matrix_sizes(model)
    known = [name for name in entries if name in sizes]
    if not known:
        example = next(iter(entries))
        raise InputError(
            f"imatrix {path} is for another model: none of its {len(entries)} entries names a "
            f"tensor of this model (it has {example!r})",
            hint="pass --imatrix auto to compute one for this model",
        )
    for name in known:
        if entries[name] != sizes[name]:
            raise InputError(
                f"imatrix {path} is for another model: {name} has {entries[name]} values, "
                f"this model's needs {sizes[name]}",
                hint="pass --imatrix auto to compute one for this model",
            )
    missing = len(entries) - len(known)
    if missing:
        logger.warning("imatrix %s: %d entries name no tensor of this model", path, missing)
    return len(entries)


__all__ = [
    "CACHE_SUFFIX",
    "IMATRIX_CTX",
    "MAX_CHUNKS",
    "MIN_TOKENS",
    "Imatrix",
    "ImatrixChoice",
    "calibration_text",
    "check_imatrix",
    "compute_imatrix",
    "find_llama_tool",
    "imatrix_key",
    "parse_imatrix_option",
    "read_imatrix_entries",
    "resolve_imatrix",
]
