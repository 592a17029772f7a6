"""Synthetic arithmetic problems with worked traces, graded by difficulty (verl schema, `ability="math"`).

Levels (small non-negative integers, results below ~1000, division always exact — a ~5M-parameter model
trains on these, so the wording is deliberately regular):

1. one operation:                 "What is 23 + 45?"
2. two operations, precedence:    "Compute 12 + 7 * 3."  (also parentheses: "Compute (4 + 5) * 6.")
3. two-step word problems:        buy / give / share / times-as-many templates, names and items varied
4. three- or four-step problems:  expressions and word problems mixing * and exact /

Each row: `extra_info.reasoning` is the trace, one "a op b = c" line per step ("7 * 3 = 21\\n12 + 21 = 33"),
`extra_info.response` is exactly "The answer is \\\\boxed{33}." and `reward_model.ground_truth` is "33".

Run: `python -c "from mixrl.data.math_problems import generate_math; print(generate_math(4, 'train', 0))"`,
or write every domain with `python -m mixrl.data.synthetic --help`.

>>> row = generate_math(1, "train", seed=0)[0]
>>> row["extra_info"]["response"] == "The answer is \\\\boxed{" + row["reward_model"]["ground_truth"] + "}."
True
"""

from __future__ import annotations

import random
import re
from typing import Any, Callable

from mixrl.data.rows import Sample, generate_rows

LEVELS = (1, 2, 3, 4)
Step = tuple[int, str, int, int]  # (a, op, b, result): one trace line "a op b = result"

NAMES = (
    "Ana", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivan", "Jada", "Kai", "Lena",
    "Milo", "Nora", "Omar", "Pia", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Wes", "Yuki",
)
ITEMS = (
    "apples", "pencils", "marbles", "stickers", "books", "cookies", "cards", "stamps", "shells",
    "balloons", "oranges", "candies", "beads", "flowers", "cupcakes", "eggs", "buttons", "ribbons",
    "crayons", "toy cars",
)


def apply(a: int, op: str, b: int) -> int:
    """Exact integer arithmetic for the four trace operators.

    >>> apply(12, "/", 4)
    3
    """
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        if b == 0 or a % b:
            raise ValueError(f"{a} / {b} is not exact")
        return a // b
    raise ValueError(f"unknown operator {op!r}")


def trace(steps: list[Step]) -> str:
    """The reasoning text: one "a op b = c" line per step.

    >>> trace([(7, "*", 3, 21), (12, "+", 21, 33)])
    '7 * 3 = 21\\n12 + 21 = 33'
    """
    return "\n".join(f"{a} {op} {b} = {c}" for a, op, b, c in steps)


INVERSE = {"+": "-", "-": "+", "*": "/", "/": "*"}
_TRACE_LINE = re.compile(r"^(-?\d+) ([-+*/]) (-?\d+) = (-?\d+)$")


def verbose_trace(steps: list[Step]) -> str:
    """A long-winded `trace`: every step, then a check by the inverse operation, then the step restated. The same
    answer in about three times the tokens: the long chain of thought a length penalty should cut (report Fig. 5,
    Kimi k1.5's long2short); `bench/length_penalty.py` fine-tunes a verbose start on it.

    >>> verbose_trace([(84, "/", 7, 12)])
    '84 / 7 = 12\\nCheck: 12 * 7 = 84\\nSo 84 / 7 = 12'
    """
    lines = []
    for a, op, b, c in steps:
        lines += [f"{a} {op} {b} = {c}", f"Check: {c} {INVERSE[op]} {b} = {a}", f"So {a} {op} {b} = {c}"]
    return "\n".join(lines)


def parse_trace(reasoning: str) -> list[Step]:
    """The steps of a `trace` text (a row's `extra_info.reasoning`); a line of any other form is an error.

    >>> parse_trace("7 * 3 = 21\\n12 + 21 = 33")
    [(7, '*', 3, 21), (12, '+', 21, 33)]
    """
    steps = []
    for line in reasoning.splitlines():
        m = _TRACE_LINE.match(line.strip())
        if m is None:
            raise ValueError(f"not a trace line (a op b = c): {line!r}")
        steps.append((int(m[1]), m[2], int(m[3]), int(m[4])))
    return steps


def _step(a: int, op: str, b: int) -> Step:
    return (a, op, b, apply(a, op, b))


# ---- level 1: one operation -------------------------------------------------------------------------

_ASK = ("What is {e}?", "Compute {e}.", "Calculate {e}.")


def _level1(rng: random.Random) -> tuple[str, list[Step]]:
    op = rng.choice("+-*/")
    if op == "+":
        a, b = rng.randint(1, 99), rng.randint(1, 99)
    elif op == "-":
        a = rng.randint(2, 99)
        b = rng.randint(1, a)
    elif op == "*":
        a, b = rng.randint(2, 20), rng.randint(2, 12)
    else:
        b, q = rng.randint(2, 12), rng.randint(1, 12)
        a = b * q
    return rng.choice(_ASK).format(e=f"{a} {op} {b}"), [_step(a, op, b)]


# ---- level 2: two operations with precedence --------------------------------------------------------


def _level2(rng: random.Random) -> tuple[str, list[Step]]:
    form = rng.randrange(7)
    if form == 0:  # a + b * c
        a, b, c = rng.randint(1, 50), rng.randint(2, 12), rng.randint(2, 9)
        s1 = _step(b, "*", c)
        return f"{a} + {b} * {c}", [s1, _step(a, "+", s1[3])]
    if form == 1:  # a * b + c
        a, b, c = rng.randint(2, 12), rng.randint(2, 9), rng.randint(1, 50)
        s1 = _step(a, "*", b)
        return f"{a} * {b} + {c}", [s1, _step(s1[3], "+", c)]
    if form == 2:  # a * b - c, kept non-negative
        a, b = rng.randint(2, 12), rng.randint(2, 9)
        c = rng.randint(1, a * b)
        s1 = _step(a, "*", b)
        return f"{a} * {b} - {c}", [s1, _step(s1[3], "-", c)]
    if form == 3:  # a - b * c, kept non-negative
        b, c = rng.randint(2, 9), rng.randint(2, 9)
        a = rng.randint(b * c, b * c + 60)
        s1 = _step(b, "*", c)
        return f"{a} - {b} * {c}", [s1, _step(a, "-", s1[3])]
    if form == 4:  # a + b / c
        c, q, a = rng.randint(2, 9), rng.randint(2, 12), rng.randint(1, 50)
        s1 = _step(c * q, "/", c)
        return f"{a} + {c * q} / {c}", [s1, _step(a, "+", s1[3])]
    if form == 5:  # a / b + c
        b, q, c = rng.randint(2, 9), rng.randint(2, 12), rng.randint(1, 50)
        s1 = _step(b * q, "/", b)
        return f"{b * q} / {b} + {c}", [s1, _step(s1[3], "+", c)]
    # (a + b) * c
    a, b, c = rng.randint(1, 20), rng.randint(1, 20), rng.randint(2, 9)
    s1 = _step(a, "+", b)
    return f"({a} + {b}) * {c}", [s1, _step(s1[3], "*", c)]


# ---- level 3: two-step word problems ----------------------------------------------------------------


def _people(rng: random.Random, k: int) -> list[str]:
    return rng.sample(NAMES, k)


def _w_buy_give(rng: random.Random) -> tuple[str, list[Step]]:
    a, b = _people(rng, 2)
    it = rng.choice(ITEMS)
    x, y = rng.randint(2, 40), rng.randint(2, 40)
    z = rng.randint(1, x + y)
    s1 = _step(x, "+", y)
    q = (f"{a} has {x} {it}. {a} buys {y} more {it} and then gives {z} {it} to {b}. "
         f"How many {it} does {a} have now?")
    return q, [s1, _step(s1[3], "-", z)]


def _w_bags(rng: random.Random) -> tuple[str, list[Step]]:
    a, b = _people(rng, 2)
    it = rng.choice(ITEMS)
    n, k = rng.randint(2, 9), rng.randint(2, 12)
    z = rng.randint(1, n * k)
    s1 = _step(n, "*", k)
    q = (f"{a} buys {n} bags of {it}. Each bag has {k} {it}. {a} gives {z} {it} to {b}. "
         f"How many {it} does {a} have left?")
    return q, [s1, _step(s1[3], "-", z)]


def _w_share(rng: random.Random) -> tuple[str, list[Step]]:
    a, b = _people(rng, 2)
    it = rng.choice(ITEMS)
    m, q_each = rng.randint(2, 9), rng.randint(2, 12)
    total = m * q_each
    x = rng.randint(1, total - 1)
    s1 = _step(x, "+", total - x)
    q = (f"{a} has {x} {it} and {b} has {total - x} {it}. They put all their {it} together and share "
         f"them equally among {m} friends. How many {it} does each friend get?")
    return q, [s1, _step(total, "/", m)]


def _w_times(rng: random.Random) -> tuple[str, list[Step]]:
    a, b = _people(rng, 2)
    it = rng.choice(ITEMS)
    x, m = rng.randint(2, 30), rng.randint(2, 6)
    s1 = _step(x, "*", m)
    q = (f"{a} has {x} {it}. {b} has {m} times as many {it} as {a}. "
         f"How many {it} do {a} and {b} have together?")
    return q, [s1, _step(x, "+", s1[3])]


def _w_give_two(rng: random.Random) -> tuple[str, list[Step]]:
    a, b, c = _people(rng, 3)
    it = rng.choice(ITEMS)
    x = rng.randint(10, 90)
    y = rng.randint(1, x // 2)
    z = rng.randint(1, x - y)
    s1 = _step(x, "-", y)
    q = (f"{a} has {x} {it}. {a} gives {y} {it} to {b} and {z} {it} to {c}. "
         f"How many {it} does {a} have left?")
    return q, [s1, _step(s1[3], "-", z)]


def _w_rows(rng: random.Random) -> tuple[str, list[Step]]:
    (a,) = _people(rng, 1)
    it = rng.choice(ITEMS)
    r, k, z = rng.randint(2, 9), rng.randint(2, 12), rng.randint(1, 30)
    s1 = _step(r, "*", k)
    q = (f"There are {r} rows of {it} with {k} {it} in each row. {a} adds {z} more {it}. "
         f"How many {it} are there in total?")
    return q, [s1, _step(s1[3], "+", z)]


def _w_split_add(rng: random.Random) -> tuple[str, list[Step]]:
    (a,) = _people(rng, 1)
    it = rng.choice(ITEMS)
    m, q_each, z = rng.randint(2, 9), rng.randint(2, 12), rng.randint(1, 20)
    s1 = _step(m * q_each, "/", m)
    q = (f"{a} has {m * q_each} {it} and splits them equally into {m} boxes. Then {a} puts {z} more "
         f"{it} in one box. How many {it} are in that box now?")
    return q, [s1, _step(s1[3], "+", z)]


def _w_fewer(rng: random.Random) -> tuple[str, list[Step]]:
    a, b = _people(rng, 2)
    it = rng.choice(ITEMS)
    x = rng.randint(5, 60)
    y = rng.randint(1, x - 1)
    s1 = _step(x, "-", y)
    q = (f"{a} has {x} {it}. {b} has {y} fewer {it} than {a}. "
         f"How many {it} do {a} and {b} have together?")
    return q, [s1, _step(x, "+", s1[3])]


_WORD2: tuple[Callable[[random.Random], tuple[str, list[Step]]], ...] = (
    _w_buy_give, _w_bags, _w_share, _w_times, _w_give_two, _w_rows, _w_split_add, _w_fewer,
)


def _level3(rng: random.Random) -> tuple[str, list[Step]]:
    return rng.choice(_WORD2)(rng)


# ---- level 4: three or four steps mixing * and exact / ----------------------------------------------


def _e_mul_div_add(rng: random.Random) -> tuple[str, list[Step]]:
    """a * b / c + d (or - d): c divides a * b."""
    c = rng.randint(2, 9)
    a, b = c * rng.randint(1, 6), rng.randint(2, 9)
    s1 = _step(a, "*", b)
    s2 = _step(s1[3], "/", c)
    if rng.random() < 0.5:
        d = rng.randint(1, 40)
        return f"Compute {a} * {b} / {c} + {d}.", [s1, s2, _step(s2[3], "+", d)]
    d = rng.randint(1, s2[3])
    return f"Compute {a} * {b} / {c} - {d}.", [s1, s2, _step(s2[3], "-", d)]


def _e_sum_mul_div(rng: random.Random) -> tuple[str, list[Step]]:
    """(a + b) * c / d: d divides a + b."""
    d, c = rng.randint(2, 9), rng.randint(2, 9)
    total = d * rng.randint(1, 6)
    a = rng.randint(1, total - 1)
    s1 = _step(a, "+", total - a)
    s2 = _step(total, "*", c)
    return f"Compute ({a} + {total - a}) * {c} / {d}.", [s1, s2, _step(s2[3], "/", d)]


def _e_two_products(rng: random.Random) -> tuple[str, list[Step]]:
    """a * b + c * d - e: three or four steps."""
    a, b, c, d = rng.randint(2, 12), rng.randint(2, 9), rng.randint(2, 12), rng.randint(2, 9)
    s1, s2 = _step(a, "*", b), _step(c, "*", d)
    s3 = _step(s1[3], "+", s2[3])
    if rng.random() < 0.5:
        return f"Compute {a} * {b} + {c} * {d}.", [s1, s2, s3]
    e = rng.randint(1, s3[3])
    return f"Compute {a} * {b} + {c} * {d} - {e}.", [s1, s2, s3, _step(s3[3], "-", e)]


def _e_div_mul_add(rng: random.Random) -> tuple[str, list[Step]]:
    """a / b * c + d: left to right."""
    b = rng.randint(2, 9)
    a, c, d = b * rng.randint(1, 12), rng.randint(2, 9), rng.randint(1, 50)
    s1 = _step(a, "/", b)
    s2 = _step(s1[3], "*", c)
    return f"Compute {a} / {b} * {c} + {d}.", [s1, s2, _step(s2[3], "+", d)]


def _w_bags_share_extra(rng: random.Random) -> tuple[str, list[Step]]:
    (a,) = _people(rng, 1)
    it = rng.choice(ITEMS)
    m = rng.randint(2, 6)
    n, k = rng.randint(2, 9), m * rng.randint(1, 4)
    z = rng.randint(1, 10)
    s1 = _step(n, "*", k)
    s2 = _step(s1[3], "/", m)
    q = (f"{a} buys {n} packs of {it} with {k} {it} in each pack. {a} shares them equally among {m} "
         f"friends. Then each friend gets {z} more {it}. How many {it} does each friend have now?")
    return q, [s1, s2, _step(s2[3], "+", z)]


def _w_earn_spend_split(rng: random.Random) -> tuple[str, list[Step]]:
    (a,) = _people(rng, 1)
    k, d = rng.randint(2, 12), rng.randint(2, 9)
    earned = k * d
    m = rng.randint(2, min(6, earned - 1))
    rest = m * rng.randint(1, (earned - 1) // m)  # what is left after spending: a positive multiple of m
    s1 = _step(k, "*", d)
    s2 = _step(earned, "-", earned - rest)
    q = (f"{a} earns {k} coins each day for {d} days. {a} spends {earned - rest} coins and then splits the "
         f"rest equally among {m} jars. How many coins go in each jar?")
    return q, [s1, s2, _step(rest, "/", m)]


def _w_times_fewer(rng: random.Random) -> tuple[str, list[Step]]:
    a, b, c = _people(rng, 3)
    it = rng.choice(ITEMS)
    x, m = rng.randint(2, 25), rng.randint(2, 5)
    p = x * m
    y = rng.randint(1, p - 1)
    s1 = _step(x, "*", m)
    s2 = _step(p, "-", y)
    q = (f"{a} has {x} {it}. {b} has {m} times as many {it} as {a}. {c} has {y} fewer {it} than {b}. "
         f"How many {it} do {b} and {c} have together?")
    return q, [s1, s2, _step(p, "+", s2[3])]


def _w_two_packs_share(rng: random.Random) -> tuple[str, list[Step]]:
    a, b = _people(rng, 2)
    it = rng.choice(ITEMS)
    n, k, p, j = rng.randint(2, 6), rng.randint(2, 10), rng.randint(2, 6), rng.randint(2, 10)
    # the children must share exactly: pick the group size among the total's small divisors
    # (an odd total has none below 7 only when it is 1 or prime; one more per pack makes it even)
    while not [m for m in range(2, 7) if (n * k + p * j) % m == 0]:
        j += 1
    m = rng.choice([m for m in range(2, 7) if (n * k + p * j) % m == 0])
    s1, s2 = _step(n, "*", k), _step(p, "*", j)
    s3 = _step(s1[3], "+", s2[3])
    q = (f"{a} buys {n} packs of {it} with {k} {it} in each pack. {b} buys {p} packs with {j} {it} in "
         f"each pack. They share all the {it} equally among {m} children. How many {it} does each child get?")
    return q, [s1, s2, s3, _step(s3[3], "/", m)]


_LEVEL4: tuple[Callable[[random.Random], tuple[str, list[Step]]], ...] = (
    _e_mul_div_add, _e_sum_mul_div, _e_two_products, _e_div_mul_add,
    _w_bags_share_extra, _w_earn_spend_split, _w_times_fewer, _w_two_packs_share,
)


def sample_math(rng: random.Random, difficulty: int) -> Sample:
    """One problem of the given level (1..4) with its trace, response and ground truth."""
    if difficulty == 1:
        question, steps = _level1(rng)
    elif difficulty == 2:
        expr, steps = _level2(rng)
        question = rng.choice(_ASK).format(e=expr)
    elif difficulty == 3:
        question, steps = _level3(rng)
    elif difficulty == 4:
        question, steps = rng.choice(_LEVEL4)(rng)
    else:
        raise ValueError(f"math difficulty must be in {LEVELS}, got {difficulty}")
    answer = steps[-1][3]
    return Sample(
        prompt=question,
        difficulty=difficulty,
        reasoning=trace(steps),
        response=f"The answer is \\boxed{{{answer}}}.",
        ground_truth=str(answer),
        extra={"num_steps": len(steps)},
    )


def generate_math(num_rows: int, split: str, seed: int) -> list[dict[str, Any]]:
    """`num_rows` math rows of `split` ("train"/"test"), levels 1..4 in turn; same args, same rows."""
    return generate_rows("math", "math", "rule", sample_math, LEVELS, num_rows, split, seed)
