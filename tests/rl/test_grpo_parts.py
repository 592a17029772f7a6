"""A GRPO step's pieces without an engine: prompts per step, advantages with masking, batches, the trainer's update,
checkpoints, resume with new optimizer hyperparameters, the quickstart's GRPO stage wiring."""

import dataclasses
import doctest
import math

import pytest
import torch

import core.engine
import core.seeds
import rl.placement
import rl.prompts as prompts
import rl.scheduler
import rl.trainer
import rl.weight_sync
from core.engine import RolloutSample
from mixrl.config import QuickstartConfig
from rl.config import GRPOConfig, GRPOSource
from rl.grpo import compute_advantages, reward_metrics
from rl.prompts import StepPrompt
from rl.rollout import RolloutBatch, ScoredGroup
from rl.trainer import build_batch


@pytest.mark.parametrize("module", [prompts, rl.weight_sync, rl.scheduler, rl.placement, core.seeds, core.engine,
                                    rl.trainer])
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_prompts_per_source_sums_and_respects_proportions():
    sources = [GRPOSource(name="math", proportion=0.625), GRPOSource(name="ifeval", proportion=0.375)]
    assert prompts.prompts_per_source(sources, 16) == {"math": 10, "ifeval": 6}
    assert sum(prompts.prompts_per_source(sources, 7).values()) == 7


def test_step_prompts_are_a_function_of_seed_and_step():
    rows = {"math": [{"i": i} for i in range(50)], "ifeval": [{"i": 100 + i} for i in range(50)]}
    cfg = GRPOConfig(sources=[GRPOSource(name="math", proportion=1), GRPOSource(name="ifeval", proportion=1, mode="mixed")], prompts_per_step=6)
    a, b = prompts.step_prompts(cfg, rows, 3), prompts.step_prompts(cfg, rows, 3)
    assert a == b and a != prompts.step_prompts(cfg, rows, 4)
    assert [p.source for p in a].count("ifeval") == 3
    assert [p.think for p in a if p.source == "ifeval"] == [True, False, True]  # mixed alternates
    assert prompts.step_prompts(dataclasses.replace(cfg, seed=1), rows, 3) != a


class _R:
    def __init__(self, reward, components=None):
        self.reward, self.components = reward, components or {}


def _sample(n: int = 1, reason: str = "stop") -> RolloutSample:
    return RolloutSample([1], [2] * n, [0.0] * n, "", reason, 0)


def _batch(sources: list[str], groups: list[list[RolloutSample]], rewards: list[list[_R]]) -> RolloutBatch:
    return RolloutBatch(0, [ScoredGroup(StepPrompt(src, {}, False), g, r) for src, g, r in zip(sources, groups, rewards)])


def test_masked_samples_get_no_advantage_and_no_loss():
    cfg = GRPOConfig()
    rewards = [[_R(1.0), _R(0.0), _R(None)], [_R(0.5), _R(0.5), _R(None)]]
    adv, scored = compute_advantages(cfg, _batch(["math", "math"], [[_sample()] * 3] * 2, rewards))
    assert scored == [True, True, False, True, True, False]
    assert adv[2] == 0 and adv[5] == 0 and adv[0] > 0 > adv[1]
    batch = build_batch([([1, 2], [3, 4], [-0.1, -0.2])] * 6, adv.tolist(), scored, pad_id=0)
    assert batch.response_mask[2].sum() == 0 and batch.response_mask[0].sum() == 2


def test_build_batch_aligns_targets_and_logprobs():
    batch = build_batch([([5, 6, 7], [8, 9], [-0.5, -0.25]), ([5], [4, 3, 2], [-1.0, -2.0, -3.0])], [1.0, -1.0], [True, True], pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, 9], [5, 4, 3, 2, 0]]
    # logits at position t predict token t+1: the response targets start at len(prompt) - 1
    assert batch.response_mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 0]]
    assert batch.rollout_logprobs.tolist() == [[0, 0, -0.5, -0.25], [-1.0, -2.0, -3.0, 0]]
    assert batch.attention_mask.tolist() == [[1] * 5, [1, 1, 1, 1, 0]]


def test_advantages_are_normalised_per_source():
    """Two sources with different reward scales: after per-source normalisation each source's scored advantages
    have the same spread (report §2.3.6), and switching it off keeps the raw group advantages."""
    rewards = [[_R(1.0), _R(0.0)], [_R(10.0), _R(0.0)], [_R(0.2), _R(0.1)], [_R(3.0), _R(1.0)]]
    batch = _batch(["math", "math", "chat", "chat"], [[_sample()] * 2] * 4, rewards)
    cfg = GRPOConfig(algo=dataclasses.replace(GRPOConfig().algo, norm_adv_by_std=False))
    adv, _ = compute_advantages(cfg, batch)
    math_std, chat_std = float(adv[:4].std()), float(adv[4:].std())
    assert math_std == pytest.approx(chat_std, rel=1e-4)
    raw, _ = compute_advantages(dataclasses.replace(cfg, algo=dataclasses.replace(cfg.algo, normalize_by_source=False)), batch)
    assert raw.tolist() == pytest.approx([0.5, -0.5, 5.0, -5.0, 0.05, -0.05, 1.0, -1.0])


def test_placement_advice_balances_the_measured_phases():
    """From the steps' phase times: the split that equalises the phases, and the prediction it is based on."""
    from rl.grpo import placement_advice

    cfg = GRPOConfig()
    cfg.placement.rollout_cpu_bind = ["0"]
    rows = [{"time_generate_s": 9.0, "time_trainer_s": 1.0, "trainer_threads": 1.0}] + \
           [{"time_generate_s": 2.0, "time_trainer_s": 6.0, "trainer_threads": 1.0}] * 2  # the first step is ignored
    advice = placement_advice(cfg, rows)
    import os

    cores = os.cpu_count()
    assert advice.generate_core_s == 2.0 and advice.train_core_s == 6.0
    assert advice.rollout_cores + advice.trainer_cores == max(2, cores)
    if cores == 2:
        assert (advice.rollout_cores, advice.async_step_s, advice.sync_step_s, advice.best) == (1, 6.0, 4.0, "sync")
    # a measured step shorter than both predictions (overlap the linear model cannot see): keep the placement
    timed = [dict(r, time_step_s=3.0) for r in rows]
    keep = placement_advice(cfg, timed)
    assert keep.now_step_s == 3.0 and keep.best == "keep" and "keep the current placement" in keep.message(9.9)
    assert placement_advice(cfg, [dict(r, time_step_s=60.0) for r in rows]).best == advice.best
    cfg.placement.trainer_gpus_per_worker = 1
    assert placement_advice(cfg, rows) is None  # CPU-only, one node


@pytest.mark.parametrize("staleness, placement, rollout, threads", [
    (0, {}, {}, 8),  # synchronous: the trainer waits while the engine generates, so every core
    (0, {"rollout_engines": 2}, {}, 4),  # shared by the engines
    (1, {}, {}, 4),  # asynchronous, colocated: half the node, the trainer's threads take the rest
    (1, {"trainer_cpus_per_worker": 6}, {}, 2),  # what the trainer side reserves is left to it
    (1, {"trainer_cpu_bind": "0-4"}, {}, 3),
    (1, {"rollout_cpus_per_engine": 3}, {}, 3),  # an engine's own Ray CPUs
    (1, {"rollout_cpu_bind": ["0-2"]}, {}, 0),  # bound: one thread per bound core (`core.engine.cpu_engine_env`)
    (1, {"trainer_cpus_per_worker": 8}, {}, 1),  # never none
    (0, {}, {"cpu_threads": 5}, 5),  # the recipe's own number wins
])
def test_rollout_threads_follow_the_placement(staleness, placement, rollout, threads):
    from rl.placement import rollout_threads

    cfg = GRPOConfig(max_staleness=staleness)
    cfg.placement = dataclasses.replace(cfg.placement, **placement)
    cfg.rollout = dataclasses.replace(cfg.rollout, **rollout)
    assert rollout_threads(cfg, 8) == threads


@pytest.mark.parametrize("steps, staleness, placement, eager, expected", [
    (10, 0, {}, None, True),  # a short CPU run: the compile would cost more start-up than it saves
    (49, 0, {}, None, True),
    (50, 0, {}, None, False),  # long and synchronous: every step waits for generation, compiled is faster
    (500, 1, {}, None, True),  # one-step async: generation runs beside the trainer, off the critical path
    (500, 0, {}, True, True),  # the recipe's own choice wins
    (5, 1, {}, False, False),
    (500, 0, {"rollout_gpus_per_engine": 1}, None, None),  # GPU engines: vLLM's default (CUDA graphs)
])
def test_cpu_engines_compile_their_model_for_long_synchronous_runs(steps, staleness, placement, eager, expected,
                                                                   monkeypatch):
    import shutil

    from rl.placement import rollout_eager

    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")  # a C++ compiler for inductor

    cfg = GRPOConfig(max_steps=steps, max_staleness=staleness)
    cfg.placement = dataclasses.replace(cfg.placement, **placement)
    cfg.rollout = dataclasses.replace(cfg.rollout, enforce_eager=eager)
    assert rollout_eager(cfg) is expected


def test_cpu_engines_stay_eager_without_a_cpp_compiler(monkeypatch):
    import shutil

    from rl.placement import rollout_eager

    cfg = GRPOConfig(max_steps=500, max_staleness=0)
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}" if name == "clang++" else None)
    assert rollout_eager(cfg) is False  # any C++ compiler inductor can use
    monkeypatch.setattr(shutil, "which", lambda name: None)  # inductor could not build the compiled model
    assert rollout_eager(cfg) is True


def test_the_kv_cache_is_sized_for_the_runs_own_sequences():
    """An engine's CPU KV cache holds max_num_seqs sequences of the run's longest sampled prompt (a quarter more) plus
    the longest response, not of max_model_len: for the peer bench's 24-token prompts and 128-token responses under
    max_model_len 512 that is half the cache (whole blocks of 128 tokens)."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from core.chat import render_prompt
    from core.engine import kv_cache_bytes
    from rl.rollout import sequence_tokens

    base = Path(__file__).resolve().parents[2] / "mixrl" / "assets" / "base_tiny"
    tok = AutoTokenizer.from_pretrained(base)
    short, long = [{"role": "user", "content": "2 + 2?"}], [{"role": "user", "content": "word " * 60}]
    rows = {"a": [{"prompt": short}] * 200 + [{"prompt": long}], "b": [{"prompt": short}]}
    cfg = GRPOConfig(sources=[GRPOSource(name="a"), GRPOSource(name="b", mode="think")])
    cfg.rollout = dataclasses.replace(cfg.rollout, max_response_tokens=100, max_model_len=512)
    longest = len(render_prompt(tok, long, False))
    assert sequence_tokens(cfg, tok, rows) == longest * 5 // 4 + 100  # first and last rows are among those looked at
    cfg.eval = dataclasses.replace(cfg.eval, prompts=8, max_response_tokens=300)  # held-out responses are longer
    assert sequence_tokens(cfg, tok, rows) == min(512, longest * 5 // 4 + 300)
    cfg.rollout = dataclasses.replace(cfg.rollout, max_model_len=128)
    assert sequence_tokens(cfg, tok, rows) == 128  # never more than a sequence may hold
    full = kv_cache_bytes(str(base), "float32", 512, 64)
    # the peer bench's 152-token sequences take two of vLLM-CPU's 128-token blocks each: half the cache, not 152/512
    # (sized to the token, a full batch would not fit and vLLM would preempt: generation 2.7 -> 3.5 s a step)
    assert kv_cache_bytes(str(base), "float32", 512, 64, seq_tokens=152) == pytest.approx(full / 2, rel=1e-6)
    at_least = kv_cache_bytes(str(base), "float32", 16384, 1)  # vLLM starts only with room for one max_model_len
    assert kv_cache_bytes(str(base), "float32", 16384, 4, seq_tokens=100) == at_least > 32 << 20


def test_single_process_cpu_engine_environment():
    from core.engine import cpu_engine_env

    env = cpu_engine_env(0, "1,3-4")
    assert env == {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": "3", "OMP_PLACES": "{1},{3},{4}",
                   "OMP_PROC_BIND": "close", "VLLM_USE_AOT_COMPILE": "0"}
    assert cpu_engine_env(2)["OMP_NUM_THREADS"] == "2" and "OMP_PLACES" not in cpu_engine_env(2)


def test_reward_metrics_per_domain_and_component():
    groups = [[_sample(4), _sample(6, "length")], [_sample(2), _sample(2)]]
    rewards = [[_R(1.0, {"answer": 1.0}), _R(0.0, {"answer": 0.0})], [_R(0.5, {"ifeval": 0.5}), _R(None)]]
    m = reward_metrics(_batch(["math", "ifeval"], groups, rewards))
    assert m["reward/math"] == 0.5 and m["reward/ifeval"] == 0.5 and m["accuracy/math"] == 0.5
    assert m["component/ifeval/ifeval"] == 0.5 and m["masked_samples"] == 1.0
    assert m["response_tokens_mean"] == 3.5 and m["truncated_fraction"] == 0.25


def _trainer(ckpt, trainer_cfg: dict | None = None, **algo):
    from rl.config import AlgoConfig, GRPOTrainerConfig
    from rl.trainer import PolicyTrainer
    from core.sections import OptimConfig

    t = GRPOTrainerConfig(micro_batch_sequences=2, dtype="float32", **(trainer_cfg or {}),
                          optim=OptimConfig(lr_peak=1e-3, lr_warmup_steps=0, lr_min_ratio=1.0, weight_decay=0.0))
    return PolicyTrainer(ckpt["model"], t, AlgoConfig(**algo), total_steps=10, seed=0)


def _toy_batch(pad_id):
    seqs = [([1, 5, 6], [7, 8, 9], [-1.0] * 3), ([1, 5], [10, 11], [-1.0] * 2), ([1, 2, 3, 4], [12], [-1.0]),
            ([1], [13, 14, 15, 16], [-1.0] * 4), ([2, 3], [4, 5], [-1.0] * 2)]
    return build_batch(seqs, [1.0, -0.5, 0.3, -1.2, 0.4], [True] * 5, pad_id)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_micro_batches_accumulate_to_the_full_batch_gradient(tiny_grpo_checkpoint, mode):
    """Gradient accumulation over micro-batches of 2 equals one pass over the whole batch."""
    grads = []
    for micro in (2, 64):
        trainer = _trainer(tiny_grpo_checkpoint, loss_agg_mode=mode, kl_coef=0.1)
        trainer.cfg.micro_batch_sequences = micro
        trainer.optimizer.step = lambda: None  # keep the weights: compare the accumulated gradients only
        batch = _toy_batch(trainer.tokenizer.pad_token_id)
        trainer.train_step(batch)
        grads.append(torch.cat([p.grad.flatten() for p in trainer.policy.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-7)


def test_length_sorted_micro_batches_give_each_row_its_own_logprobs(tiny_grpo_checkpoint):
    """Rows go into micro-batches longest first and each micro-batch is cut to its longest row; every row's
    logprobs and entropies equal a forward of that row alone."""
    from rl.trainer import length_sorted_micro_batches, sequence_logprobs

    trainer = _trainer(tiny_grpo_checkpoint)
    batch = _toy_batch(trainer.tokenizer.pad_token_id)
    lengths = batch.attention_mask.sum(-1)
    parts = length_sorted_micro_batches(batch.attention_mask, 2)
    assert [w for _, w in parts] == [6, 5, 4] and sorted(torch.cat([i for i, _ in parts]).tolist()) == list(range(5))
    with torch.no_grad():
        logp, ent = sequence_logprobs(trainer.policy, batch.input_ids, batch.attention_mask, micro_batch=2, with_entropy=True)
        for row, n in enumerate(lengths.tolist()):
            logits = trainer.policy(input_ids=batch.input_ids[row : row + 1, :n]).logits[0, :-1].float()
            alone = torch.log_softmax(logits, -1)
            torch.testing.assert_close(logp[row, : n - 1], alone.gather(-1, batch.input_ids[row, 1:n, None])[:, 0], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(ent[row, : n - 1], -(alone.exp() * alone).sum(-1), rtol=1e-5, atol=1e-5)
        for idx, width in parts:  # past its micro-batch's width a row is not computed at all
            assert (logp[idx, width - 1 :] == 0).all() and (ent[idx, width - 1 :] == 0).all()


def test_right_padded_rows_run_without_a_mask_and_get_the_masked_forwards_logprobs(tiny_grpo_checkpoint):
    """A right-padded micro-batch goes to the model without its padding mask (causal attention alone: the faster,
    leaner path) and every real token's logprob and gradient equal the masked forward's; a left-padded batch keeps
    its mask, since there the pad tokens come before real ones."""
    from rl.trainer import length_sorted_micro_batches, sequence_logprobs

    trainer = _trainer(tiny_grpo_checkpoint)
    model = trainer.policy
    seen = []
    hook = model.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs.get("attention_mask")),
                                           with_kwargs=True)

    def masked(ids, attn):  # the model's own forward under the padding mask, row by row through log-softmax
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=attn).logits[:, :-1].float(), -1)
        return logp.gather(-1, ids[:, 1:, None])[..., 0]

    batch = _toy_batch(trainer.tokenizer.pad_token_id)
    ids, attn = batch.input_ids, batch.attention_mask
    real = attn[:, 1:].bool()
    ours, _ = sequence_logprobs(model, ids, attn, micro_batch=8)
    assert seen == [None]
    seen.clear()
    ours.masked_fill(~real, 0).sum().backward()
    grad_ours = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    theirs = masked(ids, attn)
    seen.clear()
    torch.testing.assert_close(ours[real], theirs[real], rtol=1e-5, atol=1e-6)
    theirs.masked_fill(~real, 0).sum().backward()
    for a, p in zip(grad_ours, model.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-6)

    left = torch.stack([row.roll(int((row == 0).sum())) for row in attn])  # the same rows, padding first
    left_ids = torch.stack([row.roll(int((m == 0).sum())) for row, m in zip(ids, attn)])
    with torch.no_grad():
        ours, _ = sequence_logprobs(model, left_ids, left, micro_batch=8)
        (order, _), = length_sorted_micro_batches(left, 8)
        assert len(seen) == 1 and seen[0] is not None and torch.equal(seen[0], left[order])
        real = left[:, 1:].bool() & left[:, :-1].bool()  # a target whose context starts inside the row
        torch.testing.assert_close(ours[real], masked(left_ids, left)[real], rtol=1e-5, atol=1e-6)
    hook.remove()


@pytest.mark.parametrize("correction", ["tis", "none"])
def test_behaviour_logprobs_from_the_training_forward_equal_a_recomputed_pass(tiny_grpo_checkpoint, correction):
    """`behaviour_logprobs: auto` with one optimizer step per batch skips the no-grad pass: the update, the loss,
    the importance weights and the trainer-vs-vLLM gap are those of recomputing, and no behaviour time is spent."""
    runs = {}
    for mode in ("recompute", "auto"):
        trainer = _trainer(tiny_grpo_checkpoint, behaviour_logprobs=mode, kl_coef=0.1, off_policy_correction=correction, tis_cap=1.5)
        batch = _toy_batch(trainer.tokenizer.pad_token_id)
        batch.rollout_logprobs[batch.response_mask > 0] = torch.linspace(-6.0, -0.5, int(batch.response_mask.sum()))
        metrics = trainer.train_step(batch)
        runs[mode] = (metrics, torch.cat([p.detach().flatten() for p in trainer.policy.parameters()]), trainer.behaviour_source())
    (rec, w_rec, src_rec), (auto, w_auto, src_auto) = runs["recompute"], runs["auto"]
    assert (src_rec, src_auto) == ("recompute", "training_forward")
    torch.testing.assert_close(w_auto, w_rec, rtol=0, atol=1e-7)
    keys = ["loss", "pg_loss", "kl", "grad_norm", "trainer_rollout_logprob_gap"]
    keys += ["is_weight_mean", "is_weight_truncated_fraction"] if correction == "tis" else []
    for key in keys:
        assert auto[key] == pytest.approx(rec[key], rel=1e-5, abs=1e-7), key
    if correction == "tis":
        assert 0 < auto["is_weight_truncated_fraction"] < 1  # the planted gaps straddle the cap
    assert rec["time_behaviour_s"] > 0 and auto["time_behaviour_s"] == 0.0
    assert auto["time_trainer_s"] >= auto["time_train_s"] + auto["time_reference_s"]
    two = _trainer(tiny_grpo_checkpoint, behaviour_logprobs="auto")
    two.cfg.updates_per_step = 2  # the second update's weights are not the proximal policy's: recompute
    assert two.behaviour_source() == "recompute"


@pytest.mark.parametrize("correction", ["tis", "none"])
def test_two_mini_batches_recompute_only_the_second(tiny_grpo_checkpoint, correction):
    """`behaviour_logprobs: auto` with two PPO mini-batches of one update recomputes only the second mini-batch's
    proximal logprobs (the first trains on unmoved weights: its forward's own are the same numbers): both
    optimizer steps, the loss and the whole batch's trainer-vs-vLLM gap and importance weights are those of
    recomputing every row."""
    runs = {}
    for mode in ("recompute", "auto"):
        trainer = _trainer(tiny_grpo_checkpoint, behaviour_logprobs=mode, kl_coef=0.1, off_policy_correction=correction,
                           tis_cap=1.5, mini_batches_per_update=2)
        batch = _toy_batch(trainer.tokenizer.pad_token_id)
        batch.rollout_logprobs[batch.response_mask > 0] = torch.linspace(-6.0, -0.5, int(batch.response_mask.sum()))
        own = trainer.first_minibatch_own(batch)
        metrics = trainer.train_step(batch)
        runs[mode] = (metrics, torch.cat([p.detach().flatten() for p in trainer.policy.parameters()]), own)
    (rec, w_rec, own_rec), (auto, w_auto, own_auto) = runs["recompute"], runs["auto"]
    assert own_rec is None and own_auto == slice(0, 3)  # 5 rows: mini-batches of 3 and 2
    # rounding-level apart (a forward of 3 rows, not 5); Adam's first steps move weights by about lr = 1e-3
    torch.testing.assert_close(w_auto, w_rec, rtol=1e-5, atol=1e-5)
    keys = ["loss", "pg_loss", "kl", "grad_norm", "trainer_rollout_logprob_gap", "update_0/loss", "update_1/loss"]
    keys += ["is_weight_mean", "is_weight_truncated_fraction"] if correction == "tis" else []
    for key in keys:
        assert auto[key] == pytest.approx(rec[key], rel=1e-4, abs=1e-6), key
    if correction == "tis":
        assert 0 < auto["is_weight_truncated_fraction"] < 1  # the planted gaps straddle the cap
    assert auto["update_1/clip_fraction"] > 0 or auto["update_1/ppo_kl"] != 0  # the second step saw moved weights
    assert rec["time_behaviour_s"] > 0 and auto["time_behaviour_s"] > 0


def test_train_step_moves_logprobs_with_the_advantage_and_checkpoints_round_trip(tiny_grpo_checkpoint, tmp_path):
    from rl.trainer import sequence_logprobs

    trainer = _trainer(tiny_grpo_checkpoint, kl_coef=0.0)
    batch = _toy_batch(trainer.tokenizer.pad_token_id)
    lp = lambda: (sequence_logprobs(trainer.policy, batch.input_ids, batch.attention_mask, micro_batch=8)[0].detach() * batch.response_mask).sum(-1)  # noqa: E731
    before = lp()
    metrics = trainer.train_step(batch)
    delta = lp() - before
    # the surrogate improves, and the sequences with the largest |advantage| move their way (Adam's first step is
    # sign-like per parameter, so a small-advantage sequence sharing parameters may move against its sign)
    assert (batch.advantages * delta).sum() > 0, delta
    big = batch.advantages.abs() >= 1.0
    assert (torch.sign(delta[big]) == torch.sign(batch.advantages[big])).all(), delta
    for key in ("loss", "pg_loss", "entropy", "clip_fraction", "grad_norm", "lr", "time_train_s"):
        assert key in metrics and math.isfinite(metrics[key])
    trainer.save(tmp_path / "ckpt", {"step": 1})
    again = _trainer(tiny_grpo_checkpoint, kl_coef=0.0)
    assert again.load(tmp_path / "ckpt") == {"step": 1} and again.step == 1
    assert again.parameter_checksum() == pytest.approx(trainer.parameter_checksum(), rel=1e-9)
    # the same next step from the restored state as from the live one
    m1, m2 = trainer.train_step(batch), again.train_step(batch)
    assert m1["loss"] == pytest.approx(m2["loss"], rel=1e-6) and m1["grad_norm"] == pytest.approx(m2["grad_norm"], rel=1e-5)


def test_resume_with_a_new_weight_decay_takes_it_even_from_zero(tiny_grpo_checkpoint, tmp_path):
    """The run was saved with weight decay 0 (the GRPO default); resumed with 0.1, the matrices decay."""
    from core.sections import OptimConfig

    trainer = _trainer(tiny_grpo_checkpoint, kl_coef=0.0)
    trainer.save(tmp_path / "ckpt", {"step": 0})
    again = _trainer(tiny_grpo_checkpoint, kl_coef=0.0)
    again.load(tmp_path / "ckpt")
    again.set_optim(OptimConfig(lr_peak=1e-3, lr_warmup_steps=0, lr_min_ratio=1.0, weight_decay=0.1, adam_beta1=0.8))
    groups = {g["name"]: g for g in again.optimizer.param_groups}
    assert groups["decay"]["weight_decay"] == 0.1 and groups["no_decay"]["weight_decay"] == 0.0
    assert all(g["betas"] == (0.8, 0.95) for g in again.optimizer.param_groups)


def test_quickstart_chains_the_grpo_stage_and_table_shows_before_after():
    from core.config import load_config
    from mixrl.quickstart import chain_paths, format_table

    from mixrl.base_checkpoint import SHIPPED_BASE

    shipped = chain_paths(load_config(QuickstartConfig, None, ["run_root=/tmp/qs"]))
    assert shipped.grpo.model_path == shipped.eval.model_path == str(SHIPPED_BASE)  # the default start
    cfg = chain_paths(load_config(QuickstartConfig, None, ["run_root=/tmp/qs", "grpo.max_steps=3", "from_scratch=true"]))
    assert cfg.grpo.model_path == cfg.eval.model_path == "/tmp/qs/sft/final" and cfg.grpo.run_dir == "/tmp/qs/grpo"
    assert cfg.grpo.sources[0].path == "/tmp/qs/data/math/train.parquet" and cfg.grpo.eval.path == "/tmp/qs/data/math/test.parquet"
    pre = {"parameters": 1e6, "vocab_size": 1024, "total_seconds": 1, "steps": 1, "tokens_per_s": 1, "heldout_math_accuracy": 0.0, "checkpoint": "p"}
    sft = {"total_seconds": 1, "steps": 1, "tokens_per_s": 1, "checkpoint": "s"}
    ev = {"seconds": 1, "responses": 2, "backend": "vllm", "accuracy": {"math": {"think": 0.1, "direct": 0.1}},
          "switch_reliability": {"overall": 1.0, "single": 1.0, "multiturn": 1.0}}
    grpo = {"total_seconds": 9, "steps": 3, "heldout_accuracy_before": 0.08, "heldout_accuracy_after": 0.125, "checkpoint": "g",
            "heldout_mean_at_8_before": 0.05, "heldout_mean_at_8_after": 0.3, "max_staleness": 1}
    table = format_table(pre, sft, ev, "/tmp/qs", grpo)
    assert "RL slice" in table and "8.0% -> 12.5%" in table and "mean@8" in table and "5.0% -> 30.0%" in table
    assert "one-step async" in table
    assert "RL slice" not in format_table(pre, sft, ev, "/tmp/qs")
    per_domain = {"total_seconds": 9, "steps": 3, "checkpoint": "g", "max_staleness": 0,
                  "heldout/math/greedy_before": 0.2, "heldout/math/greedy_after": 0.35,
                  "heldout/chat/greedy_before": 0.41, "heldout/chat/greedy_after": 0.52}
    table = format_table(pre, sft, ev, "/tmp/qs", per_domain)
    assert "math" in table and "20.0% -> 35.0%" in table and "41.0% -> 52.0%" in table and "synchronous" in table
    per_domain["heldout/chat/greedy_before"], per_domain["heldout/chat/greedy_after"] = -0.88, 2.73  # an RM's score
    assert "-0.88 -> 2.73" in format_table(pre, sft, ev, "/tmp/qs", per_domain)


def test_thinking_mode_on_a_template_that_cannot_express_it_fails_before_anything_starts(tiny_grpo_checkpoint, tmp_path):
    """A Qwen2.5-style template ignores enable_thinking: a recipe asking for thinking mode stops at start, naming
    the fix, instead of training with a switch that silently does nothing."""
    from core.chat import ChatTemplateError
    from rl.grpo import run_grpo
    from tests.core.foreign_tokenizers import foreign_tokenizer
    from tests.rl.conftest import grpo_test_config

    foreign_tokenizer("qwen2.5").save_pretrained(tmp_path / "qwen")
    cfg = grpo_test_config({"model": str(tmp_path / "qwen"), "data": tiny_grpo_checkpoint["data"]}, tmp_path / "run")
    assert any(s.mode != "direct" for s in cfg.sources)  # the ifeval source is mixed
    with pytest.raises(ChatTemplateError, match="mixrl sft"):
        run_grpo(cfg)


def test_lean_activations_make_the_same_update(tiny_grpo_checkpoint):
    """`trainer.lean_activations` (the default) swaps the policy's and the reference's MLPs and norms for
    `core.lean_ops`' and makes the same update as the modules' own forward and backward."""
    runs = {}
    for lean in (True, False):
        trainer = _trainer(tiny_grpo_checkpoint, kl_coef=0.1, trainer_cfg={"lean_activations": lean})
        assert trainer.lean_ops == ({"mlp": 2, "norm": 5, "left": 0} if lean else None)
        metrics = trainer.train_step(_toy_batch(trainer.tokenizer.pad_token_id))
        runs[lean] = (metrics, torch.cat([p.detach().flatten() for p in trainer.policy.parameters()]))
    (lean, w_lean), (own, w_own) = runs[True], runs[False]
    torch.testing.assert_close(w_lean, w_own, rtol=0, atol=1e-6)
    for key in ("loss", "pg_loss", "kl", "grad_norm", "entropy"):
        assert lean[key] == pytest.approx(own[key], rel=1e-5, abs=1e-7), key
