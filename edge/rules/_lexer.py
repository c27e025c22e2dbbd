"""``rule_content`` text -> tokens, and the error type every stage of the language raises.

The language is small enough that the lexer is a single left-to-right scan. It never raises:
a character it cannot read becomes a ``BAD`` token carrying the diagnostic, so the parser
reports whichever error comes first in the text, lexical or syntactic.

Columns are 0-based character offsets into the text the lexer was given.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from typing import NamedTuple

from ..errors import RuleError

KEYWORDS = frozenset({"and", "or", "not", "for"})
"""Reserved words, lowercase only: ``AND`` is an identifier (and so a syntax error)."""

DURATION_UNITS = {
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
"""Unit suffix -> nanoseconds."""


class Diagnostic(NamedTuple):
    """One error in a condition: what is wrong, where (a 0-based column into the text), and
    what to do about it ("" when there is no hint)."""

    message: str
    column: int
    hint: str = ""


class ConditionError(RuleError, ValueError):
    """A ``rule_content`` that does not compile. ``errors`` lists every problem found, in
    column order: all the checker's errors, or the first syntax error.

    A ValueError too, so callers of the old threshold-only ``parse_condition`` keep working.
    """

    def __init__(self, text: str, errors: list[Diagnostic]):
        self.text = text
        self.errors = sorted(errors, key=lambda d: d.column)
        super().__init__("; ".join(f"column {d.column}: {d.message}" for d in self.errors))


class Tok(enum.Enum):
    NUMBER = "a number"
    DURATION = "a duration"
    IDENT = "a name"
    STRING = "a quoted string"
    CMP = "a comparison"
    LPAREN = "("
    RPAREN = ")"
    LBRACE = "{"
    RBRACE = "}"
    COMMA = ","
    EQUALS = "="
    EOF = "end of text"
    BAD = "an unreadable character"


@dataclasses.dataclass(frozen=True, slots=True)
class Token:
    kind: Tok
    text: str
    """Exactly as written (a STRING keeps its quotes and escapes)."""
    start: int
    end: int
    value: str = ""
    """STRING: the unescaped value. NUMBER/DURATION: the number part, without the unit."""
    unit: str = ""
    """DURATION only."""
    error: Diagnostic | None = None
    """BAD only."""

    def is_keyword(self, word: str) -> bool:
        return self.kind is Tok.IDENT and self.text == word

    def describe(self) -> str:
        """How an error message names this token."""
        if self.kind is Tok.EOF:
            return "end of text"
        return repr(self.text) if len(self.text) <= 24 else repr(self.text[:21] + "...")


_SPACE = re.compile(r"\s+")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_SUFFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.:]*")
_CMP = re.compile(r">=|<=|==|!=|>|<")
_PUNCT = {
    "(": Tok.LPAREN,
    ")": Tok.RPAREN,
    "{": Tok.LBRACE,
    "}": Tok.RBRACE,
    ",": Tok.COMMA,
    "=": Tok.EQUALS,
}
_BAD_HINTS = {
    "&": "write and",
    "|": "write or",
    "!": "write not (or != to compare)",
    "'": 'label values use double quotes: {zone="a"}',
    "-": "a minus sign belongs to a number: -3",
    "+": "a plus sign belongs to a number: +3",
}


def tokenize(text: str) -> list[Token]:
    """Every token of ``text``, ending with EOF, or with BAD at the first unreadable spot."""
    out: list[Token] = []
    pos, n = 0, len(text)
    while True:
        m = _SPACE.match(text, pos)
        if m:
            pos = m.end()
        if pos >= n:
            out.append(Token(Tok.EOF, "", n, n))
            return out
        tok = _token(text, pos)
        out.append(tok)
        if tok.kind is Tok.BAD:
            return out
        pos = tok.end


def _token(text: str, pos: int) -> Token:
    ch = text[pos]
    m = _NUMBER.match(text, pos)
    if m:
        return _number(text, m)
    m = _IDENT.match(text, pos)
    if m:
        return Token(Tok.IDENT, m.group(), pos, m.end())
    m = _CMP.match(text, pos)
    if m:
        return Token(Tok.CMP, m.group(), pos, m.end())
    if ch in _PUNCT:
        return Token(_PUNCT[ch], ch, pos, pos + 1)
    if ch == '"':
        return _string(text, pos)
    return _bad(pos, ch, f"unexpected character {ch!r}", _BAD_HINTS.get(ch, ""))


def _number(text: str, m: re.Match[str]) -> Token:
    start, end = m.start(), m.end()
    s = _SUFFIX.match(text, end)
    if not s:
        return Token(Tok.NUMBER, m.group(), start, end, value=m.group())
    unit = s.group()
    if unit in DURATION_UNITS:
        return Token(Tok.DURATION, text[start : s.end()], start, s.end(), m.group(), unit)
    if unit[0] in "eE" and "e" not in m.group().lower():
        hint = "an exponent needs digits, as in 1e3 or 2.5e-3"
    else:
        hint = "durations take ms, s, m or h (10s, 1.5m); put a space between a number and a word"
    return _bad(end, unit, f"unknown unit {unit!r} after {m.group()}", hint)


def _string(text: str, start: int) -> Token:
    chars: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == '"':
            return Token(Tok.STRING, text[start : i + 1], start, i + 1, value="".join(chars))
        if ch == "\\":
            nxt = text[i + 1 : i + 2]
            if nxt not in ('"', "\\"):
                return _bad(
                    i,
                    "\\" + nxt,
                    f"unknown escape \\{nxt}" if nxt else "a backslash ends the text",
                    'inside a label value only \\" and \\\\ are escapes',
                )
            chars.append(nxt)
            i += 2
            continue
        chars.append(ch)
        i += 1
    return _bad(start, '"', "this quoted string is never closed", 'end it with "')


def _bad(pos: int, text: str, message: str, hint: str) -> Token:
    return Token(Tok.BAD, text, pos, pos + len(text), error=Diagnostic(message, pos, hint))
