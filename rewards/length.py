"""Length rewards: the report's "Group Overlong" penalty and DAPO's soft overlong punishment.

Group overlong (BlueLM-2.5 §2.3.5, after Kimi k1.5), for sample i of a group of k answers to one prompt::

    L_min, L_max = min, max of the group's lengths
    Δ_L  = max(min_span, L_max - L_min)
    λ_i  = 0.5 - (L_i - L_min) / Δ_L                      ∈ [-0.5, 0.5]
    R_i  = α_i · λ_i   if sample i is correct, else 0

Departures, named: the Δ_L floor ``min_span`` is configurable (the report's 500 tokens is for 32k-token reasoning,
not 64-token toy answers); a sample whose correctness is unknown (``None``) gets ``None`` (masked), but its length
still counts for L_min/L_max (it is a real response to the prompt). Kimi k1.5 gives incorrect answers
``min(0, λ_i)``; the report gives them 0, and so do we.

α schedule: α starts at ``alpha_init`` (0.2) and decays linearly with the global step to ``alpha_floor`` over
``alpha_decay_steps``; optionally it also decays linearly with the response's absolute length
(``alpha_decay_per_token``), bounded below by the same floor. The report gives no floor or horizon; ours are
defaults in the recipe.

DAPO soft overlong punishment (Yu et al. 2025, eq. 13), for every sample, correct or not::

    0                                  if L <= L_max - L_cache
    ((L_max - L_cache) - L) / L_cache  if L_max - L_cache < L <= L_max
    -1                                 if L > L_max
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class LengthConfig:
    """Which length terms a domain adds to its rule reward, and their parameters (lengths in tokens).

    group_overlong: add the report's group-overlong term.
    dapo_max_tokens: enable DAPO's soft overlong punishment with this L_max (``None``: off).
    """

    group_overlong: bool = True
    min_span_tokens: int = 500
    alpha_init: float = 0.2
    alpha_floor: float = 0.05
    alpha_decay_steps: int = 1000
    alpha_decay_per_token: float = 0.0
    dapo_max_tokens: int | None = None
    dapo_cache_tokens: int = 0
    dapo_factor: float = 1.0


def length_alpha(global_step: int, response_tokens: int = 0, config: LengthConfig = LengthConfig()) -> float:
    """α for one response: linear decay with the step (and optionally the length), bounded below by the floor.

    >>> c = LengthConfig(alpha_init=0.2, alpha_floor=0.05, alpha_decay_steps=100)
    >>> length_alpha(0, config=c), round(length_alpha(50, config=c), 6), length_alpha(500, config=c)
    (0.2, 0.125, 0.05)
    >>> round(length_alpha(0, 1000, LengthConfig(alpha_decay_per_token=1e-4)), 6)   # 0.2 - 0.1
    0.1
    """
    progress = min(1.0, global_step / config.alpha_decay_steps) if config.alpha_decay_steps > 0 else 1.0
    alpha = config.alpha_init - (config.alpha_init - config.alpha_floor) * progress
    alpha -= config.alpha_decay_per_token * response_tokens
    return max(config.alpha_floor, alpha)


def overlong_lambdas(lengths: Sequence[int], min_span: int = 500) -> list[float]:
    """λ_i = 0.5 - (L_i - L_min) / max(min_span, L_max - L_min) for a group.

    >>> overlong_lambdas([100, 400, 700], min_span=500)   # Δ_L = 600
    [0.5, 0.0, -0.5]
    >>> overlong_lambdas([100, 200], min_span=500)        # Δ_L = 500 (floor)
    [0.5, 0.3]
    """
    if not lengths:
        return []
    lo, hi = min(lengths), max(lengths)
    span = max(min_span, hi - lo)
    if span <= 0:
        return [0.5 for _ in lengths]
    return [0.5 - (length - lo) / span for length in lengths]


def group_overlong_rewards(
    lengths: Sequence[int],
    correct: Sequence[bool | None],
    alpha: float | Sequence[float],
    min_span: int = 500,
) -> list[float | None]:
    """R_i = α_i·λ_i for correct samples, 0 for incorrect ones, ``None`` for unknown ones.

    >>> group_overlong_rewards([100, 300, 700], [True, True, False], alpha=0.2, min_span=500)
    [0.1, 0.03333333333333334, 0.0]
    """
    if len(lengths) != len(correct):
        raise ValueError(f"{len(lengths)} lengths but {len(correct)} verdicts")
    alphas = [alpha] * len(lengths) if isinstance(alpha, (int, float)) else list(alpha)
    lambdas = overlong_lambdas(lengths, min_span)
    out: list[float | None] = []
    for lam, ok, a in zip(lambdas, correct, alphas):
        out.append(None if ok is None else (a * lam if ok else 0.0))
    return out


def dapo_overlong_penalty(length: int, max_tokens: int, cache_tokens: int) -> float:
    """DAPO's soft overlong punishment for one response.

    >>> [dapo_overlong_penalty(n, max_tokens=100, cache_tokens=20) for n in (80, 90, 100, 101)]
    [0.0, -0.5, -1.0, -1.0]
    """
    threshold = max_tokens - cache_tokens
    if length <= threshold:
        return 0.0
    if length <= max_tokens:
        return (threshold - length) / cache_tokens
    return -1.0
