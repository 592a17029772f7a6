r"""Answer extraction: the last boxed answer, GSM8K's ``#### n``, multiple-choice letters, fenced code.

Every extractor has one signature, ``extract(text: str) -> str | None`` (``None``: no answer), so a domain picks an
ordered tuple of names from `EXTRACTORS`. Extraction never raises and runs in linear time (no backtracking regex on
the whole response), because it runs in the trainer's process, outside the verification pool.

Responses in thinking mode carry their answer after ``</think>``; `answer_part` cuts the reasoning off first so a box
drafted inside the reasoning never counts as the answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_BOX_START = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def answer_part(response: str) -> str:
    r"""The part of a response that holds the final answer.

    Text after the last ``</think>``; the whole response when it has no think tags; ``""`` when a ``<think>`` was
    opened and never closed (a truncated reasoning has no answer, even if it drafted a box).

    >>> answer_part("<think>\nmaybe \\boxed{2}\n</think>\n\nThe answer is \\boxed{3}.")
    'The answer is \\boxed{3}.'
    >>> answer_part("<think>\nstill thinking \\boxed{2}")
    ''
    >>> answer_part("plain \\boxed{4}")
    'plain \\boxed{4}'
    """
    close = response.rfind("</think>")
    if close >= 0:
        return response[close + len("</think>"):].strip()
    if "<think>" in response:
        return ""
    return response


def count_boxes(text: str) -> int:
    r"""Number of ``\boxed``/``\fbox`` commands in ``text`` (closed or not).

    >>> count_boxes(r"\boxed{1} and \fbox{2} but not \boxedfoo")
    2
    """
    return len(_BOX_START.findall(text))


def _matching_brace(text: str, open_at: int) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``open_at``; escaped braces ``\\{`` ``\\}`` do not nest."""
    depth = 0
    i = open_at
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2  # skip the escaped character (\{, \}, \\)
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def last_boxed(text: str) -> str | None:
    r"""Content of the LAST ``\boxed{...}`` / ``\fbox{...}`` / ``\boxed 5`` in ``text``.

    Nested braces are matched and escaped braces do not nest. The last box decides: if it is unclosed (a truncated
    response) there is no answer, even when an earlier box was closed. An empty box is no answer.

    >>> last_boxed(r"so \boxed{\frac{1}{2}}.")
    '\\frac{1}{2}'
    >>> last_boxed(r"\boxed{1} then \boxed{2}")
    '2'
    >>> last_boxed(r"the set \boxed{\{1, 2\}}")
    '\\{1, 2\\}'
    >>> last_boxed(r"\boxed 5.")
    '5'
    >>> last_boxed(r"\fbox{7}")
    '7'
    >>> last_boxed(r"\boxed{1} then \boxed{\frac{1}{2") is None
    True
    >>> last_boxed("no box") is None
    True
    """
    starts = [m.end() for m in _BOX_START.finditer(text)]
    if not starts:
        return None
    i = starts[-1]
    n = len(text)
    while i < n and text[i] in " \t":
        i += 1
    if i >= n:
        return None
    if text[i] == "{":
        close = _matching_brace(text, i)
        if close is None:
            return None
        content = text[i + 1 : close].strip()
    elif i > starts[-1]:
        # "\boxed 5": the argument is the next whitespace-free run, without sentence punctuation or a closing $.
        m = re.match(r"[^\s$]+", text[i:])
        content = m.group(0).rstrip(".,;:") if m else ""
    else:
        return None  # "\boxed\frac..." or "\boxed." : not a box we can read
    return content or None


_GSM8K = re.compile(r"####\s*(-?[0-9][0-9,]*(?:\.[0-9]+)?)")


def gsm8k_answer(text: str) -> str | None:
    """The number after the last ``####`` (GSM8K's answer marker), without thousands separators.

    >>> gsm8k_answer("... so 3 * 4 = 12.\\n#### 1,200")
    '1200'
    >>> gsm8k_answer("#### -3.5.")
    '-3.5'
    >>> gsm8k_answer("The answer is 12") is None
    True
    """
    matches = _GSM8K.findall(text)
    if not matches:
        return None
    return matches[-1].replace(",", "")


_CHOICE_LETTERS = "ABCDEFGHIJ"
_CHOICE_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\{([^{}]*)\}")
_CHOICE_IN_BOX = re.compile(r"^\(?([A-J])\)?(?:[\s.:)]|$)")
_CHOICE_PHRASE = re.compile(r"(?i:answer)(?:\s+is)?\s*[:：]?\s*\(?\**([A-J])\**\)?(?![A-Za-z])")
# a last line that is only a letter: "B", "B)", "(B)", "B.", "**B**", "**(B)**"
_CHOICE_BARE = re.compile(r"^\**\(?([A-J])\)?[.)]?\**\s*[.]?$")
# a one-line answer that is an option as listed: "B) 42 m/s" (one line only: an echoed option list is not an answer)
_CHOICE_OPTION = re.compile(r"^\**\(?([A-J])\)\**\s+\S")


def choice_answer(text: str) -> str | None:
    r"""A multiple-choice letter (A–J): from the last box (``\boxed{B}``, ``\boxed{\text{(B)}}``, ``\boxed{B) 42}``),
    else from the last "answer is (B)" / "Answer: B" phrase, else from a last line that is only a letter (``B)``,
    ``**B**``) or from a one-line answer stating an option (``B) 42 m/s``).

    >>> choice_answer("Speed is distance over time.\n**B**"), choice_answer("B)"), choice_answer("(C) 12 N")
    ('B', 'B', 'C')
    >>> choice_answer("A) 3\nB) 4\nC) 5") is None  # an echoed option list names no answer
    True
    >>> choice_answer(r"... \boxed{\text{(C)}}")
    'C'
    >>> choice_answer("Therefore, the answer is (B).")
    'B'
    >>> choice_answer("Answer: D")
    'D'
    >>> choice_answer(r"\boxed{42}") is None
    True
    """
    boxed = last_boxed(text)
    if boxed is not None:
        inner = _CHOICE_WRAPPERS.sub(r"\1", boxed).strip()
        m = _CHOICE_IN_BOX.match(inner)
        return m.group(1) if m else None
    matches = _CHOICE_PHRASE.findall(text)
    if matches:
        return matches[-1]
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None
    bare = _CHOICE_BARE.match(lines[-1])
    if bare:
        return bare.group(1)
    option = _CHOICE_OPTION.match(lines[0]) if len(lines) == 1 else None
    return option.group(1) if option else None


_FENCE = re.compile(r"```([A-Za-z0-9_+-]*)[ \t]*\n(.*?)```", re.DOTALL)


def code_block(text: str) -> str | None:
    """The last fenced code block (preferring python-tagged ones); ``None`` when there is none.

    >>> code_block("Here:\\n```python\\ndef f(x):\\n    return x\\n```\\nDone.")
    'def f(x):\\n    return x\\n'
    >>> code_block("no code") is None
    True
    """
    blocks = _FENCE.findall(text)
    if not blocks:
        return None
    python = [body for lang, body in blocks if lang.lower() in ("python", "py", "python3")]
    return (python or [body for _, body in blocks])[-1]


# Every entry has the signature extract(text) -> str | None (STYLE.md 7).
EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "boxed": last_boxed,
    "gsm8k": gsm8k_answer,
    "choice": choice_answer,
    "code": code_block,
}


def extract_answer(text: str, extractors: tuple[str, ...] = ("boxed",)) -> str | None:
    r"""The first answer any of the named extractors finds in the answer part of ``text``.

    >>> extract_answer("<think>\\boxed{1}</think> #### 72", ("gsm8k", "boxed"))
    '72'
    >>> extract_answer("<think>\\boxed{1}</think> no answer", ("gsm8k", "boxed")) is None
    True
    """
    part = answer_part(text)
    for name in extractors:
        try:
            fn = EXTRACTORS[name]
        except KeyError:
            raise ValueError(f"unknown extractor {name!r}; valid: {sorted(EXTRACTORS)}") from None
        found = fn(part)
        if found is not None:
            return found
    return None
