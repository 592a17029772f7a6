r"""Critique reward for numerical steps (BlueLM-2.5 §2.3.6, "critique RMs that check numerical steps"): every
arithmetic step of a reasoning trace is re-computed exactly; the reward is the fraction of correct steps, and the
first wrong step is reported.

Rule-based, exact and fast: numbers become `fractions.Fraction` (no floats), expressions are parsed by a small
recursive-descent parser over ``+ - * / ( )`` (never ``eval``). A report's critique RM is a fine-tuned model; this
one is a rule, so it cannot be fooled and costs microseconds — the departure is that it judges arithmetic only.

What counts as a step: an equation on one line, ``a op b = c``, or a chain ``a + b = c + d = e`` (each ``=``
between two computable sides is one step), with spaces or none (``3*4=12``), unicode ``× ÷ − ·``, LaTeX
``\times \div \cdot``, decimals, negative numbers and thousands separators (``1,234``). A link where neither side
holds an operator (``7 = 7``) is not a step. A side that is cut out of surrounding text (``2a + 3 = 7``,
``x^2 + 3 = 12``, ``5 m + 3 m = 8 m``) is dropped rather than misread, so text that is not arithmetic never counts
as a wrong step. A right-hand decimal written with d places is accepted when it is the exact value rounded to d
places (``10 / 3 = 3.33``): traces round.

    >>> c = check_steps("3 + 4 = 7\n7 × 2 = 15\nso 15 - 1 = 14")
    >>> c.fraction, c.first_wrong.text, c.first_wrong.expected
    (0.6666666666666666, '7 * 2 = 15', '14')

Used two ways: by the router as a term of the math reward (``rewards.domains.math.critique: {mode: multiply,
weight: 0.5}``, see `CritiqueConfig`), and served as a reward model (``mixrl serve-rm --kind critique``, see
`service_score`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

MODES = ("off", "multiply", "add")


@dataclass(frozen=True)
class CritiqueConfig:
    """How the critique enters a domain's reward.

    mode: ``off``; ``multiply``: the rule reward is multiplied by ``1 - weight·(1 - fraction)`` (weight 1: by the
        fraction itself); ``add``: ``weight·fraction`` is added to the rule reward as its own term.
    weight: in [0, 1] for ``multiply``; any non-negative scale for ``add``.
    A response without a checkable step gets no critique (×1, +0): the critique judges the steps that are
    written, it does not demand steps (the format rules do that).
    """

    mode: str = "off"
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"critique.mode must be one of {MODES}, got {self.mode!r}")
        if self.weight < 0 or (self.mode == "multiply" and self.weight > 1):
            raise ValueError(f"critique.weight must be in [0, 1] for multiply, >= 0 for add; got {self.weight}")


@dataclass(frozen=True)
class Step:
    """One checked equation link: ``text`` as written with operators normalised (``7 * 2 = 15``), its 1-based ``line``, whether it holds,
    and ``expected``: the exact value of the left side (``"undefined"`` on division by zero)."""

    text: str
    line: int
    correct: bool
    expected: str


@dataclass(frozen=True)
class Critique:
    """Every step found, in order; ``fraction`` is None when there is none."""

    steps: tuple[Step, ...]

    @property
    def correct_steps(self) -> int:
        return sum(s.correct for s in self.steps)

    @property
    def fraction(self) -> float | None:
        return self.correct_steps / len(self.steps) if self.steps else None

    @property
    def first_wrong(self) -> Step | None:
        return next((s for s in self.steps if not s.correct), None)


# -------------------------------------------------------------------------------------------- parsing

_NORMALISE = [("\\times", "×"), ("\\cdot", "·"), ("\\div", "÷"), ("−", "-"), ("×", "*"), ("·", "*"), ("⋅", "*"),
              ("÷", "/"), ("$", " "), ("\\(", " "), ("\\)", " ")]
_LIST_MARKER = re.compile(r"^\s*(?:[-*]\s+|\d+[.)]\s+|step\s+\d+\s*[:.)]\s*)", re.IGNORECASE)
_SPAN = re.compile(r"[0-9.,+\-*/()= \t]+")
# a comma is a thousands separator only between a digit and exactly three digits; any other comma, and a period
# followed by a space, ends a clause
_CLAUSE_BREAK = re.compile(r",(?!(?<=\d,)\d{3}(?!\d))|\.(?=\s)|\.$")
_TOKEN = re.compile(r"\s*(?:(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)|([-+*/()]))")
_SAFE_BEFORE = set(":;\"'“”‘’[{<|>") | {""}
_BINARY_START = re.compile(r"^\s*(?:[+*/]|-\s)")


class _ParseError(ValueError):
    """The text of a step is not arithmetic this parser reads: the step is skipped, never counted wrong."""


class _Undefined(ArithmeticError):
    """A step divides by zero: it is a wrong step."""


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise _ParseError(text[pos:])
        out.append(m.group(1).replace(",", "") if m.group(1) else m.group(2))
        pos = m.end()
    return out


def evaluate(text: str) -> Fraction:
    """The exact value of an arithmetic expression; raises ValueError when it is not one, ArithmeticError on
    division by zero.

    >>> evaluate("1,234.5 * 2"), evaluate("-(3 - 5) / 4"), evaluate("0.1 + 0.2") == Fraction(3, 10)
    (Fraction(2469, 1), Fraction(1, 2), True)
    >>> _value("2(3)") is None, _value("1 / (2 - 2)")  # implicit products are not read; x/0 is undefined
    (True, 'undefined')
    """
    toks = _tokens(text)
    if not toks:
        raise _ParseError("empty")
    pos = 0

    def peek() -> str | None:
        return toks[pos] if pos < len(toks) else None

    def take() -> str:
        nonlocal pos
        pos += 1
        return toks[pos - 1]

    def expr() -> Fraction:
        value = term()
        while peek() in ("+", "-"):
            value = value + term() if take() == "+" else value - term()
        return value

    def term() -> Fraction:
        value = unary()
        while peek() in ("*", "/"):
            if take() == "*":
                value *= unary()
            else:
                divisor = unary()
                if divisor == 0:
                    raise _Undefined("division by zero")
                value /= divisor
        return value

    def unary() -> Fraction:
        if peek() in ("-", "+"):
            return -unary() if take() == "-" else unary()
        return atom()

    def atom() -> Fraction:
        tok = peek()
        if tok is None:
            raise _ParseError("unexpected end")
        if tok == "(":
            take()
            value = expr()
            if peek() != ")":
                raise _ParseError("unbalanced '('")
            take()
            return value
        if tok[0].isdigit() or tok[0] == ".":
            return Fraction(take())
        raise _ParseError(f"unexpected {tok!r}")

    value = expr()
    if pos != len(toks):
        raise _ParseError(f"trailing {toks[pos]!r}")
    return value


def _has_operator(side: str) -> bool:
    return bool(re.search(r"\d\s*[-+*/]|[()]", side.strip()))


def _decimals(side: str) -> int | None:
    m = re.fullmatch(r"\s*-?\d{1,3}(?:,\d{3})*(?:\.(\d+))?\s*|\s*-?\d+\.(\d+)\s*", side)
    if m is None:
        return None
    places = m.group(1) or m.group(2)
    return len(places) if places else None


def _agree(left: Fraction, right: Fraction, right_text: str) -> bool:
    if left == right:
        return True
    places = _decimals(right_text)  # a written decimal may be the exact value rounded to its places
    return places is not None and abs(left - right) <= Fraction(1, 2 * 10**places)


def _show(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    d = value.denominator
    while d % 2 == 0:
        d //= 2
    while d % 5 == 0:
        d //= 5
    if d == 1:  # a terminating decimal
        places = 0
        while (value * 10**places).denominator != 1:
            places += 1
        return f"{float(value):.{places}f}" if places <= 15 else str(value)
    return str(value)


def _value(side: str) -> Fraction | str | None:
    """A side's value; "undefined" on division by zero; None when it is not an arithmetic expression."""
    try:
        return evaluate(side)
    except _Undefined:
        return "undefined"
    except _ParseError:
        return None


def _chain_steps(span: str, cut_left: bool, cut_right: bool, line: int) -> list[Step]:
    sides = span.split("=")
    if cut_left or _BINARY_START.match(sides[0]):
        sides[0] = ""  # the first side is the tail of something longer (`2a + 3`, `x^2 + 3`, `5 m + 3 m`)
    if cut_right:
        sides[-1] = ""
    values = [_value(s) if s.strip() else None for s in sides]
    steps = []
    for i in range(len(sides) - 1):
        left, right = values[i], values[i + 1]
        if left is None or right is None or not (_has_operator(sides[i]) or _has_operator(sides[i + 1])):
            continue
        text = f"{sides[i].strip()} = {sides[i + 1].strip()}"
        if isinstance(left, str) or isinstance(right, str):
            steps.append(Step(text, line, False, "undefined"))
        else:
            steps.append(Step(text, line, _agree(left, right, sides[i + 1]), _show(left)))
    return steps


def check_steps(text: str) -> Critique:
    r"""Find and check every arithmetic step of ``text`` (line by line, left to right).

    >>> [(s.text, s.correct) for s in check_steps("12 + 30 = 40 + 2 = 42, then 42 ÷ 7 = 6.").steps]
    [('12 + 30 = 40 + 2', True), ('40 + 2 = 42', True), ('42 / 7 = 6', True)]
    >>> check_steps("Let 2a + 3 = 7, so a = 2 and x^2 + 3 = 12.").steps
    ()
    >>> check_steps("1,250 - 1,000.5 = 249.5; 10 / 3 = 3.33; 10 / 3 = 3.4").fraction
    0.6666666666666666
    """
    steps: list[Step] = []
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw
        for old, new in _NORMALISE:
            line = line.replace(old, new)
        line = _LIST_MARKER.sub(lambda m: " " * len(m.group()), line, count=1)
        for m in _SPAN.finditer(line):
            if "=" not in m.group():
                continue
            before = line[m.start() - 1] if m.start() > 0 else ""
            after = line[m.end()] if m.end() < len(line) else ""
            # split the span into clauses at commas that are not thousands separators and at sentence periods
            start = 0
            pieces = []
            for b in _CLAUSE_BREAK.finditer(m.group()):
                pieces.append((start, b.start()))
                start = b.end()
            pieces.append((start, len(m.group())))
            for k, (a, b) in enumerate(pieces):
                piece = m.group()[a:b]
                if "=" not in piece:
                    continue
                # a side touching a letter (or ^, %, ...) without a space between is cut out of a longer term
                cut_left = k == 0 and not piece[:1].isspace() and before not in _SAFE_BEFORE
                cut_right = (k == len(pieces) - 1 and not piece[-1:].isspace() and after not in _SAFE_BEFORE
                             and after not in ".,")
                steps.extend(_chain_steps(piece, cut_left, cut_right, line_no))
    return Critique(tuple(steps))


def critique_fraction(text: str) -> float | None:
    """The fraction of correct arithmetic steps; None when there is no step (masked, never 0).

    >>> critique_fraction("3*4=12 and 3*4=13"), critique_fraction("no arithmetic here") is None
    (0.5, True)
    """
    return check_steps(text).fraction


def critique_adjust(rule: float, critique: Critique, cfg: CritiqueConfig) -> tuple[float, dict[str, float]]:
    r"""The rule reward with the critique applied per `CritiqueConfig`, and the components to log.

    >>> c = check_steps("2 + 2 = 4\n4 * 3 = 13")
    >>> critique_adjust(1.0, c, CritiqueConfig("multiply", 0.5))
    (0.75, {'critique': 0.5, 'critique_coefficient': 0.75})
    >>> critique_adjust(1.0, c, CritiqueConfig("add", 0.2))
    (1.1, {'critique': 0.5, 'critique_term': 0.1})
    >>> critique_adjust(1.0, check_steps("no steps"), CritiqueConfig("multiply", 1.0))
    (1.0, {})
    """
    fraction = critique.fraction
    if cfg.mode == "off" or fraction is None:
        return rule, {}
    if cfg.mode == "multiply":
        coefficient = 1.0 - cfg.weight * (1.0 - fraction)
        return rule * coefficient, {"critique": fraction, "critique_coefficient": coefficient}
    term = cfg.weight * fraction
    return rule + term, {"critique": fraction, "critique_term": term}


def service_score(prompt: str, response: str, reference: str | None) -> tuple[float | None, dict[str, float], str]:
    r"""The critique as a served reward model (``mixrl serve-rm --kind critique``): (reward, head scores, text).
    Reward = fraction of correct steps, None without a step; the text names the first wrong step.

    >>> service_score("", "3 + 4 = 7\n7 * 2 = 15", None)
    (0.5, {'steps': 2.0, 'correct_steps': 1.0}, 'first wrong step (line 2): 7 * 2 = 15; expected 14')
    >>> service_score("", "hello", None)
    (None, {'steps': 0.0, 'correct_steps': 0.0}, 'no arithmetic step to check')
    """
    c = check_steps(response)
    heads = {"steps": float(len(c.steps)), "correct_steps": float(c.correct_steps)}
    if c.fraction is None:
        return None, heads, "no arithmetic step to check"
    wrong = c.first_wrong
    text = "all steps correct" if wrong is None else f"first wrong step (line {wrong.line}): {wrong.text}; expected {wrong.expected}"
    return c.fraction, heads, text
