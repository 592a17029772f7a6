"""Synthetic STEM multiple-choice questions with worked traces, graded by difficulty (verl schema,
`ability="stem"`, scored by the reward router's ``choice`` pipeline: the letter of the correct option).

Levels (integer quantities, exact arithmetic; the distractors are the values of typical mistakes — a skipped
step, a factor of 2 or 10, an intermediate result — so a guess by magnitude does not work):

1. one formula, 4 options:          speed, density, Ohm's law, Newton's second law; atomic numbers
2. two or three steps, 4 options:   work from mass and acceleration, series circuits, pressure, kinetic energy
3. three steps, 5 options:          electrical energy, average speed over two legs, heat, moles of a compound

Each row: ``prompt`` = question + lettered options + instruction; ``extra_info.reasoning`` = the formula and
one "a op b = c" line per step (the arithmetic-step critique, `rewards.critique`, finds every step correct);
``extra_info.response`` = "The answer is \\\\boxed{C}."; ``reward_model.ground_truth`` = "C". Every sample is
certified before it is returned: the router's extractor reads its letter back and the critique passes its trace.

>>> row = generate_stem(1, "train", seed=0)[0]
>>> row["reward_model"]["ground_truth"] in "ABCD", row["data_source"]
(True, 'mixrl/synthetic_stem')
"""

from __future__ import annotations

import random
from typing import Any, Callable

from mixrl.data.rows import Sample, generate_rows
from rewards.critique import check_steps
from rewards.extract import choice_answer

LEVELS = (1, 2, 3)
LETTERS = "ABCDE"
OPTIONS_PER_LEVEL = {1: 4, 2: 4, 3: 5}
INSTRUCTION = "Answer with the letter of the correct option."

# (symbol, name, atomic number)
ELEMENTS = (("H", "hydrogen", 1), ("He", "helium", 2), ("Li", "lithium", 3), ("C", "carbon", 6),
            ("N", "nitrogen", 7), ("O", "oxygen", 8), ("Na", "sodium", 11), ("Mg", "magnesium", 12),
            ("Al", "aluminium", 13), ("S", "sulfur", 16), ("Cl", "chlorine", 17), ("Ca", "calcium", 20),
            ("Fe", "iron", 26), ("Cu", "copper", 29))
# compound, molar mass in g/mol
COMPOUNDS = (("water", 18), ("carbon dioxide", 44), ("sodium chloride", 58), ("methane", 16), ("oxygen gas", 32),
             ("ammonia", 17), ("glucose", 180))

Step = tuple[int, str, int, int]
Problem = tuple[str, str, list[Step], int, str, list[int]]  # (topic, question, steps, answer, unit, mistakes)


def _step(a: int, op: str, b: int) -> Step:
    value = {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]
    if op == "/" and a % b:
        raise ValueError(f"inexact division {a} / {b}")
    return (a, op, b, value)


# ---- level 1 -----------------------------------------------------------------------------------------------

def _speed(rng: random.Random) -> Problem:
    v, t = rng.randint(3, 30) * 5, rng.randint(2, 6)
    d = v * t
    s = _step(d, "/", t)
    return ("speed", f"A train travels {d} km in {t} hours at a constant speed. What is its speed?", [s], s[3],
            "km/h", [d * t, d - t, d + t, v * 2])


def _density(rng: random.Random) -> Problem:
    rho, volume = rng.randint(2, 12), rng.randint(3, 25)
    m = rho * volume
    s = _step(m, "/", volume)
    return ("density", f"A block has a mass of {m} g and a volume of {volume} cm³. What is its density?", [s],
            s[3], "g/cm³", [m * volume, m - volume, rho * 10, m + volume])


def _ohm(rng: random.Random) -> Problem:
    current, resistance = rng.randint(2, 9), rng.randint(2, 40)
    s = _step(current, "*", resistance)
    return ("electricity", f"A current of {current} A flows through a {resistance} Ω resistor. What is the voltage "
            "across it?", [s], s[3], "V", [current + resistance, resistance // current or 1, s[3] * 2, s[3] + 10])


def _newton(rng: random.Random) -> Problem:
    m, a = rng.randint(2, 50), rng.randint(2, 12)
    s = _step(m, "*", a)
    return ("mechanics", f"What net force gives a {m} kg cart an acceleration of {a} m/s²?", [s], s[3], "N",
            [m + a, s[3] * 10, s[3] // 2 if s[3] % 2 == 0 else s[3] + 1, m * 10])


def _protons(rng: random.Random) -> Problem:
    _, name, z = rng.choice(ELEMENTS)
    others = [e[2] for e in ELEMENTS if e[2] != z]
    return ("chemistry", f"How many protons are in the nucleus of a {name} atom?", [], z, "", others)


# ---- level 2 -----------------------------------------------------------------------------------------------

def _work(rng: random.Random) -> Problem:
    m, a, d = rng.randint(2, 20), rng.randint(2, 6), rng.randint(2, 15)
    s1 = _step(m, "*", a)
    s2 = _step(s1[3], "*", d)
    return ("mechanics", f"A {m} kg crate is pushed with an acceleration of {a} m/s² over {d} m. How much work does "
            "the net force do?", [s1, s2], s2[3], "J", [s1[3], m * d, s2[3] * 2, s1[3] + d])


def _series(rng: random.Random) -> Problem:
    current = rng.randint(2, 6)
    r1, r2 = rng.randint(2, 20), rng.randint(2, 20)
    v = current * (r1 + r2)
    s1 = _step(r1, "+", r2)
    s2 = _step(v, "/", s1[3])
    return ("electricity", f"A {v} V battery drives a circuit with a {r1} Ω and a {r2} Ω resistor in series. What "
            "current flows?", [s1, s2], s2[3], "A", [s1[3], v // r1 if v % r1 == 0 else v - r1, current * 2, current + 1])


def _pressure(rng: random.Random) -> Problem:
    area = rng.randint(2, 5)
    m = area * rng.randint(1, 30)
    s1 = _step(m, "*", 10)
    s2 = _step(s1[3], "/", area)
    return ("mechanics", f"A {m} kg box rests on an area of {area} m². Taking g = 10 m/s², what pressure does it "
            "exert?", [s1, s2], s2[3], "Pa", [s1[3], m // area, s2[3] * 10, s1[3] * area])


def _kinetic(rng: random.Random) -> Problem:
    m, v = rng.randint(1, 10) * 2, rng.randint(2, 12)
    s1 = _step(v, "*", v)
    s2 = _step(m, "*", s1[3])
    s3 = _step(s2[3], "/", 2)
    return ("mechanics", f"What is the kinetic energy of a {m} kg ball moving at {v} m/s?", [s1, s2, s3], s3[3], "J",
            [s2[3], m * v // 2, m * v, s3[3] * 4])


# ---- level 3 -----------------------------------------------------------------------------------------------

def _energy(rng: random.Random) -> Problem:
    v, current, minutes = rng.choice((6, 12, 24, 120, 230)), rng.randint(1, 5), rng.randint(1, 10)
    s1 = _step(v, "*", current)
    s2 = _step(minutes, "*", 60)
    s3 = _step(s1[3], "*", s2[3])
    return ("electricity", f"A {v} V device draws {current} A for {minutes} minutes. How much electrical energy does it "
            "use?", [s1, s2, s3], s3[3], "J", [s1[3] * minutes, s1[3], s3[3] * 2, s3[3] // 10 if s3[3] % 10 == 0 else s3[3] + 60,
                                                  v * minutes])


def _average_speed(rng: random.Random) -> Problem:
    while True:
        d1, d2, t1, t2 = rng.randint(2, 20) * 10, rng.randint(2, 20) * 10, rng.randint(1, 4), rng.randint(1, 4)
        if (d1 + d2) % (t1 + t2) == 0:
            break
    s1 = _step(d1, "+", d2)
    s2 = _step(t1, "+", t2)
    s3 = _step(s1[3], "/", s2[3])
    legs = [d1 // t1 if d1 % t1 == 0 else d1, d2 // t2 if d2 % t2 == 0 else d2]
    return ("speed", f"A cyclist rides {d1} km in {t1} h, then {d2} km in {t2} h. What is the average speed over the "
            "whole trip?", [s1, s2, s3], s3[3], "km/h", [*legs, s1[3], s3[3] * 2, s3[3] + 10])


def _heat(rng: random.Random) -> Problem:
    m, c = rng.randint(1, 5), rng.choice((4200, 900, 450, 380))
    t1 = rng.randint(10, 30)
    t2 = t1 + rng.randint(2, 40)
    s1 = _step(t2, "-", t1)
    s2 = _step(m, "*", c)
    s3 = _step(s2[3], "*", s1[3])
    return ("heat", f"How much heat raises {m} kg of a material with specific heat {c} J/(kg·°C) from {t1} °C to "
            f"{t2} °C?", [s1, s2, s3], s3[3], "J", [s2[3] * t2, s2[3], m * c * t1, s3[3] * 2, s3[3] // 2 if s3[3] % 2 == 0 else s3[3] + 1])


def _moles(rng: random.Random) -> Problem:
    compound, molar = rng.choice(COMPOUNDS)
    n1, n2 = rng.randint(1, 9), rng.randint(1, 9)
    m1, m2 = n1 * molar, n2 * molar
    s1 = _step(m1, "/", molar)
    s2 = _step(m2, "/", molar)
    s3 = _step(s1[3], "+", s2[3])
    return ("chemistry", f"Two samples of {compound} (molar mass {molar} g/mol) weigh {m1} g and {m2} g. How many "
            "moles are there in total?", [s1, s2, s3], s3[3], "mol", [m1 + m2, s3[3] * 2, s3[3] + 1, abs(n1 - n2) or s3[3] + 2,
                                                                      s3[3] * molar // 10 or s3[3] + 3])


_BY_LEVEL: dict[int, tuple[Callable[[random.Random], Problem], ...]] = {
    1: (_speed, _density, _ohm, _newton, _protons),
    2: (_work, _series, _pressure, _kinetic),
    3: (_energy, _average_speed, _heat, _moles),
}
_FORMULAS = {"_speed": "speed = distance / time", "_density": "density = mass / volume", "_ohm": "V = I * R",
             "_newton": "F = m * a", "_protons": "the atomic number is the number of protons",
             "_work": "F = m * a, then W = F * d", "_series": "R = R1 + R2, then I = V / R",
             "_pressure": "F = m * g, then p = F / A", "_kinetic": "E = m * v * v / 2",
             "_energy": "P = V * I, t in seconds, E = P * t", "_average_speed": "average speed = total distance / total time",
             "_heat": "Q = m * c * (T2 - T1)", "_moles": "n = m / M for each sample, then add"}


def _options(rng: random.Random, answer: int, mistakes: list[int], k: int) -> list[int]:
    """`k` distinct positive values: the answer, the mistakes' values first, then nearby values."""
    wrong = []
    for w in rng.sample(mistakes, len(mistakes)):
        if w > 0 and w != answer and w not in wrong:
            wrong.append(w)
    spread = max(1, answer // 5)
    while len(wrong) < k - 1:
        w = answer + rng.choice((-1, 1)) * rng.randint(1, 3) * spread
        if w > 0 and w != answer and w not in wrong:
            wrong.append(w)
    values = [answer, *wrong[: k - 1]]
    rng.shuffle(values)
    return values


def sample_stem(rng: random.Random, difficulty: int) -> Sample:
    """One question of the given level (1..3): options, trace, response and the letter of the answer."""
    if difficulty not in _BY_LEVEL:
        raise ValueError(f"stem difficulty must be in {LEVELS}, got {difficulty}")
    make = rng.choice(_BY_LEVEL[difficulty])
    topic, question, steps, answer, unit, mistakes = make(rng)
    k = OPTIONS_PER_LEVEL[difficulty]
    values = _options(rng, answer, mistakes, k)
    letter = LETTERS[values.index(answer)]
    shown = [f"{v} {unit}".strip() for v in values]
    options = "\n".join(f"{LETTERS[i]}) {text}" for i, text in enumerate(shown))
    lines = [_FORMULAS[make.__name__] + "."] + [f"{a} {op} {b} = {c}" for a, op, b, c in steps]
    lines.append(f"{answer} {unit}".strip() + f" is option {letter}.")
    response = f"The answer is \\boxed{{{letter}}}."
    sample = Sample(prompt=f"{question}\n{options}\n{INSTRUCTION}", difficulty=difficulty, reasoning="\n".join(lines),
                    response=response, ground_truth=letter, extra={"topic": topic, "num_options": k})
    _certify(sample, len(steps))
    return sample


def _certify(sample: Sample, num_steps: int) -> None:
    """The reward checkers agree with the reference: the extractor reads the letter back, every step is right."""
    if choice_answer(sample.response) != sample.ground_truth:
        raise RuntimeError(f"stem response {sample.response!r} does not state {sample.ground_truth}")
    critique = check_steps(sample.reasoning)
    if len(critique.steps) != num_steps or critique.first_wrong is not None:
        raise RuntimeError(f"stem trace fails the step critique: {sample.reasoning!r}")


def generate_stem(num_rows: int, split: str, seed: int) -> list[dict[str, Any]]:
    """`num_rows` STEM rows of `split` ("train"/"test"), levels 1..3 in turn; same args, same rows."""
    return generate_rows("stem", "stem", "rule", sample_stem, LEVELS, num_rows, split, seed)
