"""rl/policy_losses.py: every loss equals verl 0.9.1's `get_policy_loss_fn(name)` (value, gradient, metrics) over
aggregation modes, clip ranges, padded masks and IS weights; hand-derived values for the sequence ratio and CISPO."""

import math

import pytest
import torch

from rl import algos
from rl.policy_losses import EXTRA_KEYS, POLICY_LOSSES, get_policy_loss

VERL_NAMES = ["vanilla", "gspo", "sapo", "gpg", "cispo", "geo_mean", "clip_cov", "kl_cov", "dppo_tv", "dppo_kl", "dro"]
EXTRA = {"tau_pos": 1.0, "tau_neg": 1.05, "clip_cov_ratio": 0.2, "clip_cov_lb": 0.2, "clip_cov_ub": 5.0,
         "kl_cov_ratio": 0.1, "ppo_kl_coef": 0.1, "dro_beta": 0.5}
# our metric -> verl's (where verl reports it for that loss)
METRIC_NAMES = {"clip_fraction": "actor/pg_clipfrac", "clip_fraction_lower": "actor/pg_clipfrac_lower",
                "ppo_kl": "actor/ppo_kl"}


@pytest.fixture(scope="module")
def verl():
    core_algos = pytest.importorskip("verl.trainer.ppo.core_algos")
    from verl.workers.config import ActorConfig, PolicyLossConfig

    def config(loss_mode, clip_low, clip_high, clip_ratio_c=3.0):
        return ActorConfig(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1, clip_ratio=0.2,
                           clip_ratio_low=clip_low, clip_ratio_high=clip_high, clip_ratio_c=clip_ratio_c,
                           tau_pos=EXTRA["tau_pos"], tau_neg=EXTRA["tau_neg"],
                           policy_loss=PolicyLossConfig(loss_mode=loss_mode, clip_cov_ratio=EXTRA["clip_cov_ratio"],
                                                        clip_cov_lb=EXTRA["clip_cov_lb"], clip_cov_ub=EXTRA["clip_cov_ub"],
                                                        kl_cov_ratio=EXTRA["kl_cov_ratio"],
                                                        ppo_kl_coef=EXTRA["ppo_kl_coef"], dro_beta=EXTRA["dro_beta"]))

    return core_algos, config


def _batch(seed=0, B=10, L=12):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(B, L, generator=g) * 3
    old = logp + torch.randn(B, L, generator=g) * 0.3
    adv = torch.randn(B, generator=g).unsqueeze(-1).expand(B, L).clone()  # sequence-level, as GRPO gives
    lengths = torch.randint(1, L + 1, (B,), generator=g)
    mask = (torch.arange(L).unsqueeze(0) < lengths.unsqueeze(-1)).float()  # right padding
    mask[1] = 0  # a fully masked sequence
    is_w = 0.5 + 1.5 * torch.rand(B, L, generator=g)
    return logp, old, adv, mask, is_w


def _run_both(verl, name, mode, clip, *, is_weights=False, seed=0, clip_ratio_c=3.0):
    core_algos, config = verl
    logp, old, adv, mask, is_w = _batch(seed)
    a, b = logp.clone().requires_grad_(True), logp.clone().requires_grad_(True)
    torch.manual_seed(123)  # clip-cov draws with torch's global generator
    ref_loss, ref_metrics = core_algos.get_policy_loss_fn(name)(
        old, b, adv, mask, loss_agg_mode=mode, config=config(name, *clip, clip_ratio_c),
        rollout_is_weights=is_w if is_weights else None)
    torch.manual_seed(123)
    loss, metrics = POLICY_LOSSES[name](a, old, adv, mask, agg_mode=mode, clip_low=clip[0], clip_high=clip[1],
                                        clip_ratio_c=clip_ratio_c, is_weights=is_w if is_weights else None,
                                        extra={k: v for k, v in EXTRA.items()})
    return (loss, metrics, a), (ref_loss, ref_metrics, b)


def _assert_same(ours, theirs, name):
    (loss, metrics, a), (ref_loss, ref_metrics, b) = ours, theirs
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    loss.backward()
    ref_loss.backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)
    for mine, theirs_key in METRIC_NAMES.items():
        if theirs_key in ref_metrics and not (name == "kl_cov" and mine == "ppo_kl") and name != "clip_cov":
            assert metrics[mine] == pytest.approx(ref_metrics[theirs_key], abs=1e-6), mine
    if name == "kl_cov":
        assert metrics["ppo_kl_abs"] == pytest.approx(ref_metrics["actor/ppo_kl"], abs=1e-6)
    if name == "clip_cov":
        assert metrics["cov_clip_fraction"] == pytest.approx(ref_metrics["actor/pg_clipfrac"], abs=1e-6)
        assert metrics["cov_clip_fraction"] > 0  # the covariance clip did fire
        assert metrics["ppo_kl"] == pytest.approx(ref_metrics["actor/ppo_kl"], abs=1e-6)


@pytest.mark.parametrize("name", [n for n in VERL_NAMES if n != "sapo"])
@pytest.mark.parametrize("mode", algos.LOSS_AGG_MODES)
def test_matches_verl_over_agg_modes(name, mode, verl):
    _assert_same(*_run_both(verl, name, mode, (0.2, 0.28)), name)


@pytest.mark.parametrize("name", VERL_NAMES)
@pytest.mark.parametrize("clip", [(0.2, 0.2), (3e-4, 4e-4), (0.1, 0.5)])
def test_matches_verl_over_clip_ranges_with_is_weights(name, clip, verl):
    mode = "seq-mean-token-mean" if name == "sapo" else "token-mean"
    _assert_same(*_run_both(verl, name, mode, clip, is_weights=True, seed=1), name)


def test_sapo_matches_verl_in_its_mode_and_honours_ours(verl):
    """verl aggregates SAPO with seq-mean-token-mean whatever mode it is given; ours follows `agg_mode`."""
    _assert_same(*_run_both(verl, "sapo", "seq-mean-token-mean", (0.2, 0.2)), "sapo")
    (loss, _, _), (ref_loss, _, _) = _run_both(verl, "sapo", "token-mean", (0.2, 0.2))
    logp, old, adv, mask, _ = _batch(0)
    direct, _ = POLICY_LOSSES["sapo"](logp, old, adv, mask, agg_mode="seq-mean-token-mean", extra=EXTRA)
    torch.testing.assert_close(ref_loss, direct)
    assert not torch.allclose(loss, ref_loss)


@pytest.mark.parametrize("name", ["dppo_tv", "dppo_kl"])
def test_dppo_truncation_cap_matches_verl(name, verl):
    _assert_same(*_run_both(verl, name, "token-mean", (0.2, 0.2), clip_ratio_c=1.1, seed=2), name)


def test_gspo_sequence_ratio_hand_values():
    # one sequence, log ratios 0.2 and 0.0 -> geometric-mean ratio exp(0.1); A = 1
    logp = torch.tensor([[-1.0, -2.0, -5.0]], requires_grad=True)
    old = torch.tensor([[-1.2, -2.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss, m = POLICY_LOSSES["gspo"](logp, old, torch.tensor([1.0]), mask, clip_low=0.2, clip_high=0.2)
    assert loss.item() == pytest.approx(-math.exp(0.1))
    assert m["clip_fraction"] == 0.0
    loss.backward()
    # d/dlogp_t of −s·(1/2)Σ(π_t/sg π_t) per token-mean: each valid token gets −s/2
    torch.testing.assert_close(logp.grad, torch.tensor([[-math.exp(0.1) / 2, -math.exp(0.1) / 2, 0.0]]))
    tight, m = POLICY_LOSSES["gspo"](logp, old, torch.tensor([1.0]), mask, clip_low=3e-4, clip_high=4e-4)
    assert tight.item() == pytest.approx(-(1 + 4e-4)) and m["clip_fraction"] == 1.0


def test_cispo_keeps_gradient_of_clipped_tokens():
    logp = torch.log(torch.tensor([[0.9, 0.3]])).requires_grad_(True)
    old = torch.log(torch.tensor([[0.3, 0.3]]))  # ratio 3 (clipped to 1.28) and 1
    loss, m = POLICY_LOSSES["cispo"](logp, old, torch.tensor([1.0]), torch.ones(1, 2), clip_low=0.2, clip_high=0.28)
    loss.backward()
    # loss = −(1.28·log .9 + 1·log .3)/2; the clipped token still gets gradient −1.28/2
    assert loss.item() == pytest.approx(-(1.28 * math.log(0.9) + math.log(0.3)) / 2)
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.64, -0.5]]))
    assert m["clip_fraction"] == 0.5
    vanilla_logp = logp.detach().clone().requires_grad_(True)
    POLICY_LOSSES["vanilla"](vanilla_logp, old, torch.tensor([1.0]), torch.ones(1, 2), clip_high=0.28)[0].backward()
    assert vanilla_logp.grad[0, 0] == 0.0  # PPO-clip gives that token nothing


def test_vanilla_without_dual_clip():
    logp, old = torch.log(torch.tensor([[5.0]])), torch.zeros(1, 1)
    with_c, _ = POLICY_LOSSES["vanilla"](logp, old, torch.tensor([-1.0]), torch.ones(1, 1), clip_ratio_c=3.0)
    without, _ = POLICY_LOSSES["vanilla"](logp, old, torch.tensor([-1.0]), torch.ones(1, 1), clip_ratio_c=None)
    assert with_c.item() == pytest.approx(3.0) and without.item() == pytest.approx(5.0)


def test_grpo_loss_accepts_a_policy_loss():
    logp, old, adv, mask, is_w = _batch(3)
    ref = torch.randn(logp.shape, generator=torch.Generator().manual_seed(9)) * 0.1 + logp
    kw = dict(clip_low=0.2, clip_high=0.28, kl_coef=0.05, agg_mode="seq-mean-token-sum", is_weights=is_w)
    base, base_m = algos.grpo_loss(logp, old, ref, adv, mask, **kw)
    same, same_m = algos.grpo_loss(logp, old, ref, adv, mask, policy_loss=POLICY_LOSSES["vanilla"], **kw)
    torch.testing.assert_close(base, same)
    assert base_m == pytest.approx(same_m)
    other, _ = algos.grpo_loss(logp, old, ref, adv, mask, policy_loss=POLICY_LOSSES["cispo"], **kw)
    assert not torch.allclose(other, base)


def test_errors_name_the_valid_choices():
    logp, old, adv, mask, _ = _batch(4)
    with pytest.raises(ValueError, match="tau_pos"):
        POLICY_LOSSES["sapo"](logp, old, adv, mask, extra={"tau_pos_typo": 1.0})
    with pytest.raises(ValueError, match="cispo"):
        get_policy_loss("cisp0")
    with pytest.raises(ValueError, match="dro_beta"):
        POLICY_LOSSES["dro"](logp, old, adv, mask)
    assert set(EXTRA) <= set(EXTRA_KEYS)


def test_every_loss_has_one_signature_and_the_common_metrics():
    logp, old, adv, mask, _ = _batch(5)
    for name, fn in POLICY_LOSSES.items():
        loss, metrics = fn(logp, old, adv[:, 0], mask, agg_mode="token-mean", horizon=None, clip_low=0.2,
                           clip_high=0.28, clip_ratio_c=3.0, is_weights=None, extra=EXTRA)
        assert loss.dim() == 0 and torch.isfinite(loss), name
        assert {"clip_fraction", "clip_fraction_lower", "ppo_kl"} <= set(metrics), name
        assert all(isinstance(v, float) for v in metrics.values()), name


def test_config_names_match_the_dict():
    import typing

    from rl.config import AlgoConfig

    hints = typing.get_type_hints(AlgoConfig)
    assert set(typing.get_args(hints["policy_loss"])) == set(POLICY_LOSSES)
