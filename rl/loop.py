"""The synchronous GRPO loop: data -> rollout -> rewards -> advantages -> update -> weight sync.

Run:
    mixrl train recipes/grpo_math_tiny.yaml [section.key=value ...]
    mixrl train recipes/grpo_math_tiny.yaml resume=runs/grpo_math_tiny trainer.optim.lr_peak=1e-5   # continue
    mixrl plot runs/grpo_math_tiny

The rollout engine (vLLM, `rl/rollout.py`) and the trainer (`rl/trainer.py`) are Ray actors: a local Ray by
default, `ray.address` for a cluster. Weights go trainer -> engine through vLLM's weight-transfer API after
every update (`rl/weight_sync.py`: gloo here, NCCL on GPUs); `max_staleness: 0` means every batch is generated
by the weights of the previous update (the one-step-async pipeline is the next stage).

Data position is the step: step s draws its prompts with `Random(seed, s)` and samples with seeds derived from
(seed, s), so a resumed run continues exactly where an uninterrupted one would be. A run directory holds the
resolved config, `metrics.jsonl`, TensorBoard events (`tb/`), PNG curves, `checkpoints/step_N/` (policy in
Hugging Face format + optimizer, step and RNG) and `summary.json`.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import socket
import time
from collections import defaultdict
from pathlib import Path

import torch

from rl import algos
from rl.grpo_config import GRPOConfig, GRPOSource
from rl.rollout import RolloutEngine, RolloutSample, SamplingSettings


# ---- data ---------------------------------------------------------------------------------------------------


def load_sources(sources: list[GRPOSource]) -> dict[str, list[dict]]:
    """Rows per source, filtered by difficulty and capped at `max_rows`."""
    from sft.data.loader import DataError, load_rows

    out = {}
    for src in sources:
        rows = load_rows(src.path)
        if src.difficulties:
            rows = [r for r in rows if (r.get("extra_info") or {}).get("difficulty") in src.difficulties]
        if src.max_rows:
            rows = rows[: src.max_rows]
        if not rows:
            raise DataError(f"{src.path}: no rows left for source '{src.name}' (difficulties={src.difficulties})")
        out[src.name] = rows
    return out


def prompts_per_source(sources: list[GRPOSource], total: int) -> dict[str, int]:
    """Split `total` prompts by proportion (largest remainder, every positive proportion gets its share).

    >>> prompts_per_source([GRPOSource(name="a", proportion=3), GRPOSource(name="b", proportion=1)], 8)
    {'a': 6, 'b': 2}
    """
    weights = {s.name: max(0.0, s.proportion) for s in sources}
    norm = sum(weights.values()) or 1.0
    exact = {k: total * w / norm for k, w in weights.items()}
    counts = {k: int(math.floor(v)) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)[: total - sum(counts.values())]:
        counts[k] += 1
    return counts


def step_prompts(cfg: GRPOConfig, rows: dict[str, list[dict]], step: int) -> list[dict]:
    """The prompts of step `step`: a pure function of (seed, step), which is what makes resume exact."""
    rng = random.Random(cfg.seed * 1_000_003 + step)
    items = []
    by_name = {s.name: s for s in cfg.sources}
    for name, count in prompts_per_source(cfg.sources, cfg.prompts_per_step).items():
        for j, row in enumerate(rng.sample(rows[name], min(count, len(rows[name])))):
            mode = by_name[name].mode
            think = mode == "think" or (mode == "mixed" and j % 2 == 0)
            items.append({"source": name, "row": row, "think": think})
    return items


def step_sampling(cfg: GRPOConfig, step: int) -> SamplingSettings:
    """The recipe's sampling settings with step `step`'s seed (one seed block per step: resume is exact)."""
    r = cfg.rollout
    return SamplingSettings(samples_per_prompt=r.samples_per_prompt, max_response_tokens=r.max_response_tokens,
                            temperature=r.temperature, top_p=r.top_p, top_k=r.top_k, thinking_token_budget=r.thinking_token_budget,
                            seed=(cfg.seed * 1_000_003 + step) * 1_000_000)


def render_prompt(tokenizer, row: dict, think: bool) -> list[int]:
    return tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True, return_dict=False,
                                         enable_thinking=think)


# ---- actors -------------------------------------------------------------------------------------------------


class RolloutActor:
    """Ray actor around `RolloutEngine` (async: Ray runs its coroutines on the actor's event loop)."""

    def __init__(self, model_path: str, rollout_cfg, seed: int):
        self.engine = RolloutEngine(model_path, dtype=rollout_cfg.dtype, max_model_len=rollout_cfg.max_model_len, seed=seed,
                                    kv_cache_gib=rollout_cfg.kv_cache_gib, weight_transfer_backend=rollout_cfg.weight_transfer_backend,
                                    cpu_bind=rollout_cfg.cpu_bind)

    async def start(self) -> None:
        await self.engine.start()

    async def generate(self, prompt_ids: list[list[int]], settings: SamplingSettings) -> list[list[RolloutSample]]:
        return await self.engine.generate(prompt_ids, settings)

    async def init_weight_transfer(self, init_info: dict) -> None:
        await self.engine.init_weight_transfer(init_info)

    async def update_weights(self, update_info: dict, version: int) -> int:
        return await self.engine.update_weights(update_info, version)

    async def weight_version(self) -> int:
        return self.engine.weight_version

    async def shutdown(self) -> None:
        self.engine.shutdown()


class TrainerActor:
    """Ray actor around `PolicyTrainer` and the trainer side of the weight transfer."""

    def __init__(self, model_path: str, trainer_cfg, algo_cfg, total_steps: int, seed: int):
        from rl.trainer import PolicyTrainer

        self.trainer = PolicyTrainer(model_path, trainer_cfg, algo_cfg, total_steps=total_steps, seed=seed)
        self.sender = None

    def connect(self, host: str, port: int, bucket_mib: int, wire_dtype: str) -> None:
        from rl.weight_sync import GlooWeightSender

        self.sender = GlooWeightSender(host, port, bucket_bytes=bucket_mib << 20, wire_dtype=wire_dtype)
        self.sender.connect()

    def update_info(self) -> dict:
        return self.sender.update_info(self.trainer.policy)

    def send_weights(self) -> int:
        return self.sender.send(self.trainer.policy)

    def train_step(self, batch) -> dict:
        return self.trainer.train_step(batch)

    def save(self, path: str, extra: dict) -> str:
        return str(self.trainer.save(path, extra))

    def load(self, path: str) -> dict:
        return self.trainer.load(path)

    def set_optim(self, optim) -> None:
        self.trainer.set_optim(optim)

    def step(self) -> int:
        return self.trainer.step

    def parameter_checksum(self) -> float:
        return self.trainer.parameter_checksum()

    def logprobs(self, batch) -> torch.Tensor:
        """The policy's logprob of every next token of a `TrainBatch` [B, T-1] (for checks against the engine)."""
        from rl.trainer import sequence_logprobs

        with torch.no_grad():
            return sequence_logprobs(self.trainer.policy, batch.input_ids, batch.attention_mask, micro_batch=64)[0]

    def greedy_hf(self, prompt_ids: list[list[int]], max_tokens: int) -> list[str]:
        from sft.generate import generate_hf

        return generate_hf(self.trainer.policy, self.trainer.tokenizer, prompt_ids, max_tokens=max_tokens)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_ray(cfg: GRPOConfig) -> None:
    import ray

    if not ray.is_initialized():
        kwargs = {"num_cpus": cfg.ray.num_cpus} if cfg.ray.num_cpus and not cfg.ray.address else {}
        ray.init(address=cfg.ray.address or None, include_dashboard=False, log_to_driver=True, **kwargs)


def start_rollout(cfg: GRPOConfig, model_path: str):
    """A started rollout actor (num_cpus=0: vLLM manages its own threads; Ray must not hold cores for it)."""
    import ray

    actor = ray.remote(num_cpus=0)(RolloutActor).remote(model_path, cfg.rollout, cfg.seed)
    ray.get(actor.start.remote())
    return actor


def sync_weights(trainer, rollout, version: int) -> tuple[int, float, int]:
    """Send the trainer's weights to the engine; returns (engine version, seconds, bytes)."""
    import ray

    t0 = time.perf_counter()
    info = ray.get(trainer.update_info.remote())
    sent, engine_version = ray.get([trainer.send_weights.remote(), rollout.update_weights.remote(info, version)])
    return engine_version, time.perf_counter() - t0, sent


def connect_weight_transfer(cfg: GRPOConfig, trainer, rollout) -> None:
    import ray

    if cfg.rollout.weight_transfer_backend != "gloo":
        raise NotImplementedError("the nccl backend needs GPUs: its trainer side is vLLM's NCCLTrainerWeightTransferEngine")
    host = ray.util.get_node_ip_address() if cfg.ray.address else "127.0.0.1"
    port = free_port()
    ray.get([trainer.connect.remote(host, port, cfg.rollout.weight_bucket_mib, cfg.rollout.dtype),
             rollout.init_weight_transfer.remote({"master_address": host, "master_port": port, "world_size": 2})])


# ---- one step -----------------------------------------------------------------------------------------------


def score_groups(router, items: list[dict], groups: list[list[RolloutSample]], step: int) -> list:
    """Reward results in sample order (group by group)."""
    from rewards import Sample

    samples = []
    for gi, (item, group) in enumerate(zip(items, groups)):
        row = item["row"]
        for s in group:
            samples.append(Sample(data_source=row["data_source"], response=s.text, ground_truth=row["reward_model"]["ground_truth"],
                                  ability=row.get("ability"), prompt=row["prompt"][-1]["content"], group_id=str(gi),
                                  response_tokens=len(s.response_ids), thinking=item["think"], extra_info=row.get("extra_info")))
    return router.score_batch(samples, global_step=step)


def compute_advantages(cfg: GRPOConfig, results: list, group_ids: list[int], sources: list[str]) -> tuple[torch.Tensor, list[bool]]:
    """Group advantages (masked samples excluded), then per-source normalisation."""
    rewards = torch.tensor([math.nan if r.reward is None else float(r.reward) for r in results])  # [B]
    scored = [r.reward is not None for r in results]
    adv = algos.group_advantages(rewards, group_ids, norm_by_std=cfg.algo.norm_adv_by_std, eps=cfg.algo.adv_eps)
    if cfg.algo.normalize_by_source and len(set(sources)) > 1:
        adv = algos.normalize_advantages_by_source(adv, sources, torch.tensor(scored))
    return adv, scored


def reward_metrics(items: list[dict], groups: list[list[RolloutSample]], results: list) -> dict[str, float]:
    """Reward per domain and component, accuracy (answer component), response length, masked count."""
    per: dict[str, list[float]] = defaultdict(list)
    k = 0
    lengths, truncated = [], 0
    for item, group in zip(items, groups):
        for s in group:
            r = results[k]
            k += 1
            lengths.append(len(s.response_ids))
            truncated += s.finish_reason == "length"
            if r.reward is None:
                per["masked"].append(1.0)
                continue
            per["reward"].append(r.reward)
            per[f"reward/{item['source']}"].append(r.reward)
            for name, value in r.components.items():
                per[f"component/{item['source']}/{name}"].append(value)
            if "answer" in r.components:
                per["accuracy"].append(float(r.components["answer"] >= 1.0))
                per[f"accuracy/{item['source']}"].append(float(r.components["answer"] >= 1.0))
    out = {k: sum(v) / len(v) for k, v in per.items() if k != "masked"}
    out["masked_samples"] = float(len(per.get("masked", [])))
    out["response_tokens_mean"] = sum(lengths) / max(1, len(lengths))
    out["truncated_fraction"] = truncated / max(1, len(lengths))
    return out


def evaluate(cfg: GRPOConfig, rollout, tokenizer) -> dict[str, float] | None:
    """Greedy held-out accuracy with the engine's current weights (scored like `mixrl eval`)."""
    import ray

    from sft.data.loader import load_rows
    from sft.evaluate import score_response

    if not cfg.eval.prompts:
        return None
    rows = load_rows(cfg.eval.path)
    if cfg.eval.difficulties:
        rows = [r for r in rows if (r.get("extra_info") or {}).get("difficulty") in cfg.eval.difficulties]
    rows = rows[: cfg.eval.prompts]
    think = cfg.eval.mode == "think"
    settings = SamplingSettings(samples_per_prompt=1, max_response_tokens=cfg.eval.max_response_tokens, temperature=0.0)
    groups = ray.get(rollout.generate.remote([render_prompt(tokenizer, r, think) for r in rows], settings))
    scores = [score_response(r, g[0].text) for r, g in zip(rows, groups)]
    scored = [s for s in scores if s is not None]
    return {"heldout_accuracy": sum(scored) / max(1, len(scored)), "heldout_prompts": float(len(scored))}


# ---- the run ------------------------------------------------------------------------------------------------


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpts = sorted(Path(run_dir, "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    done = [p for p in ckpts if (p / "trainer_state.pt").exists()]  # a checkpoint written to the end
    return done[-1] if done else None


def build_reward_router(cfg: GRPOConfig):
    """The reward router of a run, with a sandbox client for code and a reward-model client found through the
    registry for chat (without them those domains are masked, never scored 0)."""
    from rewards import RewardRouter, reward_config_from_dict
    from rewards.code import make_code_client

    rm_client = None
    if cfg.reward_model_registry:
        from reward_services.client import RewardModelServiceClient

        rm_client = RewardModelServiceClient.from_registry(cfg.reward_model_registry)
    return RewardRouter(reward_config_from_dict(cfg.rewards), code_client=make_code_client(sandbox_url=cfg.sandbox_url or None),
                        rm_client=rm_client)


def run_grpo(cfg: GRPOConfig, *, rollout=None) -> dict:
    """Train; returns the summary. `rollout`: an already started rollout actor to reuse (tests share one engine;
    its weights are overwritten by a sync before the first step)."""
    import ray
    from transformers import AutoTokenizer

    from rl.config import write_resolved_config
    from rl.trainer import build_batch
    from sft.metrics import MetricsLogger

    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_resolved_config(cfg, run_dir)
    ensure_ray(cfg)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model_path)
    rows = load_sources(cfg.sources)
    router = build_reward_router(cfg)
    trainer = ray.remote(num_cpus=0)(TrainerActor).remote(cfg.model_path, cfg.trainer, cfg.algo, cfg.max_steps, cfg.seed)

    start_step = 0
    if cfg.resume:
        ckpt = latest_checkpoint(cfg.resume)
        if ckpt is None:
            raise FileNotFoundError(f"resume={cfg.resume}: no complete checkpoint under {cfg.resume}/checkpoints")
        start_step = ray.get(trainer.load.remote(str(ckpt)))["step"]
        ray.get(trainer.set_optim.remote(cfg.trainer.optim))  # hyperparameters of this invocation win
        print(f"[grpo] resuming from {ckpt} at step {start_step}", flush=True)
    own_rollout = rollout is None
    rollout = rollout or start_rollout(cfg, cfg.model_path)
    connect_weight_transfer(cfg, trainer, rollout)
    version, _, _ = sync_weights(trainer, rollout, start_step)  # the engine now holds exactly the trainer's weights

    stop = min(cfg.max_steps, start_step + cfg.stop_after_steps) if cfg.stop_after_steps else cfg.max_steps
    summary: dict = {"run_dir": str(run_dir), "start_step": start_step}
    before = evaluate(cfg, rollout, tokenizer) if start_step == 0 else None
    if before:
        summary["heldout_accuracy_before"] = before["heldout_accuracy"]
        print(f"[grpo] held-out accuracy before: {before['heldout_accuracy']:.3f}", flush=True)
    with MetricsLogger(run_dir, stage="grpo", total_steps=cfg.max_steps, print_every=cfg.log_every_steps) as log:
        step = start_step
        for step in range(start_step, stop):
            t0 = time.perf_counter()
            items = step_prompts(cfg, rows, step)
            prompt_ids = [render_prompt(tokenizer, it["row"], it["think"]) for it in items]
            groups = ray.get(rollout.generate.remote(prompt_ids, step_sampling(cfg, step)))
            t_gen = time.perf_counter() - t0
            results = score_groups(router, items, groups, step)
            t_rew = time.perf_counter() - t0 - t_gen
            group_ids = [gi for gi, g in enumerate(groups) for _ in g]
            sources = [items[gi]["source"] for gi in group_ids]
            adv, scored = compute_advantages(cfg, results, group_ids, sources)
            flat = [s for g in groups for s in g]
            batch = build_batch([(s.prompt_ids, s.response_ids, s.response_logprobs) for s in flat], adv.tolist(), scored, tokenizer.pad_token_id)
            train = ray.get(trainer.train_step.remote(batch))
            version, t_sync, sent = sync_weights(trainer, rollout, step + 1)
            gen_tokens = sum(len(s.response_ids) for s in flat)
            metrics = {**reward_metrics(items, groups, results), **{k: v for k, v in train.items() if k != "trained_tokens"},
                       "time_generate_s": t_gen, "time_reward_s": t_rew, "time_sync_s": t_sync, "sync_bytes": float(sent),
                       "time_step_s": time.perf_counter() - t0, "generate_tokens_per_s": gen_tokens / max(t_gen, 1e-9),
                       "weight_version": float(version)}
            done = step + 1
            if cfg.eval.prompts and cfg.eval.every_steps and done % cfg.eval.every_steps == 0 and done != cfg.max_steps:
                metrics.update(evaluate(cfg, rollout, tokenizer) or {})
            log.log(done, metrics, tokens=gen_tokens)
            if done == stop or (cfg.checkpoint_every_steps and done % cfg.checkpoint_every_steps == 0):
                save_checkpoint(cfg, trainer, done)
        log.plot(["reward", "accuracy", "kl", "entropy", "response_tokens_mean", "grad_norm"])
    after = evaluate(cfg, rollout, tokenizer) if stop == cfg.max_steps else None
    if after:
        summary["heldout_accuracy_after"] = after["heldout_accuracy"]
        print(f"[grpo] held-out accuracy after: {after['heldout_accuracy']:.3f}", flush=True)
    summary.update({"steps": stop, "weight_version": version, "checkpoint": str(latest_checkpoint(run_dir)),
                    "parameter_checksum": ray.get(trainer.parameter_checksum.remote())})
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    ray.kill(trainer)
    if own_rollout:
        ray.get(rollout.shutdown.remote())
        ray.kill(rollout)
    return summary


def save_checkpoint(cfg: GRPOConfig, trainer, step: int) -> Path:
    """checkpoints/step_N (written to a temporary name, then renamed: a killed run never leaves half a
    checkpoint that resume would pick); keeps the newest `keep_checkpoints`."""
    import ray

    root = Path(cfg.run_dir, "checkpoints")
    tmp, final = root / f".tmp_step_{step}", root / f"step_{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    ray.get(trainer.save.remote(str(tmp), {"step": step}))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    ckpts = sorted(root.glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    for old in ckpts[: max(0, len(ckpts) - max(1, cfg.keep_checkpoints))]:
        shutil.rmtree(old, ignore_errors=True)
    return final
