"""Ollama Modelfile syntax: write and read Modelfiles exactly as Ollama's own parser reads them.

``render_modelfile`` picks, per value, a quoting that Ollama's parser (ollama/ollama
``parser/parser.go:ParseFile``) gives back unchanged, and refuses values no quoting can carry.
``parse_modelfile`` follows the same state machine, so ``parse(render(x)) == x``.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from enum import Enum

import jinja2

from .._resources import template_environment
from ..errors import ModelfileError

#: Roles a ``MESSAGE`` line may carry (parser.go ``isValidMessageRole``).
MESSAGE_ROLES = frozenset({"system", "user", "assistant"})

#: Every command Ollama's parser accepts; names are case-insensitive.
COMMANDS = frozenset(
    {
        "from",
        "license",
        "template",
        "system",
        "adapter",
        "draft",
        "renderer",
        "parser",
        "parameter",
        "message",
        "requires",
    }
)

_SPACES = " \t"
_NEWLINES = "\r\n"
_WHITESPACE = " \t\r\n"
_TRIPLE = '"""'


@dataclass(frozen=True, slots=True)
class Modelfile:
    """The commands of one Modelfile, in the order we write them."""

    from_: str
    """``FROM``: a path (relative to the Modelfile's folder) or a model name."""
    adapters: tuple[str, ...] = ()
    template: str | None = None
    """The Go TEMPLATE, verbatim."""
    system: str | None = None
    parameters: tuple[tuple[str, str], ...] = ()
    """``(name, value)`` pairs in file order; ``stop`` may repeat."""
    license: str | None = None
    messages: tuple[tuple[str, str], ...] = ()
    """``(role, content)`` pairs of ``MESSAGE`` lines."""
    header_comment: str | None = None
    """Comment lines before the first command (``#`` removed); Ollama ignores them."""
    extra: tuple[tuple[str, str], ...] = field(default=())
    """Other commands Ollama knows (``draft``, ``renderer``, ``parser``, ``requires``), kept
    so that reading and rewriting a user's Modelfile loses nothing."""

    def parameter_values(self, name: str) -> list[str]:
        """All values of the parameter ``name`` (``stop`` usually has several)."""
        return [value for key, value in self.parameters if key == name]


# --------------------------------------------------------------------------- parsing


class _State(Enum):
    NIL = 0
    NAME = 1
    VALUE = 2
    PARAMETER = 3
    MESSAGE = 4
    COMMENT = 5


def _is_print(ch: str) -> bool:
    """Go's ``strconv.IsPrint``: letters, marks, numbers, punctuation, symbols, ASCII space."""
    return ch == " " or unicodedata.category(ch)[0] in "LMNPS"


def _is_alpha(ch: str) -> bool:
    return ("a" <= ch <= "z") or ("A" <= ch <= "Z")


def _is_name_char(ch: str) -> bool:
    return _is_alpha(ch) or ("0" <= ch <= "9") or ch == "_"


def _unquote(raw: str) -> tuple[str, bool]:
    '''Strip one quoting layer the way parser.go ``unquote`` does (no escapes exist).

    >>> _unquote('"""a"b"""'), _unquote('"x"'), _unquote('bare'), _unquote('"open')
    (('a"b', True), ('x', True), ('bare', True), ('', False))
    '''
    if raw.startswith(_TRIPLE):
        if len(raw) >= 6 and raw.endswith(_TRIPLE):
            return raw[3:-3], True
        return "", False
    if raw.startswith('"'):
        if len(raw) >= 2 and raw.endswith('"'):
            return raw[1:-1], True
        return "", False
    return raw, True


def _closes(buf: list[str]) -> str | None:
    """The value in ``buf`` when it forms a complete (possibly quoted) value, else None."""
    hi = len(buf)
    while hi and buf[hi - 1] in _WHITESPACE:
        hi -= 1
    lo = 0
    while lo < hi and buf[lo] in _WHITESPACE:
        lo += 1
    # Cheap pre-checks keep long quoted templates linear: only join when it may close.
    if lo < hi and buf[lo] == '"' and buf[hi - 1] != '"':
        return None
    value, ok = _unquote("".join(buf[lo:hi]))
    return value if ok else None


class _Scanner:
    """Ollama's Modelfile state machine, plus capture of the leading comment lines."""

    def __init__(self) -> None:
        self.state = _State.NIL
        self.buf: list[str] = []
        self.name = ""
        self.role = ""
        self.line = 1
        self.commands: list[tuple[str, str]] = []
        self.header: list[str] = []
        self.comment: list[str] = []

    def fail(self, message: str) -> ModelfileError:
        return ModelfileError(
            f"Modelfile line {self.line}: {message}",
            line=self.line,
            hint="fix that line; see https://github.com/ollama/ollama/blob/main/docs/modelfile.md",
        )

    def step(self, ch: str) -> tuple[_State, str | None]:
        """Next state and the rune to keep (parser.go ``parseRuneForState``)."""
        state = self.state
        if state is _State.NIL:
            if ch == "#":
                return _State.COMMENT, None
            if ch in _SPACES or ch in _NEWLINES:
                return _State.NIL, None
            return _State.NAME, ch
        if state is _State.NAME:
            if _is_alpha(ch):
                return _State.NAME, ch
            if ch in _SPACES:
                return _State.VALUE, None
            raise self.fail(f"invalid command character {ch!r}; expected one of {_command_list()}")
        if state is _State.VALUE:
            if ch in _NEWLINES or ch in _SPACES:
                return _State.NIL, ch
            return _State.VALUE, ch
        if state is _State.PARAMETER:
            if _is_name_char(ch):
                return _State.PARAMETER, ch
            if ch in _SPACES:
                return _State.VALUE, None
            raise self.fail(f"invalid character {ch!r} in a PARAMETER name")
        if state is _State.MESSAGE:
            if _is_alpha(ch):
                return _State.MESSAGE, ch
            if ch in _SPACES:
                return _State.VALUE, None
            raise self.fail(f"invalid character {ch!r} in a MESSAGE role")
        # COMMENT
        if ch in _NEWLINES:
            self.end_comment()
            return _State.NIL, None
        self.comment.append(ch)
        return _State.COMMENT, None

    def end_comment(self) -> None:
        if not self.commands:
            text = "".join(self.comment)
            self.header.append(text[1:] if text.startswith(" ") else text)
        self.comment = []

    def leave(self, nxt: _State, ch: str | None) -> _State | None:
        """Handle leaving the current state; None means stay (the value goes on)."""
        word = "".join(self.buf)
        if self.state is _State.NAME:
            lower = word.lower()
            if lower not in COMMANDS:
                raise self.fail(f"unknown command {word!r}; expected one of {_command_list()}")
            if lower == "parameter":
                return _State.PARAMETER
            self.name = "model" if lower == "from" else lower
            return _State.MESSAGE if lower == "message" else nxt
        if self.state is _State.PARAMETER:
            self.name = word
        elif self.state is _State.MESSAGE:
            if word not in MESSAGE_ROLES:
                raise self.fail(f"MESSAGE role {word!r} is not one of system, user, assistant")
            self.role = word
        elif self.state is _State.VALUE:
            # A space never ends a value; a line break ends it once the quotes are closed.
            value = None if ch is None or ch in _SPACES else _closes(self.buf)
            if value is None:
                self.buf.append(ch or "")
                return None
            self.emit(value)
        return nxt

    def emit(self, value: str) -> None:
        if self.role:
            value = f"{self.role}: {value}"
            self.role = ""
        self.commands.append((self.name, value))

    def feed(self, text: str) -> None:
        for ch in text.removeprefix("\ufeff"):
            if ch in _NEWLINES:
                self.line += 1
            nxt, keep = self.step(ch)
            if nxt is not self.state:
                moved = self.leave(nxt, keep)
                if moved is None:
                    continue
                self.buf = []
                self.state = moved
            if keep is not None and _is_print(keep):
                self.buf.append(keep)

    def finish(self) -> list[tuple[str, str]]:
        if self.state is _State.COMMENT:
            self.end_comment()
        elif self.state is _State.VALUE:
            value = _closes(self.buf)
            if value is None:
                raise self.fail("unterminated quoted value at end of file")
            self.emit(value)
        elif self.state is not _State.NIL:
            raise self.fail("the file ends inside a command")
        return self.commands


def _command_list() -> str:
    return ", ".join(sorted(c.upper() for c in COMMANDS))


def scan_commands(text: str) -> list[tuple[str, str]]:
    """Return the ``(command, argument)`` pairs Ollama reads from ``text``.

    Command names come back lower-case, ``FROM`` as ``model``, parameters under their own
    name and messages as ``"role: content"``, as in parser.go ``Command``.

    >>> scan_commands('FROM ./m.gguf\\nPARAMETER stop "<|im_end|>"\\nTEMPLATE "{{ .Prompt }}"\\n')
    [('model', './m.gguf'), ('stop', '<|im_end|>'), ('template', '{{ .Prompt }}')]
    """
    scanner = _Scanner()
    scanner.feed(text)
    return scanner.finish()


def parse_modelfile(text: str) -> Modelfile:
    """Parse a Modelfile the way ``ollama create`` does.

    Why our own parser: the doctor command reads users' Modelfiles, and the writer proves its
    quoting by reading its own output back. Later ``TEMPLATE``/``SYSTEM`` lines win, as in
    Ollama; several ``LICENSE`` lines are joined by a line break, as ``ollama show`` does.

    Args:
        text: the Modelfile's content.

    Returns:
        The commands as a ``Modelfile``.

    Raises:
        ModelfileError: a line does not parse, a quote is left open, or there is no FROM.
    """
    scanner = _Scanner()
    scanner.feed(text)
    commands = scanner.finish()
    froms = [arg for name, arg in commands if name == "model"]
    if not froms:
        raise ModelfileError(
            "Modelfile has no FROM line", hint="add `FROM ./model.gguf` (or a model name)"
        )
    if len(froms) > 1:
        raise ModelfileError(
            f"Modelfile has {len(froms)} FROM lines; only one is supported",
            hint="keep one FROM line per Modelfile",
        )
    return _modelfile_from_commands(commands, froms[0], scanner.header)


def _modelfile_from_commands(
    commands: list[tuple[str, str]], from_: str, header: list[str]
) -> Modelfile:
    adapters: list[str] = []
    parameters: list[tuple[str, str]] = []
    messages: list[tuple[str, str]] = []
    licenses: list[str] = []
    extra: list[tuple[str, str]] = []
    template: str | None = None
    system: str | None = None
    for name, arg in commands:
        if name == "model":
            continue
        if name == "adapter":
            adapters.append(arg)
        elif name == "template":
            template = arg
        elif name == "system":
            system = arg
        elif name == "license":
            licenses.append(arg)
        elif name == "message":
            role, _, content = arg.partition(": ")
            messages.append((role, content))
        elif name in COMMANDS:
            extra.append((name, arg))
        else:
            parameters.append((name, arg))
    return Modelfile(
        from_=from_,
        adapters=tuple(adapters),
        template=template,
        system=system,
        parameters=tuple(parameters),
        license="\n".join(licenses) if licenses else None,
        messages=tuple(messages),
        header_comment="\n".join(header) if header else None,
        extra=tuple(extra),
    )


# --------------------------------------------------------------------------- writing


def quote_value(value: str, *, what: str = "value", prefer_block: bool = False) -> str:
    '''Quote ``value`` so that Ollama's parser gives it back unchanged.

    Ollama's quoting has no escapes: a value ends at the first line break where the text so far
    closes its opening quote. So we try bare, ``"…"`` and ``"""…"""`` and keep the first
    form our (Ollama-equivalent) scanner reads back as ``value``.

    Args:
        value: the text to write.
        what: the field name, for the error message.
        prefer_block: try the triple-quoted form first (templates, system prompts).

    Returns:
        The quoted text, without the command name.

    Raises:
        ModelfileError: no quoting survives, e.g. the value has a control character (Ollama drops
            those) or a line break right after three double quotes.

    >>> quote_value("<|im_end|>"), quote_value(" x"), quote_value('a\\n"""b', prefer_block=True)
    ('<|im_end|>', '" x"', '"""a\\n"""b"""')
    '''
    bad = sorted({ch for ch in value if not _is_print(ch) and ch not in _WHITESPACE})
    if bad:
        raise ModelfileError(
            f"the {what} contains characters Ollama's Modelfile parser drops: "
            + ", ".join(f"U+{ord(ch):04X}" for ch in bad),
            hint="register through the API (no Modelfile) or remove those characters",
        )
    forms = [f"{_TRIPLE}{value}{_TRIPLE}", f'"{value}"']
    if value:
        forms.append(value)
    if not prefer_block:
        forms.reverse()
    for form in forms:
        if _survives(form, value):
            return form
    raise ModelfileError(
        f"the {what} has three double quotes followed by a line break, which no Modelfile "
        "quoting can carry",
        hint="change the text (e.g. a space after the quotes), or create the model with "
        "Ollama's HTTP API (POST /api/create takes the text as JSON; no Modelfile)",
    )


def _survives(form: str, value: str) -> bool:
    try:
        return scan_commands(f"SYSTEM {form}\n") == [("system", value)]
    except ModelfileError:
        return False


def render_modelfile(modelfile: Modelfile) -> str:
    """Render ``modelfile`` as text that ``ollama create`` reads back as the same commands.

    Args:
        modelfile: what to write.

    Returns:
        The Modelfile text (from ``templates/Modelfile.j2``), ending in a newline.

    Raises:
        ModelfileError: a name or value cannot be written (see ``quote_value``).
    """
    context = {
        "header": _header_lines(modelfile.header_comment),
        "from_": quote_value(modelfile.from_, what="FROM path"),
        "adapters": [quote_value(a, what="ADAPTER path") for a in modelfile.adapters],
        "extra": [
            (_checked_command(name), quote_value(arg, what=name)) for name, arg in modelfile.extra
        ],
        "template": _block(modelfile.template, "TEMPLATE", always=True),
        "system": _block(modelfile.system, "SYSTEM"),
        "parameters": [
            (_checked_parameter(name), quote_value(value, what=f"PARAMETER {name}"))
            for name, value in modelfile.parameters
        ],
        "messages": [
            (
                _checked_role(role),
                quote_value(content, what="MESSAGE", prefer_block="\n" in content),
            )
            for role, content in modelfile.messages
        ],
        "license": _block(modelfile.license, "LICENSE"),
    }
    return _jinja_template().render(context)


def _block(value: str | None, what: str, *, always: bool = False) -> str | None:
    """Triple quotes for templates and multi-line text, the plainest form otherwise."""
    if value is None:
        return None
    return quote_value(value, what=what, prefer_block=always or "\n" in value)


def _header_lines(header: str | None) -> list[str]:
    if header is None:
        return []
    if "\r" in header:
        raise ModelfileError(
            "the header comment contains a carriage return, which would end the comment",
            hint="use \\n line breaks in the header comment",
        )
    return [f"# {line}" if line else "#" for line in header.split("\n")]


def _checked_parameter(name: str) -> str:
    if not name or not all(_is_name_char(c) for c in name):
        raise ModelfileError(
            f"invalid PARAMETER name {name!r}", hint="use letters, digits and underscores only"
        )
    if name.lower() in COMMANDS:
        raise ModelfileError(
            f"PARAMETER name {name!r} collides with a Modelfile command",
            hint="use Ollama's parameter names (stop, temperature, num_ctx, ...)",
        )
    return name


def _checked_role(role: str) -> str:
    if role not in MESSAGE_ROLES:
        raise ModelfileError(
            f"MESSAGE role {role!r} is not one of system, user, assistant",
            hint="use one of system, user, assistant",
        )
    return role


def _checked_command(name: str) -> str:
    if name not in COMMANDS or name in {"from", "model", "parameter", "message"}:
        raise ModelfileError(
            f"unsupported extra Modelfile command {name!r}",
            hint="use the dedicated Modelfile field for it",
        )
    return name.upper()


def _jinja_template() -> jinja2.Template:
    return template_environment().get_template("Modelfile.j2")


__all__ = [
    "COMMANDS",
    "MESSAGE_ROLES",
    "Modelfile",
    "parse_modelfile",
    "quote_value",
    "render_modelfile",
    "scan_commands",
]
