"""Tokens -> a syntax tree with columns, by recursive descent. Stops at the first syntax error.

The grammar is deliberately more permissive than the language, so that the checker
(``_compiler``) can report *every* mistake of meaning at once with a precise message instead
of the parser stopping at the first one. In particular ``for``, function calls with any
arguments, and comparisons between any two operands all parse::

    rule     := hold EOF
    hold     := or_expr ["for" (NUMBER | DURATION)]     # the checker keeps it top-level only
    or_expr  := and_expr {"or" and_expr}
    and_expr := not_expr {"and" not_expr}
    not_expr := "not" not_expr | compare
    compare  := operand [CMP operand]
    operand  := NUMBER | DURATION | "(" hold ")"
              | IDENT "(" [hold {"," hold}] ")"          # function call
              | IDENT ["{" [label {"," label} [","]] "}"]  # series selector
    label    := IDENT "=" STRING

So precedence is ``not`` > ``and`` > ``or`` > ``for``, and comparisons do not chain.
"""

from __future__ import annotations

import dataclasses

from ._lexer import KEYWORDS, ConditionError, Diagnostic, Tok, Token, tokenize


@dataclasses.dataclass(frozen=True, slots=True)
class Number:
    text: str
    start: int
    end: int


@dataclasses.dataclass(frozen=True, slots=True)
class Duration:
    number: str
    """The number part as written, e.g. ``1.5``."""
    unit: str
    start: int
    end: int


@dataclasses.dataclass(frozen=True, slots=True)
class Label:
    key: str
    value: str
    """Unescaped."""
    start: int
    """Column of the key."""


@dataclasses.dataclass(frozen=True, slots=True)
class Series:
    metric: str
    labels: tuple[Label, ...]
    start: int
    end: int


@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple[Expr, ...]
    start: int
    end: int
    """Just past the closing parenthesis."""


@dataclasses.dataclass(frozen=True, slots=True)
class Compare:
    op: str
    left: Expr
    right: Expr
    op_start: int
    start: int
    end: int


@dataclasses.dataclass(frozen=True, slots=True)
class Not:
    operand: Expr
    start: int
    end: int


@dataclasses.dataclass(frozen=True, slots=True)
class Logic:
    op: str
    """``and`` or ``or``."""
    left: Expr
    right: Expr
    op_start: int
    start: int
    end: int


@dataclasses.dataclass(frozen=True, slots=True)
class Paren:
    inner: Expr
    start: int
    end: int


@dataclasses.dataclass(frozen=True, slots=True)
class Hold:
    body: Expr
    duration: Number | Duration
    for_start: int
    start: int
    end: int


Expr = Number | Duration | Series | Call | Compare | Not | Logic | Paren | Hold

_CONDITION_START = "a condition (a metric name, a function such as avg(...), not, or '(')"


def parse(text: str) -> Expr:
    """Parse ``rule_content``. Raises ConditionError with the first syntax error."""
    return _Parser(text).rule()


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = tokenize(text)
        self.i = 0

    # -- token access -------------------------------------------------------------------------

    def peek(self) -> Token:
        tok = self.toks[self.i]
        if tok.kind is Tok.BAD:
            assert tok.error is not None
            raise ConditionError(self.text, [tok.error])
        return tok

    def take(self) -> Token:
        tok = self.peek()
        self.i += 1
        return tok

    def fail(self, message: str, column: int, hint: str = "") -> ConditionError:
        return ConditionError(self.text, [Diagnostic(message, column, hint)])

    def unexpected(self, tok: Token, expected: str, hint: str = "") -> ConditionError:
        return self.fail(
            f"expected {expected}, found {tok.describe()}", tok.start, hint or _hint(tok)
        )

    # -- grammar ------------------------------------------------------------------------------

    def rule(self) -> Expr:
        if self.peek().kind is Tok.EOF:
            raise self.fail(
                "the condition is empty", 0, "write a condition such as cpu_usage > 0.9 for 10s"
            )
        expr = self.hold()
        tok = self.peek()
        if tok.kind is not Tok.EOF:
            raise self._trailing(tok, expr)
        return expr

    def _trailing(self, tok: Token, before: Expr) -> ConditionError:
        if isinstance(before, Hold):
            dur = self.text[before.duration.start : before.duration.end]
            return self.fail(
                f"unexpected {tok.describe()} after 'for {dur}'",
                tok.start,
                "for comes last: it holds the whole condition before it",
            )
        if tok.kind is Tok.RPAREN:
            return self.fail("this ')' has no matching '('", tok.start)
        return self.fail(
            f"unexpected {tok.describe()} after the condition",
            tok.start,
            _hint(tok) or "join conditions with and / or",
        )

    def hold(self) -> Expr:
        body = self.or_expr()
        if not self.peek().is_keyword("for"):
            return body
        kw = self.take()
        tok = self.peek()
        if tok.kind is Tok.DURATION:
            self.take()
            dur: Number | Duration = Duration(tok.value, tok.unit, tok.start, tok.end)
        elif tok.kind is Tok.NUMBER:  # the checker says "needs a unit" along with the rest
            self.take()
            dur = Number(tok.text, tok.start, tok.end)
        else:
            raise self.unexpected(tok, "a duration such as 10s after 'for'")
        return Hold(body, dur, kw.start, body.start, dur.end)

    def or_expr(self) -> Expr:
        left = self.and_expr()
        while self.peek().is_keyword("or"):
            op = self.take()
            right = self.and_expr()
            left = Logic("or", left, right, op.start, left.start, right.end)
        return left

    def and_expr(self) -> Expr:
        left = self.not_expr()
        while self.peek().is_keyword("and"):
            op = self.take()
            right = self.not_expr()
            left = Logic("and", left, right, op.start, left.start, right.end)
        return left

    def not_expr(self) -> Expr:
        if self.peek().is_keyword("not"):
            kw = self.take()
            operand = self.not_expr()
            return Not(operand, kw.start, operand.end)
        return self.compare()

    def compare(self) -> Expr:
        left = self.operand(_CONDITION_START)
        tok = self.peek()
        if tok.kind is not Tok.CMP:
            if tok.kind in (Tok.NUMBER, Tok.DURATION, Tok.EQUALS) or (
                tok.kind is Tok.IDENT
                and tok.text not in KEYWORDS
                and tok.text.lower() not in KEYWORDS
            ):
                what = self.text[left.start : left.end]
                raise self.unexpected(
                    tok,
                    f"a comparison (> >= < <= == !=) after {what!r}",
                    "to compare, use ==" if tok.kind is Tok.EQUALS else "",
                )
            return left
        self.take()
        right = self.operand(f"a number after {tok.text!r}")
        nxt = self.peek()
        if nxt.kind is Tok.CMP:
            raise self.fail(
                f"comparisons do not chain: unexpected {nxt.text!r}",
                nxt.start,
                "join two comparisons with and: x > 1 and x < 5",
            )
        return Compare(tok.text, left, right, tok.start, left.start, right.end)

    def operand(self, expected: str) -> Expr:
        tok = self.peek()
        if tok.kind is Tok.NUMBER:
            self.take()
            return Number(tok.text, tok.start, tok.end)
        if tok.kind is Tok.DURATION:
            self.take()
            return Duration(tok.value, tok.unit, tok.start, tok.end)
        if tok.kind is Tok.LPAREN:
            self.take()
            inner = self.hold()
            close = self.peek()
            if close.kind is not Tok.RPAREN:
                if close.kind is Tok.EOF:
                    raise self.fail(
                        f"the '(' at column {tok.start} is never closed", close.start, "add a ')'"
                    )
                if isinstance(inner, Hold):
                    raise self._trailing(close, inner)
                raise self.unexpected(
                    close,
                    f"')' to close the '(' at column {tok.start}",
                    _hint(close) or "join conditions with and / or",
                )
            close = self.take()
            return Paren(inner, tok.start, close.end)
        if tok.kind is Tok.IDENT and tok.text not in KEYWORDS:
            self.take()
            if self.peek().kind is Tok.LPAREN:
                return self.call(tok)
            return self.series(tok)
        if tok.kind is Tok.CMP and expected is _CONDITION_START:
            raise self.unexpected(
                tok, expected, "a comparison needs a series on one side: cpu > 0.9"
            )
        raise self.unexpected(tok, expected)

    def call(self, name: Token) -> Call:
        self.take()  # (
        args: list[Expr] = []
        if self.peek().kind is Tok.RPAREN:
            close = self.take()
            return Call(name.text, (), name.start, close.end)
        while True:
            args.append(self.hold())
            tok = self.peek()
            if tok.kind is Tok.COMMA:
                self.take()
                continue
            if tok.kind is Tok.RPAREN:
                self.take()
                return Call(name.text, tuple(args), name.start, tok.end)
            if tok.kind is Tok.EOF:
                raise self.fail(
                    f"the '(' of {name.text} at column {name.end} is never closed",
                    tok.start,
                    "add a ')'",
                )
            if isinstance(args[-1], Hold):
                raise self._trailing(tok, args[-1])
            raise self.unexpected(tok, f"',' or ')' in the arguments of {name.text}(...)")

    def series(self, name: Token) -> Series:
        if self.peek().kind is not Tok.LBRACE:
            return Series(name.text, (), name.start, name.end)
        brace = self.take()
        labels: list[Label] = []
        while True:
            tok = self.peek()
            if tok.kind is Tok.RBRACE:
                self.take()
                return Series(name.text, tuple(labels), name.start, tok.end)
            if tok.kind is Tok.EOF:
                raise self.fail(
                    f"the '{{' at column {brace.start} is never closed", tok.start, "add a '}'"
                )
            if tok.kind is not Tok.IDENT:
                raise self.unexpected(tok, "a label name", 'a selector looks like cpu{core="0"}')
            key = self.take()
            eq = self.peek()
            if eq.kind is not Tok.EQUALS:
                hint = 'a selector matches equal labels only: {zone="a"}'
                raise self.unexpected(eq, f"'=' after the label name {key.text!r}", hint)
            self.take()
            val = self.peek()
            if val.kind is not Tok.STRING:
                hint = (
                    f'write {key.text}="{val.text}"' if val.kind in (Tok.NUMBER, Tok.IDENT) else ""
                )
                raise self.unexpected(val, 'a quoted label value like "v"', hint)
            self.take()
            labels.append(Label(key.text, val.value, key.start))
            sep = self.peek()
            if sep.kind is Tok.COMMA:
                self.take()
            elif sep.kind is not Tok.RBRACE:
                if sep.kind is Tok.EOF:
                    raise self.fail(
                        f"the '{{' at column {brace.start} is never closed", sep.start, "add a '}'"
                    )
                raise self.unexpected(sep, "',' or '}' in the label selector")


def _hint(tok: Token) -> str:
    if tok.kind is Tok.IDENT and tok.text not in KEYWORDS and tok.text.lower() in KEYWORDS:
        return f"keywords are lowercase: {tok.text.lower()}"
    if tok.kind is Tok.STRING:
        return 'a quoted string is only a label value: cpu{core="0"}'
    if tok.kind is Tok.EQUALS:
        return "to compare, use =="
    return ""
