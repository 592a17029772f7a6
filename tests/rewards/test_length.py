"""Group-overlong length term and DAPO soft overlong punishment, hand-computed."""

import pytest

from rewards.length import LengthConfig, dapo_overlong_penalty, group_overlong_rewards, length_alpha, overlong_lambdas


def test_lambdas_span_larger_than_floor():
    # L = 100, 300, 700: L_min 100, L_max 700, Δ = max(500, 600) = 600
    # λ = 0.5 - 0/600 = 0.5 ; 0.5 - 200/600 = 1/6 ; 0.5 - 600/600 = -0.5
    assert overlong_lambdas([100, 300, 700], 500) == pytest.approx([0.5, 1 / 6, -0.5])


def test_lambdas_floor_applies():
    # L = 1000, 1100, 1200: span 200 < 500 -> Δ = 500; λ = 0.5, 0.3, 0.1
    assert overlong_lambdas([1000, 1100, 1200], 500) == pytest.approx([0.5, 0.3, 0.1])


def test_configurable_floor_for_short_answers():
    # 64-token toy answers: L = 20, 40; with the paper's 500 the penalty is nearly flat (0.5, 0.46);
    # with floor 32: Δ = max(32, 20) = 32, λ = 0.5, 0.5 - 20/32 = -0.125
    assert overlong_lambdas([20, 40], 500) == pytest.approx([0.5, 0.46])
    assert overlong_lambdas([20, 40], 32) == pytest.approx([0.5, -0.125])


def test_only_correct_samples_get_the_term():
    # α = 0.2, L = 100, 300, 700, 400, correctness T, T, F, None. Δ = 600.
    # R = 0.2*0.5 = 0.1 ; 0.2*(1/6) = 0.0333.. ; incorrect 0 ; unknown None (its length still sets L_max? no: 400 < 700)
    out = group_overlong_rewards([100, 300, 700, 400], [True, True, False, None], alpha=0.2, min_span=500)
    assert out[:3] == pytest.approx([0.1, 0.2 / 6, 0.0])
    assert out[3] is None


def test_incorrect_long_sample_still_sets_L_max():
    # The incorrect 1100-token answer widens Δ to 1000: correct 100 and 600 get 0.5 and 0.0 (times α=0.1).
    out = group_overlong_rewards([100, 600, 1100], [True, True, False], alpha=0.1, min_span=500)
    assert out == pytest.approx([0.05, 0.0, 0.0])


def test_per_sample_alphas():
    out = group_overlong_rewards([100, 200], [True, True], alpha=[0.2, 0.1], min_span=500)
    assert out == pytest.approx([0.1, 0.1 * 0.3])


def test_alpha_schedule_by_step():
    cfg = LengthConfig(alpha_init=0.2, alpha_floor=0.05, alpha_decay_steps=100)
    # linear: 0.2 - 0.15 * step/100, floored at 0.05
    assert [length_alpha(s, 0, cfg) for s in (0, 20, 100, 1000)] == pytest.approx([0.2, 0.17, 0.05, 0.05])


def test_alpha_schedule_by_absolute_length():
    cfg = LengthConfig(alpha_init=0.2, alpha_floor=0.05, alpha_decay_steps=100, alpha_decay_per_token=1e-4)
    # step 20 -> 0.17; minus 1e-4 * 500 = 0.05 -> 0.12 ; 2000 tokens -> 0.17 - 0.2 < floor -> 0.05
    assert length_alpha(20, 500, cfg) == pytest.approx(0.12)
    assert length_alpha(20, 2000, cfg) == pytest.approx(0.05)


def test_dapo_soft_overlong():
    # L_max 1000, cache 200: 0 up to 800, then (800 - L)/200, -1 beyond 1000
    got = [dapo_overlong_penalty(n, 1000, 200) for n in (500, 800, 850, 1000, 1001)]
    assert got == pytest.approx([0.0, 0.0, -0.25, -1.0, -1.0])


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError):
        group_overlong_rewards([1, 2], [True], alpha=0.2)
