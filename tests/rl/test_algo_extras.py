"""rl/algo_extras.py and rl/presets.py (ours: verl has no counterpart to compare with): informative groups for
dynamic sampling, the thinking-budget forced-token mask, PPO mini-batches on a toy policy, and the presets."""

import doctest
import re
from pathlib import Path

import pytest
import torch

import rl.algo_extras as extras
import rl.presets as presets
from rl.algo_extras import forced_think_mask, informative_groups, minibatch_slices
from rl.algos import token_logprobs
from rl.policy_losses import POLICY_LOSSES


def test_doctests():
    assert doctest.testmod(extras).failed == 0
    assert doctest.testmod(presets).failed == 0


# ---- dynamic sampling -----------------------------------------------------------------------------------------


def test_informative_groups():
    rewards = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.3, 0.7, float("nan"), 1.0, 0.5, float("nan")])
    ids = torch.tensor([5, 5, 3, 3, 9, 9, 1, 1, 2, 2])
    # 5: all 1 -> no signal; 3: all 0; 9: differ; 1: one scored sample; 2: one scored sample
    assert informative_groups(rewards, ids) == [9]
    assert informative_groups([0.0, 1.0, 1.0, 0.0], ["b", "a", "b", "a"]) == ["b", "a"]  # first-appearance order
    assert informative_groups([], []) == []
    with pytest.raises(ValueError, match="group ids"):
        informative_groups([1.0], [0, 1])


# ---- thinking-budget forced tokens ----------------------------------------------------------------------------

OPEN, CLOSE = [7], [8, 9]


@pytest.mark.parametrize("response,budget,prompt,forced", [
    ([7, 1, 2, 3, 8, 9, 5], 3, [], [4, 5]),  # budget of 3 ran out: the closing pair was forced
    ([7, 1, 8, 9, 5], 3, [], []),  # closed by itself after 1 thinking token
    ([7, 1, 2, 8, 8, 9, 5], 3, [], [4, 5]),  # the model began closing at the budget; vLLM forced the pair anyway
    ([7, 1, 2, 3, 8], 3, [], [4]),  # max tokens cut the forcing short: the forced prefix
    ([7, 1, 2, 3], 3, [], []),  # ended exactly at the budget: nothing was forced yet
    ([7, 1, 8, 9, 5, 7, 1, 2, 3, 8, 9], 3, [], [9, 10]),  # two spans, each budgeted on its own
    ([8, 9, 5, 7, 1, 8, 9, 8, 9], 3, [], [7, 8]),  # a stray close before the span: vLLM only ends it by force
    ([1, 2, 3, 8, 9, 5], 3, [4, 7], [3, 4]),  # the prompt opened thinking (one-token opening: no extra token)
    ([1, 2, 8, 9, 5], 3, [4, 7, 1], [2, 3]),  # ... with one thinking token already in the prompt
    ([1, 8, 9, 5], 3, [4, 7], []),
    ([1, 2, 3, 8, 9], 3, [4, 7, 8, 9], []),  # the prompt opened and closed thinking; the response never opens it
    ([7, 1, 2, 3, 8, 9, 5], 0, [], []),  # no budget
    ([7, 1, 2, 3, 5, 5], 3, [], []),  # not the closing sequence at the budget position: not this engine, no mask
])
def test_forced_think_mask(response, budget, prompt, forced):
    mask = forced_think_mask(response, CLOSE, thinking_budget=budget, open_ids=OPEN, prompt_ids=prompt)
    assert mask.dtype == torch.bool and mask.shape == (len(response),)
    assert torch.nonzero(mask).flatten().tolist() == forced


def test_forced_think_mask_multi_token_opening_in_the_prompt():
    """vLLM lets a span the prompt opened run len(open) − 1 tokens past the budget (its position bookkeeping):
    with a 2-token opening and budget 2 the forced pair starts at token 3, not 2."""
    mask = forced_think_mask([1, 2, 3, 8, 9], CLOSE, thinking_budget=2, open_ids=[6, 7], prompt_ids=[4, 6, 7])
    assert torch.nonzero(mask).flatten().tolist() == [3, 4]


# ---- PPO mini-batches -----------------------------------------------------------------------------------------


def test_minibatch_slices():
    assert minibatch_slices(8, 2) == [slice(0, 4), slice(4, 8)]
    assert minibatch_slices(5, 1) == [slice(0, 5)]
    sizes = [s.stop - s.start for s in minibatch_slices(11, 4)]
    assert sizes == [3, 3, 3, 2] and sum(sizes) == 11
    with pytest.raises(ValueError, match="n_minibatches"):
        minibatch_slices(3, 4)
    with pytest.raises(ValueError, match="n_minibatches"):
        minibatch_slices(3, 0)


def test_minibatches_first_is_on_policy_then_clipping_fires():
    """A toy linear policy, 2 mini-batches × 2 updates of PPO-clip against one set of proximal logprobs: the very
    first mini-batch sees ratio exactly 1 (no clipping), every later one sees the moved policy and clips."""
    g = torch.Generator().manual_seed(0)
    B, L, D, V = 16, 6, 8, 5
    x = torch.randn(B, L, D, generator=g)  # token features [B, L, D]
    W = torch.nn.Parameter(torch.randn(D, V, generator=g) * 0.1)
    with torch.no_grad():
        actions = torch.distributions.Categorical(logits=x @ W).sample()  # [B, L]
        old_logp = token_logprobs(x @ W, actions)  # [B, L]: the proximal policy
    adv = torch.randn(B, generator=g)
    mask = torch.ones(B, L)
    opt = torch.optim.SGD([W], lr=2.0)
    seen = []
    for update in range(2):
        for sl in minibatch_slices(B, 2):
            logp = token_logprobs(x[sl] @ W, actions[sl])  # [b, L]
            loss, metrics = POLICY_LOSSES["vanilla"](logp, old_logp[sl], adv[sl], mask[sl], clip_low=0.2, clip_high=0.2)
            seen.append(((logp - old_logp[sl]).exp().sub(1).abs().max().item(), metrics["clip_fraction"]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert seen[0] == (0.0, 0.0)  # exactly on-policy
    assert all(dev > 0 and clip > 0 for dev, clip in seen[1:]), seen


# ---- presets and config ---------------------------------------------------------------------------------------


def test_presets_are_valid_algo_overlays():
    from core.config import ConfigError, build
    from rl.config import AlgoConfig

    for name, overlay in presets.PRESETS.items():
        cfg = build(AlgoConfig, presets.apply_preset({"preset": name}), source=f"preset {name}")
        for key, value in overlay.items():
            assert getattr(cfg, key) == value, (name, key)
    assert presets.PRESETS["dapo"]["clip_ratio_high"] == 0.28 and presets.PRESETS["dapo"]["dynamic_sampling"]
    mine = build(AlgoConfig, presets.apply_preset({"preset": "dapo", "clip_ratio_high": 0.3}), source="t")
    assert mine.clip_ratio_high == 0.3 and mine.loss_agg_mode == "token-mean"  # the recipe's own key wins
    with pytest.raises(ValueError, match="dr_grpo"):
        presets.apply_preset({"preset": "drgrpo"})
    with pytest.raises(ConfigError):
        build(AlgoConfig, {"policy_loss": "ppo"}, source="t")


def test_every_preset_names_its_paper():
    source = Path(presets.__file__).read_text()
    for name in presets.PRESETS:
        comment = re.search(rf"((?:\s*#.*\n)+)\s*\"{name}\": \{{", source)
        assert comment and re.search(r"arXiv \d{4}\.\d{5}", comment.group(1)), name


def test_defaults_keep_todays_behaviour():
    from rl.config import AlgoConfig

    cfg = AlgoConfig()
    assert (cfg.policy_loss, cfg.adv_estimator, cfg.rollout_correction, cfg.preset) == ("vanilla", "grpo", "token_tis", "")
    assert not cfg.dynamic_sampling and cfg.mini_batches_per_update == 1 and cfg.policy_loss_extra == {}
    assert cfg.off_policy_correction == "tis" and cfg.rollout_rs_threshold == []
