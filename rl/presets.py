"""Named algorithm presets: plain overlays of `algo.*` keys (`rl.config.AlgoConfig` fields).

A recipe names one with `algo.preset: dapo`; the preset's keys are laid under the recipe's own `algo` keys, so
anything the recipe sets explicitly wins (`apply_preset`). Each preset names its paper; only the keys the paper
changes are set, everything else keeps mixrl's defaults (`tests/rl/test_algo_extras.py` checks every key is an
AlgoConfig field and every value a valid one).
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # DAPO (Yu et al., arXiv 2503.14476): clip-higher (ε_low 0.2, ε_high 0.28), token-level loss, dynamic sampling
    # (groups with all-equal rewards are dropped and more prompts drawn), no KL term. Its overlong reward shaping
    # is a reward (rewards.length), not an algo key.
    "dapo": {"clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "loss_agg_mode": "token-mean", "dynamic_sampling": True,
             "kl_coef": 0.0, "adv_estimator": "grpo", "norm_adv_by_std": True},
    # Dr. GRPO (Liu et al., "Understanding R1-Zero-Like Training", arXiv 2503.20783): no std in the advantage and no
    # per-sequence length normalisation in the loss (sum over tokens / a constant).
    "dr_grpo": {"adv_estimator": "dr_grpo", "norm_adv_by_std": False, "loss_agg_mode": "seq-mean-token-sum-norm"},
    # GSPO (Zheng et al., arXiv 2507.18071): sequence-level (geometric-mean) ratio, clipped at 3e-4 / 4e-4,
    # sequence-level loss.
    "gspo": {"policy_loss": "gspo", "clip_ratio_low": 3e-4, "clip_ratio_high": 4e-4,
             "loss_agg_mode": "seq-mean-token-mean"},
    # CISPO (MiniMax-M1, arXiv 2506.13585): clip the importance weight, keep every token's gradient; the paper sets
    # no lower bound (ε_low large: 1.0 makes the lower clip 0) and tunes only ε_high; token-level loss.
    "cispo": {"policy_loss": "cispo", "clip_ratio_low": 1.0, "clip_ratio_high": 0.28, "loss_agg_mode": "token-mean"},
}


def apply_preset(algo: dict[str, Any]) -> dict[str, Any]:
    """The raw `algo` mapping with its `preset`'s keys laid underneath (explicit keys win); unchanged without one.

    >>> apply_preset({"preset": "dr_grpo", "kl_coef": 0.0})["loss_agg_mode"]
    'seq-mean-token-sum-norm'
    """
    name = algo.get("preset") or ""
    if not name:
        return dict(algo)
    if name not in PRESETS:
        raise ValueError(f"algo.preset: unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return {**PRESETS[name], **algo}
