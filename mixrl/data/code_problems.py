"""Synthetic Python function-writing tasks with reference solutions and executed tests (`ability="code"`).

22 parameterised task families in three difficulty levels (1: one builtin call or comprehension, 2: a loop
with a condition, 3: a small algorithm). A family's parameters change the task itself ("count the letter
'e'", "rotate left by 3", "fizzbuzz with 3/5 and Ping/Pong"), and the example in the prompt varies too.

Every row carries:
- `extra_info.response`: the reference solution in a ```python fenced block;
- `extra_info.reasoning`: a short plan, ending with a check on the prompt's example;
- `reward_model.ground_truth`: `json.dumps({"fn_name", "inputs", "outputs"})` in the call-based format that
  verl's `prime_code` reward runs — each input is a string with one JSON-encoded argument per line and each
  output a JSON-encoded string (verl 0.9.1 `testing_util.run_test` does
  `[json.loads(line) for line in inputs.split("\\n")]` and `json.loads(output)`);
- `extra_info.test_code`: the same cases as asserts ("assert f(1) == 2\\n...").
The expected outputs are computed by running the reference solution in-process (our own code, not a
model's), so tests and solution agree by construction.

Train/test: a task with parameters (`count_char` of 'e' or of 'r', `rotate_left` by 1..4) is split on its
statement without the example, so test rows are parameterisations that train never states; a task that
takes no parameters (`total`, `is_prime`: one statement ever) is split on the whole prompt, so it appears in
both splits with different examples. Keyed on its one statement it would sit wholly in one split: a fifth
of such tasks were test-only, never trained, and, being accepted on every draw where other tasks pass one in
five, made up 30-58% of the test rows at each level (`total` was 30% of level 1).

Run: `python -c "from mixrl.data.code_problems import generate_code; print(generate_code(3, 'train', 0))"`.

>>> row = generate_code(1, "train", seed=0)[0]
>>> row["extra_info"]["response"].startswith("```python")
True
"""

from __future__ import annotations

import collections
import copy
import functools
import itertools
import json
import random
import string
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from mixrl.data.rows import MAX_SPLIT_TRIES, Sample, generate_rows, split_of

LEVELS = (1, 2, 3)
NUM_TESTS = 5

WORDS = (
    "apple", "river", "stone", "level", "tree", "banana", "moon", "cat", "garden", "noon", "paper",
    "radar", "sun", "window", "kayak", "bread", "cloud", "tiger", "lemon", "bottle", "music", "refer",
    "anna", "green", "house", "table", "civic", "orange", "piano", "rotor",
)


@dataclass(frozen=True)
class CodeTask:
    """One concrete task: the function to write, how to say it, how to solve it, what to call it with."""

    fn_name: str
    params: str  # the signature's parameter list, e.g. "s" or "a, b"
    statement: str  # completes "Write a Python function `f(params)` that ..."
    plan: str  # reasoning lines, without the final example check
    solution: str  # the function's source
    inputs: list[list[Any]]  # argument lists, NUM_TESTS of them; the first is the prompt's example


# ---- random inputs ------------------------------------------------------------------------------------


def _ints(rng: random.Random, lo: int, hi: int, n_lo: int = 1, n_hi: int = 7) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(rng.randint(n_lo, n_hi))]


def _word(rng: random.Random) -> str:
    return rng.choice(WORDS)


def _letters(rng: random.Random, n_lo: int = 1, n_hi: int = 8, alphabet: str = string.ascii_lowercase) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(n_lo, n_hi)))


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5)))


def _cases(
    rng: random.Random, make: Callable[[random.Random], list[Any]], fixed: Sequence[list[Any]] = ()
) -> list[list[Any]]:
    """NUM_TESTS argument lists: random ones first (the example), then fixed edge cases."""
    cases = [list(f) for f in fixed]
    tries = 0
    while len(cases) < NUM_TESTS:
        case = make(rng)
        tries += 1
        if case not in cases or tries > 50:  # distinct where the input space allows it
            cases.insert(len(cases) - len(fixed), case)
    return cases


# ---- level 1 ------------------------------------------------------------------------------------------


def _scale_list(rng: random.Random) -> CodeTask:
    k = rng.randint(2, 12)
    name, verb, op = rng.choice([
        ("multiply_all", f"multiplied by {k}", "*"), ("add_to_all", f"increased by {k}", "+"),
        ("subtract_from_all", f"decreased by {k}", "-"),
    ])
    return CodeTask(
        name, "nums", f"returns a new list where every number in nums is {verb}",
        f"Build a new list with one element per number in nums.\nEach element is x {op} {k}.\n"
        "A list comprehension does this in one line.",
        f"def {name}(nums):\n    return [x {op} {k} for x in nums]",
        _cases(rng, lambda r: [_ints(r, -10, 20)], [[[]]]),
    )


def _count_char(rng: random.Random) -> CodeTask:
    c = rng.choice("abcdeilmnoprstu")
    return CodeTask(
        "count_char", "s", f"returns how many times the letter '{c}' appears in the string s",
        f"Count the occurrences of '{c}' in s.\nThe string method count does exactly this.",
        f"def count_char(s):\n    return s.count('{c}')",
        _cases(rng, lambda r: [r.choice([_word(r), _sentence(r)])], [[""]]),
    )


def _list_stat(rng: random.Random) -> CodeTask:
    name, what, body = rng.choice([
        ("largest", "the largest number", "max(nums)"), ("smallest", "the smallest number", "min(nums)"),
        ("total", "the sum of the numbers", "sum(nums)"),
        ("spread", "the difference between the largest and the smallest number", "max(nums) - min(nums)"),
    ])
    return CodeTask(
        name, "nums", f"returns {what} in the non-empty list nums",
        f"The answer is {what} in nums.\nUse the builtin functions: {body}.",
        f"def {name}(nums):\n    return {body}",
        _cases(rng, lambda r: [_ints(r, -20, 50)], [[[7]]]),
    )


def _repeat_join(rng: random.Random) -> CodeTask:
    k, sep = rng.randint(2, 5), rng.choice(["-", "+", " ", "/", "*", "."])
    return CodeTask(
        "repeat_join", "s", f"returns the string s repeated {k} times with '{sep}' between the copies",
        f"Make a list with {k} copies of s.\nJoin the copies with '{sep}'.",
        f"def repeat_join(s):\n    return '{sep}'.join([s] * {k})",
        _cases(rng, lambda r: [_word(r)], [["x"]]),
    )


def _reverse(rng: random.Random) -> CodeTask:
    if rng.random() < 0.5:
        return CodeTask(
            "reverse_string", "s", "returns the string s reversed",
            "Reverse the characters of s.\nA slice with step -1 does this.",
            "def reverse_string(s):\n    return s[::-1]",
            _cases(rng, lambda r: [_word(r)], [[""]]),
        )
    return CodeTask(
        "reverse_words", "sentence",
        "returns the words of the string sentence in reverse order, joined by single spaces",
        "Split the sentence into words.\nReverse the list of words.\nJoin them with single spaces.",
        "def reverse_words(sentence):\n    words = sentence.split()\n    return ' '.join(words[::-1])",
        _cases(rng, lambda r: [_sentence(r)], [["one"]]),
    )


# ---- level 2 ------------------------------------------------------------------------------------------


def _count_vowels(rng: random.Random) -> CodeTask:
    if rng.random() < 0.5:
        name, what, cond = "count_vowels", "vowels (a, e, i, o, u)", "ch in 'aeiou'"
    else:
        name, what, cond = "count_consonants", "consonants (letters that are not a, e, i, o, u)", \
            "ch.isalpha() and ch not in 'aeiou'"
    return CodeTask(
        name, "s", f"returns the number of {what} in the lowercase string s",
        f"Start a counter at 0.\nLoop over the characters of s.\nAdd 1 when {cond}.\nReturn the counter.",
        f"def {name}(s):\n    count = 0\n    for ch in s:\n        if {cond}:\n            count += 1\n"
        "    return count",
        _cases(rng, lambda r: [_sentence(r)], [[""]]),
    )


def _digits(rng: random.Random) -> CodeTask:
    name, what, init, update = rng.choice([
        ("sum_digits", "the sum of the digits", "0", "result += n % 10"),
        ("product_digits", "the product of the digits", "1", "result *= n % 10"),
        ("largest_digit", "the largest digit", "0", "result = max(result, n % 10)"),
    ])
    return CodeTask(
        name, "n", f"returns {what} of the positive integer n",
        f"Take the digits of n one at a time with n % 10 and n // 10.\nStart with {init}.\n"
        f"Update with each digit: {update}.",
        f"def {name}(n):\n    result = {init}\n    while n > 0:\n        {update}\n        n //= 10\n"
        "    return result",
        _cases(rng, lambda r: [r.randint(1, 99999)], [[7]]),
    )


def _palindrome(rng: random.Random) -> CodeTask:
    variant = rng.randrange(3)
    if variant == 0:
        return CodeTask(
            "is_palindrome", "s", "returns True if the string s reads the same forwards and backwards, "
            "and False otherwise",
            "A palindrome equals its own reverse.\nCompare s with s[::-1].",
            "def is_palindrome(s):\n    return s == s[::-1]",
            _cases(rng, lambda r: [_word(r)], [["ab"]]),
        )
    if variant == 1:
        return CodeTask(
            "is_palindrome_ignore_case", "s",
            "returns True if the string s reads the same forwards and backwards when upper and lower case "
            "are treated as equal, and False otherwise",
            "Lowercase s first.\nThen compare it with its reverse.",
            "def is_palindrome_ignore_case(s):\n    t = s.lower()\n    return t == t[::-1]",
            _cases(rng, lambda r: [r.choice([_word(r), _word(r).capitalize()])], [["Abba"]]),
        )
    return CodeTask(
        "is_phrase_palindrome", "s",
        "returns True if the string s reads the same forwards and backwards after removing spaces and "
        "ignoring case, and False otherwise",
        "Remove the spaces and lowercase s.\nCompare the result with its reverse.",
        "def is_phrase_palindrome(s):\n    t = s.replace(' ', '').lower()\n    return t == t[::-1]",
        _cases(rng, lambda r: [r.choice([_sentence(r), " ".join(_word(r))])], [["Taco cat"]]),
    )


def _count_where(rng: random.Random) -> CodeTask:
    k = rng.randint(2, 15)
    name, what, cond = rng.choice([
        ("count_greater", f"greater than {k}", f"x > {k}"), ("count_less", f"less than {k}", f"x < {k}"),
        ("count_divisible", f"divisible by {k}", f"x % {k} == 0"),
    ])
    return CodeTask(
        name, "nums", f"returns how many numbers in the list nums are {what}",
        f"Start a counter at 0.\nLoop over nums and add 1 when {cond}.\nReturn the counter.",
        f"def {name}(nums):\n    count = 0\n    for x in nums:\n        if {cond}:\n            count += 1\n"
        "    return count",
        _cases(rng, lambda r: [_ints(r, 0, 20)], [[[]]]),
    )


def _filter_words(rng: random.Random) -> CodeTask:
    if rng.random() < 0.5:
        k = rng.randint(2, 6)
        what, cond, name = f"have more than {k} letters", f"len(w) > {k}", "long_words"
    else:
        c = rng.choice("abcghklmnprstw")
        what, cond, name = f"start with the letter '{c}'", f"w.startswith('{c}')", "words_starting_with"
    return CodeTask(
        name, "words", f"returns the words from the list words that {what}, in their original order",
        f"Keep the words w for which {cond}.\nA list comprehension keeps the original order.",
        f"def {name}(words):\n    return [w for w in words if {cond}]",
        _cases(rng, lambda r: [[_word(r) for _ in range(r.randint(1, 6))]], [[[]]]),
    )


def _running(rng: random.Random) -> CodeTask:
    name, what, init, update = rng.choice([
        ("running_sum", "the sum", "0", "acc = acc + x"),
        ("running_max", "the largest number", "None", "acc = x if acc is None else max(acc, x)"),
    ])
    return CodeTask(
        name, "nums", f"returns a list whose i-th element is {what} of nums[0] to nums[i]",
        f"Keep a running value acc, starting at {init}.\nFor each x in nums: {update}.\n"
        "Append acc to the result after each step.",
        f"def {name}(nums):\n    result = []\n    acc = {init}\n    for x in nums:\n        {update}\n"
        "        result.append(acc)\n    return result",
        _cases(rng, lambda r: [_ints(r, -5, 15)], [[[]]]),
    )


def _sum_where(rng: random.Random) -> CodeTask:
    k = rng.randint(3, 9)
    name, what, cond = rng.choice([
        ("sum_even", "the even numbers", "x % 2 == 0"), ("sum_odd", "the odd numbers", "x % 2 == 1"),
        ("sum_multiples", f"the numbers that are multiples of {k}", f"x % {k} == 0"),
    ])
    return CodeTask(
        name, "nums", f"returns the sum of {what} in the list nums",
        f"Start a total at 0.\nLoop over nums and add x when {cond}.\nReturn the total.",
        f"def {name}(nums):\n    total = 0\n    for x in nums:\n        if {cond}:\n            total += x\n"
        "    return total",
        _cases(rng, lambda r: [_ints(r, 0, 30)], [[[]]]),
    )


# ---- level 3 ------------------------------------------------------------------------------------------


def _gcd_lcm(rng: random.Random) -> CodeTask:
    if rng.random() < 0.5:
        return CodeTask(
            "gcd", "a, b", "returns the greatest common divisor of the positive integers a and b",
            "Use Euclid's algorithm.\nWhile b is not 0, replace (a, b) with (b, a % b).\nThen a is the answer.",
            "def gcd(a, b):\n    while b != 0:\n        a, b = b, a % b\n    return a",
            _cases(rng, lambda r: [r.randint(1, 60) * r.randint(1, 4), r.randint(1, 60)], [[7, 7]]),
        )
    return CodeTask(
        "lcm", "a, b", "returns the least common multiple of the positive integers a and b",
        "First find the greatest common divisor g with Euclid's algorithm.\nThen the answer is a * b // g.",
        "def lcm(a, b):\n    x, y = a, b\n    while y != 0:\n        x, y = y, x % y\n    return a * b // x",
        _cases(rng, lambda r: [r.randint(1, 30), r.randint(1, 30)], [[4, 6]]),
    )


_FIZZ_WORDS = ("Fizz", "Buzz", "Ping", "Pong", "Zip", "Zap", "Foo", "Bar", "Tick", "Tock")


def _fizzbuzz(rng: random.Random) -> CodeTask:
    a = rng.randint(2, 5)
    b = rng.choice([b for b in range(a + 1, 8) if b % a])
    w1, w2 = rng.sample(_FIZZ_WORDS, 2)
    return CodeTask(
        "fizzbuzz", "n",
        f"returns '{w1}{w2}' if n is divisible by both {a} and {b}, '{w1}' if n is divisible only by {a}, "
        f"'{w2}' if n is divisible only by {b}, and otherwise n as a string",
        f"Check divisibility by both {a} and {b} first, because that case overlaps the others.\n"
        f"Then check {a}, then {b}.\nOtherwise return str(n).",
        f"def fizzbuzz(n):\n    if n % {a} == 0 and n % {b} == 0:\n        return '{w1}{w2}'\n"
        f"    if n % {a} == 0:\n        return '{w1}'\n    if n % {b} == 0:\n        return '{w2}'\n"
        "    return str(n)",
        _cases(rng, lambda r: [r.randint(1, 60)], [[a * b], [1]]),
    )


def _primes(rng: random.Random) -> CodeTask:
    if rng.random() < 0.5:
        return CodeTask(
            "is_prime", "n", "returns True if the integer n is a prime number, and False otherwise",
            "Numbers below 2 are not prime.\nTry every divisor d from 2 while d * d <= n.\n"
            "If one divides n, n is not prime.",
            "def is_prime(n):\n    if n < 2:\n        return False\n    d = 2\n    while d * d <= n:\n"
            "        if n % d == 0:\n            return False\n        d += 1\n    return True",
            _cases(rng, lambda r: [r.randint(0, 100)], [[1], [97]]),
        )
    return CodeTask(
        "count_primes", "n", "returns how many prime numbers are smaller than the integer n",
        "Loop over k from 2 to n - 1.\nTest each k for a divisor d with d * d <= k.\nCount the k without one.",
        "def count_primes(n):\n    count = 0\n    for k in range(2, n):\n        d = 2\n        prime = True\n"
        "        while d * d <= k:\n            if k % d == 0:\n                prime = False\n"
        "                break\n            d += 1\n        if prime:\n            count += 1\n    return count",
        _cases(rng, lambda r: [r.randint(0, 60)], [[2]]),
    )


def _caesar(rng: random.Random) -> CodeTask:
    k = rng.randint(1, 25)
    return CodeTask(
        "shift_letters", "s",
        f"returns s with every lowercase letter shifted {k} places forward in the alphabet (wrapping from z "
        "back to a), leaving all other characters unchanged",
        f"For each character: if it is a lowercase letter, move it {k} places with wrap-around using "
        f"(ord(ch) - ord('a') + {k}) % 26.\nKeep other characters.\nJoin the characters.",
        "def shift_letters(s):\n    out = []\n    for ch in s:\n        if 'a' <= ch <= 'z':\n"
        f"            out.append(chr((ord(ch) - ord('a') + {k}) % 26 + ord('a')))\n        else:\n"
        "            out.append(ch)\n    return ''.join(out)",
        _cases(rng, lambda r: [_sentence(r)], [["xyz"]]),
    )


def _collatz(rng: random.Random) -> CodeTask:
    return CodeTask(
        "collatz_steps", "n",
        "returns how many steps it takes for the positive integer n to reach 1, where each step replaces n "
        "with n // 2 if n is even and with 3 * n + 1 if n is odd",
        "Count steps in a loop until n == 1.\nHalve even n and map odd n to 3 * n + 1.",
        "def collatz_steps(n):\n    steps = 0\n    while n != 1:\n        if n % 2 == 0:\n            n = n // 2\n"
        "        else:\n            n = 3 * n + 1\n        steps += 1\n    return steps",
        _cases(rng, lambda r: [r.randint(2, 60)], [[1]]),
    )


def _to_base(rng: random.Random) -> CodeTask:
    b = rng.randint(2, 9)
    return CodeTask(
        f"to_base_{b}", "n",
        f"returns the base-{b} representation of the non-negative integer n as a string of digits",
        f"Zero is '0'.\nOtherwise take remainders n % {b} and divide n by {b} until it is 0.\n"
        "The remainders give the digits from last to first.",
        f"def to_base_{b}(n):\n    if n == 0:\n        return '0'\n    digits = ''\n    while n > 0:\n"
        f"        digits = str(n % {b}) + digits\n        n //= {b}\n    return digits",
        _cases(rng, lambda r: [r.randint(1, 500)], [[0]]),
    )


def _second_largest(rng: random.Random) -> CodeTask:
    def make(r: random.Random) -> list[Any]:
        nums = _ints(r, -10, 30, 2, 7)
        if len(set(nums)) < 2:
            nums.append(nums[0] + 1)
        return [nums]

    return CodeTask(
        "second_largest", "nums",
        "returns the second largest distinct value in the list nums, which has at least two distinct values",
        "Remove duplicates with set.\nSort the distinct values.\nReturn the one before the last.",
        "def second_largest(nums):\n    values = sorted(set(nums))\n    return values[-2]",
        _cases(rng, make, [[[5, 5, 3]]]),
    )


def _rotate(rng: random.Random) -> CodeTask:
    k = rng.randint(1, 4)
    if rng.random() < 0.5:
        side, body = "left", "nums[k:] + nums[:k]"
    else:
        side, body = "right", "nums[len(nums) - k:] + nums[:len(nums) - k]"
    return CodeTask(
        f"rotate_{side}", "nums",
        f"returns the list nums rotated to the {side} by {k} positions (an empty list stays empty)",
        f"Rotating by {k} is the same as rotating by {k} % len(nums).\nThen join two slices: {body}.",
        f"def rotate_{side}(nums):\n    if not nums:\n        return []\n    k = {k} % len(nums)\n"
        f"    return {body}",
        _cases(rng, lambda r: [_ints(r, 0, 9, 1, 7)], [[[]]]),
    )


def _run_length(rng: random.Random) -> CodeTask:
    return CodeTask(
        "run_length", "s",
        "returns the run-length encoding of the string s, writing each run of equal characters as the "
        "character followed by the run's length",
        "Walk through s and count how long each run of equal characters is.\n"
        "When the character changes, write the character and the count.\nDo not forget the last run.",
        "def run_length(s):\n    out = ''\n    i = 0\n    while i < len(s):\n        j = i\n"
        "        while j < len(s) and s[j] == s[i]:\n            j += 1\n        out += s[i] + str(j - i)\n"
        "        i = j\n    return out",
        _cases(rng, lambda r: [_letters(r, 1, 9, "aab")], [[""]]),
    )


def _fib_like(rng: random.Random) -> CodeTask:
    a, b = rng.randint(0, 5), rng.randint(1, 5)
    return CodeTask(
        "sequence_term", "n",
        f"returns term n (counting from 0) of the sequence that starts {a}, {b} and where every later term "
        "is the sum of the two terms before it",
        f"Keep the last two terms, starting with {a} and {b}.\nStep forward n times.\nReturn the first of the two.",
        f"def sequence_term(n):\n    a, b = {a}, {b}\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
        _cases(rng, lambda r: [r.randint(0, 20)], [[0]]),
    )


FAMILIES: dict[int, tuple[Callable[[random.Random], CodeTask], ...]] = {
    1: (_scale_list, _count_char, _list_stat, _repeat_join, _reverse),
    2: (_count_vowels, _digits, _palindrome, _count_where, _filter_words, _running, _sum_where),
    3: (_gcd_lcm, _fizzbuzz, _primes, _caesar, _collatz, _to_base, _second_largest, _rotate, _run_length,
        _fib_like),
}


def run_solution(solution: str, fn_name: str, inputs: list[list[Any]]) -> list[Any]:
    """Call `fn_name` defined by `solution` on each argument list (our own code: exec in-process).

    >>> run_solution("def f(x):\\n    return x + 1", "f", [[1], [2]])
    [2, 3]
    """
    namespace: dict[str, Any] = {}
    exec(compile(solution, f"<{fn_name}>", "exec"), namespace)
    fn = namespace[fn_name]
    return [fn(*copy.deepcopy(args)) for args in inputs]


def ground_truth(fn_name: str, inputs: list[list[Any]], outputs: list[Any]) -> str:
    """verl prime_code call-based tests: one JSON argument per line, JSON-encoded outputs.

    >>> ground_truth("f", [[1, "a"]], [2])
    '{"fn_name": "f", "inputs": ["1\\\\n\\\\"a\\\\""], "outputs": ["2"]}'
    """
    return json.dumps({
        "fn_name": fn_name,
        "inputs": ["\n".join(json.dumps(arg) for arg in args) for args in inputs],
        "outputs": [json.dumps(out) for out in outputs],
    })


def as_asserts(fn_name: str, inputs: list[list[Any]], outputs: list[Any]) -> str:
    """The same cases as assert statements, for harnesses that run test code (`extra_info["test_code"]`).

    >>> as_asserts("f", [[1, "a"]], [2])
    "assert f(1, 'a') == 2"
    """
    return "\n".join(
        f"assert {fn_name}({', '.join(repr(a) for a in args)}) == {out!r}" for args, out in zip(inputs, outputs)
    )


def sample_code(rng: random.Random, difficulty: int, split: str | None = None) -> Sample:
    """One task of the given level (1..3), its solution run on its tests; with `split`, one of that split.

    The family is drawn first and only its parameters are redrawn until the task lands in `split`, so every
    family is as frequent in test as in train (redrawing the family as well would favour in each split the
    families with more of their statements there: `multiply_all` made 28% of level-1 test rows, 4% of train).
    """
    if difficulty not in FAMILIES:
        raise ValueError(f"code difficulty must be in {LEVELS}, got {difficulty}")
    family = rng.choice(FAMILIES[difficulty])
    for _ in range(MAX_SPLIT_TRIES):
        task = family(rng)
        outputs = run_solution(task.solution, task.fn_name, task.inputs)
        # tests whose expected outputs are all equal would pass a function returning a constant: redraw
        if len({json.dumps(o) for o in outputs}) == 1:
            continue
        sample = _as_sample(task, outputs, difficulty)
        if split is None or split_of(sample.split_key) == split:
            return sample
    raise RuntimeError(f"code family {family.__name__} drew no {split} task in {MAX_SPLIT_TRIES} tries")


def _as_sample(task: CodeTask, outputs: list[Any], difficulty: int) -> Sample:
    call = f"{task.fn_name}({', '.join(repr(a) for a in task.inputs[0])})"
    statement = f"Write a Python function `{task.fn_name}({task.params})` that {task.statement}."
    prompt = f"{statement}\nExample: {call} returns {outputs[0]!r}."
    return Sample(
        prompt=prompt,
        difficulty=difficulty,
        reasoning=f"{task.plan}\nCheck the example: {call} should return {outputs[0]!r}.",
        response=f"```python\n{task.solution}\n```",
        ground_truth=ground_truth(task.fn_name, task.inputs, outputs),
        extra={"fn_name": task.fn_name, "test_code": as_asserts(task.fn_name, task.inputs, outputs)},
        key=statement if task.fn_name in parameterised_tasks() else prompt,
    )


@functools.cache
def parameterised_tasks() -> frozenset[str]:
    """The tasks (function names) whose statement varies with parameters, from 200 seeded draws of every family.

    >>> {"count_char", "rotate_left"} <= parameterised_tasks() and "total" not in parameterised_tasks()
    True
    """
    statements: dict[str, set[str]] = collections.defaultdict(set)
    for family in itertools.chain.from_iterable(FAMILIES.values()):
        rng = random.Random(f"mixrl/code/probe/{family.__name__}")
        for _ in range(200):
            task = family(rng)
            statements[task.fn_name].add(task.statement)
    return frozenset(name for name, seen in statements.items() if len(seen) > 1)


def generate_code(num_rows: int, split: str, seed: int) -> list[dict[str, Any]]:
    """`num_rows` code rows of `split` ("train"/"test"), levels 1..3 in turn; same args, same rows."""
    return generate_rows("code", "code", "rule", functools.partial(sample_code, split=split), LEVELS, num_rows, split,
                         seed)
