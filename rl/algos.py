"""GRPO mathematics as free functions on tensors: advantages, policy loss, KL estimators, aggregation, entropy.

Nothing here imports the trainer, Ray or an engine; every function takes tensors and numbers (STYLE.md §1).
Shapes: B = sequences in the batch (prompts × samples), L = response tokens (padded), V = vocabulary.
`tests/rl/test_algos.py` checks hand-derived values and numerical equivalence with verl's `core_algos`.
Siblings (same rules): `rl.policy_losses` (GSPO, CISPO, SAPO, ... with one signature), `rl.advantage_estimators`
(RLOO, REINFORCE++, GDPO, ...), `rl.rollout_correction` (IS weights and rejection masks), `rl.algo_extras`
(dynamic sampling, forced thinking tokens, mini-batches), `rl.presets` (DAPO, Dr. GRPO, GSPO, CISPO).

Departures from verl, named where they are:
  * `group_advantages` uses the same unbiased std, `eps` placement and group-of-one rule as verl (or, with
    `single_sample="zero"`, no signal for a group of one); a masked sample (reward None → NaN) is left out of its group's statistics and
    gets advantage 0 (verl has no masking).
  * `normalize_advantages_by_source` is ours (report §2.3.6): verl has no per-domain normalisation.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Callable

import torch

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")
KL_ESTIMATORS = ("k1", "k2", "k3", "k1+", "k3+")


def group_advantages(rewards: torch.Tensor, group_ids: list, *, norm_by_std: bool = True, eps: float = 1e-6,
                     single_sample: str = "raw") -> torch.Tensor:
    """Outcome advantage of each sample relative to its group: (r − mean) / (std + eps), or r − mean.

    `rewards` [B] may hold NaN for masked samples: they are excluded from their group's mean/std and get 0.
    A group with one scored sample has no baseline: `single_sample="raw"` uses mean 0 and std 1 as verl does
    (advantage = r / (1 + eps)); `"zero"` gives it no signal at all.

    >>> [round(a, 4) for a in group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0, float("nan"), 0.5]), [0, 0, 1, 1, 1, 2]).tolist()]
    [0.7071, -0.7071, 0.0, 0.0, 0.0, 0.5]
    """
    adv = torch.zeros_like(rewards, dtype=torch.float32)  # [B]
    members: dict = defaultdict(list)
    for i, g in enumerate(group_ids):
        if not math.isnan(float(rewards[i])):
            members[g].append(i)
    if single_sample not in ("raw", "zero"):
        raise ValueError(f"single_sample must be 'raw' or 'zero', got {single_sample!r}")
    for idx in members.values():
        if len(idx) < 2:
            if single_sample == "raw":
                adv[idx] = rewards[idx].float() / (1 + eps) if norm_by_std else rewards[idx].float()
            continue
        scores = rewards[idx].float()  # [k]
        centred = scores - scores.mean()
        adv[idx] = centred / (scores.std() + eps) if norm_by_std else centred
    return adv


def normalize_advantages_by_source(advantages: torch.Tensor, sources: list[str], mask: torch.Tensor | None = None,
                                   *, eps: float = 1e-6) -> torch.Tensor:
    """Rescale advantages per data source to unit RMS, so domains with different reward scales (a 0/1 answer
    reward next to a 0–0.2 length bonus, or an RM score in [−5, 5]) pull with comparable strength
    (report §2.3.6). Samples with `mask` False keep 0 and are not counted.

    >>> [round(a, 4) for a in normalize_advantages_by_source(torch.tensor([2.0, -2.0, 0.1, -0.1]), ["a", "a", "b", "b"]).tolist()]
    [1.0, -1.0, 1.0, -1.0]
    """
    out = advantages.clone().float()  # [B]
    keep = torch.ones_like(out, dtype=torch.bool) if mask is None else mask.bool()
    for source in sorted(set(sources)):
        sel = torch.tensor([s == source for s in sources]) & keep
        if sel.any():
            rms = out[sel].square().mean().sqrt()
            out[sel] = out[sel] / (rms + eps)
    return out * keep


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def agg_loss(loss_mat: torch.Tensor, mask: torch.Tensor, mode: str, *, horizon: int | None = None) -> torch.Tensor:
    """Aggregate a per-token objective [B, L] into a scalar.

    token-mean: all tokens weigh the same (DAPO); seq-mean-token-sum: sum per sequence, mean over sequences;
    seq-mean-token-mean: mean per sequence, then mean over sequences (original GRPO);
    seq-mean-token-sum-norm: seq-mean-token-sum divided by a constant horizon (Dr. GRPO; default L).
    Fully masked sequences are excluded from the sequence means (as in verl).
    """
    mask = mask.to(loss_mat.dtype)
    if mode == "token-mean":
        return (loss_mat * mask).sum() / mask.sum().clamp(min=1)
    tokens = mask.sum(-1)  # [B]
    seq_mask = (tokens > 0).to(loss_mat.dtype)  # [B]
    n_seq = seq_mask.sum().clamp(min=1)
    if mode in ("seq-mean-token-sum", "seq-mean-token-sum-norm"):
        loss = ((loss_mat * mask).sum(-1) * seq_mask).sum() / n_seq
        if mode == "seq-mean-token-sum-norm":
            loss = loss / (horizon if horizon is not None else loss_mat.shape[-1])
        return loss
    if mode == "seq-mean-token-mean":
        per_seq = (loss_mat * mask).sum(-1) / (tokens + 1e-8)  # [B]
        return (per_seq * seq_mask).sum() / n_seq
    raise ValueError(f"unknown loss aggregation mode {mode!r}; expected one of {LOSS_AGG_MODES}")


def ppo_clip_token_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, *,
                        clip_low: float = 0.2, clip_high: float = 0.2, clip_ratio_c: float | None = 3.0
                        ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token PPO-clip surrogate −min(ρA, clip(ρ, 1−ε_low, 1+ε_high)A), with dual clip at `clip_ratio_c`
    for negative advantages (None disables it). Separate low/high ratios allow DAPO's clip-higher.

    Returns the [B, L] loss and per-token indicator tensors (`clipped`, `clipped_lower`, `neg_kl`) that the
    caller aggregates into metrics under its own mask.
    """
    neg_kl = (logp - old_logp).clamp(-20.0, 20.0)  # [B, L]
    ratio = neg_kl.exp()  # [B, L]
    loss1 = -advantages * ratio
    loss2 = -advantages * ratio.clamp(1 - clip_low, 1 + clip_high)
    clipped_loss = torch.maximum(loss1, loss2)  # [B, L]
    indicators = {"clipped": (loss2 > loss1).float(), "neg_kl": neg_kl.detach()}
    if clip_ratio_c is None:
        indicators["clipped_lower"] = torch.zeros_like(loss1)
        return clipped_loss, indicators
    loss3 = -advantages * clip_ratio_c
    dual = torch.minimum(loss3, clipped_loss)
    indicators["clipped_lower"] = ((clipped_loss > loss3) & (advantages < 0)).float()
    return torch.where(advantages < 0, dual, clipped_loss), indicators


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(π‖π_ref) from sampled-token logprobs (Schulman, "Approximating KL").

    k1 = log π − log π_ref; k2 = ½(log π − log π_ref)²; k3 = exp(log π_ref − log π) − (log π_ref − log π) − 1
    (clamped like verl). A trailing "+" (k1+, k3+) keeps the estimator's value but takes k2's gradient
    (straight-through), whose expected gradient is the true KL gradient.
    """
    base = estimator[:-1] if estimator.endswith("+") else estimator
    if base == "k1":
        value = logp - ref_logp
    elif base == "k2":
        value = 0.5 * (logp - ref_logp).square()
    elif base == "k3":
        log_ratio = (ref_logp - logp).clamp(-20, 20)
        value = (log_ratio.exp() - log_ratio - 1).clamp(-10, 10)
    else:
        raise ValueError(f"unknown KL estimator {estimator!r}; expected one of {KL_ESTIMATORS}")
    if not estimator.endswith("+") or base == "k2":
        return value
    surrogate = 0.5 * (logp - ref_logp).square()
    return surrogate - surrogate.detach() + value.detach()


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at each position: [..., V] -> [...]."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Log-probability of `tokens` [B, L] under `logits` [B, L, V] (computed in fp32)."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def truncated_importance_weights(proximal_logp: torch.Tensor, behaviour_logp: torch.Tensor, cap: float = 2.0) -> torch.Tensor:
    """Off-policy correction for stale samples: per-token w = min(π_prox / π_behav, cap), no gradient.

    With one-step asynchrony a sample of step t was drawn by the weights of step t−1 (π_behav, vLLM's sampling
    logprobs) while the PPO ratio is taken against the trainer's current weights (π_prox, recomputed): the clip
    keeps the update near π_prox, and w re-weights each token from the behaviour policy to π_prox (decoupled
    PPO; verl's truncated importance sampling, `tis_imp_ratio_cap`). Truncation at `cap` bounds the variance.

    >>> truncated_importance_weights(torch.tensor([0.0, 0.0]), torch.tensor([0.0, -2.0]), cap=2.0)
    tensor([1., 2.])
    """
    return (proximal_logp - behaviour_logp).clamp(-20.0, 20.0).exp().clamp(max=cap).detach()


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None, advantages: torch.Tensor,
              mask: torch.Tensor, *, clip_low: float = 0.2, clip_high: float = 0.2, clip_ratio_c: float | None = 3.0,
              kl_coef: float = 0.0, kl_estimator: str = "k3", agg_mode: str = "token-mean",
              horizon: int | None = None, entropy: torch.Tensor | None = None, entropy_coef: float = 0.0,
              is_weights: torch.Tensor | None = None, policy_loss: Callable | None = None,
              policy_loss_extra: dict | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The GRPO objective: PPO-clip surrogate + kl_coef · KL(π‖π_ref) − entropy_coef · H, each aggregated with
    `agg_mode`. `advantages` is [B] or [B, L]; `is_weights` [B, L] (`truncated_importance_weights`) scale the
    surrogate per token for samples drawn by an older policy. `policy_loss`, a `rl.policy_losses.POLICY_LOSSES`
    entry (with its `policy_loss_extra`), replaces the PPO-clip surrogate; None keeps it. Returns (loss, metrics)."""
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1).expand_as(logp)  # [B, L]
    if policy_loss is not None:
        pg_loss, pg_metrics = policy_loss(logp, old_logp, advantages, mask, agg_mode=agg_mode, horizon=horizon,
                                          clip_low=clip_low, clip_high=clip_high, clip_ratio_c=clip_ratio_c,
                                          is_weights=is_weights, extra=policy_loss_extra)
        metrics = {"pg_loss": float(pg_loss.detach()), **pg_metrics}
    else:
        pg_mat, ind = ppo_clip_token_loss(logp, old_logp, advantages, clip_low=clip_low, clip_high=clip_high, clip_ratio_c=clip_ratio_c)
        if is_weights is not None:
            pg_mat = pg_mat * is_weights
        pg_loss = agg_loss(pg_mat, mask, agg_mode, horizon=horizon)
        metrics = {"pg_loss": float(pg_loss.detach()), "clip_fraction": float(masked_mean(ind["clipped"], mask)),
                   "clip_fraction_lower": float(masked_mean(ind["clipped_lower"], mask)),
                   "ppo_kl": float(masked_mean(-ind["neg_kl"], mask))}
    loss = pg_loss
    if ref_logp is not None:
        kl_mat = kl_estimate(logp, ref_logp, kl_estimator)  # [B, L]
        kl = agg_loss(kl_mat, mask, agg_mode, horizon=horizon)
        metrics["kl"] = float(kl.detach())
        if kl_coef:
            loss = loss + kl_coef * kl
    if entropy is not None:
        ent = agg_loss(entropy, mask, agg_mode, horizon=horizon)
        metrics["entropy"] = float(ent.detach())
        if entropy_coef:
            loss = loss - entropy_coef * ent
    return loss, metrics
