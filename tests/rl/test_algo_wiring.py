"""Issue 16's algorithm surface wired into the GRPO step and trainer: presets at config build, the advantage
estimator, the rollout correction (old keys kept), dynamic sampling with refill, PPO mini-batches, forced thinking
tokens. Pure parts without a model; trainer parts on the tiny checkpoint; one short run through the shared engine."""

import dataclasses
import json
import math

import pytest
import torch

from core.config import ConfigError, apply_override, build
from core.engine import RolloutSample
from rl.config import AlgoConfig, GRPOConfig, effective_correction
from rl.grpo import compute_advantages, dynamic_sampling, reward_components
from rl.prompts import StepPrompt
from rl.rollout import RolloutBatch, ScoredGroup, refill_seed
from rl.trainer import build_batch


class _R:
    def __init__(self, reward, components=None):
        self.reward, self.components = reward, components or {}


def _sample(n: int = 1) -> RolloutSample:
    return RolloutSample([1], [2] * n, [0.0] * n, "", "stop", 0)


def _group(rewards, source="math", tag=0) -> ScoredGroup:
    return ScoredGroup(StepPrompt(source, {"tag": tag}, False), [_sample() for _ in rewards], [_R(r) for r in rewards])


# ---- presets, applied when the config is built ----------------------------------------------------------------


def test_preset_is_laid_under_the_recipe_keys_at_build_and_on_the_command_line():
    cfg = build(GRPOConfig, {"algo": {"preset": "dapo", "kl_coef": 0.05}})
    assert cfg.algo.dynamic_sampling is True and cfg.algo.clip_ratio_high == 0.28
    assert cfg.algo.kl_coef == 0.05  # the recipe's own key wins over the preset's 0.0
    cli = apply_override(GRPOConfig(), "algo.preset=gspo")
    assert (cli.algo.policy_loss, cli.algo.clip_ratio_low, cli.algo.loss_agg_mode) == ("gspo", 3e-4, "seq-mean-token-mean")
    assert apply_override(cli, "algo.clip_ratio_low=0.001").algo.clip_ratio_low == 0.001  # a later key still wins
    assert build(GRPOConfig, {}).algo == AlgoConfig()  # no preset: the defaults, untouched
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        build(GRPOConfig, {"algo": {"preset": "nope"}})


# ---- rollout correction: one source of truth, old keys kept ----------------------------------------------------


def test_rollout_correction_keeps_the_old_keys_meaning():
    assert effective_correction(AlgoConfig()) == ("token_tis", {"is_threshold": 2.0})  # = off_policy_correction: tis
    assert effective_correction(AlgoConfig(tis_cap=1.5)) == ("token_tis", {"is_threshold": 1.5})
    assert effective_correction(AlgoConfig(off_policy_correction="none"))[0] == "none"
    assert effective_correction(AlgoConfig(rollout_correction="none"))[0] == "none"
    assert effective_correction(AlgoConfig(rollout_correction="geo_rs", rollout_rs_threshold=[0.9, 1.1])) == \
        ("geo_rs", {"rs_threshold": (0.9, 1.1)})


# ---- advantage estimators in compute_advantages --------------------------------------------------------------


def test_adv_estimator_selects_the_estimator_and_composes_with_per_source_normalisation():
    batch = RolloutBatch(0, [_group([1.0, 0.0, 0.0]), _group([3.0, 1.0, 2.0], "chat")])
    base = GRPOConfig()
    grpo, _ = compute_advantages(base, batch)
    for name in ("grpo", "dr_grpo", "rloo", "reinforce_plus_plus_baseline", "reinforce_plus_plus", "grpo_passk",
                 "gdpo", "opo", "gpg"):
        cfg = dataclasses.replace(base, algo=AlgoConfig(adv_estimator=name))
        adv, scored = compute_advantages(cfg, batch)
        assert adv.shape == (6,) and torch.isfinite(adv).all() and all(scored), name
        # per-source normalisation composes: unit RMS per source whatever the estimator (when not all zero)
        for sl in (slice(0, 3), slice(3, 6)):
            rms = float(adv[sl].square().mean().sqrt())
            assert rms == pytest.approx(1.0, rel=1e-4) or rms == 0.0, (name, adv)
    raw = dataclasses.replace(base, algo=AlgoConfig(adv_estimator="rloo", normalize_by_source=False))
    adv, _ = compute_advantages(raw, batch)
    # RLOO by hand: r_i minus the mean of the other two samples
    assert adv.tolist() == pytest.approx([1.0, -0.5, -0.5, 1.5, -1.5, 0.0])
    assert not torch.equal(adv, grpo)


def test_gdpo_gets_the_reward_components_in_a_stable_order():
    rewards = [_R(1.0, {"answer": 1.0, "format": 1.0}), _R(None), _R(0.1, {"format": 0.1, "answer": 1.0}),
               _R(0.5, {"ifeval": 0.5})]
    m = reward_components(rewards)
    assert m.shape == (4, 3)  # answer, format, ifeval (sorted)
    assert m[0].tolist() == [1.0, 1.0, 0.0] and m[2].tolist() == pytest.approx([1.0, 0.1, 0.0])
    assert torch.isnan(m[1]).all() and m[3].tolist() == [0.0, 0.0, 0.5]
    batch = RolloutBatch(0, [ScoredGroup(StepPrompt("math", {}, False), [_sample()] * 4, rewards)])
    adv, scored = compute_advantages(GRPOConfig(algo=AlgoConfig(adv_estimator="gdpo")), batch)
    assert scored == [True, False, True, True] and adv[1] == 0 and torch.isfinite(adv).all()


# ---- dynamic sampling with refill ----------------------------------------------------------------------------


class _FakeRollout:
    """generate(step, refill_round=r): a batch whose groups are informative or not by a script."""

    def __init__(self, rounds):
        self.rounds, self.calls = rounds, []

    def generate(self, step, only=None, refill_round=0):
        self.calls.append((step, refill_round))
        groups = [_group(r, tag=(refill_round, i)) for i, r in enumerate(self.rounds[refill_round])]
        return RolloutBatch(step, groups, time_generate_s=0.5)


def test_dynamic_sampling_drops_flat_groups_and_refills_with_new_prompts():
    flat, mixed = [1.0, 1.0], [1.0, 0.0]
    cfg = GRPOConfig(prompts_per_step=3, algo=AlgoConfig(dynamic_sampling=True, dynamic_sampling_max_rounds=2))
    side = _FakeRollout({1: [flat, mixed, flat], 2: [mixed, mixed, mixed]})
    first = RolloutBatch(4, [_group(mixed, tag=(0, 0)), _group(flat), _group([0.0, 0.0, None])])
    batch, m = dynamic_sampling(cfg, first, side)
    assert side.calls == [(4, 1), (4, 2)]  # refill rounds of the same step, until 3 informative groups exist
    assert [g.prompt.row["tag"] for g in batch.groups] == [(0, 0), (1, 1), (2, 0)]
    assert m["dynamic/extra_rounds"] == 2 and m["dynamic/extra_samples"] == 12
    assert m["dynamic/filtered_fraction"] == pytest.approx(1 - 5 / 9)
    # the round cap: after max_rounds the step trains on what there is
    capped = dataclasses.replace(cfg, algo=AlgoConfig(dynamic_sampling=True, dynamic_sampling_max_rounds=1))
    batch, m = dynamic_sampling(capped, RolloutBatch(4, [_group(flat)]), _FakeRollout({1: [flat, mixed, flat]}))
    assert len(batch.groups) == 1 and m["dynamic/extra_rounds"] == 1 and m["dynamic/informative_groups"] == 1
    # nothing informative anywhere: the original batch is kept (advantages 0), never an empty step
    batch, _ = dynamic_sampling(capped, RolloutBatch(4, [_group(flat)]), _FakeRollout({1: [flat]}))
    assert len(batch.groups) == 1


def test_refill_rounds_draw_new_deterministic_prompts():
    from rl.prompts import step_prompts

    rows = {"math": [{"i": i} for i in range(200)]}
    cfg = GRPOConfig(prompts_per_step=8)
    draw = lambda r: step_prompts(dataclasses.replace(cfg, seed=refill_seed(cfg.seed, 5, r)), rows, 5)  # noqa: E731
    assert draw(0) == step_prompts(cfg, rows, 5) and draw(1) == draw(1)
    assert draw(1) != draw(0) and draw(2) != draw(1)


# ---- forced thinking tokens -----------------------------------------------------------------------------------


def test_forced_think_tokens_are_marked_on_the_rollout_side_and_leave_the_loss_mask():
    from rl.actors import mark_forced_think

    OPEN, CLOSE = [7], [8, 9]
    forced = RolloutSample([1, 2], [7, 1, 2, 3, 8, 9, 5], [0.0] * 7, "", "stop", 0)  # budget 3 ran out: 8, 9 forced
    natural = RolloutSample([1, 2], [7, 1, 8, 9, 5], [0.0] * 5, "", "stop", 0)  # closed thinking itself
    mark_forced_think([forced, natural], OPEN, CLOSE, budget=3)
    assert forced.budget_hit and forced.forced_mask == [0, 0, 0, 0, 1, 1, 0]
    assert not natural.budget_hit and natural.forced_mask == []
    batch = build_batch([(s.prompt_ids, s.response_ids, s.response_logprobs) for s in (forced, natural)], [1.0, 1.0],
                        [True, True], pad_id=0, forced=[forced.forced_mask, natural.forced_mask])
    assert batch.response_mask[0].tolist() == [0, 1, 1, 1, 1, 0, 0, 1]
    assert batch.response_mask[1].tolist() == [0, 1, 1, 1, 1, 1, 0, 0]  # untouched
    mark_forced_think([natural], OPEN, CLOSE, budget=0)  # no budget: nothing marked
    assert natural.forced_mask == [] and not natural.budget_hit


# ---- the trainer (tiny checkpoint) ----------------------------------------------------------------------------


def _trainer(ckpt, lr=1e-3, **algo):
    from core.sections import OptimConfig
    from rl.config import GRPOTrainerConfig
    from rl.trainer import PolicyTrainer

    t = GRPOTrainerConfig(micro_batch_sequences=2, dtype="float32",
                          optim=OptimConfig(lr_peak=lr, lr_warmup_steps=0, lr_min_ratio=1.0, weight_decay=0.0))
    return PolicyTrainer(ckpt["model"], t, AlgoConfig(**algo), total_steps=10, seed=0)


def _toy(pad_id, forced=None, tail=None):
    seqs = [([1, 5, 6], [7, 8, 9, 10, 11], [-1.0] * 5), ([1, 5], [10, 11, 12], [-1.0] * 3),
            ([1, 2, 3, 4], [12, 13], [-1.0] * 2), ([1], [13, 14, 15, 16], [-1.0] * 4)]
    if tail is not None:  # other ids for the last two response tokens of the first sample
        p, r, lp = seqs[0]
        seqs[0] = (p, r[:-2] + tail, lp)
    return build_batch(seqs, [1.0, -0.5, 0.8, -1.2], [True] * 4, pad_id, forced=forced)


def _grads(trainer, batch):
    trainer.optimizer.step = lambda: None  # keep the weights: compare gradients
    trainer.train_step(batch)
    return torch.cat([p.grad.flatten() for p in trainer.policy.parameters() if p.grad is not None])


def test_forced_tokens_get_no_gradient(tiny_grpo_checkpoint):
    """The last two response tokens of a sample forced: changing them changes nothing in the update (they are
    only targets at the end, so they reach the loss through their own logprobs alone); unmasked, it does."""
    forced = [[0, 0, 0, 1, 1], [], [], []]
    runs = {}
    for masked in (True, False):
        for tail in ([11, 12], [30, 31]):
            t = _trainer(tiny_grpo_checkpoint, kl_coef=0.1)
            runs[masked, tuple(tail)] = _grads(t, _toy(t.tokenizer.pad_token_id, forced if masked else None, tail))
    torch.testing.assert_close(runs[True, (11, 12)], runs[True, (30, 31)], rtol=0, atol=1e-8)
    assert not torch.allclose(runs[False, (11, 12)], runs[False, (30, 31)])


def test_mini_batches_first_on_policy_later_ones_clip(tiny_grpo_checkpoint):
    """Two mini-batches (and two PPO epochs) with a large learning rate: the behaviour logprobs are recomputed once,
    the first optimizer step sees ratio 1 (clip fraction 0), the later ones a moved policy that the clip acts on."""
    t = _trainer(tiny_grpo_checkpoint, lr=0.05, kl_coef=0.0, mini_batches_per_update=2)
    t.cfg.updates_per_step = 2
    assert t.behaviour_source() == "recompute"
    m = t.train_step(_toy(t.tokenizer.pad_token_id))
    assert m["time_behaviour_s"] > 0
    assert m["update_0/clip_fraction"] == 0.0 and m["update_0/ppo_kl"] == pytest.approx(0.0, abs=1e-6)
    later = [m[f"update_{k}/clip_fraction"] for k in (1, 2, 3)]
    assert max(later) > 0, m
    one = _trainer(tiny_grpo_checkpoint, lr=0.05, kl_coef=0.0)
    assert one.behaviour_source() == "training_forward"
    m1 = one.train_step(_toy(one.tokenizer.pad_token_id))
    assert m1["clip_fraction"] == 0.0 and not any(k.startswith("update_") for k in m1)
    print(json.dumps({"clip_fraction_per_update_2x2": [m["update_0/clip_fraction"], *later],
                      "clip_fraction_one_update": m1["clip_fraction"]}))


def test_by_source_mini_batches_cut_where_the_sources_end(tiny_grpo_checkpoint):
    """`algo.minibatch_split: source` makes one optimizer step per source: sources of 2 + 2 sequences make the update
    of two even mini-batches, sources of 3 + 1 another one (the cut follows the labels, not the count)."""
    def weights(t, batch):
        t.train_step(batch)
        return torch.cat([p.detach().flatten() for p in t.policy.parameters()])

    even = _trainer(tiny_grpo_checkpoint, lr=0.01, kl_coef=0.0, mini_batches_per_update=2)
    halves = _trainer(tiny_grpo_checkpoint, lr=0.01, kl_coef=0.0, minibatch_split="source")
    skewed = _trainer(tiny_grpo_checkpoint, lr=0.01, kl_coef=0.0, minibatch_split="source")
    assert halves.behaviour_source() == "recompute"  # several optimizer steps: the proximal policy is recomputed
    pad = even.tokenizer.pad_token_id
    w_even = weights(even, _toy(pad))
    w_halves = weights(halves, dataclasses.replace(_toy(pad), minibatch=torch.tensor([0, 0, 1, 1])))
    w_skewed = weights(skewed, dataclasses.replace(_toy(pad), minibatch=torch.tensor([0, 0, 0, 1])))
    torch.testing.assert_close(w_halves, w_even, rtol=0, atol=0)
    assert not torch.allclose(w_skewed, w_even)


@pytest.mark.parametrize("loss", ["gspo", "cispo", "sapo"])
def test_policy_loss_is_selected_by_name(tiny_grpo_checkpoint, loss):
    """Off-policy (vLLM's planted logprobs as the ratio's denominator, so ρ ≠ 1: on-policy these losses all have
    vanilla's gradient) the named loss gives another update than vanilla's."""
    grads = []
    for name in ("vanilla", loss):
        t = _trainer(tiny_grpo_checkpoint, kl_coef=0.0, behaviour_logprobs="rollout", policy_loss=name)
        batch = _toy(t.tokenizer.pad_token_id)
        batch.rollout_logprobs[batch.response_mask > 0] = torch.linspace(-8.0, -0.5, int(batch.response_mask.sum()))
        grads.append(_grads(t, batch))
    assert torch.isfinite(grads[1]).all() and not torch.allclose(grads[0], grads[1])


def test_rejecting_correction_masks_tokens_and_logs_it(tiny_grpo_checkpoint):
    t = _trainer(tiny_grpo_checkpoint, kl_coef=0.0, rollout_correction="token_k1_rs")
    assert t.behaviour_source() == "recompute"  # the keep-mask is known before the first micro-batch
    batch = _toy(t.tokenizer.pad_token_id)
    batch.rollout_logprobs[batch.response_mask > 0] = torch.linspace(-12.0, -0.1, int(batch.response_mask.sum()))
    m = t.train_step(batch)
    assert 0 < m["rollout_correction/masked_fraction"] < 1 and m["rollout_correction/seq_masked_fraction"] > 0
    assert math.isfinite(m["loss"])


# ---- one short run through the shared engine ------------------------------------------------------------------


def test_dapo_with_mini_batches_and_dynamic_sampling_runs(ray_local, shared_rollout, tiny_grpo_checkpoint, tmp_path):
    from rl.grpo import run_grpo
    from tests.rl.conftest import grpo_test_config

    cfg = grpo_test_config(tiny_grpo_checkpoint, tmp_path / "run", max_steps=2,
                           algo={"preset": "dapo", "mini_batches_per_update": 2, "dynamic_sampling_max_rounds": 1})
    assert cfg.algo.dynamic_sampling and cfg.algo.kl_coef == 0.0
    run_grpo(cfg, rollout=shared_rollout)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert len(rows) == 2
    for row in rows:
        assert 0.0 <= row["dynamic/filtered_fraction"] <= 1.0 and row["dynamic/extra_rounds"] in (0.0, 1.0)
        assert row["update_0/clip_fraction"] == 0.0 and "update_1/clip_fraction" in row
        assert math.isfinite(row["loss"])


def test_by_source_mini_batches_take_one_optimizer_step_per_source(ray_local, shared_rollout, tiny_grpo_checkpoint,
                                                                    tmp_path):
    """Two sources (math 3 prompts, IFEval 1 a step): `algo.minibatch_split: source` makes two optimizer steps a
    batch, the first on-policy; a second split on top of it is refused before any start-up."""
    from rl.config import check_config
    from rl.grpo import run_grpo
    from tests.rl.conftest import grpo_test_config

    bad = grpo_test_config(tiny_grpo_checkpoint, tmp_path / "bad", algo={"minibatch_split": "source",
                                                                         "mini_batches_per_update": 2})
    with pytest.raises(ConfigError, match="minibatch_split: source makes one mini-batch per source"):
        check_config(bad)
    cfg = grpo_test_config(tiny_grpo_checkpoint, tmp_path / "run", max_steps=1, algo={"minibatch_split": "source"})
    run_grpo(cfg, rollout=shared_rollout)
    [row] = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert row["update_0/clip_fraction"] == 0.0 and "update_1/clip_fraction" in row and "update_2/loss" not in row
