"""The answer verdict of one dataset row's response (1/0, or None when it cannot be computed): what evaluation counts.

    score_response(row, "... \\boxed{7}")   # 1.0, 0.0, or None (masked, never counted as a wrong answer)

It scores through `rewards.compute_score` (the process's default router; install one with a sandbox client for
code), taking the answer verdict (`acc`), not the shaped reward, so evaluation measures correctness only.
"""

from __future__ import annotations

import math

from rewards.compat import compute_score


def score_response(row: dict, response: str) -> float | None:
    """Answer verdict (1/0) of a response to a verl-schema `row`, or None when it cannot be computed.

    >>> row = {"data_source": "openai/gsm8k", "reward_model": {"ground_truth": "7"}}
    >>> score_response(row, "3 + 4 = 7\\n#### 7"), score_response(row, "#### 8")
    (1.0, 0.0)
    """
    try:
        # the row's ability routes it when its data_source has no route of its own (verl rows carry both)
        extra = {"ability": row.get("ability"), **(row.get("extra_info") or {})}
        result = compute_score(row["data_source"], response, row["reward_model"]["ground_truth"], extra)
    except Exception as exc:  # noqa: BLE001 - a broken scorer must not look like a wrong answer
        print(f"[eval] scoring failed for {row['data_source']}: {exc!r}", flush=True)
        return None
    acc = result.get("acc") if isinstance(result, dict) else result
    # compute_score marks a sample it could not score with NaN (masked), never 0
    return None if acc is None or math.isnan(float(acc)) else float(acc)
