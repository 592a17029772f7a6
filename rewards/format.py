r"""Format coefficient (BlueLM-2.5 §2.3.5): 1.0 when the response is well-formed, ``penalty`` (0.1) when a rule fires.

Rules, each with a name that the result reports:

- ``think_block``: thinking mode on ⇒ the response starts with exactly one closed ``<think>…</think>``; mode
  unknown ⇒ think tags, if any, form exactly one leading closed block;
- ``unexpected_think``: thinking mode off ⇒ no reasoning block (an empty ``<think></think>``, as some chat
  templates emit, is allowed);
- ``missing_box``: fewer than ``min_boxes`` boxes in the answer (after ``</think>``);
- ``too_many_boxes``: more than ``max_boxes`` boxes in the answer (hedging over several answers);
- ``short_reasoning``: the reasoning (think block, or the text before the last box) has fewer than
  ``min_reasoning_chars`` non-space characters (characters, not words, so Chinese counts the same).

Several rules may fire; the coefficient is ``penalty`` once, not ``penalty**k`` (the report has one 0.1 factor).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rewards.extract import _BOX_START, answer_part, count_boxes


@dataclass(frozen=True)
class FormatConfig:
    """Format rules of one domain. ``min_boxes=0`` / ``max_boxes=None`` / ``min_reasoning_chars=0`` disable rules."""

    check_think: bool = True
    min_boxes: int = 1
    max_boxes: int | None = 1
    min_reasoning_chars: int = 0
    penalty: float = 0.1


@dataclass(frozen=True)
class FormatResult:
    """coefficient: 1.0 or the penalty; fired: names of the rules that fired; reasoning_chars: what was measured."""

    coefficient: float
    fired: tuple[str, ...] = ()
    reasoning_chars: int = 0
    boxes: int = 0
    details: dict = field(default_factory=dict)


_THINK_TAG = re.compile(r"</?think>")
_SPACE = re.compile(r"\s+")


def _think_rule(response: str, thinking: bool | None) -> str | None:
    opens = response.count("<think>")
    closes = response.count("</think>")
    if thinking is False:
        if opens == 0 and closes == 0:
            return None
        empty = re.match(r"\s*<think>\s*</think>", response)
        return None if (opens == 1 and closes == 1 and empty) else "unexpected_think"
    if thinking is None and opens == 0 and closes == 0:
        return None
    well_formed = (
        opens == 1
        and closes == 1
        and response.lstrip().startswith("<think>")
        and response.index("<think>") < response.index("</think>")
    )
    return None if well_formed else "think_block"


def _reasoning_text(response: str) -> str:
    if "</think>" in response and "<think>" in response:
        start = response.index("<think>") + len("<think>")
        return response[start : response.index("</think>")]
    part = answer_part(response)
    starts = [m.start() for m in _BOX_START.finditer(part)]
    return part[: starts[-1]] if starts else part


def format_coefficient(response: str, thinking: bool | None = None, config: FormatConfig = FormatConfig()) -> FormatResult:
    r"""Format coefficient of one response.

    >>> ok = "<think>\nCompute 3*11.\n</think>\n\nThe answer is \\boxed{33}."
    >>> format_coefficient(ok, thinking=True).coefficient
    1.0
    >>> r = format_coefficient("The answer is \\boxed{33}.", thinking=True)
    >>> r.coefficient, r.fired
    (0.1, ('think_block',))
    >>> format_coefficient("\\boxed{3} or \\boxed{4}", thinking=False).fired
    ('too_many_boxes',)
    """
    fired: list[str] = []
    if config.check_think:
        rule = _think_rule(response, thinking)
        if rule:
            fired.append(rule)
    part = answer_part(response)
    boxes = count_boxes(part)
    if boxes < config.min_boxes:
        fired.append("missing_box")
    if config.max_boxes is not None and boxes > config.max_boxes:
        fired.append("too_many_boxes")
    reasoning_chars = len(_SPACE.sub("", _THINK_TAG.sub("", _reasoning_text(response))))
    if reasoning_chars < config.min_reasoning_chars:
        fired.append("short_reasoning")
    return FormatResult(
        coefficient=config.penalty if fired else 1.0,
        fired=tuple(fired),
        reasoning_chars=reasoning_chars,
        boxes=boxes,
    )
