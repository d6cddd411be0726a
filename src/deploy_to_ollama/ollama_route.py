"""Which chat path an Ollama server takes for a model, and which capabilities it reports.

Reproduces ollama/ollama at commit fb30760996871fa9460115c753afd2c60d4ab0f7 (v0.33.0-rc2):
``server/images.go`` (``GetModel``'s ``PreferChatTemplate``, ``shouldPreferChatTemplate``,
``Capabilities``/``capabilitiesForTemplate``, ``selectedTemplateSource``), ``server/routes.go``
(``shouldUseHarmony``, ``shouldUseGoTemplate``, ``usesOllamaRenderedChat``, ``chatModeForModel``),
``envconfig/config.go`` (``OLLAMA_GO_TEMPLATE`` via ``BoolWithDefault``), ``server/create.go`` and
``server/model.go`` (``detectChatTemplate``, ``template.Named``: Levenshtein distance < 100); and
v0.9.3 ``server/images.go`` (``Capabilities``: Go TEMPLATE only, always rendered). The GGUF-native
path (llama-server renders the Jinja) arrived in v0.30.0. Pure logic: no server is asked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .capabilities import (
    COMPLETION,
    EMBEDDING,
    THINKING,
    TOOLS,
    VISION,
    go_template_capabilities,
    go_template_has_tool_round_trip,
    jinja_capabilities,
    jinja_has_tool_round_trip,
    ordered,
)

__all__ = [
    "FIELDS_SINCE",
    "LIBRARY_MATCH_DISTANCE",
    "NATIVE_SINCE",
    "THINK_UNSET_ON",
    "LibraryTemplate",
    "ModelFacts",
    "PromptRules",
    "RouteDecision",
    "ServerVersion",
    "attach_library_template",
    "detect_library_template",
    "go_template_env",
    "levenshtein_below",
    "merge_for_version",
    "parse_server_version",
    "prompt_rules",
    "select_route",
    "should_prefer_chat_template",
]

#: First release whose GGUF models run on llama-server with the GGUF's Jinja (the native path).
NATIVE_SINCE = (0, 30, 0)
#: ``template.Named`` accepts the closest library template only below this edit distance.
LIBRARY_MATCH_DISTANCE = 100
_HARMONY_FAMILIES = ("gptoss", "gpt-oss")

ChatPath = Literal["rendered", "native"]
TemplateSource = Literal[
    "renderer_parser", "renderer", "parser", "harmony", "go_template", "gguf_chat_template", "none"
]


# --------------------------------------------------------------------------- versions


@dataclass(frozen=True, slots=True)
class ServerVersion:
    """A server version as a comparable triple; ``newest`` when it could not be read."""

    text: str
    parts: tuple[int, int, int]
    newest: bool = False

    @property
    def native_path(self) -> bool:
        """Whether this server can hand the GGUF's Jinja to llama-server (0.30+)."""
        return self.newest or self.parts >= NATIVE_SINCE


_VERSION = re.compile(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?")


def parse_server_version(text: str | None) -> tuple[ServerVersion, str | None]:
    """Read ``/api/version``'s string; unreadable (or a ``0.0.0`` source build) = newest.

    Returns:
        The version and a warning to show, or None when it parsed.

    >>> parse_server_version("0.9.3")[0].parts
    (0, 9, 3)
    >>> parse_server_version("v0.30.0-rc2")[0].native_path
    True
    >>> version, warning = parse_server_version("banana")
    >>> version.newest, warning is not None
    (True, True)
    """
    match = _VERSION.match(text or "")
    if match is None:
        warning = f"cannot read the Ollama version {text!r}; assuming the newest rules"
        return ServerVersion(text or "", (0, 0, 0), newest=True), warning
    parts = (int(match[1]), int(match[2]), int(match[3] or 0))
    if parts == (0, 0, 0):
        # Ollama built from source reports 0.0.0 (version/version.go); it is current code.
        warning = "Ollama reports version 0.0.0 (a source build); assuming the newest rules"
        return ServerVersion(text or "", parts, newest=True), warning
    return ServerVersion(text or "", parts), None


def go_template_env(value: str | None) -> bool | None:
    """``OLLAMA_GO_TEMPLATE`` as Ollama reads it: None unset/empty, else Go's ``ParseBool``
    and ``true`` for anything it cannot parse (``BoolWithDefault``).

    >>> [go_template_env(v) for v in (None, "", "0", "false", "T", "yes")]
    [None, None, False, False, True, True]
    """
    if value is None or value == "":
        return None
    return value not in ("0", "f", "F", "false", "FALSE", "False")


# --------------------------------------------------------------------------- prompt building


@dataclass(frozen=True, slots=True)
class PromptRules:
    """Where the Go path's prompt building differs between Ollama versions (template/
    template.go ``collate``/``Values``, api/types.go tool JSON), read from the release tags."""

    merge_tool_messages: bool
    """Consecutive ``tool`` messages are joined into one (``"\\n\\n"``) like other roles:
    up to v0.9.5; from v0.9.6 each tool result stays its own message."""
    think_level: bool
    """``.ThinkLevel`` exists (v0.11.0 and later)."""
    think_unset_on: bool
    """A request without ``think`` reaches a thinking TEMPLATE as ``.Think`` true (v0.12.4
    and later, server/routes.go); before, as false with ``.IsThinkSet`` false (``.Think``
    and ``.IsThinkSet`` arrived together in v0.9.0)."""
    required_omitted_when_empty: bool
    """A tool's ``parameters.required`` is left out when empty (v0.12.11 and later); before,
    Go's ``json`` printed ``"required":null``."""
    missing: tuple[tuple[str, str], ...] = ()
    """Template values this release lacks, with the release that added each (``FIELDS_SINCE``):
    a TEMPLATE naming one fails there (Go: "can't evaluate field", or a parse error for a
    function), however the newest release renders it."""


#: Template values (fields as ``.Name``, functions bare) and the first release that has them,
#: read from ``git show TAG:api/types.go`` / ``template/template.go``: ``Message.ToolName``
#: arrived in v0.9.6, ``Message.ToolCallID`` and ``ToolCall.ID`` in v0.12.10 (ollama#12956),
#: ``.ThinkLevel`` in v0.11.0, the ``currentDate`` function in v0.11.0, ``toTypeScriptType`` in
#: v0.11.3 ("tools: support anyOf types"), ``yesterdayDate`` in v0.13.3. ``.Thinking``,
#: ``.Think`` and ``.IsThinkSet`` exist from v0.9.0 on, the oldest release modelled here.
FIELDS_SINCE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    (".ToolName", (0, 9, 6)),
    (".ToolCallID", (0, 12, 10)),
    (".ID", (0, 12, 10)),
    (".ThinkLevel", (0, 11, 0)),
    ("currentDate", (0, 11, 0)),
    ("toTypeScriptType", (0, 11, 3)),
    ("yesterdayDate", (0, 13, 3)),
)

#: The first release that turns ``think`` on for a thinking-capable model when a request
#: leaves it unset (ollama/ollama 90d429f5a, "thinking: turn on thinking mode for all
#: reasoning models", first tagged v0.12.4).
THINK_UNSET_ON = (0, 12, 4)


def prompt_rules(version: ServerVersion) -> PromptRules:
    """The prompt-building rules of ``version`` (newest for an unreadable one).

    >>> prompt_rules(parse_server_version("0.9.3")[0]).merge_tool_messages
    True
    >>> prompt_rules(parse_server_version("0.33.0")[0]).merge_tool_messages
    False
    >>> [prompt_rules(parse_server_version(v)[0]).think_unset_on for v in ("0.12.3", "0.12.4")]
    [False, True]
    >>> dict(prompt_rules(parse_server_version("0.12.3")[0]).missing)
    {'.ToolCallID': 'v0.12.10', '.ID': 'v0.12.10', 'yesterdayDate': 'v0.13.3'}
    >>> prompt_rules(parse_server_version("0.33.0")[0]).missing
    ()
    """
    parts = (99, 0, 0) if version.newest else version.parts
    return PromptRules(
        merge_tool_messages=parts < (0, 9, 6),
        think_level=parts >= (0, 11, 0),
        think_unset_on=parts >= THINK_UNSET_ON,
        required_omitted_when_empty=parts >= (0, 12, 11),
        missing=tuple(
            (name, "v" + ".".join(map(str, since))) for name, since in FIELDS_SINCE if parts < since
        ),
    )


def merge_for_version(
    messages: Sequence[Mapping[str, Any]], rules: PromptRules
) -> list[dict[str, Any]]:
    """``messages`` as the server's ``collate`` hands them to a TEMPLATE that renders with the
    newest rules: on servers that merge tool results, consecutive ones become one message.

    >>> rules = prompt_rules(parse_server_version("0.9.3")[0])
    >>> results = [{"role": "tool", "content": "a"}, {"role": "tool", "content": "b"}]
    >>> merge_for_version(results, rules)
    [{'role': 'tool', 'content': 'a\\n\\nb'}]
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        if rules.merge_tool_messages and out and message["role"] == "tool" == out[-1]["role"]:
            previous = out[-1]
            out[-1] = {
                **previous,
                "content": f"{previous.get('content') or ''}\n\n{message.get('content') or ''}",
            }
        else:
            out.append(dict(message))
    return out


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What the selection reads from a registered model."""

    template: str | None = None
    """The TEMPLATE layer (None when the model has none: Ollama uses ``{{ .Prompt }}``)."""
    jinja: str | None = None
    """``tokenizer.chat_template`` in the GGUF."""
    renderer: str = ""
    parser: str = ""
    model_family: str = ""
    """The config's model family (``general.architecture``); ``gptoss`` may mean harmony."""
    embedding: bool = False
    """The GGUF has ``pooling_type`` (an embedding model: no completion)."""
    vision: bool = False
    parser_capabilities: tuple[str, ...] = ()
    """What a built-in PARSER adds (tools/thinking); Ollama's parser table is not reproduced."""


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """The chat path, where the prompt comes from, and the capabilities ``/api/show`` lists."""

    path: ChatPath
    source: TemplateSource
    capabilities: tuple[str, ...]
    reason: str
    prefer_chat_template: bool = False
    warnings: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "source": self.source,
            "capabilities": list(self.capabilities),
            "reason": self.reason,
            "warnings": list(self.warnings),
        }


def should_prefer_chat_template(jinja: str, template: str | None) -> bool:
    """``shouldPreferChatTemplate``: the Jinja wins with more capabilities unless the Go
    TEMPLATE alone has a tool round trip; with equal ones (tools on both) only when the Jinja
    has a tool round trip and the TEMPLATE has none. Counts, not sets, as Ollama compares."""
    jinja_caps, go_caps = jinja_capabilities(jinja), go_template_capabilities(template)
    jinja_trip = jinja_has_tool_round_trip(jinja)
    go_trip = go_template_has_tool_round_trip(template)
    if len(jinja_caps) > len(go_caps):
        return not go_trip or jinja_trip
    same = set(jinja_caps) == set(go_caps) and len(jinja_caps) == len(go_caps)
    if not same or TOOLS not in jinja_caps or TOOLS not in go_caps:
        return False
    return jinja_trip and not go_trip


def _uses_harmony(model: ModelFacts) -> bool:
    template = model.template or ""
    return (
        model.model_family in _HARMONY_FAMILIES
        and "<|start|>" in template
        and ("<|end|>" in template)
    )


def _base_capabilities(model: ModelFacts) -> set[str]:
    found = {EMBEDDING if model.embedding else COMPLETION}
    if model.vision:
        found.add(VISION)
    return found


def _legacy(model: ModelFacts, version: ServerVersion) -> RouteDecision:
    """Before 0.30 every chat is rendered from the Go TEMPLATE; the Jinja counts for nothing."""
    found = _base_capabilities(model) | set(go_template_capabilities(model.template))
    found |= set(model.parser_capabilities)
    source: TemplateSource = "go_template" if model.template else "none"
    if model.renderer or model.parser:
        source = _renderer_source(model)
    elif _uses_harmony(model):
        source = "harmony"
    reason = f"Ollama {version.text} renders every chat itself (the native path came in 0.30)"
    return RouteDecision("rendered", source, ordered(found), reason)


def _renderer_source(model: ModelFacts) -> TemplateSource:
    if model.renderer and model.parser:
        return "renderer_parser"
    return "renderer" if model.renderer else "parser"


def select_route(
    model: ModelFacts, version: str | ServerVersion | None, *, go_template: str | None = None
) -> RouteDecision:
    """The path and capabilities a server of ``version`` gives ``model``.

    Args:
        model: the registered model (after ``ollama create``; see ``attach_library_template``).
        version: ``/api/version``'s string, or a parsed one; unreadable means newest.
        go_template: the server's ``OLLAMA_GO_TEMPLATE`` value (None when unset).
    """
    warnings: list[str] = []
    if not isinstance(version, ServerVersion):
        version, warning = parse_server_version(version)
        if warning:
            warnings.append(warning)
    if not version.native_path:
        decision = _legacy(model, version)
        return _with_warnings(decision, warnings)
    return _with_warnings(_current(model, env=go_template_env(go_template)), warnings)


def _with_warnings(decision: RouteDecision, warnings: list[str]) -> RouteDecision:
    if not warnings:
        return decision
    return RouteDecision(
        decision.path,
        decision.source,
        decision.capabilities,
        decision.reason,
        decision.prefer_chat_template,
        (*warnings, *decision.warnings),
    )


def _current(model: ModelFacts, *, env: bool | None) -> RouteDecision:
    has_go, jinja = bool(model.template), model.jinja or ""
    harmony = _uses_harmony(model)
    prefer = (
        env is None
        and has_go
        and bool(jinja)
        and not model.renderer
        and not model.parser
        and not harmony
        and should_prefer_chat_template(jinja, model.template)
    )
    if not has_go:
        use_go = False
    elif env is not None:
        use_go = env
    else:
        use_go = not prefer
    rendered = bool(model.renderer or model.parser or harmony or use_go)
    found = _base_capabilities(model)
    if not rendered:
        found |= set(jinja_capabilities(jinja))
    if not has_go or use_go:
        found |= set(go_template_capabilities(model.template))
    found |= set(model.parser_capabilities)
    if model.model_family in _HARMONY_FAMILIES:
        found.add(THINKING)
    source, reason = _explain(model, has_go=has_go, use_go=use_go, env=env, prefer=prefer)
    warnings = []
    if not rendered and not jinja and not model.embedding:
        warnings.append(
            "the model has no tokenizer.chat_template and the Go TEMPLATE is not used: "
            "chat responses may be poorly formatted (OLLAMA_GO_TEMPLATE=1 uses it)"
        )
    path: ChatPath = "rendered" if rendered else "native"
    return RouteDecision(path, source, ordered(found), reason, prefer, tuple(warnings))


def _explain(
    model: ModelFacts, *, has_go: bool, use_go: bool, env: bool | None, prefer: bool
) -> tuple[TemplateSource, str]:
    if model.renderer or model.parser:
        return _renderer_source(model), "a RENDERER/PARSER builds the prompt"
    if _uses_harmony(model):
        return "harmony", "gpt-oss with a harmony TEMPLATE is rendered by Ollama's harmony code"
    if use_go:
        why = "OLLAMA_GO_TEMPLATE is set true" if env else "the Go TEMPLATE is not weaker"
        return "go_template", f"Ollama renders the Go TEMPLATE ({why})"
    if model.jinja:
        if not has_go:
            why = "the model has no TEMPLATE"
        elif env is False:
            why = "OLLAMA_GO_TEMPLATE is set false"
        else:
            why = "the GGUF's Jinja shows more capabilities than the Go TEMPLATE"
        return "gguf_chat_template", f"llama-server renders the GGUF's Jinja ({why})"
    return "none", "no TEMPLATE in use and no Jinja in the GGUF: llama-server gets raw text"


# --------------------------------------------------------------------------- ollama create


@dataclass(frozen=True, slots=True)
class LibraryTemplate:
    """One entry of Ollama's ``template/index.json`` with its Go template and stops."""

    name: str
    jinja: str
    template: str
    stop: tuple[str, ...] = ()


def levenshtein_below(a: str, b: str, limit: int) -> int | None:
    """Edit distance of ``a`` and ``b`` when it is below ``limit``, else None (banded DP).

    >>> levenshtein_below("kitten", "sitting", 10)
    3
    >>> levenshtein_below("a" * 300, "b" * 300, 100) is None
    True
    """
    if abs(len(a) - len(b)) >= limit:
        return None
    # A shared prefix and suffix never change the distance; near matches are mostly that.
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    end = 0
    while end < min(len(a), len(b)) - start and a[-1 - end] == b[-1 - end]:
        end += 1
    a, b = a[start : len(a) - end], b[start : len(b) - end]
    if len(a) < len(b):
        a, b = b, a
    big = limit + 1
    previous = [j if j <= limit else big for j in range(len(b) + 1)]
    for i in range(1, len(a) + 1):
        low, high = max(1, i - limit), min(len(b), i + limit)
        current = [big] * (len(b) + 1)
        current[0] = i if i <= limit else big
        char = a[i - 1]
        best = current[0]
        for j in range(low, high + 1):
            cost = 0 if b[j - 1] == char else 1
            value = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            current[j] = value if value <= limit else big
            best = min(best, current[j])
        if best >= limit:
            return None
        previous = current
    return previous[len(b)] if previous[len(b)] < limit else None


def detect_library_template(
    jinja: str | None, library: Iterable[LibraryTemplate]
) -> LibraryTemplate | None:
    """``template.Named``: the library entry whose Jinja is closest (first on ties), when its
    Levenshtein distance is below 100; None otherwise or without a Jinja."""
    if not jinja:
        return None
    best: LibraryTemplate | None = None
    score = LIBRARY_MATCH_DISTANCE
    for entry in library:
        distance = levenshtein_below(jinja, entry.jinja, score)
        if distance is not None and distance < score:
            best, score = entry, distance
    return best


def attach_library_template(
    modelfile_template: str | None, jinja: str | None, library: Iterable[LibraryTemplate]
) -> tuple[str | None, LibraryTemplate | None]:
    """The TEMPLATE a model has after ``ollama create`` from a GGUF (both 0.9.x and 0.30+).

    Creating from a model file always runs ``detectChatTemplate``; a Modelfile TEMPLATE then
    replaces what it attached (``setTemplate``). Returns the TEMPLATE and the library entry
    that supplied it (None when the Modelfile's own TEMPLATE or none is used).
    """
    if modelfile_template:
        return modelfile_template, None
    match = detect_library_template(jinja, library)
    return (match.template, match) if match else (None, None)
