"""Summarisation reward: ROUGE-L F1 of a summary against the reference (`rouge-score`, Google's implementation
that the summarisation literature reports), for the mobile-service domain of BlueLM-2.5 §2.3.6.

ROUGE-L rewards the longest common subsequence of words, so it rewards the reference's facts in its order and
punishes padding (precision) and omissions (recall) alike. Tokens are lower-cased words and numbers (the
package's default tokenizer); no stemming, so the reward is exactly reproducible.

    >>> rouge_l("Your parcel arrives on Friday.", "Your parcel arrives on Friday.")
    1.0
    >>> round(rouge_l("The parcel comes Friday.", "Your parcel arrives on Friday."), 3)
    0.444
"""

from __future__ import annotations

import functools
import re

_PREFIX = re.compile(r"^\s*(?:\*\*)?summary(?:\*\*)?\s*[:：-]\s*(?:\*\*)?", re.IGNORECASE)


@functools.lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def summary_text(response: str) -> str:
    """The summary a response states: its text without a leading ``Summary:`` label.

    >>> summary_text("Summary: Dana moved the meeting to 3 pm.")
    'Dana moved the meeting to 3 pm.'
    """
    return _PREFIX.sub("", response.strip(), count=1).strip()


def rouge_l(summary: str, reference: str) -> float:
    """ROUGE-L F1 in [0, 1]; 0.0 for an empty summary (nothing of the reference was said).

    >>> rouge_l("", "Your parcel arrives on Friday."), rouge_l("Summary: Your parcel arrives on Friday", "Your parcel arrives on Friday.")
    (0.0, 1.0)
    """
    return float(_scorer().score(reference, summary_text(summary))["rougeL"].fmeasure)
