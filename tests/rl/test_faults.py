"""Fault injection (issue 18): no input, crash or file can poison a GRPO run; failures come early and loud.

Each test injects one fault the way it happens in practice — a reward model answering inf or garbage, a NaN step,
a second run in the same folder, a crafted checkpoint, a full disk, a bad recipe value, a model folder without
weights, a dead sandbox — and asserts the run refuses it with an error that names the cause. The checks that must
come before Ray assert that Ray was never started. Only the last test starts vLLM (the shared engine): one short
run with a dead reward domain, checkpointed and resumed.

    .venv/bin/python -m pytest tests/rl/test_faults.py -q
"""

from __future__ import annotations

import errno
import math
import os
import pickle
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rewards import RewardResult, RewardRouter, Sample
from tests.rl.conftest import grpo_test_config


# ---- shared: a tiny policy folder (no vLLM needed) ---------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer) -> Path:
    from core.model import build_model, save_checkpoint
    from core.sections import ModelConfig

    cfg = ModelConfig(hidden_size=32, num_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                      max_position_embeddings=256)
    return save_checkpoint(build_model(cfg, tokenizer, seed=0), tokenizer, tmp_path_factory.mktemp("faults") / "model")


def _trainer(model_dir: Path, **trainer_overrides):
    from rl.config import AlgoConfig, GRPOTrainerConfig
    from rl.trainer import PolicyTrainer

    cfg = GRPOTrainerConfig(device="cpu", micro_batch_sequences=4, **trainer_overrides)
    return PolicyTrainer(str(model_dir), cfg, AlgoConfig(kl_coef=0.0), total_steps=10)


def _batch(advantage: float):
    from rl.trainer import build_batch

    seqs = [([5, 6, 7], [8, 9, 10, 11], [-1.0, -1.2, -0.9, -1.1]), ([5, 6], [12, 13, 14], [-0.8, -1.0, -1.3])]
    return build_batch(seqs, [advantage, -1.0], [True, True], pad_id=0)


def _params(trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.policy.parameters()]


class _Evil:
    """A pickle payload that creates a marker file when unpickled (what a crafted checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ---- finding 2: rewards are not trusted blindly -----------------------------------------------------------


class _AnsweringRM:
    """A reward-model client that answers the given scores, whatever they are."""

    def __init__(self, scores):
        self.scores = scores

    def score(self, requests):
        return list(self.scores[: len(requests)])


def test_nonfinite_or_garbage_reward_model_scores_are_masked_with_a_named_error():
    router = RewardRouter(rm_client=_AnsweringRM([math.inf, math.nan, "garbage", 0.5, -math.inf, None]))
    samples = [Sample("mixrl/synthetic_chat", f"answer {i}", "", prompt="hi", group_id=0) for i in range(6)]
    try:
        results = router.score_batch(samples)
    finally:
        router.close()
    assert [r.reward for r in results][3] == 0.5
    for i in (0, 1, 2, 4, 5):
        assert results[i].reward is None, (i, results[i])
    assert "non-finite reward inf from reward model 'chat-rm'" in results[0].error
    assert "non-finite reward nan from reward model 'chat-rm'" in results[1].error
    assert "non-numeric score 'garbage'" in results[2].error
    assert "non-finite reward -inf" in results[4].error
    assert all(math.isfinite(r.reward) for r in results if r.reward is not None)


def test_nonfinite_length_term_or_base_masks_through_add_length_terms():
    """The rollout side adds group length terms later (`add_length_terms`): that path masks non-finite too."""
    router = RewardRouter()
    try:
        samples = [Sample("mixrl/synthetic_math", "\\boxed{3}", "3", group_id=0, response_tokens=n) for n in (4, 8)]
        results = router.score_batch(samples, length_terms=False)
        results[1].reward = math.inf  # a component gone wrong upstream
        router.add_length_terms(samples, results)
    finally:
        router.close()
    assert math.isfinite(results[0].reward)
    assert results[1].reward is None and "non-finite reward inf" in results[1].error


def test_trainer_refuses_a_nonfinite_step_then_raises_after_max_nonfinite_steps(model_dir):
    from rl.trainer import NonFiniteStepError

    trainer = _trainer(model_dir, max_nonfinite_steps=3)
    before = _params(trainer)
    metrics = trainer.train_step(_batch(math.inf))  # an inf advantage makes the loss and gradients non-finite
    assert metrics["nonfinite_skipped"] == 1.0
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters()))  # no optimizer step
    assert all(p.grad is None for p in trainer.policy.parameters())  # and no NaN gradients left behind
    ok = trainer.train_step(_batch(1.0))  # a finite step trains and resets the count
    assert ok["nonfinite_skipped"] == 0.0 and math.isfinite(ok["grad_norm"])
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters()))
    trainer.train_step(_batch(math.nan))
    trainer.train_step(_batch(math.inf))
    with pytest.raises(NonFiniteStepError, match=r"3 consecutive non-finite steps.*trainer.max_nonfinite_steps"):
        trainer.train_step(_batch(math.inf))
    assert all(torch.isfinite(p).all() for p in trainer.policy.parameters())


def test_a_nonfinite_policy_is_never_checkpointed(model_dir, tmp_path):
    from core.checkpoint import checkpoints_dir, save_checkpoint
    from rl.trainer import NonFiniteStepError

    trainer = _trainer(model_dir)
    name, param = next(iter(trainer.policy.named_parameters()))
    with torch.no_grad():
        param[0, 0] = math.nan
    with pytest.raises(NonFiniteStepError, match=name.replace(".", r"\.")):
        save_checkpoint(tmp_path, 1, lambda folder: trainer.save(folder, {"step": 1}), keep=2)
    assert not any(checkpoints_dir(tmp_path).iterdir())  # neither step_1 nor its temporary folder


# ---- finding 7: the run directory, checkpoint files, the disk ----------------------------------------------


def test_second_run_in_the_same_run_dir_fails_at_once_naming_the_holder(tmp_path, model_dir):
    import ray

    from core.run_dir import RunDirBusyError, hold_run_dir
    from rl.grpo import run_grpo

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from core.run_dir import hold_run_dir\n"
                               f"with hold_run_dir({str(tmp_path)!r}):\n print('held', flush=True); time.sleep(60)"],
                              cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        ray_before = ray.is_initialized()
        cfg = grpo_test_config({"model": str(model_dir), "data": str(tmp_path / "no-data")}, tmp_path)
        t0 = time.perf_counter()
        with pytest.raises(RunDirBusyError, match=rf"pid {holder.pid}"):
            run_grpo(cfg)
        assert time.perf_counter() - t0 < 3.0
        assert ray.is_initialized() == ray_before
        with pytest.raises(RunDirBusyError, match=str(tmp_path)):
            with hold_run_dir(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with hold_run_dir(tmp_path):  # released when its holder dies
        with pytest.raises(RunDirBusyError, match=rf"pid {os.getpid()}"):  # and exclusive within a process too
            with hold_run_dir(tmp_path):
                pass


class _TrainerNotToTouch:
    def load(self, path):  # the refusal must come before anything is loaded
        raise AssertionError("trainer state loaded from a checkpoint with a crafted pending file")

    def set_optim(self, optim):
        raise AssertionError("unreachable")


def test_a_crafted_pending_rollouts_pickle_is_refused_without_running_it(tmp_path):
    from rl.checkpoint import restore_grpo_checkpoint

    marker = tmp_path / "pwned"
    ckpt = tmp_path / "run" / "checkpoints" / "step_1"
    ckpt.mkdir(parents=True)
    (ckpt / "pending_rollouts.pkl").write_bytes(pickle.dumps({2: _Evil(marker)}))
    cfg = grpo_test_config({"model": "m", "data": "d"}, tmp_path / "run", resume="auto", max_staleness=1)
    with pytest.raises(Exception, match="pending_rollouts.pkl"):
        restore_grpo_checkpoint(cfg, _TrainerNotToTouch())
    assert not marker.exists()


def test_pending_rollouts_round_trip_through_json(tmp_path):
    from core.engine import RolloutSample
    from rl.checkpoint import load_pending, save_pending
    from rl.prompts import StepPrompt
    from rl.rollout import RolloutBatch, ScoredGroup
    from rl.scheduler import DispatchStats, EngineStats

    row = {"data_source": "mixrl/synthetic_math", "prompt": [{"role": "user", "content": "1+2?"}],
           "reward_model": {"ground_truth": "3"}, "extra_info": {"difficulty": 2, "tags": ["a"]}}
    sample = RolloutSample([1, 2], [3, 4], [-0.12345678901234567, -2.5], "\\boxed{3}", "stop", 4)
    reward = RewardResult(1.05, {"answer": 1.0, "length": 0.05}, {"pred": "3", "correct": True}, None, "math")
    masked = RewardResult(None, {"format": 1.0}, {}, "verification timeout: 5s", "math")
    batch = RolloutBatch(7, [ScoredGroup(StepPrompt("math", row, True), [sample, sample], [reward, masked])],
                         DispatchStats("continuous", 1.5, [EngineStats(items=2, busy_s=1.0)], 0, [1], [0]),
                         time_generate_s=2.0, time_reward_s=0.5, regenerated_groups=1)
    save_pending(tmp_path, {7: batch})
    assert not list(tmp_path.glob("*.pkl"))
    assert load_pending(tmp_path) == {7: batch}


def test_a_crafted_trainer_state_is_refused_without_running_it(model_dir, tmp_path):
    trainer = _trainer(model_dir)
    random.seed(123)
    np.random.seed(7)
    trainer.save(tmp_path / "ok", {"step": 3})
    py_state, np_draw = random.getstate(), np.random.rand()
    random.random()
    fresh = _trainer(model_dir)
    assert fresh.load(tmp_path / "ok") == {"step": 3}  # the honest checkpoint loads with weights_only=True
    assert random.getstate() == py_state and np.random.rand() == np_draw  # RNG states restored exactly

    shutil.copytree(tmp_path / "ok", tmp_path / "crafted")
    marker = tmp_path / "pwned"
    blob = torch.load(tmp_path / "ok" / "trainer_state.pt", weights_only=True)
    blob["extra"] = {"step": _Evil(marker)}
    torch.save(blob, tmp_path / "crafted" / "trainer_state.pt")
    with pytest.raises(Exception, match="trainer_state.pt"):
        fresh.load(tmp_path / "crafted")
    assert not marker.exists()


def test_sft_state_loads_with_weights_only_and_refuses_a_crafted_one(tmp_path, tiny_model):
    from core.optim import build_optimizer
    from core.sections import OptimConfig
    from sft.train_loop import STATE_FILE, load_training_state, save_training_state

    optim = OptimConfig()
    opt = build_optimizer(tiny_model, optim)
    rng = random.Random(5)
    path = save_training_state(tmp_path, tiny_model, opt, rng, step=2, order=[3, 1], trained_tokens=10, keep=2)
    rng2 = random.Random(0)
    assert load_training_state(path, tiny_model, opt, rng2, optim) == (2, [3, 1], 10)
    assert rng2.getstate() == rng.getstate()
    marker = tmp_path / "pwned"
    torch.save({"step": _Evil(marker)}, path / STATE_FILE)
    with pytest.raises(Exception, match=STATE_FILE):
        load_training_state(path, tiny_model, opt, rng2, optim)
    assert not marker.exists()


def test_a_full_disk_removes_the_partial_checkpoint_and_names_the_folder(tmp_path):
    from core.checkpoint import checkpoints_dir, list_checkpoints, save_checkpoint

    stale = checkpoints_dir(tmp_path) / ".tmp_step_9"  # left by a run killed mid-write
    stale.mkdir(parents=True)

    def fills_the_disk(folder: Path) -> None:
        (folder / "policy.bin").write_bytes(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=rf"no space left.*{checkpoints_dir(tmp_path)}.*free") as err:
        save_checkpoint(tmp_path, 10, fills_the_disk, keep=2)
    assert err.value.errno == errno.ENOSPC
    assert not list(checkpoints_dir(tmp_path).glob(".tmp_step_*"))  # neither this one nor the stale one
    assert list_checkpoints(tmp_path) == []


# ---- finding 8: failures early and loud ------------------------------------------------------------------


@pytest.fixture()
def no_ray(monkeypatch):
    """Fails the test if the run gets as far as starting Ray."""
    import rl.grpo

    def started(cfg):
        raise AssertionError("Ray was started before the recipe was checked")

    monkeypatch.setattr(rl.grpo, "ensure_ray", started)


@pytest.mark.parametrize("overrides, key", [
    ({"max_steps": -3}, "max_steps"),
    ({"prompts_per_step": 0}, "prompts_per_step"),
    ({"rollout": {"samples_per_prompt": 0}}, "rollout.samples_per_prompt"),
    ({"rollout": {"samples_per_prompt": 1}}, "rollout.samples_per_prompt"),
    ({"rollout": {"max_response_tokens": 0}}, "rollout.max_response_tokens"),
    ({"rollout": {"temperature": 0.0}}, "rollout.temperature"),
    ({"trainer": {"optim": {"lr_peak": math.nan}}}, "trainer.optim.lr_peak"),
    ({"trainer": {"max_nonfinite_steps": 0}}, "trainer.max_nonfinite_steps"),
    ({"algo": {"clip_ratio_low": -0.1}}, "algo.clip_ratio_low"),
    ({"algo": {"kl_coef": math.inf}}, "algo.kl_coef"),
])
def test_bad_numbers_fail_before_ray_naming_the_key(tmp_path, model_dir, no_ray, overrides, key):
    from core.config import ConfigError
    from rl.grpo import run_grpo

    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        run_grpo(grpo_test_config({"model": str(model_dir), "data": str(tmp_path)}, tmp_path / "run", **overrides))
    assert time.perf_counter() - t0 < 3.0


def test_a_model_folder_without_weights_fails_before_ray_naming_the_folder(tmp_path, model_dir, no_ray):
    from core.config import ConfigError
    from rl.grpo import run_grpo

    broken = tmp_path / "no_weights"
    shutil.copytree(model_dir, broken, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"model_path.*{broken}.*weights"):
        run_grpo(grpo_test_config({"model": str(broken), "data": str(tmp_path)}, tmp_path / "run"))
    assert time.perf_counter() - t0 < 3.0
    with pytest.raises(ConfigError, match=rf"model_path.*{tmp_path / 'missing'}"):
        run_grpo(grpo_test_config({"model": str(tmp_path / "missing"), "data": str(tmp_path)}, tmp_path / "run"))


def test_an_unreachable_sandbox_fails_before_ray_naming_the_url(tmp_path, model_dir, no_ray):
    from core.config import ConfigError
    from rl.actors import free_port
    from rl.grpo import run_grpo

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"sandbox_url.*{url}"):
        run_grpo(grpo_test_config({"model": str(model_dir), "data": str(tmp_path)}, tmp_path / "run", sandbox_url=url))
    assert time.perf_counter() - t0 < 3.0


def test_a_registry_without_the_reward_model_fails_before_ray(tmp_path, model_dir, no_ray):
    import pandas as pd

    from core.config import ConfigError
    from rl.grpo import run_grpo

    data = tmp_path / "chat.jsonl"
    (tmp_path / "registry").mkdir()  # a registry that answers, with no service registered
    pd.DataFrame([{"data_source": "mixrl/synthetic_chat", "ability": "chat", "prompt": [{"role": "user", "content": "hi"}],
                   "reward_model": {"style": "model", "ground_truth": ""}, "extra_info": {}}]).to_json(data, orient="records", lines=True)
    cfg = grpo_test_config({"model": str(model_dir), "data": str(tmp_path)}, tmp_path / "run",
                           sources=[{"name": "chat", "path": str(data)}], reward_model_registry=f"local:{tmp_path / 'registry'}")
    with pytest.raises(ConfigError, match=r"reward_model_registry.*'chat-rm'"):
        run_grpo(cfg)

    from reward_services.registry import LocalRegistry
    from reward_services.types import Instance
    from rl.preflight import check_reward_services

    LocalRegistry(tmp_path / "registry").register(Instance("chat-rm", "127.0.0.1:1"), ttl_s=60)
    check_reward_services(cfg)  # a registered service passes


def test_a_fully_masked_domain_is_named_per_step(capsys):
    from core.engine import RolloutSample
    from rl.grpo import reward_metrics
    from rl.prompts import StepPrompt
    from rl.rollout import RolloutBatch, ScoredGroup

    sample = RolloutSample([1], [2, 3], [-1.0, -1.0], "hi", "stop", 0)
    dead = "reward model 'chat-rm' failed: NoInstancesError: no live instance"
    chat = [ScoredGroup(StepPrompt("chat", {}, False), [sample] * 4, [RewardResult(None, error=dead)] * 4) for _ in range(2)]
    math_ = ScoredGroup(StepPrompt("math", {}, False), [sample] * 4,
                        [RewardResult(1.0, {"answer": 1.0})] * 3 + [RewardResult(None, error="verification timeout")])
    metrics = reward_metrics(RolloutBatch(4, chat + [math_]))
    assert metrics["masked/chat"] == 8.0 and metrics["masked/math"] == 1.0 and metrics["masked_samples"] == 9.0
    out = capsys.readouterr()
    line = out.out + out.err
    assert f"[grpo] step 5: domain chat: 8/8 samples masked ({dead})" in line
    assert "domain math" not in line  # a partly masked domain is only counted


def test_a_resumed_run_does_not_log_a_step_twice(tmp_path):
    import json

    from core.metrics import MetricsLogger

    with MetricsLogger(tmp_path, stage="grpo", total_steps=4, print_every=100) as log:
        for step in (1, 2, 3):  # the run dies after logging step 3 but before its checkpoint
            log.log(step, {"loss": float(step)})
    with MetricsLogger(tmp_path, stage="grpo", total_steps=4, print_every=100) as log:  # resumed from step 2
        for step in (3, 4):
            log.log(step, {"loss": 10.0 + step})
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in rows] == [(1, 1.0), (2, 2.0), (3, 13.0), (4, 14.0)]


# ---- one real run: a dead domain is named, the checkpoint is safe files, resume reads them -----------------


def test_a_run_names_its_dead_domain_and_resumes_from_safe_files(ray_local, shared_rollout, tiny_grpo_checkpoint, tmp_path,
                                                                 capfd):
    """Chat prompts with no reward-model service (every chat sample masked) beside math: the run trains on math,
    names the dead domain each step, checkpoints JSON + a weights-only state, and a resume reads them back."""
    import json

    from mixrl.data.chat_prompts import generate_chat
    from mixrl.data.synthetic import write_parquet
    from rl.grpo import run_grpo

    write_parquet(generate_chat(8, "train", 0), tmp_path / "chat.parquet")
    sources = [{"name": "math", "path": f"{tiny_grpo_checkpoint['data']}/math/train.parquet", "proportion": 1.0},
               {"name": "chat", "path": str(tmp_path / "chat.parquet"), "proportion": 1.0}]
    run = tmp_path / "run"
    first = run_grpo(grpo_test_config(tiny_grpo_checkpoint, run, sources=sources, max_steps=2, stop_after_steps=1),
                     rollout=shared_rollout)
    ckpt = run / "checkpoints" / "step_1"
    assert (ckpt / "pending_rollouts.json").exists() and not list(ckpt.glob("*.pkl"))  # step 2, generated ahead
    torch.load(ckpt / "trainer_state.pt", weights_only=True)
    resumed = run_grpo(grpo_test_config(tiny_grpo_checkpoint, run, sources=sources, max_steps=2, resume="auto"),
                       rollout=shared_rollout)
    assert first["steps"] == 1 and resumed["start_step"] == 1 and resumed["steps"] == 2
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert r["masked/chat"] == 8.0 and r["masked/math"] < 8.0 and r["nonfinite_skipped"] == 0.0
        assert math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"])
    out = capfd.readouterr()
    for step in (1, 2):
        assert f"[grpo] step {step}: domain chat: 8/8 samples masked (no reward-model client configured" in out.out + out.err


def test_a_stale_ray_address_file_does_not_stop_a_local_run():
    """A cluster killed without `ray stop` leaves /tmp/ray/ray_current_cluster behind; Ray's own fallback for an
    unset address would connect to it and refuse `num_cpus` ("When connecting to an existing cluster ..."). With
    `ray.address` unset and no RAY_ADDRESS, a run starts its own local Ray whatever that file says."""
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))  # short: Ray's socket paths live under it
    try:
        (tmp / "ray").mkdir()
        (tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:1")  # a dead cluster's address
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_TMPDIR": str(tmp)}
        code = ("import ray, types; from rl.actors import ensure_ray; "
                "ensure_ray(types.SimpleNamespace(ray=types.SimpleNamespace(address='', num_cpus=1))); "
                "print('cpus', ray.cluster_resources()['CPU']); ray.shutdown()")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env,
                              cwd=Path(__file__).resolve().parents[2])
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "cpus 1.0" in proc.stdout
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
