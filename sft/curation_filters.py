r"""The candidate filters of long-CoT curation (report §2.3.3): each names why a teacher response is unfit for SFT.

A filter takes one `Candidate` and the recipe's `CurationFilterConfig` and returns a reason (a short name) or
None when the candidate passes. They run in `CANDIDATE_FILTERS` order and a candidate is charged to the first
one that fires, so the per-filter drop counts of the report add up to the candidates dropped.

- ``incomplete``: cut at the token limit (``truncated``), no closed ``</think>`` (``no_closed_think``), or no
  final answer after it (``no_final_answer``, by the recipe's answer extractors: ``\boxed{}`` for math);
- ``garbled``: invalid UTF-8 (vLLM decodes a broken byte sequence to U+FFFD; a lone surrogate cannot be encoded),
  control characters other than tab/newline/carriage return, or a token loop (a unit of a few tokens repeated
  back to back many times, anywhere in the response: the degenerate output of a sampler gone wrong);
- ``mixed_language``: a line with enough letters detected (langdetect, fixed seed) in another language than the
  recipe's, or, with no language set, lines in more than one language;
- ``repetitive``: the repetition detector of the GRPO reward (`rewards/repetition.py`: character n-gram repeats
  or a loop at the end), so SFT data and RL rewards agree on what repetition is.

Covered: the failure shapes above. Not covered: fluent but wrong reasoning that reaches the right answer (the
answer check is on the final answer only, as the report's is), and languages langdetect cannot tell apart on
a short line (lines under `language_min_letters` letters are not judged).

    >>> c = Candidate("<think>\n2 + 2 = 4\n</think>\n\nThe answer is \\boxed{4}.", (1, 2, 3), "stop")
    >>> first_failure(c, CurationFilterConfig()) is None
    True
    >>> first_failure(Candidate("<think>\n2 + 2 =", (1,), "length"), CurationFilterConfig())
    ('incomplete', 'truncated')
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Callable

from core.tokenizer import THINK_CLOSE
from rewards.extract import extract_answer
from rewards.ifeval import detect_language
from rewards.repetition import repetition_coefficient
from sft.config import CANDIDATE_FILTERS, CurationFilterConfig


@dataclass(frozen=True)
class Candidate:
    """One teacher response: its text, its token ids and why generation stopped ("stop" or "length")."""

    text: str
    response_ids: tuple[int, ...]
    finish_reason: str

    @property
    def num_tokens(self) -> int:
        return len(self.response_ids)


def incomplete_reason(candidate: Candidate, cfg: CurationFilterConfig) -> str | None:
    """``truncated``, ``no_closed_think`` or ``no_final_answer``; None for a finished, answered response."""
    if candidate.finish_reason == "length":
        return "truncated"
    if THINK_CLOSE not in candidate.text:
        return "no_closed_think"
    if extract_answer(candidate.text, tuple(cfg.answer_extractors)) is None:
        return "no_final_answer"
    return None


_ALLOWED_CONTROLS = {"\t", "\n", "\r"}


def token_loop(ids: tuple[int, ...] | list[int], max_period: int, min_repeats: int) -> tuple[int, int] | None:
    """``(period, repeats)`` of the first unit of at most `max_period` tokens repeated at least `min_repeats`
    times back to back anywhere in `ids`, or None.

    >>> token_loop([5, 1, 2, 1, 2, 1, 2, 1, 2, 9], max_period=3, min_repeats=4)
    (2, 4)
    >>> token_loop([1, 2, 3, 1, 2, 3], max_period=3, min_repeats=3) is None
    True
    """
    for period in range(1, max_period + 1):
        run = 0  # consecutive positions i with ids[i] == ids[i + period]
        for i in range(len(ids) - period):
            run = run + 1 if ids[i] == ids[i + period] else 0
            if (run + period) // period >= min_repeats:
                return period, (run + period) // period
    return None


def garbled_reason(candidate: Candidate, cfg: CurationFilterConfig) -> str | None:
    """``invalid_utf8``, ``control_chars`` or ``token_loop``; None for clean text."""
    text = candidate.text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: bytes that were never valid UTF-8
        return "invalid_utf8"
    if "\ufffd" in text:
        return "invalid_utf8"
    if any(unicodedata.category(ch) == "Cc" and ch not in _ALLOWED_CONTROLS for ch in text):
        return "control_chars"
    if token_loop(candidate.response_ids, cfg.loop_max_period_tokens, cfg.loop_min_repeats):
        return "token_loop"
    return None


_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_THINK_TAGS = re.compile(r"</?think>")


def line_languages(text: str, min_letters: int) -> list[str]:
    r"""The language (ISO 639-1, langdetect) of every line of `text` with at least `min_letters` letters (LaTeX
    commands and think tags removed first); lines it cannot detect are left out.

    >>> line_languages("12 + 30 = 42\nThis line is plainly written in the English language.", 20)
    ['en']
    """
    found = []
    for line in _THINK_TAGS.sub("\n", text).splitlines():
        line = _LATEX_COMMAND.sub(" ", line)
        if sum(ch.isalpha() for ch in line) < min_letters:
            continue
        language = detect_language(line)
        if language is not None:
            found.append(language)
    return found


def mixed_language_reason(candidate: Candidate, cfg: CurationFilterConfig) -> str | None:
    """``mixed_language:LANGS`` (the languages seen, sorted) when a judged line is not in the recipe's language
    (or, without one, when judged lines disagree); None otherwise."""
    languages = sorted(set(line_languages(candidate.text, cfg.language_min_letters)))
    expected = {cfg.language} if cfg.language else set(languages[:1])
    if set(languages) - expected:
        return "mixed_language:" + "+".join(languages)
    return None


def repetitive_reason(candidate: Candidate, cfg: CurationFilterConfig) -> str | None:
    """The detectors of `rewards.repetition` that fire (``ngram_repetition``, ``end_loop``), or None."""
    detected = repetition_coefficient(candidate.text, cfg.repetition).detected
    return ",".join(detected) if detected else None


FILTERS: dict[str, Callable[[Candidate, CurationFilterConfig], str | None]] = {
    "incomplete": incomplete_reason,
    "garbled": garbled_reason,
    "mixed_language": mixed_language_reason,
    "repetitive": repetitive_reason,
}
assert tuple(FILTERS) == CANDIDATE_FILTERS, "the filter order is the schema's"


def failures(candidate: Candidate, cfg: CurationFilterConfig) -> list[tuple[str, str]]:
    """``(filter name, reason)`` of every enabled filter that rejects `candidate`, in filter order."""
    found = []
    for name, check in FILTERS.items():
        if name not in cfg.disabled and (reason := check(candidate, cfg)) is not None:
            found.append((name, reason))
    return found


def first_failure(candidate: Candidate, cfg: CurationFilterConfig) -> tuple[str, str] | None:
    """``(filter name, reason)`` of the first enabled filter that rejects `candidate`, or None if all pass (the
    one the candidate is charged to)."""
    found = failures(candidate, cfg)
    return found[0] if found else None


def split_thinking(text: str) -> tuple[str, str]:
    r"""``(reasoning, response)`` of a response with one closed think block: the text inside it and the answer
    after it, both stripped (the SFT row's ``extra_info.reasoning`` and ``extra_info.response``).

    >>> split_thinking("<think>\n3 + 4 = 7\n</think>\n\nThe answer is \\boxed{7}.")
    ('3 + 4 = 7', 'The answer is \\boxed{7}.')
    """
    head, _, answer = text.partition(THINK_CLOSE)
    reasoning = head.split("<think>", 1)[-1]
    return reasoning.strip(), answer.strip()
