"""The pure parts of three training-loop features: dynamic sampling, thinking-budget forced tokens, PPO mini-batches.

  * `informative_groups`: which prompt groups carry a learning signal (DAPO's dynamic sampling, arXiv 2503.14476,
    keeps only groups whose rewards are not all equal, and samples more prompts until the batch is full).
  * `forced_think_mask`: the tokens vLLM forced to close a thinking span when `thinking_token_budget` ran out —
    the policy did not choose them, so they are left out of the loss.
  * `minibatch_slices`: the split of one rollout batch into PPO mini-batches (one optimizer step each);
  * `run_slices` / `run_labels`: the split by source instead (`algo.minibatch_split: source`).

Free functions on lists and tensors (STYLE.md §1); the trainer and the step wire them in.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

import torch


def informative_groups(rewards: Sequence[float] | torch.Tensor, group_ids: Sequence | torch.Tensor) -> list:
    """Ids of the groups whose scored rewards are not all equal (non-zero variance), in order of first appearance.

    Masked samples (reward None or NaN) are ignored; a group with fewer than two scored samples carries no signal.

    >>> informative_groups([1.0, 0.0, 1.0, 1.0, 0.5, float("nan"), None, 0.0], ["a", "a", "b", "b", "c", "c", "d", "d"])
    ['a']
    """
    values = rewards.tolist() if isinstance(rewards, torch.Tensor) else list(rewards)
    ids = group_ids.tolist() if isinstance(group_ids, torch.Tensor) else list(group_ids)
    if len(values) != len(ids):
        raise ValueError(f"{len(values)} rewards for {len(ids)} group ids")
    scored: dict = defaultdict(list)
    order: list = []
    for r, g in zip(values, ids):
        if g not in scored:
            order.append(g)
            scored[g] = []
        if r is not None and not math.isnan(float(r)):
            scored[g].append(float(r))
    return [g for g in order if len(scored[g]) >= 2 and max(scored[g]) > min(scored[g])]


def _find(seq: Sequence[int], sub: Sequence[int], start: int = 0) -> int:
    """First index >= start where `sub` occurs in `seq`, or -1."""
    n, sub = len(sub), list(sub)
    for i in range(start, len(seq) - n + 1):
        if list(seq[i:i + n]) == sub:
            return i
    return -1


def _rfind(seq: Sequence[int], sub: Sequence[int]) -> int:
    """Last index where `sub` occurs in `seq`, or -1."""
    n, sub = len(sub), list(sub)
    for i in range(len(seq) - n, -1, -1):
        if list(seq[i:i + n]) == sub:
            return i
    return -1


def forced_think_mask(response_ids: Sequence[int], close_ids: Sequence[int], *, thinking_budget: int,
                      open_ids: Sequence[int], prompt_ids: Sequence[int] = ()) -> torch.Tensor:
    """Bool mask [L] of the response tokens vLLM forced because a thinking span ran out of `thinking_budget`.

    The model is vLLM 0.32's `ThinkingBudgetStateHolder` (behind `SamplingParams.thinking_token_budget`), replayed
    over the finished token ids: a thinking span starts after `open_ids`; if the model has not completed `close_ids`
    by the budget position, the engine forces `close_ids` there, one token at a time. Those tokens are masked (or
    the prefix of them the response ends with, when max_response_tokens cut the forcing short). A span closed
    before the budget, a response that never opens thinking, and `thinking_budget` 0 (no budget: the engine gets
    None) leave everything False. Every span is budgeted on its own, as vLLM does.

    The budget position, as vLLM computes it: `thinking_budget` tokens after the opening sequence when the response
    opens thinking. When the prompt already opened it (its last `open_ids` after its last `close_ids`; pass
    `prompt_ids`), vLLM counts the prompt's thinking tokens too, and its bookkeeping lets the span run
    `len(open_ids) − 1` tokens longer. And vLLM remembers the first closing sequence after the previous span even
    when it came before the next opening one (a stray `</think>` outside thinking): that span can then only end by
    force. All three quirks are reproduced: checked against the real `ThinkingBudgetStateHolder` driven token by
    token (open/close sequences of 1–3 tokens, budgets 1–10, prompts that open, continue or close thinking, natural
    and forced closes, stray closes, truncation, several spans per response; no engine started) with identical masks.

    `close_ids` / `open_ids` are what vLLM forces and looks for: `tokenizer.encode(s, add_special_tokens=False)` of
    the engine's `ReasoningConfig` strings (`core.engine`: reasoning_end_str "\\n</think>\\n\\n", reasoning_start_str
    "<think>"). Not covered: speculative decoding. If the tokens at a budget position are not `close_ids`, the
    response did not come from this model (another budget, another engine): nothing from there on is masked.

    >>> forced_think_mask([7, 1, 2, 3, 8, 9, 5], [8, 9], thinking_budget=3, open_ids=[7]).tolist()
    [False, False, False, False, True, True, False]
    >>> forced_think_mask([7, 1, 8, 9, 5], [8, 9], thinking_budget=3, open_ids=[7]).tolist()  # closed by itself
    [False, False, False, False, False]
    """
    ids, close = list(response_ids), list(close_ids)
    mask = torch.zeros(len(ids), dtype=torch.bool)
    if thinking_budget <= 0 or not close or not open_ids:
        return mask
    prompt = list(prompt_ids)
    prompt_open = _rfind(prompt, open_ids)
    if prompt_open >= 0 and prompt_open > _rfind(prompt, close):  # thinking continues from the prompt
        in_prompt = len(prompt) - (prompt_open + len(open_ids))  # thinking tokens already in the prompt
        forced_at = 0 if thinking_budget <= in_prompt else thinking_budget - in_prompt + len(open_ids) - 1
        closed = _find(ids, close)
        natural = closed >= 0
    else:
        forced_at = None
    pos = 0  # vLLM's scan offset: where it looks for the next span's opening and closing sequences
    while True:
        if forced_at is None:  # a span the response opens
            opened = _find(ids, open_ids, pos)
            if opened < 0:
                return mask
            forced_at = opened + len(open_ids) + thinking_budget
            closed = _find(ids, close, pos)  # the first closing sequence since the scan offset, even a stale one
            natural = closed > opened
        if natural and closed + len(close) <= forced_at:  # closed by itself before the budget ran out
            pos, forced_at = closed + len(close), None
            continue
        forced = ids[forced_at:forced_at + len(close)]
        if not forced or forced != close[:len(forced)]:
            return mask  # the response ends at the budget position, or it does not follow the model
        mask[forced_at:forced_at + len(forced)] = True
        pos, forced_at = forced_at + len(close), None


def run_slices(labels: Sequence) -> list[slice]:
    """Contiguous slices of the runs of equal labels, in order: the PPO mini-batches of `algo.minibatch_split:
    source`, one per run of one source in the batch (the batch is ordered by source, so one per source).

    >>> run_slices(["math", "math", "code", "chat", "chat"])
    [slice(0, 2, None), slice(2, 3, None), slice(3, 5, None)]
    """
    out, start = [], 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            out.append(slice(start, i))
            start = i
    return out


def run_labels(labels: Sequence) -> list[int]:
    """Each row's run index (`run_slices`): the `TrainBatch.minibatch` labels of a batch split by source.

    >>> run_labels(["math", "math", "code", "chat", "chat"])
    [0, 0, 1, 2, 2]
    """
    return [i for i, sl in enumerate(run_slices(labels)) for _ in range(sl.start, sl.stop)]


def minibatch_slices(batch_size: int, n_minibatches: int) -> list[slice]:
    """Contiguous slices splitting `batch_size` sequences into `n_minibatches` PPO mini-batches, sizes differing by
    at most one (the first `batch_size % n` get one more). Each mini-batch is one optimizer step; the first of
    them sees exactly the policy that produced the proximal logprobs (ratio 1), the later ones a moved policy, which
    is where the PPO clip acts.

    >>> minibatch_slices(10, 3)
    [slice(0, 4, None), slice(4, 7, None), slice(7, 10, None)]
    """
    if n_minibatches < 1 or n_minibatches > batch_size:
        raise ValueError(f"n_minibatches must be in [1, batch_size={batch_size}], got {n_minibatches}")
    size, extra = divmod(batch_size, n_minibatches)
    out, start = [], 0
    for i in range(n_minibatches):
        stop = start + size + (1 if i < extra else 0)
        out.append(slice(start, stop))
        start = stop
    return out
