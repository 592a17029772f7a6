r"""Exact comparison of answers that are plain rationals, before math-verify sees them.

math-verify compares numbers in floating point after rounding, so it calls ``1/2^{99}`` and ``1/2^{98}`` equal
(Math-Verify#14). When BOTH the gold and the predicted answer are rational expressions (integers, decimals,
``\frac``, ``a/b``, integer powers, ``+ - * /``, parentheses), we evaluate them with `fractions.Fraction` and that
verdict is final. Anything else (symbols, roots, sets, units, percent) returns ``None`` and goes to math-verify.

Departure from math-verify, on purpose: a decimal is taken at face value, so ``0.333333`` is NOT ``1/3`` here
(math-verify rounds to 6 places and accepts it). A reward that accepts truncated decimals teaches truncation.

The evaluator never hangs: inputs are capped in length, exponents in size, and intermediate results in bits.

>>> exact_equal("\\frac{1}{2^{99}}", "\\frac{1}{2^{98}}")
False
>>> exact_equal("0.5", "\\dfrac12")
True
>>> exact_equal("1,000,000", "1000000")
True
>>> exact_equal("x=3", "3") is None
True
"""

from __future__ import annotations

import re
from fractions import Fraction

_MAX_CHARS = 200
_MAX_EXPONENT = 4096
_MAX_BITS = 1 << 14  # numerators/denominators beyond 16k bits are not "answers"; let math-verify decide

_NOISE = re.compile(r"\\left|\\right|\\[,;:! ]|\\displaystyle|\$|\s+")
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")
_TOKEN = re.compile(r"\d+\.?\d*|\.\d+|\\frac|[-+*/^(){}]")


class _NotRational(Exception):
    pass


def _normalize(s: str) -> str:
    s = s.strip()
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("\\cdot", "*").replace("\\times", "*").replace("\\div", "/")
    s = s.replace("{,}", "")  # LaTeX thousands separator 1{,}000
    s = _NOISE.sub("", s)
    s = s.rstrip(".")
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    return s


def _tokenize(s: str) -> list[str]:
    tokens: list[str] = []
    i = 0
    while i < len(s):
        m = _TOKEN.match(s, i)
        if not m:
            raise _NotRational(s[i:])
        tokens.append(m.group(0))
        i = m.end()
    return tokens


class _Parser:
    """expr := term (('+'|'-') term)* ; term := unary (('*'|'/') unary)* ; unary := ('+'|'-') unary | power ;
    power := atom ('^' atom)? ; atom := number | '(' expr ')' | '{' expr '}' | '\\frac' arg arg ;
    arg := '{' expr '}' | one digit (for \\frac12)."""

    def __init__(self, tokens: list[str]):
        self.t = tokens
        self.i = 0

    def peek(self) -> str | None:
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise _NotRational(f"expected {expected!r}, got {tok!r}")
        self.i += 1
        return tok

    def parse(self) -> Fraction:
        value = self.expr()
        if self.peek() is not None:
            raise _NotRational(f"trailing {self.peek()!r}")
        return value

    def expr(self) -> Fraction:
        value = self.term()
        while self.peek() in ("+", "-"):
            value = value + self.term() if self.take() == "+" else value - self.term()
            _check(value)
        return value

    def term(self) -> Fraction:
        value = self.unary()
        while self.peek() in ("*", "/"):
            op = self.take()
            rhs = self.unary()
            if op == "*":
                value = value * rhs
            else:
                if rhs == 0:
                    raise _NotRational("division by zero")
                value = value / rhs
            _check(value)
        return value

    def unary(self) -> Fraction:
        if self.peek() in ("+", "-"):
            sign = -1 if self.take() == "-" else 1
            return sign * self.unary()
        return self.power()

    def power(self) -> Fraction:
        base = self.atom()
        if self.peek() != "^":
            return base
        self.take("^")
        exponent = self.atom() if self.peek() not in ("-", "+") else self.unary_exponent()
        if exponent.denominator != 1 or abs(exponent) > _MAX_EXPONENT:
            raise _NotRational("non-integer or huge exponent")
        if base == 0 and exponent < 0:
            raise _NotRational("0 to a negative power")
        bits = max(base.numerator.bit_length(), base.denominator.bit_length())
        if bits * abs(int(exponent)) > _MAX_BITS:
            raise _NotRational("result too large")
        return base ** int(exponent)

    def unary_exponent(self) -> Fraction:
        sign = -1 if self.take() == "-" else 1
        return sign * self.atom()

    def atom(self) -> Fraction:
        tok = self.peek()
        if tok is None:
            raise _NotRational("unexpected end")
        if tok == "(":
            self.take()
            value = self.expr()
            self.take(")")
            return value
        if tok == "{":
            self.take()
            value = self.expr()
            self.take("}")
            return value
        if tok == "\\frac":
            self.take()
            num = self.frac_arg()
            den = self.frac_arg()
            if den == 0:
                raise _NotRational("division by zero")
            return num / den
        if tok[0].isdigit() or tok[0] == ".":
            self.take()
            if len(tok) > 400:
                raise _NotRational("number too long")
            return Fraction(tok)
        raise _NotRational(f"unexpected {tok!r}")

    def frac_arg(self) -> Fraction:
        tok = self.peek()
        if tok == "{":
            return self.atom()
        if tok is not None and tok.isdigit():
            # \frac12 tokenizes as "12": the first digit is the numerator, the rest the denominator.
            self.take()
            if len(tok) > 1:
                self.t.insert(self.i, tok[1:])
            return Fraction(int(tok[0]))
        raise _NotRational("bad \\frac argument")


def _check(value: Fraction) -> None:
    if value.numerator.bit_length() > _MAX_BITS or value.denominator.bit_length() > _MAX_BITS:
        raise _NotRational("result too large")


def parse_rational(answer: str) -> Fraction | None:
    r"""The exact value of ``answer`` if it is a plain rational expression, else ``None``.

    >>> parse_rational("\\frac12")
    Fraction(1, 2)
    >>> parse_rational("-2^{-3}")
    Fraction(-1, 8)
    >>> parse_rational("1/3")
    Fraction(1, 3)
    >>> parse_rational("\\pi") is None
    True
    >>> parse_rational("2^{100000}") is None  # too large to be an answer worth evaluating here
    True
    """
    if len(answer) > _MAX_CHARS:
        return None
    s = _normalize(answer)
    if not s:
        return None
    try:
        return _Parser(_tokenize(s)).parse()
    except (_NotRational, ValueError, ZeroDivisionError, OverflowError):
        return None


def exact_equal(gold: str, pred: str) -> bool | None:
    """``True``/``False`` when both answers are plain rationals (the verdict is final), else ``None``."""
    g = parse_rational(gold)
    if g is None:
        return None
    p = parse_rational(pred)
    if p is None:
        return None
    return g == p
