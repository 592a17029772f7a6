"""Outcome advantage estimators as free functions with one signature, and `ADVANTAGE_ESTIMATORS`: name -> function.

    adv = ADVANTAGE_ESTIMATORS["rloo"](rewards, group_ids, norm_by_std=True, eps=1e-6, token_counts=None, extra={})

  rewards       [B] one outcome reward per sequence (NaN = masked: left out of every statistic, advantage 0);
                GDPO also takes a [B, C] matrix of reward components
  group_ids     [B] list or tensor: samples of one prompt share an id
  norm_by_std   divide by the group's std (GRPO, GRPO pass@k, GDPO); the others ignore it
  eps           added to that std
  token_counts  [B] response tokens per sequence: the weights of the batch whitening (REINFORCE++, GDPO: verl whitens
                over tokens, so a long sequence weighs more) and of OPO's length-weighted baseline; None = every
                sequence weighs 1
  extra         knobs of a few estimators: single_sample ("raw" | "zero", GRPO), weights (GDPO's per-component
                weights), f_norm (GPG)
  returns       [B] advantages, one per sequence (the trainer broadcasts them over the response tokens)

They compose with `rl.algos.normalize_advantages_by_source` (per-domain rescaling, ours) applied afterwards.
Each is numerically equivalent to verl 0.9.1's `core_algos.compute_*_outcome_advantage` on the same rewards
(`tests/rl/test_advantage_estimators.py`); verl's take token-level scores and an index array and return [B, L].
Departures, named: NaN masking (verl has none); `dr_grpo` is ours as a name (verl: `grpo` with
`norm_adv_by_std_in_grpo=False`) — Dr. GRPO's second half, no length normalisation, is the loss aggregation
`seq-mean-token-sum-norm`, not an advantage; a pass@k group whose masking leaves fewer than 2 scored samples gets 0
(verl raises on a group of one, as we do when the group itself has one sample).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Callable, Sequence

import torch

from rl.algos import group_advantages

AdvantageFn = Callable[..., torch.Tensor]


def _ids(group_ids: Sequence | torch.Tensor) -> list:
    return group_ids.tolist() if isinstance(group_ids, torch.Tensor) else list(group_ids)


def _members(rewards: torch.Tensor, group_ids, *, include_masked: bool = False) -> dict:
    """group id -> indices of its scored samples (all samples with `include_masked`), in batch order."""
    members: dict = defaultdict(list)
    for i, g in enumerate(_ids(group_ids)):
        if include_masked or not math.isnan(float(rewards[i])):
            members[g].append(i)
    return members


def _one_column(rewards: torch.Tensor, name: str) -> torch.Tensor:
    if rewards.dim() != 1:
        raise ValueError(f"the {name} advantage takes one reward per sequence [B], got shape {tuple(rewards.shape)} "
                         "(a [B, C] component matrix is for gdpo)")
    return rewards.float()


def whiten(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(v − mean) / sqrt(var + 1e-8) with weighted mean and Bessel-corrected weighted variance — verl's
    `masked_whiten` over tokens when `weights` are the sequences' token counts. Weight-0 entries come back 0.

    >>> [round(x, 4) for x in whiten(torch.tensor([1.0, 0.0, 5.0]), torch.tensor([1.0, 1.0, 0.0])).tolist()]
    [0.7071, -0.7071, 0.0]
    """
    w = weights.float()
    n = w.sum()
    mean = (values * w).sum() / (n + 1e-8)
    if n <= 1:  # no spread to measure (verl raises here)
        return (values - mean) * (w > 0)
    var = ((values - mean).square() * w).sum() / (n + 1e-8) * (n / (n - 1))
    return (values - mean) * torch.rsqrt(var + 1e-8) * (w > 0)


def _weights(rewards: torch.Tensor, token_counts: torch.Tensor | None) -> torch.Tensor:
    scored = ~torch.isnan(rewards)
    w = torch.ones_like(rewards) if token_counts is None else token_counts.float().clone()
    return w * scored


def grpo_advantage(rewards, group_ids, *, norm_by_std=True, eps=1e-6, token_counts=None, extra=None):
    """GRPO (Shao et al., arXiv 2402.03300): (r − mean_g) / (std_g + eps), unbiased std; `rl.algos.group_advantages`."""
    rewards = _one_column(rewards, "grpo")
    return group_advantages(rewards, _ids(group_ids), norm_by_std=norm_by_std, eps=eps,
                            single_sample=(extra or {}).get("single_sample", "raw"))


def dr_grpo_advantage(rewards, group_ids, *, norm_by_std=True, eps=1e-6, token_counts=None, extra=None):
    """Dr. GRPO (Liu et al., arXiv 2503.20783): r − mean_g, never divided by the std (`norm_by_std` ignored). Its
    other correction, no per-sequence length normalisation, is `agg_mode="seq-mean-token-sum-norm"` in the loss."""
    rewards = _one_column(rewards, "dr_grpo")
    return group_advantages(rewards, _ids(group_ids), norm_by_std=False, eps=eps,
                            single_sample=(extra or {}).get("single_sample", "raw"))


def rloo_advantage(rewards, group_ids, *, norm_by_std=True, eps=1e-6, token_counts=None, extra=None):
    """RLOO (Ahmadian et al., arXiv 2402.14740): r_i − mean of the other samples of the group = (r_i − mean_g)·n/(n−1).
    A group of one keeps its raw reward (verl)."""
    rewards = _one_column(rewards, "rloo")
    adv = torch.zeros_like(rewards)  # [B]
    for idx in _members(rewards, group_ids).values():
        r = rewards[idx]
        n = len(idx)
        adv[idx] = r if n == 1 else r * n / (n - 1) - r.mean() * n / (n - 1)
    return adv


def reinforce_plus_plus_baseline_advantage(rewards, group_ids, *, norm_by_std=True, eps=1e-6, token_counts=None,
                                           extra=None):
    """REINFORCE++-baseline (Hu, arXiv 2501.03262): r − mean_g, then whitened over the whole batch (token-weighted
    with `token_counts`, as verl)."""
    rewards = _one_column(rewards, "reinforce_plus_plus_baseline")
    centred = torch.zeros_like(rewards)  # [B]
    for idx in _members(rewards, group_ids).values():
        r = rewards[idx]
        centred[idx] = r if len(idx) == 1 else r - r.mean()
    return whiten(centred, _weights(rewards, token_counts))


def reinforce_plus_plus_advantage(rewards, group_ids, *, norm_by_std=True, eps=1e-6, token_counts=None, extra=None):
    """REINFORCE++ (arXiv 2501.03262) for an outcome reward with γ = 1: the reward, whitened over the batch
    (no group baseline; `group_ids` unused)."""
    rewards = _one_column(rewards, "reinforce_plus_plus")
    return whiten(torch.nan_to_num(rewards, nan=0.0), _weights(rewards, token_counts))


def grpo_passk_advantage(rewards, group_ids, *, norm_by_std=True, eps=1e-6, token_counts=None, extra=None):
    """GRPO for pass@k (arXiv 2503.19595, as verl implements it): only the group's best sample gets a signal,
    r_max − r_second, divided by std_g + eps with `norm_by_std`."""
    rewards = _one_column(rewards, "grpo_passk")
    adv = torch.zeros_like(rewards)
    everyone = _members(rewards, group_ids, include_masked=True)
    for g, idx in _members(rewards, group_ids).items():
        if len(everyone[g]) < 2:
            raise ValueError(f"pass@k advantages need at least 2 samples per group; group {g!r} has {len(everyone[g])}")
        if len(idx) < 2:
            continue
        r = rewards[idx]  # [k]
        top, top_idx = torch.topk(r, 2)
        a = top[0] - top[1]
        adv[idx[int(top_idx[0])]] = a / (r.std() + eps) if norm_by_std else a
    return adv


def gdpo_advantage(rewards, group_ids, *, norm_by_std=True, eps=1e-6, token_counts=None, extra=None):
    """GDPO (arXiv 2601.05242): each reward component is group-normalised on its own (GRPO per column), the
    columns are summed with `extra["weights"]` (default 1 each), and the sum is whitened over the batch. `rewards`
    is [B, C] (or [B]: one component); a sample with any NaN component is masked."""
    comps = rewards.float().unsqueeze(-1) if rewards.dim() == 1 else rewards.float()  # [B, C]
    weights = (extra or {}).get("weights")
    weights = [1.0] * comps.shape[1] if weights is None else list(weights)
    if len(weights) != comps.shape[1]:
        raise ValueError(f"gdpo: {len(weights)} weights for {comps.shape[1]} reward components")
    masked = torch.isnan(comps).any(-1)  # [B]
    comps = comps.masked_fill(masked.unsqueeze(-1), float("nan"))
    ids = _ids(group_ids)
    total = torch.zeros(comps.shape[0])
    for c, w in enumerate(weights):
        total = total + w * group_advantages(comps[:, c], ids, norm_by_std=norm_by_std, eps=eps)
    return whiten(total, _weights(comps[:, 0], token_counts))


def opo_advantage(rewards, group_ids, *, norm_by_std=True, eps=1e-6, token_counts=None, extra=None):
    """OPO (arXiv 2505.23585): r − the group's length-weighted mean reward Σ|y|r / Σ|y| (`token_counts` required;
    a group of one has baseline 0)."""
    rewards = _one_column(rewards, "opo")
    if token_counts is None:
        raise ValueError("the opo advantage needs token_counts (its baseline is length-weighted)")
    lengths = token_counts.float()
    adv = torch.zeros_like(rewards)
    for idx in _members(rewards, group_ids).values():
        r, n = rewards[idx], lengths[idx]
        adv[idx] = r if len(idx) == 1 else r - (n * r).sum() / n.sum()
    return adv


def gpg_advantage(rewards, group_ids, *, norm_by_std=True, eps=1e-6, token_counts=None, extra=None):
    """GPG (Chu et al., arXiv 2504.02546): α(r − mean_g)/f_norm with α = B / (number of non-zero rewards in the
    batch), which scales up the signal when most rewards are 0. `extra["f_norm"]` defaults to 1."""
    rewards = _one_column(rewards, "gpg")
    scored = ~torch.isnan(rewards)
    alpha = scored.sum() / torch.count_nonzero(rewards[scored]).clamp(min=1)
    f_norm = (extra or {}).get("f_norm", 1.0)
    adv = torch.zeros_like(rewards)
    for idx in _members(rewards, group_ids).values():
        r = rewards[idx]
        adv[idx] = alpha * (r - (r.mean() if len(idx) > 1 else 0.0)) / f_norm
    return adv


ADVANTAGE_ESTIMATORS: dict[str, AdvantageFn] = {
    "grpo": grpo_advantage,
    "dr_grpo": dr_grpo_advantage,
    "rloo": rloo_advantage,
    "reinforce_plus_plus_baseline": reinforce_plus_plus_baseline_advantage,
    "reinforce_plus_plus": reinforce_plus_plus_advantage,
    "grpo_passk": grpo_passk_advantage,
    "gdpo": gdpo_advantage,
    "opo": opo_advantage,
    "gpg": gpg_advantage,
}


def get_advantage_estimator(name: str) -> AdvantageFn:
    """`ADVANTAGE_ESTIMATORS[name]`, or an error naming the valid names."""
    if name not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {name!r}; expected one of {sorted(ADVANTAGE_ESTIMATORS)}")
    return ADVANTAGE_ESTIMATORS[name]
