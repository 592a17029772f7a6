"""rl/advantage_estimators.py: equivalence with verl 0.9.1's outcome estimators (token-level scores + index arrays,
adapted here), hand-derived values, NaN masking, and composition with per-source normalisation."""

import doctest
import math

import numpy as np
import pytest
import torch

import rl.advantage_estimators as est_mod
from rl.advantage_estimators import ADVANTAGE_ESTIMATORS, get_advantage_estimator
from rl.algos import normalize_advantages_by_source


@pytest.fixture(scope="module")
def verl():
    core_algos = pytest.importorskip("verl.trainer.ppo.core_algos")
    from verl.trainer.config import AlgoConfig

    return core_algos, AlgoConfig


def test_doctests():
    assert doctest.testmod(est_mod).failed == 0


def _batch(seed=0, groups=5, k=4, L=7, binary=False, single=True):
    """rewards [B], group ids, response mask [B, L] (right padded, lengths 1..L), verl's token-level scores."""
    g = torch.Generator().manual_seed(seed)
    ids = [i // k for i in range(groups * k)] + ([99] if single else [])
    B = len(ids)
    rewards = (torch.rand(B, generator=g) > 0.5).float() if binary else torch.rand(B, generator=g) * 2 - 0.5
    lengths = torch.randint(1, L + 1, (B,), generator=g)
    mask = (torch.arange(L).unsqueeze(0) < lengths.unsqueeze(-1)).float()
    scores = torch.zeros(B, L)
    scores[torch.arange(B), lengths - 1] = rewards  # the outcome reward sits on the last response token
    return rewards, ids, mask, scores


def _first_token(adv_tokens: torch.Tensor) -> torch.Tensor:
    return adv_tokens[:, 0]  # every sequence has >= 1 token and a constant advantage over its tokens


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("norm", [True, False])
def test_grpo_and_dr_grpo_match_verl(seed, norm, verl):
    core_algos, _ = verl
    r, ids, mask, scores = _batch(seed, binary=seed == 1)
    ref, _ = core_algos.compute_grpo_outcome_advantage(scores, mask, np.array(ids), norm_adv_by_std_in_grpo=norm)
    ours = ADVANTAGE_ESTIMATORS["grpo"](r, ids, norm_by_std=norm)
    torch.testing.assert_close(ours, _first_token(ref), rtol=1e-5, atol=1e-6)
    if not norm:
        torch.testing.assert_close(ADVANTAGE_ESTIMATORS["dr_grpo"](r, ids, norm_by_std=True), _first_token(ref),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rloo_matches_verl(seed, verl):
    core_algos, _ = verl
    r, ids, mask, scores = _batch(seed, binary=seed == 1)
    ref, _ = core_algos.compute_rloo_outcome_advantage(scores, mask, np.array(ids))
    torch.testing.assert_close(ADVANTAGE_ESTIMATORS["rloo"](r, ids), _first_token(ref), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reinforce_plus_plus_baseline_matches_verl(seed, verl):
    core_algos, _ = verl
    r, ids, mask, scores = _batch(seed, binary=seed == 1)
    ref, _ = core_algos.compute_reinforce_plus_plus_baseline_outcome_advantage(scores, mask, np.array(ids))
    ours = ADVANTAGE_ESTIMATORS["reinforce_plus_plus_baseline"](r, ids, token_counts=mask.sum(-1))
    torch.testing.assert_close(ours, _first_token(ref), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.unsqueeze(-1) * mask, ref, rtol=1e-5, atol=1e-5)


def test_reinforce_plus_plus_matches_verl(verl):
    core_algos, AlgoConfig = verl
    r, ids, mask, scores = _batch(3)
    ref, _ = core_algos.compute_reinforce_plus_plus_outcome_advantage(scores, mask, config=AlgoConfig(gamma=1.0))
    ours = ADVANTAGE_ESTIMATORS["reinforce_plus_plus"](r, ids, token_counts=mask.sum(-1))
    torch.testing.assert_close(ours.unsqueeze(-1) * mask, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("norm", [True, False])
def test_grpo_passk_matches_verl(seed, norm, verl):
    core_algos, AlgoConfig = verl
    r, ids, mask, scores = _batch(seed, binary=seed == 1, single=False)
    ref, _ = core_algos.compute_grpo_passk_outcome_advantage(scores, mask, np.array(ids),
                                                            config=AlgoConfig(norm_adv_by_std_in_grpo=norm))
    torch.testing.assert_close(ADVANTAGE_ESTIMATORS["grpo_passk"](r, ids, norm_by_std=norm), _first_token(ref),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("weights", [None, [1.0, 0.5, 2.0]])
@pytest.mark.parametrize("norm", [True, False])
def test_gdpo_matches_verl(weights, norm, verl):
    core_algos, AlgoConfig = verl
    g = torch.Generator().manual_seed(4)
    _, ids, mask, _ = _batch(4)
    B, L = mask.shape
    comps = torch.stack([(torch.rand(B, generator=g) > 0.5).float(), torch.rand(B, generator=g) * 0.2,
                         torch.randn(B, generator=g) * 3], dim=-1)  # [B, C]: very different scales
    P = 3
    keys = ["answer", "length", "rm"]
    non_tensor = {k: comps[:, c].numpy() for c, k in enumerate(keys)}
    batch = {"prompts": torch.ones(B, P, dtype=torch.long), "attention_mask": torch.cat([torch.ones(B, P), mask], -1).long()}
    cfg = AlgoConfig(gdpo_reward_keys=keys, gdpo_reward_weights=weights)
    ref, _ = core_algos.compute_gdpo_outcome_advantage(torch.zeros(B, L), mask, np.array(ids), config=cfg,
                                                       norm_adv_by_std_in_grpo=norm, non_tensor_batch=non_tensor,
                                                       batch=batch)
    ours = ADVANTAGE_ESTIMATORS["gdpo"](comps, ids, norm_by_std=norm, token_counts=mask.sum(-1),
                                        extra={"weights": weights})
    torch.testing.assert_close(ours.unsqueeze(-1) * mask, ref, rtol=1e-5, atol=1e-5)


def test_opo_and_gpg_match_verl(verl):
    core_algos, _ = verl
    r, ids, mask, scores = _batch(5, binary=True)
    ref, _ = core_algos.compute_opo_outcome_advantage(scores, mask, np.array(ids))
    torch.testing.assert_close(ADVANTAGE_ESTIMATORS["opo"](r, ids, token_counts=mask.sum(-1)), _first_token(ref),
                               rtol=1e-5, atol=1e-6)
    ref, _ = core_algos.compute_gpg_outcome_advantage(scores, mask, np.array(ids))
    torch.testing.assert_close(ADVANTAGE_ESTIMATORS["gpg"](r, ids), _first_token(ref), rtol=1e-5, atol=1e-6)


# ---- hand-derived values and masking (ours) --------------------------------------------------------------------


def test_rloo_hand_values_and_masking():
    r = torch.tensor([1.0, 0.0, 0.0, float("nan"), 0.5])
    adv = ADVANTAGE_ESTIMATORS["rloo"](r, [0, 0, 0, 0, 1])
    # group 0 scored {1, 0, 0}: leave-one-out baselines 0, .5, .5; the NaN sample gets 0; group of one keeps r
    assert adv.tolist() == pytest.approx([1.0, -0.5, -0.5, 0.0, 0.5])


def test_reinforce_plus_plus_baseline_hand_values():
    r = torch.tensor([1.0, 0.0, 1.0, 1.0])
    adv = ADVANTAGE_ESTIMATORS["reinforce_plus_plus_baseline"](r, ["a", "a", "b", "b"])
    # centred: [.5, −.5, 0, 0]; batch mean 0, unbiased var (.25+.25)/3 -> ±.5/sqrt(1/6)
    s = 0.5 / math.sqrt(0.5 / 3)
    assert adv.tolist() == pytest.approx([s, -s, 0.0, 0.0], rel=1e-5)


def test_passk_gives_only_the_best_sample_a_signal():
    r = torch.tensor([0.0, 1.0, 0.0, 0.2, float("nan"), 0.3])
    adv = ADVANTAGE_ESTIMATORS["grpo_passk"](r, [0, 0, 0, 1, 1, 1], norm_by_std=False)
    assert adv.tolist() == pytest.approx([0.0, 1.0, 0.0, 0.0, 0.0, 0.1])
    with pytest.raises(ValueError, match="at least 2"):
        ADVANTAGE_ESTIMATORS["grpo_passk"](torch.tensor([1.0, 0.0, 1.0]), [0, 0, 1])


def test_gdpo_keeps_a_small_component_from_drowning():
    """Summing first (GRPO) lets the large component decide the sign; normalising each first (GDPO) does not."""
    ids = [0, 0, 0, 0]
    big = torch.tensor([10.0, 0.0, 10.0, 0.0])
    small = torch.tensor([0.0, 0.1, 0.1, 0.0])  # sample 1 is better on the small reward only
    summed = ADVANTAGE_ESTIMATORS["grpo"](big + small, ids)
    decoupled = ADVANTAGE_ESTIMATORS["gdpo"](torch.stack([big, small], -1), ids)
    assert summed[1].item() == pytest.approx(summed[3].item(), abs=0.02)  # the small reward barely separates 1 from 3
    assert decoupled[1] - decoupled[3] > 0.5
    masked = ADVANTAGE_ESTIMATORS["gdpo"](torch.tensor([[1.0, 0.0], [0.0, float("nan")], [0.0, 1.0]]), [0, 0, 0])
    assert masked[1] == 0.0


def test_nan_rewards_are_masked_everywhere():
    r = torch.tensor([1.0, 0.0, float("nan"), 1.0, 0.0, 0.5])
    ids = [0, 0, 0, 1, 1, 1]
    counts = torch.tensor([3.0, 4, 5, 6, 2, 1])
    for name, fn in ADVANTAGE_ESTIMATORS.items():
        adv = fn(r, ids, token_counts=counts)
        assert adv[2] == 0.0 and torch.isfinite(adv).all(), name
        # the masked sample changes nothing for the others
        clean = fn(r[[0, 1, 3, 4, 5]], [0, 0, 1, 1, 1], token_counts=counts[[0, 1, 3, 4, 5]])
        torch.testing.assert_close(adv[[0, 1, 3, 4, 5]], clean, msg=name)


def test_group_ids_as_tensor_and_composition_with_per_source_normalisation():
    r, ids, mask, _ = _batch(6, single=False)  # pass@k refuses a group of one
    for name, fn in ADVANTAGE_ESTIMATORS.items():
        a = fn(r, ids, token_counts=mask.sum(-1))
        torch.testing.assert_close(a, fn(r, torch.tensor(ids), token_counts=mask.sum(-1)), msg=name)
    adv = ADVANTAGE_ESTIMATORS["rloo"](r, ids)
    sources = ["math" if i < 12 else "chat" for i in range(len(ids))]
    out = normalize_advantages_by_source(adv, sources, mask=~torch.isnan(r))
    for s in ("math", "chat"):
        sel = torch.tensor([x == s for x in sources])
        assert out[sel].square().mean().sqrt().item() == pytest.approx(1.0, rel=1e-3)


def test_errors_name_the_valid_choices():
    with pytest.raises(ValueError, match="rloo"):
        get_advantage_estimator("rlo")
    with pytest.raises(ValueError, match="gdpo"):
        ADVANTAGE_ESTIMATORS["grpo"](torch.zeros(4, 2), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="token_counts"):
        ADVANTAGE_ESTIMATORS["opo"](torch.zeros(4), [0, 0, 1, 1])


def test_config_names_match_the_dict():
    import typing

    from rl.config import AlgoConfig

    assert set(typing.get_args(typing.get_type_hints(AlgoConfig)["adv_estimator"])) == set(ADVANTAGE_ESTIMATORS)
