"""The GRPO pipeline: rollout side and trainer side overlapped, one step apart (report §4.3.1).

Run:
    mixrl train recipes/grpo_math_tiny.yaml [max_staleness=0 ...]          # 0 = the synchronous baseline
    mixrl train recipes/grpo_math_tiny.yaml resume=runs/grpo_math_tiny     # continue a run

Timeline with `max_staleness: 1` (v_t = the weights after t updates; B_t = the batch step t trains on):

    rollout side:  | gen B0 (v0) | gen B1 (v0)        |sync v1| gen B2 (v1)        |sync v2| ...
    trainer side:  |   (waits)   | train B0 -> v1     |       | train B1 -> v2     |       | ...

Generating B_{t+1} with v_t overlaps training on B_t; the weights move at the step boundary, when neither side
is mid-batch, so generation stalls only for the transfer itself. With k = `max_staleness` the rollout side runs
up to k batches ahead (B_j is generated while the engines hold v_{j-k} or newer); k = 0 generates every batch
with the trainer's current weights (the synchronous trainer). Every step checks the bound on the samples
themselves (each carries the engine's weight version): a group older than k versions is regenerated with the
current weights before training, and `staleness_max` / `staleness_mean` / `stale_regenerated_groups` are logged.

Off-policy correction (explicit, `AlgoConfig.off_policy_correction`): the PPO ratio is taken against the
trainer's recomputed logprobs of its current weights (the proximal policy), and each token of a stale sample is
re-weighted from the behaviour policy that drew it (vLLM's sampling logprobs) by min(π_prox/π_behav, tis_cap):
decoupled PPO with truncated importance sampling (`rl.algos.truncated_importance_weights`).

Rewards are computed on the rollout side as each request finishes (`rl.actors.RolloutActor.rollout`); requests
are spread over the engines by load (`rl.scheduler.EnginePool`); a crashed engine is restarted, gets the current
weights, and its requests are re-run (the step goes on with every sample exactly once).

Per step the run logs how long each side waited on the other (`wait_trainer_s`: the trainer idle waiting for
rollouts; `wait_rollout_s`: the engines idle waiting for new weights) so that the placement split
(`placement:`) can be balanced. A checkpoint holds the batches already generated ahead, so a resumed run trains
on exactly the samples an uninterrupted one would have.
"""

from __future__ import annotations

import json
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path

from rl.actors import connect_weight_transfer, ensure_ray, new_rollout_actor, new_trainer_actor, sync_weights
from rl.grpo_config import GRPOConfig
from rl.loop import (build_reward_router, compute_advantages, evaluate, latest_checkpoint, load_sources, render_prompt,
                     reward_metrics, save_checkpoint, step_prompts, step_sampling)
from rl.rollout import RolloutSample
from rl.scheduler import DispatchStats, EnginePool, rollout_items

PENDING_FILE = "pending_rollouts.pkl"


@dataclass
class RolloutBatch:
    """The rollouts of one step, scored."""

    step: int
    items: list[dict]  # the step's prompts: {"source", "row", "think"}
    groups: list[list[RolloutSample]]  # one group per prompt
    results: list  # RewardResult per sample, group by group
    dispatch: DispatchStats | None = None
    time_generate_s: float = 0.0  # wall seconds of the batch on the rollout side (scoring overlapped)
    time_reward_s: float = 0.0  # scoring seconds summed over requests (each overlapped with generation)
    regenerated_groups: int = 0
    group_results: list[list] = field(default_factory=list)

    def staleness(self, trainer_version: int) -> list[int]:
        return [trainer_version - s.weight_version for g in self.groups for s in g]


def stale_groups(groups: list[list[RolloutSample]], trainer_version: int, max_staleness: int) -> list[int]:
    """Indices of groups holding a sample drawn more than `max_staleness` weight versions ago."""
    return [gi for gi, g in enumerate(groups) if any(trainer_version - s.weight_version > max_staleness for s in g)]


def sample_meta(item: dict, group_id: int) -> dict:
    """What the reward of a sample of this prompt needs (keyword arguments of `rewards.Sample` but the response)."""
    row = item["row"]
    return {"data_source": row["data_source"], "ground_truth": row["reward_model"]["ground_truth"], "ability": row.get("ability"),
            "prompt": row["prompt"][-1]["content"], "group_id": str(group_id), "thinking": item["think"],
            "extra_info": row.get("extra_info")}


class RolloutSide:
    """The engines of a run, the scheduler over them, their weights, and the batches they generate."""

    def __init__(self, cfg: GRPOConfig, tokenizer, rows: dict[str, list[dict]], trainer, engines: list | None = None):
        self.cfg, self.tokenizer, self.rows, self.trainer = cfg, tokenizer, rows, trainer
        self.given = list(engines or [])
        self.fresh: set[int] = set()
        self.version = 0
        self.length_router = None  # group length terms when samples of a group are scored apart
        s = cfg.scheduler
        self.pool = EnginePool(self._factory, max(cfg.placement.rollout_engines, len(self.given)), dispatch=s.dispatch,
                               balance_by=s.balance_by, max_inflight_per_engine=s.max_inflight_per_engine,
                               max_restarts=s.max_restarts, on_restart=self._restart)

    def _factory(self, engine: int):
        if engine < len(self.given) and self.given[engine] is not None:
            actor, self.given[engine] = self.given[engine], None  # a given engine is used once, never recreated
            return actor
        self.fresh.add(engine)
        return new_rollout_actor(self.cfg, self.cfg.model_path, engine)

    def start(self) -> None:
        """Start the new engines, give every engine the run's rewards and a weight-transfer group."""
        import ray

        ray.get([self.pool.engines[i].start.remote() for i in sorted(self.fresh)])
        ray.get([e.configure_rewards.remote(self.cfg) for e in self.pool.engines])
        for i, engine in enumerate(self.pool.engines):
            connect_weight_transfer(self.cfg, self.trainer, engine, i)

    def _restart(self, engine: int, actor) -> None:
        """A replacement for a crashed engine: started, given the rewards, the transfer group and the weights."""
        import ray

        print(f"[grpo] rollout engine {engine} died; restarting it with weight version {self.version}", flush=True)
        ray.get(actor.start.remote())
        ray.get(actor.configure_rewards.remote(self.cfg))
        connect_weight_transfer(self.cfg, self.trainer, actor, engine)
        sync_weights(self.trainer, actor, self.version, engine)

    def sync(self, version: int) -> tuple[int, float, int]:
        """The trainer's weights to every engine as `version`; returns (version, seconds, bytes)."""
        t0, sent = time.perf_counter(), 0
        for i, engine in enumerate(self.pool.engines):
            got, _, n = sync_weights(self.trainer, engine, version, i)
            if got != version:
                raise RuntimeError(f"engine {i} reports weight version {got} after a sync to {version}")
            sent += n
        self.version = version
        return version, time.perf_counter() - t0, sent

    def generate(self, step: int, only: list[int] | None = None) -> RolloutBatch:
        """The scored rollouts of step `step` (or only the groups `only` of it) with the engines' current weights."""
        from rewards import Sample

        cfg = self.cfg
        t0 = time.perf_counter()
        items = step_prompts(cfg, self.rows, step)
        chosen = list(range(len(items))) if only is None else list(only)
        prompt_ids = [render_prompt(self.tokenizer, items[gi]["row"], items[gi]["think"]) for gi in chosen]
        settings = step_sampling(cfg, step)
        per_sample = not cfg.scheduler.keep_groups_together
        work = rollout_items(prompt_ids, settings, per_sample=per_sample)
        n = settings.samples_per_prompt
        for w in work:  # seeds of the prompt's place in the whole step, whichever subset is generated
            w.payload.settings.seed = settings.seed + chosen[w.payload.prompt] * n + w.payload.sample
        metas = [sample_meta(items[gi], gi) for gi in chosen]

        def submit(actor, w):
            return actor.rollout.remote(w.payload, metas[w.payload.prompt], step, not per_sample)

        outs, stats = self.pool.run(work, submit)
        groups: dict[int, list] = {}
        for w, out in zip(work, outs):
            groups.setdefault(w.payload.prompt, []).extend(
                (w.payload.sample + j, s, r) for j, (s, r) in enumerate(zip(out["samples"], out["results"])))
        batch_groups, batch_results = [], []
        for p in sorted(groups):
            triples = sorted(groups[p], key=lambda t: t[0])
            samples, results = [t[1] for t in triples], [t[2] for t in triples]
            if per_sample:  # the group-overlong term needs the whole group
                if self.length_router is None:
                    from rewards import RewardRouter, reward_config_from_dict

                    self.length_router = RewardRouter(reward_config_from_dict(cfg.rewards))
                self.length_router.add_length_terms(
                    [Sample(response=s.text, response_tokens=len(s.response_ids), **metas[p]) for s in samples], results, step)
            batch_groups.append(samples)
            batch_results.append(results)
        return RolloutBatch(step, [items[gi] for gi in chosen], batch_groups, [r for g in batch_results for r in g], stats,
                            time_generate_s=time.perf_counter() - t0,
                            time_reward_s=sum(o["time_reward_s"] for o in outs), group_results=batch_results)

    def enforce_staleness(self, batch: RolloutBatch, trainer_version: int, max_staleness: int) -> RolloutBatch:
        """Regenerate (with the current weights) every group older than `max_staleness` versions."""
        stale = stale_groups(batch.groups, trainer_version, max_staleness)
        if not stale:
            return batch
        print(f"[grpo] step {batch.step}: {len(stale)} group(s) older than {max_staleness} version(s); regenerating", flush=True)
        fresh = self.generate(batch.step, only=stale)
        for gi, group, results in zip(stale, fresh.groups, fresh.group_results):
            batch.groups[gi], batch.group_results[gi] = group, results
        batch.results = [r for g in batch.group_results for r in g]
        batch.regenerated_groups += len(stale)
        batch.time_generate_s += fresh.time_generate_s
        return batch

    def shutdown(self, keep: list | None = None) -> None:
        import ray

        for i, engine in enumerate(self.pool.engines):
            if i in self.fresh or keep is None:
                try:
                    ray.get(engine.shutdown.remote())
                except ray.exceptions.RayActorError:  # already dead (crashed or killed): nothing to drain
                    pass
                ray.kill(engine)


def run_grpo(cfg: GRPOConfig, *, rollout=None) -> dict:
    """Train; returns the summary. `rollout`: an already started rollout actor to use as engine 0 (tests share
    one engine; its weights are overwritten by a sync before the first step, and it is left running)."""
    import ray
    from transformers import AutoTokenizer

    from rl.config import write_resolved_config
    from rl.trainer import build_batch
    from sft.metrics import MetricsLogger

    if cfg.max_staleness < 0:
        raise ValueError(f"max_staleness must be >= 0, got {cfg.max_staleness}")
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_resolved_config(cfg, run_dir)
    ensure_ray(cfg)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model_path)
    rows = load_sources(cfg.sources)
    build_reward_router(cfg).close()  # fail here, not in an engine, on a bad reward config or registry
    trainer = new_trainer_actor(cfg)

    start_step, ahead = 0, {}
    if cfg.resume:
        ckpt = latest_checkpoint(cfg.resume)
        if ckpt is None:
            raise FileNotFoundError(f"resume={cfg.resume}: no complete checkpoint under {cfg.resume}/checkpoints")
        start_step = ray.get(trainer.load.remote(str(ckpt)))["step"]
        ray.get(trainer.set_optim.remote(cfg.trainer.optim))  # hyperparameters of this invocation win
        if (ckpt / PENDING_FILE).exists() and cfg.max_staleness > 0:
            ahead = {s: b for s, b in pickle.loads((ckpt / PENDING_FILE).read_bytes()).items()
                     if start_step <= s <= start_step + cfg.max_staleness}
        print(f"[grpo] resuming from {ckpt} at step {start_step} ({len(ahead)} batch(es) generated ahead)", flush=True)
    side = RolloutSide(cfg, tokenizer, rows, trainer, engines=[rollout] if rollout is not None else None)
    side.start()
    version, _, _ = side.sync(start_step)  # the engines now hold exactly the trainer's weights

    k = cfg.max_staleness
    stop = min(cfg.max_steps, start_step + cfg.stop_after_steps) if cfg.stop_after_steps else cfg.max_steps
    summary: dict = {"run_dir": str(run_dir), "start_step": start_step, "max_staleness": k}
    before = evaluate(cfg, side.pool.engines[0], tokenizer) if start_step == 0 else None
    if before:
        summary.update({f"{k_}_before": v for k_, v in before.items()})
        print(f"[grpo] held-out before: {json.dumps(before)}", flush=True)
    with MetricsLogger(run_dir, stage="grpo", total_steps=cfg.max_steps, print_every=cfg.log_every_steps) as log:
        for step in range(start_step, stop):
            t0 = time.perf_counter()
            gen_s = 0.0
            if step not in ahead:  # k = 0, or the first step of a run: generated now, with the current weights
                ahead[step] = side.generate(step)
                gen_s += ahead[step].time_generate_s
            batch = side.enforce_staleness(ahead.pop(step), trainer_version=step, max_staleness=k)
            staleness = batch.staleness(step)
            group_ids = [gi for gi, g in enumerate(batch.groups) for _ in g]
            sources = [batch.items[gi]["source"] for gi in group_ids]
            adv, scored = compute_advantages(cfg, batch.results, group_ids, sources)
            flat = [s for g in batch.groups for s in g]
            train_batch = build_batch([(s.prompt_ids, s.response_ids, s.response_logprobs) for s in flat], adv.tolist(), scored,
                                      tokenizer.pad_token_id)
            t_launch = time.perf_counter()
            train_ref = trainer.train_step.remote(train_batch)
            overlap_s = 0.0
            for ahead_step in range(step + 1, min(stop, step + k + 1)):  # the batches the staleness bound allows
                if ahead_step not in ahead:
                    ahead[ahead_step] = side.generate(ahead_step)
                    overlap_s += ahead[ahead_step].time_generate_s
            train = ray.get(train_ref)
            t_train_done = time.perf_counter()
            version, t_sync, sent = side.sync(step + 1)
            wall = time.perf_counter() - t0
            gen_s += overlap_s
            trainer_busy = train["time_reference_s"] + train["time_train_s"]
            gen_tokens = sum(len(s.response_ids) for s in flat)
            metrics = {**reward_metrics(batch.items, batch.groups, batch.results),
                       **{k_: v for k_, v in train.items() if k_ != "trained_tokens"},
                       "time_generate_s": gen_s, "time_reward_s": batch.time_reward_s, "time_sync_s": t_sync, "sync_bytes": float(sent),
                       "time_step_s": wall, "time_overlap_s": min(overlap_s, t_train_done - t_launch),
                       "wait_trainer_s": max(0.0, wall - t_sync - trainer_busy), "wait_rollout_s": max(0.0, wall - t_sync - gen_s),
                       "generate_tokens_per_s": gen_tokens / max(batch.time_generate_s, 1e-9), "weight_version": float(version),
                       "staleness_max": float(max(staleness)), "staleness_mean": sum(staleness) / len(staleness),
                       "stale_regenerated_groups": float(batch.regenerated_groups)}
            if batch.dispatch is not None:
                metrics.update(batch.dispatch.metrics())
            done = step + 1
            if cfg.eval.prompts and cfg.eval.every_steps and done % cfg.eval.every_steps == 0 and done != cfg.max_steps:
                metrics.update(evaluate(cfg, side.pool.engines[0], tokenizer) or {})
            log.log(done, metrics, tokens=gen_tokens)
            if done == stop or (cfg.checkpoint_every_steps and done % cfg.checkpoint_every_steps == 0):
                save_checkpoint(cfg, trainer, done, extra_files={PENDING_FILE: pickle.dumps(dict(ahead))})
        log.plot(["reward", "accuracy", "kl", "entropy", "response_tokens_mean", "grad_norm", "time_step_s", "staleness_mean"])
    after = evaluate(cfg, side.pool.engines[0], tokenizer) if stop == cfg.max_steps else None
    if after:
        summary.update({f"{k_}_after": v for k_, v in after.items()})
        print(f"[grpo] held-out after: {json.dumps(after)}", flush=True)
    summary.update({"steps": stop, "weight_version": version, "checkpoint": str(latest_checkpoint(run_dir)),
                    "parameter_checksum": ray.get(trainer.parameter_checksum.remote())})
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    ray.kill(trainer)
    side.shutdown(keep=[rollout] if rollout is not None else None)
    return summary
