"""Tokenizer for Go's text/template syntax (``{{``/``}}`` delimiters, trim markers, comments).

Mirrors the state machine of Go's ``text/template/parse/lex.go`` so trimming and error cases
fall exactly where Go puts them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from deploy_to_ollama.errors import TemplateSyntaxError

LEFT_DELIM = "{{"
RIGHT_DELIM = "}}"
SPACE_CHARS = " \t\r\n"
KEYWORDS = frozenset(
    {
        "block",
        "break",
        "continue",
        "define",
        "else",
        "end",
        "if",
        "range",
        "nil",
        "template",
        "with",
    }
)
TERMINATORS = frozenset(" \t\r\n.,|:()")
_WORD = re.compile(r"\w*")
_SPACES = re.compile(r"[ \t\r\n]*")


@dataclass(frozen=True, slots=True)
class Token:
    """One lexed item; ``kind`` is a keyword name or one of the upper-case item kinds."""

    kind: str
    value: str
    pos: int


def _is_alnum(ch: str) -> bool:
    return ch == "_" or ch.isalpha() or ch.isdigit()


class Lexer:
    """Turns template text into a list of tokens, raising ``TemplateSyntaxError`` like Go."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.start = 0
        self.tokens: list[Token] = []
        self.paren_depth = 0

    def error(self, message: str, pos: int | None = None) -> TemplateSyntaxError:
        where = self.pos if pos is None else pos
        line = self.text.count("\n", 0, where) + 1
        column = where - (self.text.rfind("\n", 0, where) + 1) + 1
        return TemplateSyntaxError(
            f"template: :{line}: {message}",
            line=line,
            column=column,
            hint="fix the Go template syntax at that line",
        )

    def emit(self, kind: str) -> None:
        self.tokens.append(Token(kind, self.text[self.start : self.pos], self.start))
        self.start = self.pos

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def lex(self) -> list[Token]:
        while self.pos <= len(self.text):
            if not self._lex_text():
                break
            self._lex_action()
        self.tokens.append(Token("EOF", "", len(self.text)))
        return self.tokens

    def _has_left_trim(self, at: int) -> bool:
        return (
            self.text.startswith("-", at)
            and at + 1 < len(self.text)
            and (self.text[at + 1] in SPACE_CHARS)
        )

    def _at_right_delim(self) -> tuple[bool, bool]:
        text, pos = self.text, self.pos
        if (
            pos < len(text)
            and text[pos] in SPACE_CHARS
            and text.startswith("-" + RIGHT_DELIM, pos + 1)
        ):
            return True, True
        return text.startswith(RIGHT_DELIM, pos), False

    def _lex_text(self) -> bool:
        """Emit text up to the next ``{{``; return False at end of input."""
        found = self.text.find(LEFT_DELIM, self.pos)
        if found < 0:
            self.pos = len(self.text)
            if self.pos > self.start:
                self.emit("TEXT")
            return False
        end = found
        if self._has_left_trim(found + len(LEFT_DELIM)):
            end = len(self.text[self.start : found].rstrip(SPACE_CHARS)) + self.start
        if end > self.start:
            self.tokens.append(Token("TEXT", self.text[self.start : end], self.start))
        self.pos = self.start = found
        return True

    def _lex_action(self) -> None:
        self.pos += len(LEFT_DELIM)
        trim = self._has_left_trim(self.pos)
        after = self.pos + (2 if trim else 0)
        if self.text.startswith("/*", after):
            self._lex_comment(after)
            return
        self.emit("LEFT")
        self.pos = self.start = after
        self.paren_depth = 0
        while True:
            delim, trim_right = self._at_right_delim()
            if delim:
                if self.paren_depth:
                    raise self.error("unclosed left paren")
                self._lex_right_delim(trim=trim_right)
                return
            self._lex_inside_action()

    def _lex_comment(self, at: int) -> None:
        end = self.text.find("*/", at + 2)
        if end < 0:
            raise self.error("unclosed comment")
        self.pos = end + 2
        delim, trim = self._at_right_delim()
        if not delim:
            raise self.error("comment ends before closing delimiter")
        self.pos += (2 if trim else 0) + len(RIGHT_DELIM)
        if trim:
            self.pos = len(self.text) - len(self.text[self.pos :].lstrip(SPACE_CHARS))
        self.start = self.pos

    def _lex_right_delim(self, *, trim: bool) -> None:
        if trim:
            self.pos += 2
            self.start = self.pos
        self.pos += len(RIGHT_DELIM)
        self.emit("RIGHT")
        if trim:
            self.pos = len(self.text) - len(self.text[self.pos :].lstrip(SPACE_CHARS))
            self.start = self.pos

    def _lex_inside_action(self) -> None:
        ch = self.peek()
        if ch == "":
            raise self.error("unclosed action")
        self.pos += 1
        if ch in SPACE_CHARS:
            self.pos -= 1
            self._lex_space()
        elif ch == "=":
            self.emit("ASSIGN")
        elif ch == ":":
            if self.peek() != "=":
                raise self.error("expected :=")
            self.pos += 1
            self.emit("DECLARE")
        elif ch == "|":
            self.emit("PIPE")
        elif ch == '"':
            self._lex_quote()
        elif ch == "`":
            self._lex_raw_quote()
        elif ch == "$":
            self._lex_field_or_variable("VARIABLE")
        elif ch == "'":
            self._lex_char()
        elif ch == "." and not ("0" <= self.peek() <= "9" and self.peek() != ""):
            self._lex_field_or_variable("FIELD")
        elif ch in "+-." or "0" <= ch <= "9":
            self.pos -= 1
            self._lex_number()
        elif _is_alnum(ch):
            self.pos -= 1
            self._lex_identifier()
        elif ch == "(":
            self.paren_depth += 1
            self.emit("LPAREN")
        elif ch == ")":
            self.paren_depth -= 1
            if self.paren_depth < 0:
                raise self.error("unexpected right paren")
            self.emit("RPAREN")
        elif ch.isascii() and ch.isprintable():
            self.emit("CHAR")
        else:
            raise self.error(f"unrecognized character in action: U+{ord(ch):04X}")

    def _lex_space(self) -> None:
        match = _SPACES.match(self.text, self.pos)
        assert match is not None
        count = match.end() - self.pos
        self.pos = match.end()
        if self.text.startswith("-" + RIGHT_DELIM, self.pos):
            # The last space belongs to a " -}}" trim marker.
            self.pos -= 1
            if count == 1:
                return
        self.emit("SPACE")

    def _at_terminator(self) -> bool:
        if self.pos >= len(self.text):
            return True
        return self.text[self.pos] in TERMINATORS or self.text.startswith(RIGHT_DELIM, self.pos)

    def _lex_field_or_variable(self, kind: str) -> None:
        if self._at_terminator():
            self.emit("VARIABLE" if kind == "VARIABLE" else "DOT")
            return
        self._skip_word()
        if not self._at_terminator():
            raise self.error(f"bad character U+{ord(self.peek()):04X}")
        self.emit(kind)

    def _skip_word(self) -> None:
        match = _WORD.match(self.text, self.pos)
        assert match is not None
        self.pos = match.end()

    def _lex_identifier(self) -> None:
        self._skip_word()
        word = self.text[self.start : self.pos]
        if not self._at_terminator():
            raise self.error(f"bad character U+{ord(self.peek()):04X}")
        if word in KEYWORDS:
            self.emit(word)
        elif word in ("true", "false"):
            self.emit("BOOL")
        else:
            self.emit("IDENT")

    def _lex_quote(self) -> None:
        while True:
            ch = self.peek()
            self.pos += 1
            if ch == "\\":
                if self.peek() in ("", "\n"):
                    raise self.error("unterminated quoted string")
                self.pos += 1
            elif ch in ("", "\n"):
                raise self.error("unterminated quoted string")
            elif ch == '"':
                break
        self.emit("STRING")

    def _lex_raw_quote(self) -> None:
        end = self.text.find("`", self.pos)
        if end < 0:
            raise self.error("unterminated raw quoted string")
        self.pos = end + 1
        self.emit("RAWSTRING")

    def _lex_char(self) -> None:
        while True:
            ch = self.peek()
            self.pos += 1
            if ch == "\\":
                if self.peek() in ("", "\n"):
                    raise self.error("unterminated character constant")
                self.pos += 1
            elif ch in ("", "\n"):
                raise self.error("unterminated character constant")
            elif ch == "'":
                break
        self.emit("CHARCONST")

    def _accept(self, chars: str) -> bool:
        if self.peek() and self.peek() in chars:
            self.pos += 1
            return True
        return False

    def _accept_run(self, chars: str) -> None:
        while self._accept(chars):
            pass

    def _scan_number(self) -> bool:
        self._accept("+-")
        digits = "0123456789_"
        if self._accept("0"):
            if self._accept("xX"):
                digits = "0123456789abcdefABCDEF_"
            elif self._accept("oO"):
                digits = "01234567_"
            elif self._accept("bB"):
                digits = "01_"
        self._accept_run(digits)
        if self._accept("."):
            self._accept_run(digits)
        if len(digits) == 11 and self._accept("eE"):
            self._accept("+-")
            self._accept_run("0123456789_")
        if len(digits) == 23 and self._accept("pP"):
            self._accept("+-")
            self._accept_run("0123456789_")
        self._accept("i")
        if self.peek() and _is_alnum(self.peek()):
            self.pos += 1
            return False
        return True

    def _lex_number(self) -> None:
        if not self._scan_number():
            raise self.error(f"bad number syntax: {self.text[self.start : self.pos]!r}")
        if self.peek() in ("+", "-") and self.peek() != "":
            if not self._scan_number() or self.text[self.pos - 1] != "i":
                raise self.error(f"bad number syntax: {self.text[self.start : self.pos]!r}")
            self.emit("COMPLEX")
            return
        self.emit("NUMBER")


def tokenize(text: str) -> list[Token]:
    """Lex a whole template into tokens (comments dropped, trim markers applied)."""
    return Lexer(text).lex()
