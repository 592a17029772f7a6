"""Policy losses as free functions with one signature, and `POLICY_LOSSES`: name -> function.

Every loss takes the same arguments (STYLE.md §7) and returns `(loss, metrics)`:

    loss, metrics = POLICY_LOSSES["gspo"](logp, old_logp, advantages, mask, agg_mode="seq-mean-token-mean",
                                          clip_low=3e-4, clip_high=4e-4, clip_ratio_c=3.0, is_weights=None, extra={})

  logp [B, L]        the trainer's logprobs of the sampled tokens (with gradient)
  old_logp [B, L]    the proximal (old) policy's logprobs, the PPO ratio's denominator
  advantages         [B] (one per sequence, broadcast over tokens) or [B, L]
  mask [B, L]        1 for response tokens that count
  agg_mode, horizon  `rl.algos.agg_loss` (horizon: seq-mean-token-sum-norm's constant)
  clip_low/high      ε_low / ε_high of the ratio clip (DPPO: the divergence thresholds)
  clip_ratio_c       dual-clip bound (vanilla), the ratio's truncation (DPPO); None = off (vanilla) / 20 (DPPO)
  is_weights [B, L]  off-policy correction weights (`rl.rollout_correction`), multiplied into the per-token loss
  extra              the few per-loss knobs (`EXTRA_KEYS`, defaults as verl's): tau_pos/tau_neg (SAPO),
                     clip_cov_ratio/clip_cov_lb/clip_cov_ub/generator (clip-cov), kl_cov_ratio/ppo_kl_coef (kl-cov),
                     dro_beta (DRO)

`metrics` always holds `clip_fraction`, `clip_fraction_lower` and `ppo_kl` (floats, under `mask`), with the
meaning verl's `actor/pg_clipfrac`, `actor/pg_clipfrac_lower`, `actor/ppo_kl` have for that loss (0 where verl has
none); a few losses add their own (`cov_clip_fraction`, `kl_cov_fraction`, `ppo_kl_abs`).

Each loss is numerically equivalent to verl 0.9.1's `core_algos.get_policy_loss_fn(name)`
(`tests/rl/test_policy_losses.py`). Departures, named:
  * vanilla: `clip_ratio_c=None` turns the dual clip off (verl asserts c > 1).
  * sapo: honours `agg_mode`; verl always aggregates SAPO with seq-mean-token-mean (pass that mode to match).
  * geo_mean (GMPO) ignores `agg_mode` as verl does: the mean over all B sequences of a sequence-level loss
    (a fully masked sequence counts with loss 0 in that mean, as in verl).
  * clip_cov draws its random subset with `extra["generator"]` (torch's global generator when absent, as verl).
"""

from __future__ import annotations

from typing import Callable

import torch

from rl.algos import agg_loss, masked_mean, ppo_clip_token_loss

PolicyLossFn = Callable[..., tuple[torch.Tensor, dict[str, float]]]

# per-loss knobs and their defaults (verl 0.9.1's ActorConfig / PolicyLossConfig defaults)
EXTRA_KEYS = {"tau_pos": 1.0, "tau_neg": 1.05, "clip_cov_ratio": 0.0002, "clip_cov_lb": 1.0, "clip_cov_ub": 5.0,
              "generator": None, "kl_cov_ratio": 0.0002, "ppo_kl_coef": 0.1, "dro_beta": None}


def _extra(extra: dict | None) -> dict:
    extra = dict(extra or {})
    unknown = sorted(set(extra) - set(EXTRA_KEYS))
    if unknown:
        raise ValueError(f"unknown policy-loss extra key(s) {unknown}; valid keys: {sorted(EXTRA_KEYS)}")
    return {**EXTRA_KEYS, **extra}


def _prepare(logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1).expand_as(logp)  # [B, L]
    return advantages, mask.to(logp.dtype)


def _metrics(clipped: torch.Tensor | float, clipped_lower: torch.Tensor | float, neg_kl: torch.Tensor,
             mask: torch.Tensor, **more: float) -> dict[str, float]:
    def frac(x):
        return float(masked_mean(x.float(), mask)) if isinstance(x, torch.Tensor) else float(x)

    return {"clip_fraction": frac(clipped), "clip_fraction_lower": frac(clipped_lower),
            "ppo_kl": float(masked_mean(-neg_kl.detach(), mask)), **more}


def _finish(pg_mat: torch.Tensor, mask: torch.Tensor, agg_mode: str, horizon: int | None,
            is_weights: torch.Tensor | None) -> torch.Tensor:
    if is_weights is not None:
        pg_mat = pg_mat * is_weights
    return agg_loss(pg_mat, mask, agg_mode, horizon=horizon)


def vanilla_loss(logp, old_logp, advantages, mask, *, agg_mode="token-mean", horizon=None, clip_low=0.2,
                 clip_high=0.2, clip_ratio_c=3.0, is_weights=None, extra=None):
    """PPO-clip −min(ρA, clip(ρ, 1−ε_low, 1+ε_high)A) with dual clip at c for A < 0 (Schulman et al. 2017,
    arXiv 1707.06347; dual clip: Ye et al., arXiv 1912.09729). `rl.algos.ppo_clip_token_loss` per token."""
    _extra(extra)
    advantages, mask = _prepare(logp, advantages, mask)
    pg_mat, ind = ppo_clip_token_loss(logp, old_logp, advantages, clip_low=clip_low, clip_high=clip_high,
                                      clip_ratio_c=clip_ratio_c)  # [B, L]
    loss = _finish(pg_mat, mask, agg_mode, horizon, is_weights)
    return loss, _metrics(ind["clipped"], ind["clipped_lower"], ind["neg_kl"], mask)


def gspo_loss(logp, old_logp, advantages, mask, *, agg_mode="token-mean", horizon=None, clip_low=0.2,
              clip_high=0.2, clip_ratio_c=3.0, is_weights=None, extra=None):
    """GSPO (Zheng et al., arXiv 2507.18071): the ratio is the sequence's geometric mean
    s_i = exp(mean_t log ρ_t), clipped like PPO (no dual clip); per token s_i,t = sg[s_i]·π_t/sg[π_t] so the
    gradient flows through every token. ε is small (3e-4 / 4e-4 in the paper)."""
    _extra(extra)
    advantages, mask = _prepare(logp, advantages, mask)
    neg_kl = logp - old_logp  # [B, L]
    seq_log_ratio = (neg_kl * mask).sum(-1) / mask.sum(-1).clamp(min=1)  # [B]
    log_ratio = (logp - logp.detach() + seq_log_ratio.detach().unsqueeze(-1)).clamp(max=10.0)  # [B, L]
    ratio = log_ratio.exp()
    loss1 = -advantages * ratio
    loss2 = -advantages * ratio.clamp(1 - clip_low, 1 + clip_high)
    loss = _finish(torch.maximum(loss1, loss2), mask, agg_mode, horizon, is_weights)
    return loss, _metrics(loss2 > loss1, 0.0, neg_kl, mask)


def sapo_loss(logp, old_logp, advantages, mask, *, agg_mode="token-mean", horizon=None, clip_low=0.2,
              clip_high=0.2, clip_ratio_c=3.0, is_weights=None, extra=None):
    """SAPO (arXiv 2511.20347): a smooth sigmoid gate instead of a hard clip, f(ρ) = σ(τ(ρ−1))·4/τ, with
    τ = tau_pos for A > 0 and tau_neg otherwise; loss −f(ρ)A. The clip ratios are unused. The paper (and verl,
    whatever mode it is given) aggregates with seq-mean-token-mean: pass that `agg_mode` to follow it."""
    ex = _extra(extra)
    advantages, mask = _prepare(logp, advantages, mask)
    neg_kl = (logp - old_logp).clamp(-20.0, 20.0)  # [B, L]
    ratio = neg_kl.exp()
    tau_pos = torch.as_tensor(ex["tau_pos"], dtype=advantages.dtype, device=advantages.device)
    tau_neg = torch.as_tensor(ex["tau_neg"], dtype=advantages.dtype, device=advantages.device)
    taus = torch.where(advantages > 0, tau_pos, tau_neg)  # [B, L]
    gates = torch.sigmoid(taus * (ratio - 1.0)) * (4.0 / taus)
    loss = _finish(-gates * advantages, mask, agg_mode, horizon, is_weights)
    return loss, _metrics(0.0, 0.0, neg_kl, mask)


def gpg_loss(logp, old_logp, advantages, mask, *, agg_mode="token-mean", horizon=None, clip_low=0.2,
             clip_high=0.2, clip_ratio_c=3.0, is_weights=None, extra=None):
    """GPG (Chu et al., arXiv 2504.02546): plain policy gradient −A·log π, no ratio and no clip."""
    _extra(extra)
    advantages, mask = _prepare(logp, advantages, mask)
    loss = _finish(-logp * advantages, mask, agg_mode, horizon, is_weights)
    return loss, _metrics(0.0, 0.0, logp - old_logp, mask)


def cispo_loss(logp, old_logp, advantages, mask, *, agg_mode="token-mean", horizon=None, clip_low=0.2,
               clip_high=0.2, clip_ratio_c=3.0, is_weights=None, extra=None):
    """CISPO (MiniMax-M1, arXiv 2506.13585): clip the importance weight, not the update —
    −sg[clip(ρ, 1−ε_low, 1+ε_high)]·A·log π, so clipped tokens still get a gradient through log π."""
    _extra(extra)
    advantages, mask = _prepare(logp, advantages, mask)
    neg_kl = (logp - old_logp).clamp(-20.0, 20.0)  # [B, L]
    ratio = neg_kl.exp()
    clipped = ratio.clamp(1 - clip_low, 1 + clip_high)
    loss = _finish(-clipped.detach() * advantages * logp, mask, agg_mode, horizon, is_weights)
    return loss, _metrics(ratio != clipped, 0.0, neg_kl, mask)


def geo_mean_loss(logp, old_logp, advantages, mask, *, agg_mode="token-mean", horizon=None, clip_low=0.2,
                  clip_high=0.2, clip_ratio_c=3.0, is_weights=None, extra=None):
    """GMPO (Zhao et al., arXiv 2507.20673): maximise the geometric mean of the token ratios, each log ratio
    clipped to [−ε_low, ε_high] in the direction of the advantage's sign; a sequence-level loss −Ā_i·Π_t ρ_t^(1/|y_i|)
    averaged over the B sequences (`agg_mode` is not used, as in verl). IS weights enter as their geometric mean."""
    _extra(extra)
    advantages, mask = _prepare(logp, advantages, mask)
    neg_kl = logp - old_logp  # [B, L]
    sign = torch.sign(advantages)
    neg_kl_clamped = neg_kl.clamp(-clip_low, clip_high)
    neg_kl_min = sign * torch.minimum(sign * neg_kl, sign * neg_kl_clamped)  # [B, L]
    lengths = mask.sum(-1)  # [B]
    ratio = ((neg_kl_min * mask).sum(-1) / (lengths + 1e-8)).exp()  # [B]
    seq_adv = (advantages * mask).sum(-1) / (lengths + 1e-8)  # [B]
    pg = -seq_adv * ratio  # [B]
    if is_weights is not None:
        pg = pg * ((torch.log(is_weights + 1e-10) * mask).sum(-1) / (lengths + 1e-8)).exp()
    clipped = neg_kl != neg_kl_clamped
    return pg.mean(), _metrics(clipped & (advantages > 0), clipped & (advantages < 0), neg_kl, mask)


def clip_cov_loss(logp, old_logp, advantages, mask, *, agg_mode="token-mean", horizon=None, clip_low=0.2,
                  clip_high=0.2, clip_ratio_c=3.0, is_weights=None, extra=None):
    """Clip-Cov (Cui et al., "The Entropy Mechanism of RL for Reasoning LMs", arXiv 2505.22617): PPO-clip, plus a
    random `clip_cov_ratio` share of the tokens whose centred covariance (A − Ā)(log π − mean log π) lies in
    (clip_cov_lb, clip_cov_ub) get no gradient (their loss is zeroed), to keep entropy from collapsing."""
    ex = _extra(extra)
    advantages, mask = _prepare(logp, advantages, mask)
    neg_kl = logp - old_logp  # [B, L]
    ratio = neg_kl.exp()
    loss1 = -advantages * ratio
    loss2 = -advantages * ratio.clamp(1 - clip_low, 1 + clip_high)
    valid = mask > 0
    clipped_by_ppo = (loss2 > loss1) & valid
    cov = (advantages - _vmean(advantages, mask)) * (logp.detach() - _vmean(logp.detach(), mask))  # [B, L]
    cov = cov.masked_fill(~valid | clipped_by_ppo, -torch.inf)
    n_clip = max(int(ex["clip_cov_ratio"] * mask.sum().item()), 1)
    candidates = torch.nonzero((cov < ex["clip_cov_ub"]) & (cov > ex["clip_cov_lb"]) & valid)  # [N, 2]
    corr = torch.ones_like(advantages)
    if len(candidates):
        perm = torch.randperm(len(candidates), generator=ex["generator"])
        chosen = candidates[perm[: min(n_clip, len(candidates))]]
        corr[chosen[:, 0], chosen[:, 1]] = 0
    loss = _finish(torch.maximum(loss1, loss2) * corr, mask, agg_mode, horizon, is_weights)
    return loss, _metrics(loss2 > loss1, 0.0, neg_kl, mask, cov_clip_fraction=float(masked_mean((corr == 0).float(), mask)))


def kl_cov_loss(logp, old_logp, advantages, mask, *, agg_mode="token-mean", horizon=None, clip_low=0.2,
                clip_high=0.2, clip_ratio_c=3.0, is_weights=None, extra=None):
    """KL-Cov (same paper as clip-cov, arXiv 2505.22617): the unclipped surrogate −ρA, plus ppo_kl_coef·|log ρ| on
    the top `kl_cov_ratio` share of tokens by covariance (A − Ā)(log π − mean log π)."""
    ex = _extra(extra)
    advantages, mask = _prepare(logp, advantages, mask)
    neg_kl = logp - old_logp  # [B, L]
    ratio = neg_kl.exp()
    loss1 = -advantages * ratio
    loss_kl = loss1 + ex["ppo_kl_coef"] * neg_kl.abs()
    valid = mask > 0
    adv_v, logp_v = advantages[valid].detach().float(), logp[valid].detach().float()  # [N]
    selected = torch.zeros(logp.numel(), dtype=torch.bool, device=logp.device)
    if len(adv_v):
        cov = (adv_v - adv_v.mean()) * (logp_v - logp_v.mean())  # [N]
        top = torch.topk(cov, max(1, int(len(cov) * ex["kl_cov_ratio"])), largest=True).indices
        selected[torch.nonzero(valid.reshape(-1), as_tuple=True)[0][top.to(logp.device)]] = True
    selected = selected.view_as(logp)  # [B, L]
    loss = _finish(torch.where(selected, loss_kl, loss1), mask, agg_mode, horizon, is_weights)
    return loss, _metrics(0.0, 0.0, neg_kl, mask, ppo_kl_abs=float(masked_mean(neg_kl.detach().abs(), mask)),
                          kl_cov_fraction=float(masked_mean(selected.float(), mask)))


def _vmean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """verl's masked mean (its epsilon), where a threshold is compared against it."""
    return (values * mask).sum() / (mask.sum() + 1e-8)


def _dppo(logp, old_logp, advantages, mask, *, valid_fn, agg_mode, horizon, clip_ratio_c, is_weights):
    advantages, mask = _prepare(logp, advantages, mask)
    neg_kl = (logp - old_logp).clamp(-20.0, 20.0)  # [B, L]
    ratio = neg_kl.exp()
    cap = 20.0 if clip_ratio_c is None else clip_ratio_c
    truncated = ratio.clamp(max=cap).detach()
    valid = torch.where(advantages > 0, *valid_fn(logp.exp(), old_logp.exp(), logp, old_logp)).detach().float()
    loss = _finish(-advantages * truncated * logp * valid, mask, agg_mode, horizon, is_weights)
    return loss, _metrics(1.0 - valid, (ratio > cap).float() * valid, neg_kl, mask)


def dppo_tv_loss(logp, old_logp, advantages, mask, *, agg_mode="token-mean", horizon=None, clip_low=0.2,
                 clip_high=0.2, clip_ratio_c=3.0, is_weights=None, extra=None):
    """DPPO-Binary-TV (arXiv 2602.04879): −A·sg[min(ρ, c)]·log π on tokens whose probability moved by at most
    ε_high (A > 0: π − π_old ≤ ε_high) or ε_low (A ≤ 0: π − π_old ≥ −ε_low); other tokens get no gradient."""
    _extra(extra)

    def valid_fn(p, p_old, lp, lp_old):
        return (p - p_old) <= clip_high, (p - p_old) >= -clip_low

    return _dppo(logp, old_logp, advantages, mask, valid_fn=valid_fn, agg_mode=agg_mode, horizon=horizon,
                 clip_ratio_c=clip_ratio_c, is_weights=is_weights)


def dppo_kl_loss(logp, old_logp, advantages, mask, *, agg_mode="token-mean", horizon=None, clip_low=0.2,
                 clip_high=0.2, clip_ratio_c=3.0, is_weights=None, extra=None):
    """DPPO-Binary-KL (arXiv 2602.04879): as DPPO-TV with the trust region measured by the KL between the
    Bernoulli distributions (π_old, 1−π_old) and (π, 1−π) of the sampled token, bounded only in the direction the
    advantage pushes."""
    _extra(extra)

    def valid_fn(p, p_old, lp, lp_old):
        binary_kl = p_old * (lp_old - lp) + (1 - p_old) * torch.log((1.0 - p_old + 1e-8) / (1.0 - p + 1e-8))
        return (binary_kl <= clip_high) | (p <= p_old), (binary_kl <= clip_low) | (p >= p_old)

    return _dppo(logp, old_logp, advantages, mask, valid_fn=valid_fn, agg_mode=agg_mode, horizon=horizon,
                 clip_ratio_c=clip_ratio_c, is_weights=is_weights)


def dro_loss(logp, old_logp, advantages, mask, *, agg_mode="token-mean", horizon=None, clip_low=0.2,
             clip_high=0.2, clip_ratio_c=3.0, is_weights=None, extra=None):
    """DRO (verl's `dro`, Direct Reward Optimisation): −(A·log π − ½β(log ρ)²), a quadratic log-ratio penalty
    instead of a clip; β = `extra["dro_beta"]` (required, > 0)."""
    beta = _extra(extra)["dro_beta"]
    if beta is None or beta <= 0:
        raise ValueError("the dro policy loss needs extra['dro_beta'] > 0")
    advantages, mask = _prepare(logp, advantages, mask)
    log_ratio = logp - old_logp  # [B, L]
    loss = _finish(-(logp * advantages - 0.5 * beta * log_ratio.square()), mask, agg_mode, horizon, is_weights)
    return loss, _metrics(0.0, 0.0, log_ratio, mask)


POLICY_LOSSES: dict[str, PolicyLossFn] = {
    "vanilla": vanilla_loss,
    "gspo": gspo_loss,
    "sapo": sapo_loss,
    "gpg": gpg_loss,
    "cispo": cispo_loss,
    "geo_mean": geo_mean_loss,
    "clip_cov": clip_cov_loss,
    "kl_cov": kl_cov_loss,
    "dppo_tv": dppo_tv_loss,
    "dppo_kl": dppo_kl_loss,
    "dro": dro_loss,
}


def get_policy_loss(name: str) -> PolicyLossFn:
    """`POLICY_LOSSES[name]`, or an error naming the valid names."""
    if name not in POLICY_LOSSES:
        raise ValueError(f"unknown policy loss {name!r}; expected one of {sorted(POLICY_LOSSES)}")
    return POLICY_LOSSES[name]
