"""GRPO: one step (`grpo_step`) and the run around it (`run_grpo`), rollout and trainer sides one step apart (report §4.3.1).

One step, in order (`grpo_step`, one function per algorithm step):
    1. rollout + rewards   `RolloutSide.generate` (rl/rollout.py): the step's prompts (rl/prompts.py) through vLLM
                           engines, each sample scored by the reward router as it finishes
    2. advantages          `compute_advantages`: group-relative (rl/algos.py), normalised per data source
    3. update              `PolicyTrainer.train_step` (rl/trainer.py) on the trainer actor; meanwhile the rollout
                           side generates the next batches the staleness bound allows
    4. weight sync         `RolloutSide.sync`: the trainer's new weights to every engine (rl/weight_sync.py)

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

Partial rollouts (`rollout.partial_rollouts: true`, k >= 1): the weights no longer wait for the batches in
flight. Batches ahead are generated in driver threads (`RolloutSide.generate_ahead`); the sync after an update
freezes the engines' requests where they are (vLLM's pause "keep"), loads the new weights and lets them go on, and
right after it the next batch the bound allows starts, beside the long requests of the one before:

    rollout side:  | gen B1 (v0) ..............|s| B1's tail (v1) ...  |s| ...
                   |                           |y| gen B2 (v1) ........|y| B2's tail (v2), gen B3 (v2) ...
    trainer side:  | train B0 -> v1            |n| train B1 -> v2      |n| ...

Each token records the version that sampled it and its own behaviour logprob; the bound applies to a sample's
oldest token, so B_j starts only once the engines hold v_{j-k} or newer. Tokens of one response may come from
two versions, and how many of each depends on timing: a run with partial rollouts is not bit-reproducible (a
resumed one still trains on exactly the batches its checkpoint saved: the ones in flight finish before it).

Off-policy correction (explicit, `AlgoConfig.rollout_correction`, default `token_tis` = the former
`off_policy_correction: tis`): the PPO ratio is taken against the trainer's logprobs of its current weights (the
proximal policy), and each token of a stale sample is re-weighted from the behaviour policy that drew it (vLLM's
sampling logprobs) by min(π_prox/π_behav, tis_cap): decoupled PPO with truncated importance sampling
(`rl.rollout_correction`; rejection options take tokens out of the loss).

Algorithm options (README "Algorithms"): `algo.adv_estimator` in `compute_advantages`, `algo.dynamic_sampling`
in `dynamic_sampling` (after the staleness check, before the advantages), `algo.policy_loss`,
`algo.mini_batches_per_update` / `algo.minibatch_split` and the forced thinking tokens (`RolloutSample.forced_mask`)
in the trainer.

Rewards are computed on the rollout side as each request finishes (`rl.actors.RolloutActor.rollout`); requests
are spread over the engines by load (`rl.scheduler.EnginePool`); a crashed engine is restarted, gets the current
weights, and its requests are re-run (the step goes on with every sample exactly once).

Per step the run logs how long each side waited on the other (`wait_trainer_s`: the trainer idle waiting for
rollouts; `wait_rollout_s`: the engines idle waiting for new weights) so that the placement split
(`placement:`) can be balanced. A checkpoint holds the batches already generated ahead, so a resumed run trains
on exactly the samples an uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from core.config import write_resolved_config
from core.device import resolve_dtype
from core.metrics import MetricsLogger
from core.plots import plot_before_after, plot_panels
from core.run_dir import hold_run_dir
from rl import algos
from rl.advantage_estimators import ADVANTAGE_ESTIMATORS
from rl.algo_extras import informative_groups, run_labels
from rl.actors import build_reward_router, engine_dtype_decided_here, ensure_ray, parse_cores
from rl.checkpoint import latest_checkpoint, restore_grpo_checkpoint, save_grpo_checkpoint
from rl.config import GRPOConfig
from rl.heldout import check_heldout, evaluate_heldout, format_heldout, heldout_table
from rl.preflight import preflight
from rl.placement import SplitAdvice, recommend_split, rollout_threads
from rl.prompts import load_sources
from rl.rollout import RolloutBatch, RolloutSide
from rl.trainer import build_batch
from rl.trainer_group import TrainerGroup, check_ray_placement

# RUN_DIR/grpo_curves.png: one panel each, per-domain lines overlaid (`core.plots.plot_panels`)
CURVE_PANELS = {
    "reward (all, per domain)": ["reward", "reward/*"],
    "accuracy (all, per domain; held-out)": ["accuracy", "accuracy/*", "heldout_accuracy", "heldout_mean_at_*"],
    "response tokens (mean)": ["response_tokens_mean"],
    "KL to the reference": ["kl"],
    "entropy": ["entropy"],
    # wall-clock phases only: `time_reward_s` sums the groups' scoring, which overlaps generation (metrics.jsonl)
    "seconds per phase (wall clock)": ["time_step_s", "time_generate_s", "time_trainer_s", "time_wait_update_s",
                                       "time_sync_s"],
}


@dataclass
class StepTimes:
    """Wall-clock seconds of one step's phases, as the driver sees them."""

    generate_s: float = 0.0  # rollout batches generated during this step (its own, if not ahead, and those ahead)
    overlap_s: float = 0.0  # of which generated while the trainer was updating (partial rollouts: while the
    # driver did anything but wait for it)
    advantages_s: float = 0.0  # advantages and the padded training batch, on the driver
    wait_update_s: float = 0.0  # the driver blocked on the trainer after the rollout side's work was done
    sync_s: float = 0.0
    step_s: float = 0.0


@dataclass
class StepResult:
    """What one GRPO step produced: the batch it trained on, the trainer's metrics, the weights' new version."""

    batch: RolloutBatch
    train: dict[str, float]
    version: int
    sync_bytes: int
    times: StepTimes = field(default_factory=StepTimes)


# ---- one GRPO step ------------------------------------------------------------------------------------------


def grpo_step(cfg: GRPOConfig, step: int, rollout: RolloutSide, trainer: TrainerGroup, ahead: dict[int, RolloutBatch],
              stop: int, pad_id: int) -> StepResult:
    """Step `step`: rollout -> rewards -> advantages -> update -> weight sync. With `max_staleness: k`, the batches
    of steps step+1..step+k are generated (with the engines' current weights) while the trainer updates."""
    k, partial = cfg.max_staleness, cfg.rollout.partial_rollouts
    times = StepTimes()
    t0 = time.perf_counter()
    # 1. rollout and rewards (scored on the rollout side as samples finish); generated now unless generated ahead
    if step not in ahead:
        ahead[step] = rollout.generate(step)
        times.generate_s += ahead[step].time_generate_s
    batch = ahead.pop(step)
    if isinstance(batch, Future):  # partial rollouts: generating in a driver thread since an earlier step
        t_block = time.perf_counter()
        batch = batch.result()
        times.generate_s += batch.time_generate_s
        times.overlap_s += max(0.0, batch.time_generate_s - (time.perf_counter() - t_block))
    batch = rollout.enforce_staleness(batch, trainer_version=step, max_staleness=k)
    extra: dict[str, float] = {}
    if cfg.algo.dynamic_sampling:  # DAPO: only groups with a signal, refilled with new prompts
        t_dyn = time.perf_counter()
        batch, extra = dynamic_sampling(cfg, batch, rollout)
        times.generate_s += time.perf_counter() - t_dyn
    # 2. advantages
    t_adv = time.perf_counter()
    advantages, scored = compute_advantages(cfg, batch)
    # 3. update, launched on the trainer ranks ...
    budget = cfg.rollout.thinking_token_budget > 0
    forced = [s.forced_mask for s in batch.samples] if budget and cfg.algo.mask_forced_think_tokens else None
    if budget:
        extra["budget_hit_fraction"] = sum(s.budget_hit for s in batch.samples) / max(1, len(batch.samples))
        extra["forced_think_tokens"] = float(sum(sum(s.forced_mask) for s in batch.samples))
    sources = [g.prompt.source for g in batch.groups for _ in g.samples]  # in the order of batch.samples
    train_batch = build_batch([(s.prompt_ids, s.response_ids, s.response_logprobs) for s in batch.samples],
                              advantages.tolist(), scored, pad_id, forced=forced,
                              minibatch=run_labels(sources) if cfg.algo.minibatch_split == "source" else None)
    t_launch = time.perf_counter()
    times.advantages_s = t_launch - t_adv
    train_ref = trainer.launch_train_step(train_batch)
    # ... while the rollout side generates the batches the staleness bound allows
    ahead_s = 0.0
    for later in range(step + 1, min(stop, step + k + 1)):
        if later in ahead:
            continue
        if partial:
            ahead[later] = rollout.generate_ahead(later)  # its time counts in the step that takes it
        else:
            ahead[later] = rollout.generate(later)
            ahead_s += ahead[later].time_generate_s
    t_wait = time.perf_counter()
    train = {**trainer.wait(train_ref), **extra}
    times.wait_update_s = time.perf_counter() - t_wait
    times.generate_s += ahead_s
    times.overlap_s += min(ahead_s, time.perf_counter() - t_launch)  # the part that ran beside the update
    # 4. weight sync: the engines now hold the weights after step+1 updates (partial rollouts: mid-request)
    version, times.sync_s, sent = rollout.sync(step + 1)
    if partial and step + k + 1 < stop and step + k + 1 not in ahead:
        ahead[step + k + 1] = rollout.generate_ahead(step + k + 1)  # the bound allows it now: it starts beside the tails
    times.step_s = time.perf_counter() - t0
    return StepResult(batch, train, version, sent, times)


def dynamic_sampling(cfg: GRPOConfig, batch: RolloutBatch, rollout: RolloutSide) -> tuple[RolloutBatch, dict[str, float]]:
    """DAPO's dynamic sampling (arXiv 2503.14476): drop the groups whose rewards are all equal (no advantage, no
    signal: `rl.algo_extras.informative_groups`) and refill the step with NEW prompts until `prompts_per_step`
    informative groups exist, at most `algo.dynamic_sampling_max_rounds` extra generation rounds; then the step
    trains on what there is (every group, signal-free ones included, if none has a signal).

    Refill round r of step s draws `step_prompts` with a seed derived from (seed, s, r) (`RolloutSide.generate`'s
    `refill_round`), so a resumed run refills exactly as an uninterrupted one. The refill happens when the batch
    is consumed (here, at the start of its step), with the engines' current weights: under `max_staleness: 1` the
    batch generated ahead is filtered and refilled when its step comes, and the refill samples are fresher than it
    (the staleness bound holds for them too)."""
    target = cfg.prompts_per_step
    useful = lambda g: bool(informative_groups([r.reward for r in g.rewards], [0] * len(g.rewards)))  # noqa: E731
    kept = [g for g in batch.groups if useful(g)]
    seen, rounds, extra_samples = len(batch.groups), 0, 0
    while len(kept) < target and rounds < cfg.algo.dynamic_sampling_max_rounds:
        rounds += 1
        more = rollout.generate(batch.step, refill_round=rounds)
        seen += len(more.groups)
        extra_samples += len(more.samples)
        batch.time_generate_s += more.time_generate_s
        batch.time_reward_s += more.time_reward_s
        kept += [g for g in more.groups if useful(g)]
    informative = len(kept)
    metrics = {"dynamic/filtered_fraction": 1.0 - informative / max(1, seen), "dynamic/extra_rounds": float(rounds),
               "dynamic/extra_samples": float(extra_samples), "dynamic/informative_groups": float(min(informative, target))}
    if kept:
        batch.groups = kept[:target]
    else:
        print(f"[grpo] step {batch.step + 1}: dynamic sampling found no group with a signal in {rounds + 1} round(s); "
              f"training on the first batch as it is", flush=True)
    return batch, metrics


def reward_components(rewards: list) -> torch.Tensor:
    """[B, C] matrix of the samples' reward components, columns in sorted name order (a stable order whatever the
    domains' order in the batch); a component a sample's reward lacks is 0 (another domain's: constant within the
    group, so no advantage), a masked sample's row is NaN. No components at all: the reward itself, one column."""
    names = sorted({n for r in rewards if r.reward is not None for n in (r.components or {})})
    if not names:
        return torch.tensor([[math.nan if r.reward is None else float(r.reward)] for r in rewards])
    return torch.tensor([[math.nan] * len(names) if r.reward is None else [float(r.components.get(n, 0.0)) for n in names]
                         for r in rewards])  # [B, C]


def compute_advantages(cfg: GRPOConfig, batch: RolloutBatch) -> tuple[torch.Tensor, list[bool]]:
    """Outcome advantages by `algo.adv_estimator` (masked samples excluded; `rl.advantage_estimators`; GDPO on the
    reward components, `reward_components`), then per-source normalisation (report §2.3.6) with any of them."""
    rewards = batch.rewards
    group_ids = [gi for gi, g in enumerate(batch.groups) for _ in g.samples]
    sources = [g.prompt.source for g in batch.groups for _ in g.samples]
    values = torch.tensor([math.nan if r.reward is None else float(r.reward) for r in rewards])  # [B]
    scored = [r.reward is not None for r in rewards]
    name = cfg.algo.adv_estimator
    if name == "grpo":  # today's path, exactly
        adv = algos.group_advantages(values, group_ids, norm_by_std=cfg.algo.norm_adv_by_std, eps=cfg.algo.adv_eps)  # [B]
    else:
        token_counts = torch.tensor([float(len(s.response_ids)) for s in batch.samples])  # [B]
        inputs = reward_components(rewards) if name == "gdpo" else values  # [B, C] or [B]
        adv = ADVANTAGE_ESTIMATORS[name](inputs, group_ids, norm_by_std=cfg.algo.norm_adv_by_std, eps=cfg.algo.adv_eps,
                                         token_counts=token_counts).float()  # [B]
        adv = torch.where(torch.tensor(scored), adv, torch.zeros_like(adv))
    if cfg.algo.normalize_by_source and len(set(sources)) > 1:
        adv = algos.normalize_advantages_by_source(adv, sources, torch.tensor(scored))
    return adv, scored


def placement_advice(cfg: GRPOConfig, rows: list[dict]) -> SplitAdvice | None:
    """The core split that balances the measured phases (steps after the first), on a CPU-only single node."""
    import os

    p = cfg.placement
    if p.trainer_gpus_per_worker or p.rollout_gpus_per_engine or p.trainer_workers > 1 or len(rows) < 2:
        return None
    rows = rows[1:]  # the first step pays warm-ups
    total = os.cpu_count() or 1
    # the cores the engines generated on: bound ones, else their model threads (`rl.placement.rollout_threads`)
    rollout_cores = (sum(len(parse_cores(b)) for b in p.rollout_cpu_bind) if p.rollout_cpu_bind
                     else rollout_threads(cfg, total) * max(1, p.rollout_engines))
    mean = lambda key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
    now = mean("time_step_s") if all("time_step_s" in r for r in rows) else None
    return recommend_split(generate_s=mean("time_generate_s"), rollout_cores=rollout_cores, train_s=mean("time_trainer_s"),
                           trainer_cores=int(mean("trainer_threads")), total_cores=total, now_step_s=now)


def reward_metrics(batch: RolloutBatch) -> dict[str, float]:
    """Reward per domain and component, accuracy (answer component), response length, masked count (in all and
    per source, `masked/<source>`). A source whose every sample was masked is named on the console with the most
    common reason (a reward service gone down drops a whole domain; the count alone is easy to miss)."""
    per: dict[str, list[float]] = defaultdict(list)
    lengths, truncated, masked = [], 0, 0
    totals: dict[str, int] = defaultdict(int)
    errors: dict[str, list[str]] = defaultdict(list)
    for group in batch.groups:
        source = group.prompt.source
        for sample, r in zip(group.samples, group.rewards):
            lengths.append(len(sample.response_ids))
            truncated += sample.finish_reason == "length"
            totals[source] += 1
            if r.reward is None:
                masked += 1
                errors[source].append(getattr(r, "error", None) or "no reward")
                continue
            per["reward"].append(r.reward)
            per[f"reward/{source}"].append(r.reward)
            for name, value in r.components.items():
                per[f"component/{source}/{name}"].append(value)
            if "answer" in r.components:
                per["accuracy"].append(float(r.components["answer"] >= 1.0))
                per[f"accuracy/{source}"].append(float(r.components["answer"] >= 1.0))
    out = {k: sum(v) / len(v) for k, v in per.items()}
    out["masked_samples"] = float(masked)
    for source, n in totals.items():
        out[f"masked/{source}"] = float(len(errors[source]))
        if len(errors[source]) == n:
            reason = max(set(errors[source]), key=errors[source].count)
            print(f"[grpo] step {batch.step + 1}: domain {source}: {n}/{n} samples masked ({reason})", flush=True)
    out["response_tokens_mean"] = sum(lengths) / max(1, len(lengths))
    out["truncated_fraction"] = truncated / max(1, len(lengths))
    return out


def compact_console(metrics: dict[str, float]) -> dict[str, str]:
    """The step line a person watches: reward (and per domain when the run mixes several), accuracy, KL, entropy,
    mean response length, masked samples when any, and s/step; `MetricsLogger` adds step/total, elapsed and ETA.

    >>> compact_console({"reward": 0.5, "reward/math": 0.6, "reward/code": 0.4, "accuracy": 0.5, "kl": 0.01,
    ...                  "entropy": 0.3, "response_tokens_mean": 40.0, "time_step_s": 3.2, "pg_loss": 0.1})
    {'reward': '0.500', 'code': '0.400', 'math': '0.600', 'acc': '0.500', 'kl': '0.0100', 'entropy': '0.300', 'len': '40', 's/step': '3.2'}
    """
    shown = {"reward": f"{metrics['reward']:.3f}"}
    domains = sorted(k.split("/", 1)[1] for k in metrics if k.startswith("reward/"))
    if len(domains) > 1:
        shown.update({d: f"{metrics['reward/' + d]:.3f}" for d in domains})
    for key, label, fmt in (("accuracy", "acc", "{:.3f}"), ("kl", "kl", "{:.4f}"), ("entropy", "entropy", "{:.3f}"),
                            ("response_tokens_mean", "len", "{:.0f}"), ("masked_samples", "masked", "{:.0f}"),
                            ("time_step_s", "s/step", "{:.1f}")):
        if key in metrics and (key != "masked_samples" or metrics[key] > 0):
            shown[label] = fmt.format(metrics[key])
    return shown


def step_metrics(result: StepResult) -> dict[str, float]:
    """Everything logged for a step: rewards, the trainer's metrics, timing, staleness, dispatch."""
    batch, train, t = result.batch, result.train, result.times
    staleness = batch.staleness(trainer_version=batch.step)
    trainer_busy = train["time_trainer_s"]  # the whole train_step on the trainer: reference, behaviour, update
    gen_tokens = sum(len(s.response_ids) for s in batch.samples)
    metrics = {**reward_metrics(batch), **{k: v for k, v in train.items() if k != "trained_tokens"},
               "time_generate_s": t.generate_s, "time_reward_s": batch.time_reward_s, "time_sync_s": t.sync_s,
               "sync_bytes": float(result.sync_bytes), "time_step_s": t.step_s, "time_overlap_s": t.overlap_s,
               "time_advantages_s": t.advantages_s, "time_wait_update_s": t.wait_update_s,
               # how long each side waited on the other (placement balance, report §4.3.1)
               "wait_trainer_s": max(0.0, t.step_s - t.sync_s - trainer_busy),
               "wait_rollout_s": max(0.0, t.step_s - t.sync_s - t.generate_s),
               "generate_tokens_per_s": gen_tokens / max(batch.time_generate_s, 1e-9), "weight_version": float(result.version),
               "staleness_max": float(max(staleness)), "staleness_mean": sum(staleness) / len(staleness),
               "staleness_tokens_mean": batch.token_staleness_mean(trainer_version=batch.step),
               "partial_samples": float(batch.partial_samples()),
               "stale_regenerated_groups": float(batch.regenerated_groups)}
    if batch.dispatch is not None:
        metrics.update(batch.dispatch.metrics())
    return metrics


# ---- the run ------------------------------------------------------------------------------------------------


def run_grpo(cfg: GRPOConfig, *, rollout=None) -> dict:
    """Train; returns the summary. `rollout`: an already started rollout actor to use as engine 0 (tests share
    one engine; its weights are overwritten by a sync before the first step, and it is left running).

    The recipe, the model folder and the reward services are checked first, in seconds (`rl.preflight`); the run
    directory is held for the whole run (`core.run_dir`: a second run there fails at once, naming this one)."""
    preflight(cfg)
    started: list[Callable[[], None]] = []  # how to stop what the run has started, should it not reach its end
    with hold_run_dir(cfg.run_dir):
        try:
            return _run_grpo(cfg, rollout, started)
        except BaseException:  # an error, Ctrl-C, or SIGTERM to `mixrl` (`mixrl.cli.exit_on_sigterm`)
            stop_quietly(started)
            raise


def stop_quietly(stops: list[Callable[[], None]]) -> None:
    """A failed or interrupted run stops its engines (their vLLM engine-core processes with them) and its trainers,
    last started first; a stop that fails does not hide the run's own error."""
    for stop in reversed(stops):
        with contextlib.suppress(Exception):
            stop()


def _run_grpo(cfg: GRPOConfig, rollout, started: list[Callable[[], None]]) -> dict:
    from transformers import AutoTokenizer

    t_start = time.perf_counter()
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_resolved_config(cfg, run_dir)
    rows = load_sources(cfg.sources)  # fail here, before Ray and engines start, on bad data ...
    check_heldout(cfg, rows)
    build_reward_router(cfg).close()  # ... or a bad reward config (preflight checked the rest)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model_path)
    phases = {"data": time.perf_counter() - t_start}  # start-up, phase by phase (summary `startup_phases_s`)
    with ThreadPoolExecutor(1) as pool:  # the engines' precision probe runs beside Ray's start
        dtype = pool.submit(resolve_dtype, "auto", "cpu", probe_threads=1) if engine_dtype_decided_here(cfg) else None
        owns_ray = ensure_ray(cfg)  # a Ray this run started is stopped at its end
    if dtype is not None:
        cfg = dataclasses.replace(cfg, rollout=dataclasses.replace(cfg.rollout, dtype=dtype.result()))
    check_ray_placement(cfg)  # a placement the cluster cannot hold fails now, naming what is missing
    phases["ray"] = time.perf_counter() - t_start - sum(phases.values())
    trainer = TrainerGroup(cfg)  # the trainer's models load while the engines start
    started.append(trainer.shutdown)
    side = RolloutSide(cfg, tokenizer, rows, trainer, engines=[rollout] if rollout is not None else None)
    started.append(lambda: side.shutdown(keep=[rollout] if rollout is not None else None))
    side.start()  # the engines, then each engine's transfer group with the (by then loaded) trainer
    phases["engines_and_trainer"] = time.perf_counter() - t_start - sum(phases.values())
    start_step, ahead, ckpt = restore_grpo_checkpoint(cfg, trainer)
    if ckpt is not None:
        print(f"[grpo] resuming from {ckpt} at step {start_step} ({len(ahead)} batch(es) generated ahead)", flush=True)
    version, _, _ = side.sync(start_step)  # the engines now hold exactly the trainer's weights
    phases["restore_and_first_sync"] = time.perf_counter() - t_start - sum(phases.values())
    summary_startup_s = time.perf_counter() - t_start
    print(f"[grpo] start-up {summary_startup_s:.1f} s (" + ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in phases.items())
          + ")", flush=True)

    stop = min(cfg.max_steps, start_step + cfg.stop_after_steps) if cfg.stop_after_steps else cfg.max_steps
    summary: dict = {"run_dir": str(run_dir), "start_step": start_step, "max_staleness": cfg.max_staleness,
                     "startup_s": round(summary_startup_s, 2),
                     "startup_phases_s": {k: round(v, 2) for k, v in phases.items()}}
    before = evaluate_heldout(cfg, side.eval_engine, tokenizer, side.rows, run_dir / "heldout_before.jsonl") if start_step == 0 else None
    if before:
        summary.update({f"{k}_before": v for k, v in before.items()})
        print(f"[grpo] held-out before: {format_heldout(before)}", flush=True)
    measured: list[dict] = []
    console = compact_console if cfg.console == "compact" else None
    with MetricsLogger(run_dir, stage="grpo", total_steps=cfg.max_steps, print_every=cfg.log_every_steps, console=console) as log:
        for step in range(start_step, stop):
            result = grpo_step(cfg, step, side, trainer, ahead, stop, tokenizer.pad_token_id)
            version, done = result.version, step + 1
            metrics = step_metrics(result)
            measured.append(metrics)
            if len(measured) == cfg.placement.balance_after_steps and (advice := placement_advice(cfg, measured)):
                print(f"[grpo] placement: {advice.message(metrics['time_step_s'])}", flush=True)
                summary["placement_advice"] = dataclasses.asdict(advice) | {"best": advice.best}
            if cfg.eval.prompts and cfg.eval.every_steps and done % cfg.eval.every_steps == 0 and done != cfg.max_steps:
                metrics.update(evaluate_heldout(cfg, side.eval_engine, tokenizer, side.rows) or {})
            log.log(done, metrics, tokens=sum(len(s.response_ids) for s in result.batch.samples))
            if done == stop or (cfg.checkpoint_every_steps and done % cfg.checkpoint_every_steps == 0):
                # partial rollouts: the batches in flight finish first, so the checkpoint holds them whole
                ahead.update({s: b.result() for s, b in ahead.items() if isinstance(b, Future)})
                save_grpo_checkpoint(cfg, trainer, done, ahead)
    after = evaluate_heldout(cfg, side.eval_engine, tokenizer, side.rows, run_dir / "heldout_after.jsonl") if stop == cfg.max_steps else None
    if after:
        summary.update({f"{k}_after": v for k, v in after.items()})
        print(f"[grpo] held-out after: {format_heldout(after)}", flush=True)
    summary.update({"steps": stop, "weight_version": version, "checkpoint": str(latest_checkpoint(run_dir)),
                    "parameter_checksum": trainer.parameter_checksum()})
    t_end = time.perf_counter()
    started.clear()  # stopped here from now on
    # the end: the engines and trainers stop (mostly waiting on their processes) while the plots are drawn here
    with ThreadPoolExecutor(1, thread_name_prefix="mixrl-shutdown") as pool:
        stopped = pool.submit(lambda: (trainer.shutdown(), side.shutdown(keep=[rollout] if rollout is not None else None)))
        plot_panels(log.history, CURVE_PANELS, run_dir / "grpo_curves.png", title=f"GRPO {run_dir.name}")
        if before and after:
            plot_before_after(heldout_table(summary), run_dir / "heldout_before_after.png",
                              title="held-out accuracy (RM score for chat) before / after GRPO")
        stopped.result()
    if owns_ray:
        import ray

        ray.shutdown()
    summary["shutdown_s"] = round(time.perf_counter() - t_end, 2)  # plots, engines, trainers and a Ray started here
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
