"""Repetition coefficient (BlueLM-2.5 §2.3.5): 1.0, or ``penalty`` (0.1) when a repetitive pattern is detected.

Two detectors, both over characters (not whitespace-split words) so that Chinese and other unsegmented scripts are
handled the same way as English; whitespace runs are collapsed first so line-break variations do not hide a loop:

- ``ngram_repetition``: the fraction of character n-grams that repeat an earlier one,
  ``1 - distinct / total``, exceeds ``max_ngram_repeat_fraction`` (texts shorter than ``min_chars`` are skipped:
  a short answer has too few n-grams for a meaningful fraction);
- ``end_loop``: the response ends in a unit of at most ``loop_max_period_chars`` characters repeated at least
  ``loop_min_repeats`` times over at least ``loop_min_chars`` characters (the typical degenerate ending of a
  response cut at the token limit). A partial last repetition counts.

The report names no thresholds; the defaults below are ours and live in the recipe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class RepetitionConfig:
    ngram_chars: int = 20
    max_ngram_repeat_fraction: float = 0.5
    min_chars: int = 200
    loop_max_period_chars: int = 200
    loop_min_repeats: int = 4
    loop_min_chars: int = 40
    penalty: float = 0.1


@dataclass(frozen=True)
class RepetitionResult:
    """coefficient: 1.0 or the penalty; detected: names of the detectors that fired; the measurements."""

    coefficient: float
    detected: tuple[str, ...] = ()
    ngram_repeat_fraction: float = 0.0
    loop_period: int = 0
    loop_chars: int = 0


def ngram_repeat_fraction(text: str, n: int) -> float:
    """``1 - distinct/total`` over the character n-grams of ``text`` (0.0 when it has none).

    >>> ngram_repeat_fraction("abcd", 2)   # ab bc cd: all distinct
    0.0
    >>> ngram_repeat_fraction("ababab", 2)  # ab ba ab ba ab: 2 distinct of 5
    0.6
    """
    total = len(text) - n + 1
    if total <= 0:
        return 0.0
    distinct = len({text[i : i + n] for i in range(total)})
    return 1.0 - distinct / total


def end_loop(text: str, max_period: int, min_repeats: int, min_chars: int) -> tuple[int, int] | None:
    """``(period, covered_chars)`` of the shortest unit repeated at the end of ``text``, or ``None``.

    The covered span is the longest suffix in which every character equals the one ``period`` characters later,
    so a loop cut mid-unit (at the token limit) is still found.

    >>> end_loop("Intro. " + "I will check again. " * 5, 50, 4, 40)
    (20, 101)
    >>> end_loop("A normal ending with no loop at all.", 50, 4, 40) is None
    True
    """
    s = text.rstrip()
    n = len(s)
    for p in range(1, min(max_period, n // max(min_repeats, 1)) + 1):
        i = n - 1 - p
        while i >= 0 and s[i] == s[i + p]:
            i -= 1
        covered = (n - 1 - p - i) + p
        if covered >= p * min_repeats and covered >= min_chars:
            return p, covered
    return None


def repetition_coefficient(text: str, config: RepetitionConfig = RepetitionConfig()) -> RepetitionResult:
    """Repetition coefficient of one response.

    >>> repetition_coefficient("Let me think about this problem step by step and then answer.").coefficient
    1.0
    >>> r = repetition_coefficient("The answer is 4. " + "Wait, let me recheck. " * 30)
    >>> r.coefficient, r.detected
    (0.1, ('ngram_repetition', 'end_loop'))
    """
    s = _SPACE.sub(" ", text).strip()
    detected: list[str] = []
    fraction = 0.0
    if len(s) >= config.min_chars:
        fraction = ngram_repeat_fraction(s, config.ngram_chars)
        if fraction > config.max_ngram_repeat_fraction:
            detected.append("ngram_repetition")
    loop = end_loop(s, config.loop_max_period_chars, config.loop_min_repeats, config.loop_min_chars)
    if loop is not None:
        detected.append("end_loop")
    return RepetitionResult(
        coefficient=config.penalty if detected else 1.0,
        detected=tuple(detected),
        ngram_repeat_fraction=fraction,
        loop_period=loop[0] if loop else 0,
        loop_chars=loop[1] if loop else 0,
    )
