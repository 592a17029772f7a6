"""The rollout side of a GRPO run: the engines, the scheduler over them, their weights, and the scored batches.

`RolloutSide.generate(step)` renders step s's prompts through the tokenizer's chat template, spreads the
requests over the engines by load (`rl.scheduler.EnginePool`), and gets back every sample scored (rewards are
computed by the rollout actors as each request finishes, `rl.actors.RolloutActor.rollout`). A crashed engine is
restarted, gets the current weights, and its requests are re-run: the batch holds every sample exactly once.
`sync(version)` sends the trainer's weights to every engine; `enforce_staleness` regenerates groups drawn by
weights older than the bound. With partial rollouts, `generate_ahead(step)` runs `generate` in a driver thread so
that a sync can land while the batch's requests are in flight (the engines freeze them, take the weights, go on).
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from core.chat import render_prompt
from core.engine import RolloutSample
from rewards import RewardResult, RewardRouter, Sample, reward_config_from_dict
from rl.actors import RolloutResult, new_rollout_actor
from rl.config import GRPOConfig
from rl.prompts import StepPrompt, step_prompts, step_sampling
from rl.scheduler import DispatchStats, EnginePool, join_groups, rollout_items

ENGINE_STOP_S = 30.0  # how long a stopping engine may take to shut vLLM down before its actor is killed anyway


@dataclass
class ScoredGroup:
    """One prompt of a step, its group of samples and their rewards (sample order)."""

    prompt: StepPrompt
    samples: list[RolloutSample]
    rewards: list[RewardResult]


@dataclass
class RolloutBatch:
    """The scored rollouts of one step."""

    step: int
    groups: list[ScoredGroup]
    dispatch: DispatchStats | None = None
    time_generate_s: float = 0.0  # wall seconds of the batch on the rollout side (scoring overlapped)
    time_reward_s: float = 0.0  # scoring seconds summed over requests (each overlapped with generation)
    regenerated_groups: int = 0

    @property
    def samples(self) -> list[RolloutSample]:
        return [s for g in self.groups for s in g.samples]

    @property
    def rewards(self) -> list[RewardResult]:
        return [r for g in self.groups for r in g.rewards]

    def staleness(self, trainer_version: int) -> list[int]:
        """Per sample: how many weight versions behind the trainer's the weights that drew it are (its oldest
        token's, with partial rollouts)."""
        return [trainer_version - s.weight_version for s in self.samples]

    def token_staleness_mean(self, trainer_version: int) -> float:
        """Mean over response tokens of how many versions behind the trainer's the weights that sampled them are."""
        versions = [v for s in self.samples for v in s.versions()]
        return sum(trainer_version - v for v in versions) / max(1, len(versions))

    def partial_samples(self) -> int:
        """Samples whose tokens were drawn by more than one weight version (a sync landed mid-request)."""
        return sum(len(set(s.token_versions)) > 1 for s in self.samples)


def refill_seed(seed: int, step: int, refill_round: int) -> int:
    """The run seed of dynamic sampling's refill round r of step s: distinct per (seed, s, r), never the run's own.

    >>> refill_seed(0, 3, 1) != refill_seed(0, 3, 2) != refill_seed(0, 3, 0) == 0
    True
    """
    if refill_round == 0:
        return seed
    import hashlib

    digest = hashlib.sha256(f"mixrl-refill:{seed}:{step}:{refill_round}".encode()).digest()
    derived = int.from_bytes(digest[:4], "little") % (1 << 20)  # small: sampling seeds multiply it (`core.seeds`)
    return derived + 1 if derived == seed else derived


def stale_groups(groups: list[list[RolloutSample]], trainer_version: int, max_staleness: int) -> list[int]:
    """Indices of groups holding a sample drawn more than `max_staleness` weight versions ago."""
    return [gi for gi, g in enumerate(groups) if any(trainer_version - s.weight_version > max_staleness for s in g)]


def reward_template(prompt: StepPrompt, group_id: int) -> Sample:
    """The reward's view of a prompt: a `rewards.Sample` whose response the rollout actor fills in."""
    row = prompt.row
    return Sample(data_source=row["data_source"], response="", ground_truth=row["reward_model"]["ground_truth"],
                  ability=row.get("ability"), prompt=row["prompt"][-1]["content"], group_id=str(group_id),
                  thinking=prompt.think, extra_info=row.get("extra_info"), style=row["reward_model"].get("style"))


def sequence_tokens(cfg: GRPOConfig, tokenizer, rows: dict[str, list[dict]], per_source: int = 64) -> int:
    """Tokens one sequence of this run takes in an engine's KV cache (`rollout.kv_cache_seq_tokens: 0`): the longest
    prompt among `per_source` rows spread over each source, rendered as the engines get them, a quarter more for the
    rows not looked at, plus the longest response (training or held-out); at most max_model_len."""
    longest = 0
    for source in cfg.sources:
        source_rows = rows.get(source.name, [])
        n = len(source_rows)
        for i in sorted({round(k * (n - 1) / max(1, per_source - 1)) for k in range(min(n, per_source))}):
            longest = max(longest, len(render_prompt(tokenizer, source_rows[i]["prompt"], source.mode != "direct")))
    response = max(cfg.rollout.max_response_tokens, cfg.eval.max_response_tokens if cfg.eval.prompts else 0)
    return min(cfg.rollout.max_model_len, longest * 5 // 4 + response)


class RolloutSide:
    """The engines of a run, the scheduler over them, their weights, and the batches they generate."""

    def __init__(self, cfg: GRPOConfig, tokenizer, rows: dict[str, list[dict]], trainer, engines: list | None = None):
        """`trainer`: the run's `rl.trainer_group.TrainerGroup` (the weights' source). `engines`: already started
        rollout actors to use first (tests share one); the rest are created in the rollout placement group."""
        self.cfg, self.tokenizer, self.rows, self.trainer = cfg, tokenizer, rows, trainer
        # what the engines this side creates are started with: their KV cache sized from the run's own sequences
        self.engine_cfg = cfg
        if not cfg.rollout.kv_cache_seq_tokens:
            sized = dataclasses.replace(cfg.rollout, kv_cache_seq_tokens=sequence_tokens(cfg, tokenizer, rows))
            self.engine_cfg = dataclasses.replace(cfg, rollout=sized)
        self.given = list(engines or [])
        self.fresh: set[int] = set()
        self.group = None  # the placement group of the engines this side creates
        self.version = 0
        self.length_router: RewardRouter | None = None  # group length terms when samples of a group are scored apart
        self.ahead_threads: ThreadPoolExecutor | None = None  # partial rollouts: batches generated beside the syncs
        s = cfg.scheduler
        self.pool = EnginePool(self._factory, max(cfg.placement.rollout_engines, len(self.given)), dispatch=s.dispatch,
                               balance_by=s.balance_by, max_inflight_per_engine=s.max_inflight_per_engine,
                               max_restarts=s.max_restarts, on_restart=self._restart)

    def _factory(self, engine: int):
        if engine < len(self.given) and self.given[engine] is not None:
            actor, self.given[engine] = self.given[engine], None  # a given engine is used once, never recreated
            return actor
        self.fresh.add(engine)
        if self.group is None:
            from rl.trainer_group import rollout_bundles, reserve

            self.group = reserve(rollout_bundles(self.cfg.placement), self.cfg.placement.rollout_strategy, "placement.rollout_engines")
        return new_rollout_actor(self.engine_cfg, self.cfg.model_path, engine, self.group)

    def start(self) -> None:
        """Start the new engines, give every engine the run's rewards and a weight-transfer group."""
        import ray

        ray.get([self.pool.engines[i].start.remote() for i in sorted(self.fresh)])
        ray.get([e.configure_rewards.remote(self.cfg) for e in self.pool.engines])
        for i, engine in enumerate(self.pool.engines):
            self.trainer.connect(i, engine)

    def _restart(self, engine: int, actor) -> None:
        """A replacement for a crashed engine: started, given the rewards, the transfer group and the weights."""
        import ray

        print(f"[grpo] rollout engine {engine} died; restarting it with weight version {self.version}", flush=True)
        ray.get(actor.start.remote())
        ray.get(actor.configure_rewards.remote(self.cfg))
        self.trainer.connect(engine, actor)
        self.trainer.resync(engine, actor, self.version)  # the published weights, even mid-update

    def sync(self, version: int) -> tuple[int, float, int]:
        """The trainer's weights to every engine as `version`; returns (version, seconds, bytes)."""
        t0, sent = time.perf_counter(), 0
        for i, engine in enumerate(self.pool.engines):
            got, _, n = self.trainer.sync(i, engine, version)
            if got != version:
                raise RuntimeError(f"engine {i} reports weight version {got} after a sync to {version}")
            sent += n
        self.version = version
        return version, time.perf_counter() - t0, sent

    @property
    def eval_engine(self):
        """The engine held-out evaluation runs on (it holds the current weights like every other)."""
        return self.pool.engines[0]

    def generate(self, step: int, only: list[int] | None = None, refill_round: int = 0) -> RolloutBatch:
        """The scored rollouts of step `step` (or only its groups `only`) with the engines' current weights.
        `refill_round` r > 0: dynamic sampling's r-th refill of the step, new prompts and seeds drawn with the seed
        `refill_seed(seed, step, r)` (a pure function, so resume is exact)."""
        cfg = self.cfg
        if refill_round:
            cfg = dataclasses.replace(cfg, seed=refill_seed(cfg.seed, step, refill_round))
        t0 = time.perf_counter()
        prompts = step_prompts(cfg, self.rows, step)
        chosen = list(range(len(prompts))) if only is None else list(only)
        prompt_ids = [render_prompt(self.tokenizer, prompts[gi].messages, prompts[gi].think) for gi in chosen]
        per_sample = not cfg.scheduler.keep_groups_together
        # seeds of each prompt's place in the whole step, whichever subset is generated
        work = rollout_items(prompt_ids, step_sampling(cfg, step), per_sample=per_sample, positions=chosen)
        templates = [reward_template(prompts[gi], gi) for gi in chosen]

        def submit(actor, w):
            return actor.rollout.remote(w.payload, templates[w.payload.prompt], step, not per_sample)

        results: list[RolloutResult]
        results, stats = self.pool.run(work, submit)
        joined = join_groups(work, [list(zip(r.samples, r.rewards)) for r in results])
        groups = []
        for p, pairs in enumerate(joined):
            samples, rewards = [s for s, _ in pairs], [r for _, r in pairs]
            if per_sample:  # the group-overlong term needs the whole group
                self._add_length_terms(templates[p], samples, rewards, step)
            groups.append(ScoredGroup(prompts[chosen[p]], samples, rewards))
        return RolloutBatch(step, groups, stats, time_generate_s=time.perf_counter() - t0,
                            time_reward_s=sum(r.time_reward_s for r in results))

    def generate_ahead(self, step: int) -> "Future[RolloutBatch]":
        """Partial rollouts: step `step`'s batch, generated in a driver thread (`generate`), so the driver can sync
        weights while its requests are in flight; `.result()` is the batch."""
        if self.ahead_threads is None:
            self.ahead_threads = ThreadPoolExecutor(max_workers=self.cfg.max_staleness + 1, thread_name_prefix="rollout-ahead")
        return self.ahead_threads.submit(self.generate, step)

    def _add_length_terms(self, template: Sample, samples: list[RolloutSample], rewards: list[RewardResult], step: int) -> None:
        if self.length_router is None:
            self.length_router = RewardRouter(reward_config_from_dict(self.cfg.rewards))
        self.length_router.add_length_terms(
            [dataclasses.replace(template, response=s.text, response_tokens=len(s.response_ids), budget_hit=s.budget_hit) for s in samples], rewards, step)

    def enforce_staleness(self, batch: RolloutBatch, trainer_version: int, max_staleness: int) -> RolloutBatch:
        """Regenerate (with the current weights) every group older than `max_staleness` versions."""
        stale = stale_groups([g.samples for g in batch.groups], trainer_version, max_staleness)
        if not stale:
            return batch
        print(f"[grpo] step {batch.step}: {len(stale)} group(s) older than {max_staleness} version(s); regenerating", flush=True)
        fresh = self.generate(batch.step, only=stale)
        for gi, group in zip(stale, fresh.groups):
            batch.groups[gi] = group
        batch.regenerated_groups += len(stale)
        batch.time_generate_s += fresh.time_generate_s
        return batch

    def shutdown(self, keep: list | None = None) -> None:
        import ray

        if self.ahead_threads is not None:  # a run that failed may leave a batch generating ahead: drop it
            self.ahead_threads.shutdown(wait=False, cancel_futures=True)
            self.ahead_threads = None

        for i, engine in enumerate(self.pool.engines):
            if i in self.fresh or keep is None:
                try:
                    ray.get(engine.shutdown.remote(), timeout=ENGINE_STOP_S)
                except ray.exceptions.RayActorError:  # already dead (crashed or killed): nothing to drain
                    pass
                except ray.exceptions.GetTimeoutError:  # killed below; its engine core ends with the actor
                    print(f"[grpo] engine {i} did not shut vLLM down within {ENGINE_STOP_S:.0f} s; killing it",
                          flush=True)
                ray.kill(engine)
        if self.group is not None:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(self.group)
            self.group = None
