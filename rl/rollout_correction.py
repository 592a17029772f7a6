"""Off-policy and train–inference mismatch corrections: importance weights, rejection masks, and named presets.

The behaviour policy π_behav (vLLM's sampling logprobs: older weights under asynchrony, other kernels and dtype
always) differs from the proximal policy π_prox the trainer recomputes. With log ρ = log π_prox − log π_behav per
token (Liu, Li, Fu et al., "When Speed Kills Stability: Demystifying RL Collapse from the Training-Inference
Mismatch", 2025; IcePop: Ling team, "Every Attention Matters", arXiv 2510.18855):

  * importance weights (multiplied into the per-token policy loss, no gradient):
      token      w_t = min(ρ_t, C)                      token TIS (biased, low variance)
      sequence   w = min(Π_t ρ_t, C) on every token    sequence TIS (unbiased before truncation, high variance)
      IcePop     (lower, upper) bounds instead of a cap: w_t = ρ_t inside [lower, upper], 0 outside
  * rejection masks (tokens or whole sequences leave the loss; the keep-mask replaces the response mask):
      token_k1 / seq_sum_k1 / seq_mean_k1   bounds on the ratio: per token, of Π_t ρ_t, of the geometric mean
      token_k2 / k3, seq_{sum,mean,max}_{k2,k3}   upper bounds on the divergence estimates ½(log ρ)², ρ − 1 − log ρ
    (k1 options read `-log ρ` against [log lower, log upper] exactly as verl does.)

`rollout_correction(...)` is the general function (verl 0.9.1's `compute_rollout_correction_and_rejection_mask`
from `verl/trainer/ppo/rollout_corr_helper.py`, equal in weights, mask and the metrics we report, under the same
names without verl's `rollout_corr/` prefix). `ROLLOUT_CORRECTIONS` holds the named presets (verl's
`RolloutCorrectionConfig` class methods), all with one signature:

    weights, keep, metrics = ROLLOUT_CORRECTIONS["token_tis"](prox_logp, behav_logp, mask, is_threshold=2.0)

`is_threshold` (a cap, or (lower, upper) for IcePop) and `rs_threshold` (an upper bound, or (lower, upper) for the
k1 ratio bounds) default to the preset's own values when None. `weights` is None when the preset has no IS part.
Metrics (verl's names): the truncated share is `rollout_is_ratio_fraction_high` (ρ above the cap; `_low` below
1/cap or the lower bound), IcePop's zeroed share `rollout_is_oob_ratio`, the rejected shares
`rollout_rs_masked_fraction` (tokens) and `rollout_rs_seq_masked_fraction` (sequences), per option too; plus the
weights' mean/min/max/effective sample size and the mismatch itself (`kl`, `k3_kl`, `chi2_token`, `chi2_seq`).
Departures: batch normalisation of the weights is local to the batch given (verl all-reduces when
torch.distributed is up); a batch with no valid token returns weights 0 and the mask unchanged (verl raises).
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import torch

SAFETY_BOUND = 20.0  # exp(±20): the log-ratio clamp before exponentiating (as verl)
RS_OPTIONS = ("token_k1", "token_k2", "token_k3", "seq_sum_k1", "seq_sum_k2", "seq_sum_k3", "seq_mean_k1",
              "seq_mean_k2", "seq_mean_k3", "seq_max_k2", "seq_max_k3")

Threshold = float | tuple[float, float]


def _mean(values: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    """verl's masked mean (same epsilon), so thresholds compare on the same numbers."""
    if dim is None:
        return (values * mask).sum() / (mask.sum() + 1e-8)
    return (values * mask).sum(dim) / (mask.sum(dim) + 1e-8)


def importance_weights(log_ratio: torch.Tensor, mask: torch.Tensor, *, level: str = "token", upper: float = 2.0,
                       lower: float | None = None, batch_normalize: bool = False
                       ) -> tuple[torch.Tensor, dict[str, float]]:
    """Truncated (`lower` None: min(w, upper)) or IcePop (`lower` set: w inside [lower, upper], else 0) importance
    weights [B, L] from log ρ [B, L], at `level` "token" or "sequence"; 0 on padding, no gradient.

    >>> importance_weights(torch.tensor([[0.0, 1.0, -1.0]]), torch.ones(1, 3), upper=2.0)[0]
    tensor([[1.0000, 2.0000, 0.3679]])
    """
    if level not in ("token", "sequence"):
        raise ValueError(f"importance-weight level must be 'token' or 'sequence', got {level!r}")
    if upper <= 0 or (lower is not None and not 0 < lower <= upper):
        raise ValueError(f"importance-weight bounds need 0 < lower <= upper, got lower={lower}, upper={upper}")
    log_ratio = log_ratio.detach()
    if level == "token":
        log_for_metrics = log_ratio
        raw = log_ratio.clamp(-SAFETY_BOUND, SAFETY_BOUND).exp()  # [B, L]
    else:
        log_for_metrics = (log_ratio * mask).sum(-1, keepdim=True)  # [B, 1]
        raw = log_for_metrics.clamp(-SAFETY_BOUND, SAFETY_BOUND).exp().expand_as(log_ratio)  # [B, L]
    raw = raw * mask
    if lower is None:
        weights = raw.clamp(max=upper)
    else:
        weights = torch.where((raw >= lower) & (raw <= upper), raw, torch.zeros_like(raw))
    metrics = _is_metrics(weights, raw, log_for_metrics, mask, level, upper, lower)
    if batch_normalize:
        if level == "token":
            mean = _mean(weights, mask)
        else:
            seq_mask = (mask.sum(-1) > 0).to(weights.dtype)
            mean = (_mean(weights, mask, -1) * seq_mask).sum() / seq_mask.sum().clamp_min(1e-8)
        if mean > 1e-8:
            weights = weights / mean
        metrics["rollout_is_batch_norm_factor"] = float(mean) if mean > 1e-8 else 1.0
    return weights, metrics


def _is_metrics(weights, raw, log_for_metrics, mask, level, upper, lower) -> dict[str, float]:
    low = 1.0 / upper if lower is None else lower
    m = {"rollout_is_mean": float(_mean(weights, mask))}
    if level == "sequence":
        m["rollout_is_max"] = math.exp(min(float(log_for_metrics.max()), SAFETY_BOUND))
        m["rollout_is_min"] = math.exp(float(log_for_metrics.min()))
        m["rollout_is_ratio_fraction_high"] = float((log_for_metrics > math.log(upper)).float().mean())
        m["rollout_is_ratio_fraction_low"] = float((log_for_metrics < math.log(low)).float().mean())
    else:
        valid = mask.bool()
        m["rollout_is_max"] = float(weights.masked_fill(~valid, -torch.inf).max())
        m["rollout_is_min"] = float(weights.masked_fill(~valid, torch.inf).min())
        m["rollout_is_ratio_fraction_high"] = float(_mean((raw > upper).float(), mask))
        m["rollout_is_ratio_fraction_low"] = float(_mean((raw < low).float(), mask))
    clamped = weights.clamp(0.0, upper)
    m["rollout_is_eff_sample_size"] = 1.0 / float(_mean((clamped / (_mean(clamped, mask) + 1e-8)).square(), mask))
    if lower is not None:
        m["rollout_is_oob_ratio"] = float(_mean(((raw < lower) | (raw > upper)).float(), mask))
    return m


def _k1_bounds(spec: Threshold) -> tuple[float, float]:
    lower, upper = (1.0 / float(spec), float(spec)) if isinstance(spec, (int, float)) else map(float, spec)
    if not 0 < lower <= upper:
        raise ValueError(f"k1 rejection bounds need 0 < lower <= upper, got ({lower}, {upper})")
    return lower, upper


def rejection_mask(log_ratio: torch.Tensor, mask: torch.Tensor, options: Mapping[str, Threshold]
                   ) -> tuple[torch.Tensor, dict[str, float]]:
    """Keep-mask [B, L] (mask's dtype: mask × passes) of the tokens every rejection option in `options` lets
    through. `options`: name -> threshold; k1 options take ratio bounds (lower, upper) or one upper bound u
    meaning (1/u, u); k2/k3 options take an upper bound on the divergence. Sequence options drop the whole sequence.

    >>> keep, _ = rejection_mask(torch.tensor([[0.0, 0.0], [0.0, 3.0]]), torch.ones(2, 2), {"seq_mean_k3": 0.5})
    >>> keep.tolist()
    [[1.0, 1.0], [0.0, 0.0]]
    """
    unknown = [o for o in options if o not in RS_OPTIONS]
    if unknown:
        raise ValueError(f"unknown rejection option(s) {unknown}; expected some of {list(RS_OPTIONS)}")
    safe = log_ratio.detach().clamp(-SAFETY_BOUND, SAFETY_BOUND)
    stats = {"k1": -safe, "k2": 0.5 * safe.square(), "k3": safe.exp() - 1.0 - safe}  # [B, L] each
    valid = mask.bool()
    seq_valid = mask.sum(-1) > 0  # [B]
    combined = torch.ones_like(log_ratio, dtype=log_ratio.dtype)
    metrics: dict[str, float] = {}
    for option, spec in options.items():
        level, estimator = option.rsplit("_", 1)
        token_stat = stats[estimator]
        if level == "token":
            stat = token_stat
        elif level == "seq_sum":
            stat = (token_stat * mask).sum(-1, keepdim=True)  # [B, 1]
        elif level == "seq_mean":
            stat = _mean(token_stat, mask, -1).unsqueeze(-1)
        else:  # seq_max
            mx = token_stat.masked_fill(~valid, -torch.inf).max(-1, keepdim=True).values
            stat = torch.where(mx == -torch.inf, torch.zeros_like(mx), mx)
        if estimator == "k1":
            lower, upper = _k1_bounds(spec)
            keep = (stat >= math.log(lower)) & (stat <= math.log(upper))
        else:
            keep = stat <= float(spec)
        keep = keep.expand_as(log_ratio)  # [B, L]
        combined = combined * keep.to(log_ratio.dtype)
        metrics[f"rollout_rs_{option}_masked_fraction"] = float(_mean(1.0 - keep.to(log_ratio.dtype), mask))
        seq_kept = (~(~keep & valid)).all(-1)  # [B]
        n_seq = seq_valid.float().sum()
        metrics[f"rollout_rs_{option}_seq_masked_fraction"] = (
            float(((~seq_kept).float() * seq_valid.float()).sum() / n_seq) if n_seq > 0 else 0.0)
    metrics["rollout_rs_masked_fraction"] = float(_mean(1.0 - combined, mask))
    metrics["rollout_rs_seq_masked_fraction"] = float((~((combined > 0.5) & valid) & valid).any(-1).float().mean())
    return (mask * combined).to(mask.dtype), metrics


def mismatch_metrics(prox_logp: torch.Tensor, behav_logp: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """How far the two policies are apart on the sampled tokens: KL(π_behav‖π_prox) direct and k3 estimates, and the
    χ² divergences of the token and sequence ratios (verl's names)."""
    log_ratio = (prox_logp - behav_logp).detach()
    safe = log_ratio.clamp(-SAFETY_BOUND, SAFETY_BOUND)
    seq_sum = (log_ratio * mask).sum(-1).clamp(-SAFETY_BOUND, SAFETY_BOUND)
    return {"kl": float(_mean(-log_ratio, mask)), "k3_kl": float(_mean(log_ratio.exp() - log_ratio - 1, mask)),
            "chi2_token": float(_mean(safe.exp().square(), mask)) - 1.0,
            "chi2_seq": float((2.0 * seq_sum).exp().mean()) - 1.0}


def rollout_correction(prox_logp: torch.Tensor, behav_logp: torch.Tensor, mask: torch.Tensor, *,
                       is_level: str | None = None, is_upper: float = 2.0, is_lower: float | None = None,
                       is_batch_normalize: bool = False, rejection: Mapping[str, Threshold] | None = None
                       ) -> tuple[torch.Tensor | None, torch.Tensor, dict[str, float]]:
    """Importance weights (None when `is_level` is None), the keep-mask [B, L] after rejection, and metrics
    (the weights' mean/min/max, the fractions above/below the bounds, the masked fractions, the mismatch)."""
    if prox_logp.shape != behav_logp.shape or prox_logp.shape != mask.shape:
        raise ValueError(f"shapes differ: proximal {tuple(prox_logp.shape)}, behaviour {tuple(behav_logp.shape)}, "
                         f"mask {tuple(mask.shape)}")
    if not mask.bool().any():
        return (None if is_level is None else torch.zeros_like(prox_logp)), mask.clone(), {}
    log_ratio = (prox_logp - behav_logp).detach()  # [B, L]
    metrics: dict[str, float] = {}
    weights = None
    if is_level is not None:
        weights, m = importance_weights(log_ratio, mask, level=is_level, upper=is_upper, lower=is_lower,
                                        batch_normalize=is_batch_normalize)
        metrics.update(m)
    keep = mask.clone()
    if rejection:
        keep, m = rejection_mask(log_ratio, mask, rejection)
        metrics.update(m)
    metrics.update(mismatch_metrics(prox_logp, behav_logp, mask))
    return weights, keep, metrics


RolloutCorrectionFn = Callable[..., tuple[torch.Tensor | None, torch.Tensor, dict[str, float]]]


def _preset(is_level: str | None, is_default: Threshold | None, rs_option: str | None,
            rs_default: Threshold | None, doc: str) -> RolloutCorrectionFn:
    """A named preset: fixed IS level and rejection option, thresholds overridable per call."""

    def correct(prox_logp, behav_logp, mask, *, is_threshold: Threshold | None = None,
                rs_threshold: Threshold | None = None):
        spec = is_default if is_threshold is None else is_threshold
        upper, lower = (spec, None) if isinstance(spec, (int, float)) or spec is None else (spec[1], spec[0])
        rejection = {rs_option: rs_default if rs_threshold is None else rs_threshold} if rs_option else None
        return rollout_correction(prox_logp, behav_logp, mask, is_level=is_level,
                                  is_upper=2.0 if upper is None else float(upper),
                                  is_lower=None if lower is None else float(lower), rejection=rejection)

    correct.__doc__ = doc
    return correct


# name -> preset; the verl 0.9.1 `RolloutCorrectionConfig` class method each one equals, with its defaults
ROLLOUT_CORRECTIONS: dict[str, RolloutCorrectionFn] = {
    "none": _preset(None, None, None, None, "No correction (verl `disabled`): weights None, mask unchanged."),
    "token_tis": _preset("token", 2.0, None, None, "Token TIS, cap 2 (verl `decoupled_token_is`)."),
    "seq_tis": _preset("sequence", 2.0, None, None, "Sequence TIS, cap 2 (verl `decoupled_seq_is`)."),
    "token_icepop": _preset("token", (0.5, 5.0), None, None,
                            "IcePop: token weights outside [0.5, 5] are zeroed (verl `decoupled_token_icepop`)."),
    "seq_mis": _preset("sequence", 2.0, "seq_sum_k1", (0.5, 2.0),
                       "Masked IS: sequence TIS, and sequences with Π ρ outside [0.5, 2] rejected "
                       "(verl `decoupled_seq_is_rs`)."),
    "token_k1_rs": _preset(None, None, "token_k1", (0.5, 2.0),
                           "Token rejection: tokens with ρ outside [0.5, 2] leave the loss (ours: verl's `token_k1` "
                           "option has no preset)."),
    "geo_rs": _preset(None, None, "seq_mean_k1", (0.999, 1.001),
                      "Geometric-mean rejection: sequences whose geometric-mean ratio leaves [0.999, 1.001] "
                      "(verl `decoupled_geo_rs`)."),
    "geo_rs_token_tis": _preset("token", 2.0, "seq_mean_k1", (0.999, 1.001),
                                "Geo-RS + token TIS (verl `decoupled_geo_rs_token_tis`)."),
    "geo_rs_seq_tis": _preset("sequence", 2.0, "seq_mean_k1", (0.999, 1.001),
                              "Geo-RS + sequence TIS (verl `decoupled_geo_rs_seq_tis`)."),
    "k3_rs": _preset(None, None, "seq_mean_k3", 0.01,
                     "Sequence k3 rejection: mean k3 divergence per sequence above 0.01 (verl `decoupled_k3_rs`)."),
    "k3_rs_token_tis": _preset("token", 2.0, "seq_mean_k3", 0.01,
                               "K3-RS + token TIS (verl `decoupled_k3_rs_token_tis`)."),
    "k3_rs_seq_tis": _preset("sequence", 2.0, "seq_mean_k3", 0.01,
                             "K3-RS + sequence TIS (verl `decoupled_k3_rs_seq_tis`)."),
}
