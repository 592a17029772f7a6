"""rl/rollout_correction.py: weights, keep-masks and metrics equal verl 0.9.1's
`compute_rollout_correction_and_rejection_mask` for every IS level / threshold form / rejection option and every
named preset; hand-derived values for TIS, IcePop, masked IS and the rejection bounds."""

import doctest
import math

import pytest
import torch

import rl.rollout_correction as rc
from rl.algos import truncated_importance_weights
from rl.rollout_correction import RS_OPTIONS, ROLLOUT_CORRECTIONS, importance_weights, rejection_mask, rollout_correction

# verl preset (RolloutCorrectionConfig class method) for each of ours; None = ours only
VERL_PRESET = {"none": "disabled", "token_tis": "decoupled_token_is", "seq_tis": "decoupled_seq_is",
               "token_icepop": "decoupled_token_icepop", "seq_mis": "decoupled_seq_is_rs", "token_k1_rs": None,
               "geo_rs": "decoupled_geo_rs", "geo_rs_token_tis": "decoupled_geo_rs_token_tis",
               "geo_rs_seq_tis": "decoupled_geo_rs_seq_tis", "k3_rs": "decoupled_k3_rs",
               "k3_rs_token_tis": "decoupled_k3_rs_token_tis", "k3_rs_seq_tis": "decoupled_k3_rs_seq_tis"}
# thresholds that reject some but not all of `_batch`
RS_THRESHOLDS = {"token_k1": (0.6, 1.5), "seq_sum_k1": (0.4, 2.5), "seq_mean_k1": (0.97, 1.03), "token_k2": 0.05,
                 "seq_sum_k2": 0.2, "seq_mean_k2": 0.03, "seq_max_k2": 0.1, "token_k3": 0.05, "seq_sum_k3": 0.2,
                 "seq_mean_k3": 0.03, "seq_max_k3": 0.1}


@pytest.fixture(scope="module")
def helper():
    return pytest.importorskip("verl.trainer.ppo.rollout_corr_helper")


def test_doctests():
    assert doctest.testmod(rc).failed == 0


def _batch(seed=0, B=12, L=10, noise=0.3):
    g = torch.Generator().manual_seed(seed)
    behav = -torch.rand(B, L, generator=g) * 3
    prox = behav + torch.randn(B, L, generator=g) * noise
    lengths = torch.randint(1, L + 1, (B,), generator=g)
    mask = (torch.arange(L).unsqueeze(0) < lengths.unsqueeze(-1)).float()
    mask[2] = 0  # a fully masked sequence
    return prox, behav, mask


def _spec(t):
    return "_".join(str(x) for x in t) if isinstance(t, tuple) else t


def _verl(helper, prox, behav, mask, *, is_level=None, is_threshold=2.0, normalize=False, rejection=None):
    w, keep, metrics = helper.compute_rollout_correction_and_rejection_mask(
        prox, behav, mask, rollout_is=is_level, rollout_is_threshold=_spec(is_threshold),
        rollout_is_batch_normalize=normalize,
        rollout_rs=",".join(rejection) if rejection else None,
        rollout_rs_threshold=",".join(str(_spec(v)) for v in rejection.values()) if rejection else None)
    return (None if w is None else w.batch["rollout_is_weights"]), keep, metrics


def _assert_same(ours, theirs):
    (w, keep, metrics), (vw, vkeep, vmetrics) = ours, theirs
    if vw is None:
        assert w is None
    else:
        torch.testing.assert_close(w, vw, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(keep, vkeep)
    for key, value in metrics.items():
        assert value == pytest.approx(vmetrics[f"rollout_corr/{key}"], rel=1e-5, abs=1e-6), key


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("threshold", [2.0, 1.2, (0.5, 5.0), (0.8, 1.25)])
@pytest.mark.parametrize("normalize", [False, True])
def test_importance_weights_match_verl(level, threshold, normalize, helper):
    prox, behav, mask = _batch(1, noise=0.3)
    upper, lower = (threshold, None) if isinstance(threshold, float) else (threshold[1], threshold[0])
    ours = rollout_correction(prox, behav, mask, is_level=level, is_upper=upper, is_lower=lower,
                              is_batch_normalize=normalize)
    _assert_same(ours, _verl(helper, prox, behav, mask, is_level=level, is_threshold=threshold, normalize=normalize))
    if not normalize:
        assert 0 < ours[2]["rollout_is_ratio_fraction_high"] + ours[2]["rollout_is_ratio_fraction_low"] < 1


@pytest.mark.parametrize("option", RS_OPTIONS)
def test_each_rejection_option_matches_verl(option, helper):
    prox, behav, mask = _batch(2)
    rejection = {option: RS_THRESHOLDS[option]}
    ours = rollout_correction(prox, behav, mask, rejection=rejection)
    _assert_same(ours, _verl(helper, prox, behav, mask, rejection=rejection))
    assert 0 < ours[2]["rollout_rs_masked_fraction"] < 1, "the threshold should reject some tokens, not all"


def test_chained_rejection_and_is_match_verl(helper):
    prox, behav, mask = _batch(3)
    rejection = {"token_k1": (0.5, 2.0), "seq_mean_k3": 0.05, "seq_max_k2": 0.3}
    ours = rollout_correction(prox, behav, mask, is_level="token", is_upper=2.0, rejection=rejection)
    _assert_same(ours, _verl(helper, prox, behav, mask, is_level="token", rejection=rejection))
    single_k1 = rollout_correction(prox, behav, mask, rejection={"token_k1": 1.5})  # one bound u means (1/u, u)
    _assert_same(single_k1, _verl(helper, prox, behav, mask, rejection={"token_k1": 1.5}))


@pytest.mark.parametrize("name", sorted(VERL_PRESET))
def test_presets_match_verl(name, helper):
    from verl.trainer.config.algorithm import RolloutCorrectionConfig

    prox, behav, mask = _batch(4, noise=0.02 if "seq" in name or "geo" in name or "k3" in name else 0.3)
    ours = ROLLOUT_CORRECTIONS[name](prox, behav, mask)
    if VERL_PRESET[name] is None:  # token_k1_rs: verl's token_k1 option with our default bounds
        theirs = _verl(helper, prox, behav, mask, rejection={"token_k1": (0.5, 2.0)})
    else:
        cfg = getattr(RolloutCorrectionConfig, VERL_PRESET[name])()
        theirs = helper.compute_rollout_correction_and_rejection_mask(
            prox, behav, mask, rollout_is=cfg.rollout_is, rollout_is_threshold=cfg.rollout_is_threshold,
            rollout_is_batch_normalize=cfg.rollout_is_batch_normalize, rollout_rs=cfg.rollout_rs,
            rollout_rs_threshold=cfg.rollout_rs_threshold)
        theirs = (None if theirs[0] is None else theirs[0].batch["rollout_is_weights"], theirs[1], theirs[2])
    _assert_same(ours, theirs)


def test_preset_thresholds_can_be_overridden(helper):
    prox, behav, mask = _batch(5)
    ours = ROLLOUT_CORRECTIONS["geo_rs_token_tis"](prox, behav, mask, is_threshold=1.5, rs_threshold=(0.9, 1.1))
    _assert_same(ours, _verl(helper, prox, behav, mask, is_level="token", is_threshold=1.5,
                             rejection={"seq_mean_k1": (0.9, 1.1)}))


# ---- hand-derived values --------------------------------------------------------------------------------------


def test_token_tis_is_todays_truncated_weights():
    prox, behav, mask = _batch(6)
    w, keep, _ = ROLLOUT_CORRECTIONS["token_tis"](prox, behav, mask, is_threshold=2.0)
    torch.testing.assert_close(w, truncated_importance_weights(prox, behav, 2.0) * mask)
    torch.testing.assert_close(keep, mask)


def test_sequence_tis_icepop_and_masked_is_hand_values():
    lr = torch.tensor([[0.5, 0.5, 9.0], [0.1, -0.1, 0.0], [-2.0, 0.0, 0.0]])  # log ρ
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    zeros = torch.zeros_like(lr)
    w, _, _ = rollout_correction(lr, zeros, mask, is_level="sequence", is_upper=2.0)
    # Π ρ per sequence: e^1 -> capped 2; e^0 = 1; e^-2; padding 0
    expected = torch.tensor([2.0, 1.0, math.exp(-2)]).unsqueeze(-1) * mask
    torch.testing.assert_close(w, expected)
    w, _, m = rollout_correction(lr, zeros, mask, is_level="token", is_upper=1.5, is_lower=0.5)  # IcePop
    # token ρ: e^.5 = 1.65 > 1.5 -> 0; e^±.1 kept; e^-2 = .135 < .5 -> 0
    torch.testing.assert_close(w, torch.tensor([[0.0, 0.0, 0.0], [math.exp(0.1), math.exp(-0.1), 1.0], [0.0, 0.0, 0.0]]))
    assert m["rollout_is_oob_ratio"] == pytest.approx(3 / 6)
    w, keep, m = ROLLOUT_CORRECTIONS["seq_mis"](lr, zeros, mask)  # sequences with Π ρ outside [.5, 2] dropped
    torch.testing.assert_close(keep, torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
    assert m["rollout_rs_seq_masked_fraction"] == pytest.approx(2 / 3)


def test_rejection_bounds_hand_values():
    lr = torch.tensor([[0.0, 1.0, -1.0, 0.2]])
    mask = torch.ones(1, 4)
    keep, m = rejection_mask(lr, mask, {"token_k1": (0.5, 2.0)})
    assert keep.tolist() == [[1.0, 0.0, 0.0, 1.0]]  # e^±1 outside [.5, 2]
    assert m["rollout_rs_masked_fraction"] == pytest.approx(0.5)
    keep, _ = rejection_mask(lr, mask, {"seq_mean_k1": (0.9, 1.1)})  # geometric mean e^.05 inside
    assert keep.tolist() == [[1.0, 1.0, 1.0, 1.0]]
    keep, _ = rejection_mask(lr, mask, {"seq_mean_k3": 0.1})  # mean k3 = (.718 + .368 + .021)/4 = .277
    assert keep.tolist() == [[0.0, 0.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="seq_mean_k3"):
        rejection_mask(lr, mask, {"seq_mean_k4": 0.1})
    with pytest.raises(ValueError, match="lower <= upper"):
        importance_weights(lr, mask, upper=1.0, lower=2.0)


def test_all_masked_batch_is_harmless():
    prox, behav, _ = _batch(7)
    mask = torch.zeros_like(prox)
    w, keep, metrics = ROLLOUT_CORRECTIONS["k3_rs_token_tis"](prox, behav, mask)
    assert torch.equal(w, torch.zeros_like(prox)) and torch.equal(keep, mask) and metrics == {}


def test_config_names_match_the_dict():
    import typing

    from rl.config import AlgoConfig

    assert set(typing.get_args(typing.get_type_hints(AlgoConfig)["rollout_correction"])) == set(ROLLOUT_CORRECTIONS)
