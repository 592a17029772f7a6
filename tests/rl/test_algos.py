"""rl/algos.py: hand-derived values, and numerical equivalence with verl's core_algos for every shared option."""

import doctest
import math

import numpy as np
import pytest
import torch

import rl.algos as algos
from rl.algos import (
    agg_loss,
    entropy_from_logits,
    group_advantages,
    grpo_loss,
    kl_estimate,
    normalize_advantages_by_source,
    ppo_clip_token_loss,
)



@pytest.fixture(scope="module")
def core_algos():
    """verl's reference implementation: only the equivalence tests take it (and skip without verl); the
    hand-derived tests run everywhere."""
    return pytest.importorskip("verl.trainer.ppo.core_algos")


def test_doctests():
    assert doctest.testmod(algos).failed == 0


def _batch(seed=0, B=12, L=9):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(B, L, generator=g) * 3
    old = logp + torch.randn(B, L, generator=g) * 0.3
    ref = logp + torch.randn(B, L, generator=g) * 0.5
    adv = torch.randn(B, L, generator=g)
    mask = (torch.rand(B, L, generator=g) > 0.25).float()
    mask[0] = 0  # a fully masked sequence
    return logp, old, ref, adv, mask


# ---- advantages -------------------------------------------------------------------------------------------


def test_group_advantages_hand_values():
    r = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.5])
    adv = group_advantages(r, ["a", "a", "b", "b", "c"], eps=1e-12, single_sample="zero")
    # group a: mean .5, unbiased std sqrt(.5) -> ±0.7071; group b: identical rewards -> 0; group c: one sample -> 0
    assert adv[:2].tolist() == pytest.approx([0.70710678, -0.70710678], abs=1e-6)
    assert adv[2:].tolist() == [0.0, 0.0, 0.0]
    assert group_advantages(r, ["a", "a", "b", "b", "c"], eps=1e-12)[4].item() == pytest.approx(0.5)  # verl's rule
    centred = group_advantages(torch.tensor([3.0, 1.0, 2.0]), [0, 0, 0], norm_by_std=False)
    assert centred.tolist() == pytest.approx([1.0, -1.0, 0.0])


def test_masked_reward_excluded_from_group():
    r = torch.tensor([1.0, 0.0, float("nan"), 1.0])
    adv = group_advantages(r, [0, 0, 0, 0], norm_by_std=False)
    assert adv[2] == 0.0  # the masked sample gets no signal
    assert adv.tolist() == pytest.approx([1 / 3, -2 / 3, 0.0, 1 / 3])  # mean over the 3 scored samples only


@pytest.mark.parametrize("norm_by_std", [True, False])
@pytest.mark.parametrize("eps", [1e-6, 1e-2])
def test_group_advantages_match_verl(norm_by_std, eps, core_algos):
    g = torch.Generator().manual_seed(1)
    B, L = 24, 5
    scores = (torch.rand(B, generator=g) > 0.5).float() + torch.rand(B, generator=g) * 0.1
    index = np.array([i // 4 for i in range(B - 1)] + [99])  # groups of 4 and one group of one
    mask = torch.ones(B, L)
    token_rewards = torch.zeros(B, L)
    token_rewards[:, -1] = scores
    ref, _ = core_algos.compute_grpo_outcome_advantage(token_rewards, mask, index, epsilon=eps, norm_adv_by_std_in_grpo=norm_by_std)
    ours = group_advantages(scores, list(index), norm_by_std=norm_by_std, eps=eps)
    torch.testing.assert_close(ours, ref[:, 0], rtol=1e-5, atol=1e-6)


def test_per_source_normalisation_equalises_scales():
    adv = torch.tensor([4.0, -4.0, 2.0, -2.0, 0.01, -0.01, 0.03, -0.03])
    src = ["math"] * 4 + ["chat"] * 4
    out = normalize_advantages_by_source(adv, src)
    for s in ("math", "chat"):
        sel = torch.tensor([x == s for x in src])
        assert out[sel].square().mean().sqrt().item() == pytest.approx(1.0, rel=1e-3)
    assert torch.equal(torch.sign(out), torch.sign(adv))  # order within a source preserved
    masked = normalize_advantages_by_source(adv, src, mask=torch.tensor([1, 1, 1, 0, 1, 1, 1, 1]))
    assert masked[3] == 0.0


# ---- aggregation, policy loss, KL, entropy ----------------------------------------------------------------


def test_agg_loss_hand_values():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert agg_loss(loss, mask, "token-mean").item() == pytest.approx(10 / 4)
    assert agg_loss(loss, mask, "seq-mean-token-sum").item() == pytest.approx((6 + 4) / 2)
    assert agg_loss(loss, mask, "seq-mean-token-mean").item() == pytest.approx((2 + 4) / 2)
    assert agg_loss(loss, mask, "seq-mean-token-sum-norm").item() == pytest.approx(5 / 3)
    assert agg_loss(loss, mask, "seq-mean-token-sum-norm", horizon=10).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="token-mean"):
        agg_loss(loss, mask, "mean")


@pytest.mark.parametrize("mode", algos.LOSS_AGG_MODES)
def test_agg_loss_matches_verl(mode, core_algos):
    _, _, _, loss, mask = _batch(2)
    torch.testing.assert_close(agg_loss(loss, mask, mode), core_algos.agg_loss(loss, mask, mode), rtol=1e-6, atol=1e-6)


def test_ppo_clip_hand_values():
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1, 0.5, 5.0]]))  # ratios (old logp = 0)
    old = torch.zeros_like(logp)
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0, -1.0]])
    loss, ind = ppo_clip_token_loss(logp, old, adv, clip_low=0.2, clip_high=0.28, clip_ratio_c=3.0)
    # A>0, ρ=1.5 -> clipped at 1.28; A>0, ρ=.5 -> unclipped (min picks ρA); A<0, ρ=1.1 -> 1.1;
    # A<0, ρ=.5 -> clipped at .8; A<0, ρ=5 -> dual clip bounds the loss at 3
    assert loss[0].tolist() == pytest.approx([-1.28, -0.5, 1.1, 0.8, 3.0], abs=1e-5)
    assert ind["clipped"][0].tolist() == [1.0, 0.0, 0.0, 1.0, 0.0]
    assert ind["clipped_lower"][0].tolist() == [0.0, 0.0, 0.0, 0.0, 1.0]


class _ActorCfg(dict):
    """The attribute/`get` view verl's policy loss reads from its ActorConfig."""

    __getattr__ = dict.__getitem__


@pytest.mark.parametrize("mode", algos.LOSS_AGG_MODES)
@pytest.mark.parametrize("clip", [(0.2, 0.2), (0.2, 0.28)])
def test_policy_loss_matches_verl(mode, clip, core_algos):
    logp, old, _, adv, mask = _batch(3)
    cfg = _ActorCfg(clip_ratio=0.2, clip_ratio_low=clip[0], clip_ratio_high=clip[1], clip_ratio_c=3.0, global_batch_info={})
    ref_loss, ref_metrics = core_algos.compute_policy_loss_vanilla(old, logp, adv, mask, loss_agg_mode=mode, config=cfg)
    mat, ind = ppo_clip_token_loss(logp, old, adv, clip_low=clip[0], clip_high=clip[1], clip_ratio_c=3.0)
    torch.testing.assert_close(agg_loss(mat, mask, mode), ref_loss, rtol=1e-6, atol=1e-6)
    loss, metrics = grpo_loss(logp, old, None, adv, mask, clip_low=clip[0], clip_high=clip[1], agg_mode=mode)
    assert metrics["clip_fraction"] == pytest.approx(ref_metrics["actor/pg_clipfrac"], abs=1e-6)
    assert metrics["clip_fraction_lower"] == pytest.approx(ref_metrics["actor/pg_clipfrac_lower"], abs=1e-6)
    assert metrics["ppo_kl"] == pytest.approx(ref_metrics["actor/ppo_kl"], abs=1e-6)


def test_kl_hand_values():
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    d = math.log(2)
    assert kl_estimate(logp, ref, "k1").item() == pytest.approx(d)
    assert kl_estimate(logp, ref, "k2").item() == pytest.approx(0.5 * d * d)
    assert kl_estimate(logp, ref, "k3").item() == pytest.approx(0.5 - math.log(0.5) - 1)
    with pytest.raises(ValueError, match="k3"):
        kl_estimate(logp, ref, "k4")


@pytest.mark.parametrize("ours,theirs", [("k1", "k1"), ("k2", "k2"), ("k3", "k3"), ("k1+", "k1+"), ("k3+", "k3+")])
def test_kl_matches_verl_values_and_gradients(ours, theirs, core_algos):
    logp, _, ref, _, _ = _batch(4)
    a = logp.clone().requires_grad_(True)
    b = logp.clone().requires_grad_(True)
    mine, verl = kl_estimate(a, ref, ours), core_algos.kl_penalty(b, ref, theirs)
    torch.testing.assert_close(mine, verl)
    mine.sum().backward()
    verl.sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_straight_through_takes_k2_gradient():
    logp, _, ref, _, _ = _batch(5)
    x = logp.clone().requires_grad_(True)
    kl_estimate(x, ref, "k3+").sum().backward()
    torch.testing.assert_close(x.grad, logp - ref)  # d/dx ½(x − ref)²
    torch.testing.assert_close(kl_estimate(logp, ref, "k3+"), kl_estimate(logp, ref, "k3"))


@pytest.mark.parametrize("mode", algos.LOSS_AGG_MODES)
def test_entropy_matches_verl(mode, core_algos):
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(4, 7, 11, generator=g)
    mask = (torch.rand(4, 7, generator=g) > 0.3).float()
    ours = agg_loss(entropy_from_logits(logits), mask, mode)
    torch.testing.assert_close(ours, core_algos.compute_entropy_loss(logits, mask, mode))
    uniform = entropy_from_logits(torch.zeros(3, 5))
    torch.testing.assert_close(uniform, torch.full((3,), math.log(5)))


def test_grpo_loss_gradient_direction():
    """One step of the objective raises the logprob of positive-advantage tokens and lowers negative ones."""
    logp = torch.full((2, 3), -1.0, requires_grad=True)
    loss, metrics = grpo_loss(logp, logp.detach(), logp.detach(), torch.tensor([1.0, -1.0]), torch.ones(2, 3), kl_coef=0.1)
    loss.backward()
    assert (logp.grad[0] < 0).all() and (logp.grad[1] > 0).all()
    assert metrics["kl"] == 0.0 and metrics["clip_fraction"] == 0.0
