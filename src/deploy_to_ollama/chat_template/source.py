"""Load a chat template and its special tokens from a model dir, an adapter dir, a GGUF or a .jinja.

Which file holds the template is decided by the one reader, ``template_files`` (its docstring
gives the order); ``template_source_for`` is the view of a resolved input every stage shares.

The result, :class:`TemplateSource`, is everything the translator and verifier need: the Jinja
text, the special-token variables transformers passes to it, the eos/eot strings and BOS policy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError, InputNotFoundError, TemplateError, TemplateNotFoundError
from ..template_files import (
    TEMPLATE_FILES,
    find_chat_template,
    read_json_file,
    read_template_file,
    read_text_utf8,
    token_text,
)

if TYPE_CHECKING:
    from ..inputs import ResolvedInput

logger = logging.getLogger(__name__)

#: Special-token keys of tokenizer_config.json that transformers exposes to the template.
SPECIAL_TOKEN_KEYS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)


@dataclass(frozen=True, slots=True)
class TemplateSource:
    """A chat template plus the tokens it is rendered with."""

    template: str
    origin: Path
    kind: str
    """``model_dir``, ``gguf`` or ``jinja``."""
    bos_token: str | None = None
    eos_token: str | None = None
    special_tokens: tuple[tuple[str, str], ...] = ()
    """Other special-token variables (``pad_token``, ``unk_token`` ...) the template sees."""
    stop_tokens: tuple[str, ...] = ()
    """End-of-generation token strings: eos, eot/eom, and every generation_config eos id."""
    add_bos_token: bool | None = None
    """Whether the tokenizer prepends BOS itself (None: unknown)."""
    added_tokens: tuple[str, ...] = field(default=(), repr=False)
    """Special (added) token strings, used to keep split points off token boundaries."""
    tokenizer_file: Path | None = None

    def template_variables(self) -> dict[str, str]:
        """Token variables as transformers passes them to ``render``."""
        variables = dict(self.special_tokens)
        if self.bos_token is not None:
            variables["bos_token"] = self.bos_token
        if self.eos_token is not None:
            variables["eos_token"] = self.eos_token
        return variables


def load_template_source(
    path: Path, *, bos: str | None = None, eos: str | None = None
) -> TemplateSource:
    """Read the chat template and special tokens of ``path``.

    Args:
        path: a model or adapter directory, a ``.gguf`` file, or a bare template file
            (``.jinja``, or a ``chat_template.json`` / ``tokenizer_config.json`` file).
        bos: BOS token string; overrides what the source says.
        eos: EOS token string; overrides what the source says.

    Returns:
        The template and its tokens.

    Raises:
        InputNotFoundError: ``path`` does not exist.
        TemplateNotFoundError: no chat template in the source (names the files looked for).
        InputError: a file is not UTF-8 or not valid JSON.
    """
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(
            f"{path} does not exist", path=path, hint="pass a model dir, a .gguf or a .jinja file"
        )
    if path.is_dir():
        source = _from_directory(path)
    elif path.suffix == ".gguf":
        source = _from_gguf(path)
    elif path.suffix == ".json":
        source = _from_json_file(path, path.parent)
    else:
        source = TemplateSource(template=read_text_utf8(path), origin=path, kind="jinja")
    return _with_overrides(source, bos=bos, eos=eos)


def _with_overrides(source: TemplateSource, *, bos: str | None, eos: str | None) -> TemplateSource:
    from dataclasses import replace

    changes: dict[str, Any] = {}
    if bos is not None:
        changes["bos_token"] = bos
    if eos is not None:
        changes["eos_token"] = eos
        if eos not in source.stop_tokens:
            changes["stop_tokens"] = (eos, *source.stop_tokens)
    return replace(source, **changes) if changes else source


def _from_json_file(path: Path, directory: Path) -> TemplateSource:
    found = read_template_file(path)
    if found is None:
        raise TemplateNotFoundError(
            f"{path} has no chat_template",
            path=path,
            hint="pass a file or directory that contains the chat template",
        )
    return _tokens_from_directory(directory, found.text, path)


def _from_directory(directory: Path) -> TemplateSource:
    found = find_chat_template(directory)
    if found is None:
        looked = ", ".join(TEMPLATE_FILES)
        raise TemplateNotFoundError(
            f"no chat template in {directory} (looked for {looked})",
            path=directory,
            hint="copy the base model's tokenizer files next to the adapter, or pass a .jinja",
        )
    return _tokens_from_directory(directory, found.text, directory)


def template_source_for(resolved: ResolvedInput) -> TemplateSource:
    """The template and tokens of a resolved input, as every stage must see them.

    The template is ``resolved.chat_template`` (the one reader's choice: the adapter's files,
    then its base's); the tokens come from ``resolved.tokenizer_dir``; a GGUF source carries
    both inside.

    Raises:
        TemplateNotFoundError: neither the input nor its base has a chat template.
    """
    if resolved.kind == "gguf":
        return _from_gguf(resolved.path)
    if resolved.chat_template is None or resolved.tokenizer_dir is None:
        looked = ", ".join(TEMPLATE_FILES)
        where = (
            f"{resolved.path} or its base {resolved.base_dir}"
            if resolved.base_dir
            else (f"{resolved.path}")
        )
        raise TemplateNotFoundError(
            f"no chat template in {where} (looked for {looked})",
            path=resolved.path,
            hint="copy the base model's tokenizer files next to the adapter, or pass a .jinja",
        )
    origin = resolved.chat_template_file or resolved.path
    source = _tokens_from_directory(resolved.tokenizer_dir, resolved.chat_template, origin)
    return source


def _tokens_from_directory(directory: Path, template: str, origin: Path) -> TemplateSource:
    config_path = directory / "tokenizer_config.json"
    config = read_json_file(config_path) if config_path.is_file() else {}
    tokens = {key: token_text(config.get(key)) for key in SPECIAL_TOKEN_KEYS}
    id_to_token = _added_tokens(directory, config)
    stops = [tok for tok in (tokens["eos_token"],) if tok]
    stops += _generation_config_eos(directory, id_to_token)
    add_bos = config.get("add_bos_token")
    tokenizer_file = directory / "tokenizer.json"
    special = tuple(
        (key, value)
        for key, value in tokens.items()
        if value is not None and key not in ("bos_token", "eos_token")
    )
    return TemplateSource(
        template=template,
        origin=origin,
        kind="model_dir",
        bos_token=tokens["bos_token"],
        eos_token=tokens["eos_token"],
        special_tokens=special,
        stop_tokens=tuple(dict.fromkeys(stops)),
        add_bos_token=add_bos if isinstance(add_bos, bool) else None,
        added_tokens=tuple(id_to_token.values()),
        tokenizer_file=tokenizer_file if tokenizer_file.is_file() else None,
    )


def _added_tokens(directory: Path, config: dict[str, Any]) -> dict[int, str]:
    """Special token ids -> strings from tokenizer_config.json and tokenizer.json."""
    found: dict[int, str] = {}
    for key, value in (config.get("added_tokens_decoder") or {}).items():
        text = token_text(value)
        if text is not None and str(key).isdigit():
            found[int(key)] = text
    tokenizer_json = directory / "tokenizer.json"
    if not found and tokenizer_json.is_file():
        for item in read_json_file(tokenizer_json).get("added_tokens") or []:
            if isinstance(item, dict) and isinstance(item.get("id"), int):
                found[item["id"]] = str(item.get("content", ""))
    return found


def _generation_config_eos(directory: Path, id_to_token: dict[int, str]) -> list[str]:
    path = directory / "generation_config.json"
    if not path.is_file():
        return []
    raw = read_json_file(path).get("eos_token_id")
    ids = raw if isinstance(raw, list) else [raw]
    tokens: list[str] = []
    for token_id in ids:
        if isinstance(token_id, int):
            if token_id in id_to_token:
                tokens.append(id_to_token[token_id])
            else:
                logger.warning("generation_config.json eos id %s has no token string", token_id)
    return tokens


# --------------------------------------------------------------------------- GGUF


def _from_gguf(path: Path) -> TemplateSource:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except Exception as err:  # the reader raises plain ValueError/OSError on a bad file
        raise InputError(
            f"{path} is not a readable GGUF ({err})", hint="re-export the GGUF"
        ) from err
    template = _gguf_string(reader, "tokenizer.chat_template")
    if not template:
        raise TemplateNotFoundError(
            f"{path} has no tokenizer.chat_template",
            path=path,
            hint="pass the model directory or a .jinja file with --bos/--eos instead",
        )
    tokens = _gguf_tokens(reader)

    def token(key: str) -> str | None:
        token_id = _gguf_int(reader, key)
        if token_id is None or not 0 <= token_id < len(tokens):
            return None
        return tokens[token_id]

    stops = [token(f"tokenizer.ggml.{k}_token_id") for k in ("eos", "eot", "eom")]
    add_bos = _gguf_int(reader, "tokenizer.ggml.add_bos_token")
    types = _gguf_ints(reader, "tokenizer.ggml.token_type")
    control = tuple(tok for tok, kind in zip(tokens, types, strict=False) if kind in (3, 4))
    special = tuple(
        (name, value)
        for name, value in (
            ("unk_token", token("tokenizer.ggml.unknown_token_id")),
            ("pad_token", token("tokenizer.ggml.padding_token_id")),
        )
        if value is not None
    )
    return TemplateSource(
        template=template,
        origin=path,
        kind="gguf",
        bos_token=token("tokenizer.ggml.bos_token_id"),
        eos_token=token("tokenizer.ggml.eos_token_id"),
        special_tokens=special,
        stop_tokens=tuple(dict.fromkeys(s for s in stops if s)),
        add_bos_token=None if add_bos is None else bool(add_bos),
        added_tokens=control,
    )


def _gguf_field(reader: Any, key: str) -> Any:
    return reader.fields.get(key)


def _gguf_string(reader: Any, key: str) -> str | None:
    field_ = _gguf_field(reader, key)
    if field_ is None or not field_.data:
        return None
    return bytes(field_.parts[field_.data[0]]).decode("utf-8", errors="replace")


def _gguf_int(reader: Any, key: str) -> int | None:
    field_ = _gguf_field(reader, key)
    if field_ is None or not field_.data:
        return None
    return int(field_.parts[field_.data[0]][0])


def _gguf_ints(reader: Any, key: str) -> list[int]:
    field_ = _gguf_field(reader, key)
    if field_ is None:
        return []
    return [int(field_.parts[i][0]) for i in field_.data]


def _gguf_tokens(reader: Any) -> list[str]:
    field_ = _gguf_field(reader, "tokenizer.ggml.tokens")
    if field_ is None:
        return []
    return [bytes(field_.parts[i]).decode("utf-8", errors="replace") for i in field_.data]


# --------------------------------------------------------------------------- early checks


def check_chat_template(resolved: ResolvedInput) -> None:
    """Check the chat template parses and renders one probe conversation.

    Cheap (one Jinja parse and render), so ``deploy`` and ``export`` call it before any export
    work and a Jinja syntax error is reported before a GGUF is built. An input without any chat
    template passes (the template stage reports that on its own terms).

    Raises:
        TemplateSyntaxError: the template is not valid Jinja (line, column, the line's text).
        TemplateRenderError: it raises on a single user turn, which every chat template takes.
    """
    if resolved.chat_template is None:
        return
    from .hf_render import check_syntax, render_hf

    where = resolved.chat_template_file or resolved.path
    try:
        check_syntax(resolved.chat_template)
        tokens = template_source_for(resolved).template_variables()
        render_hf(
            resolved.chat_template,
            PROBE_CONVERSATION,
            tokens=tokens,
            add_generation_prompt=True,
            continue_final_message=False,
        )
    except TemplateError as err:
        err.message = f"chat template of {where}: {err.message}"
        raise


#: The one conversation ``check_chat_template`` renders: a single user turn, which every chat
#: template must accept (some refuse a system turn, or an assistant turn first).
PROBE_CONVERSATION: tuple[dict[str, str], ...] = ({"role": "user", "content": "Hi"},)


def check_source(path: Path, *, base: Path | None = None) -> ResolvedInput:
    """Everything about the source that can be checked before heavy work, in one call.

    ``resolve_input`` (kind, config, tensors against config and base) and
    ``check_chat_template``; cheap (JSON, headers, one Jinja render), so ``deploy`` and
    ``export`` call it before the toolchain or the server is touched.
    """
    from ..inputs import resolve_input

    resolved = resolve_input(path, base=base)
    check_chat_template(resolved)
    return resolved
