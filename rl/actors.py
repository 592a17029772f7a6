"""The two sides of a GRPO run as Ray actors: rollout engines (generation + rewards) and the trainer.

Placement (report §4.3.1 balances the phases by tuning this split) is the recipe's `placement:` section: each
rollout actor reserves `rollout_cpus_per_engine` CPUs / `rollout_gpus_per_engine` GPUs in Ray and binds
vLLM-CPU's OpenMP threads to `rollout_cpu_bind[i]`; the trainer reserves `trainer_cpus` / `trainer_gpus` and
pins its threads to `trainer_cpu_bind`. The same code runs on a local Ray and on a cluster (`ray.address`).

Rewards are computed on the rollout side: `RolloutActor.rollout` scores a group (or one sample) in a thread as
soon as vLLM finishes it, while the engine keeps generating the rest of the batch.

Weight transfer: the trainer holds one sender per engine (its own gloo group, rank 0 = trainer), so a restarted
engine gets a new group without disturbing the others; on GPUs the backend is vLLM's NCCL engine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import time
from dataclasses import dataclass

import torch

from core.engine import RolloutEngine, RolloutSample, SamplingSettings
from core.seeds import engine_seed
from rewards import RewardResult, RewardRouter, Sample
from rl.config import GRPOConfig


@dataclass
class RolloutResult:
    """What a rollout actor returns for one request: the samples and their rewards, in sample order."""

    samples: list[RolloutSample]
    rewards: list[RewardResult]
    time_generate_s: float
    time_reward_s: float


def build_reward_router(cfg: GRPOConfig) -> RewardRouter:
    """The reward router of a run, with a sandbox client for code and a reward-model client found through the
    registry for chat (without them those domains are masked, never scored 0)."""
    from rewards import reward_config_from_dict
    from rewards.code import make_code_client

    rm_client = None
    if cfg.reward_model_registry:
        from reward_services.client import RewardModelServiceClient

        rm_client = RewardModelServiceClient.from_registry(cfg.reward_model_registry)
    return RewardRouter(reward_config_from_dict(cfg.rewards), code_client=make_code_client(sandbox_url=cfg.sandbox_url or None),
                        rm_client=rm_client)


def parse_cores(spec: str) -> list[int]:
    """"0", "0-3", "0,2,5-6" -> core ids.

    >>> parse_cores("0,2,5-6")
    [0, 2, 5, 6]
    """
    cores: list[int] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        lo, _, hi = part.partition("-")
        cores.extend(range(int(lo), int(hi or lo) + 1))
    return cores


class RolloutActor:
    """Ray actor around `RolloutEngine` plus a reward router (async: Ray runs its coroutines on the actor's loop)."""

    def __init__(self, model_path: str, rollout_cfg, seed: int):
        from rl.weight_sync import WORKER_EXTENSION  # imports vLLM: only in the actor's process

        self.engine = RolloutEngine(model_path, dtype=rollout_cfg.dtype, max_model_len=rollout_cfg.max_model_len, seed=seed,
                                    kv_cache_gib=rollout_cfg.kv_cache_gib, weight_transfer_backend=rollout_cfg.weight_transfer_backend,
                                    worker_extension_cls=WORKER_EXTENSION, cpu_bind=rollout_cfg.cpu_bind)
        self.router = None
        self.reward_key = None

    async def start(self) -> None:
        await self.engine.start()

    async def generate(self, prompt_ids: list[list[int]], settings: SamplingSettings) -> list[list[RolloutSample]]:
        return await self.engine.generate(prompt_ids, settings)

    async def configure_rewards(self, cfg: GRPOConfig) -> None:
        """Build this engine's reward router from the run's config (once per distinct reward setup)."""
        key = repr((cfg.rewards, cfg.sandbox_url, cfg.reward_model_registry))
        if key != self.reward_key:
            if self.router is not None:
                self.router.close()
            self.router, self.reward_key = build_reward_router(cfg), key

    async def rollout(self, request, template: Sample, global_step: int, length_terms: bool) -> RolloutResult:
        """Generate one item (a prompt's group or one of its samples) and score it as soon as it is done.

        `template` is the reward's view of the prompt (`rewards.Sample` without a response: data_source,
        ground_truth, ability, prompt, group_id, thinking, extra_info). Scoring runs in a thread so that the
        engine's other requests keep generating.
        """
        t0 = time.perf_counter()
        [group] = await self.engine.generate([request.prompt_ids], request.settings)
        t1 = time.perf_counter()
        samples = [dataclasses.replace(template, response=s.text, response_tokens=len(s.response_ids)) for s in group]
        rewards = await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.router.score_batch(samples, global_step=global_step, length_terms=length_terms))
        return RolloutResult(group, rewards, time_generate_s=t1 - t0, time_reward_s=time.perf_counter() - t1)

    async def init_weight_transfer(self, init_info: dict) -> None:
        await self.engine.init_weight_transfer(init_info)

    async def update_weights(self, update_info: dict, version: int) -> int:
        return await self.engine.update_weights(update_info, version)

    async def weight_version(self) -> int:
        return self.engine.weight_version

    async def diagnostic_pid(self) -> int:
        """The actor's process id (diagnostics: tests check that a crashed engine was replaced)."""
        return os.getpid()

    async def shutdown(self) -> None:
        if self.router is not None:
            self.router.close()
        self.engine.shutdown()


class TrainerActor:
    """Ray actor around `PolicyTrainer` and the trainer side of the weight transfer (one sender per engine)."""

    def __init__(self, model_path: str, trainer_cfg, algo_cfg, total_steps: int, seed: int, cpu_bind: str = ""):
        from rl.trainer import PolicyTrainer

        if cpu_bind:  # the training side's share of this node's cores
            cores = parse_cores(cpu_bind)
            os.sched_setaffinity(0, cores)
            if not trainer_cfg.num_threads:
                trainer_cfg = dataclasses.replace(trainer_cfg, num_threads=len(cores))
        self.trainer = PolicyTrainer(model_path, trainer_cfg, algo_cfg, total_steps=total_steps, seed=seed)
        self.senders: dict[int, object] = {}

    def connect(self, host: str, port: int, bucket_mib: int, wire_dtype: str, engine: int = 0) -> None:
        from rl.weight_sync import GlooWeightSender

        old = self.senders.pop(engine, None)
        if old is not None:
            old.close()
        sender = GlooWeightSender(host, port, bucket_bytes=bucket_mib << 20, wire_dtype=wire_dtype)
        sender.connect()
        self.senders[engine] = sender

    def update_info(self) -> dict:
        return next(iter(self.senders.values())).update_info(self.trainer.policy)

    def send_weights(self, engine: int = 0) -> int:
        return self.senders[engine].send(self.trainer.policy)

    def train_step(self, batch) -> dict:
        return self.trainer.train_step(batch)

    def save(self, path: str, extra: dict) -> str:
        return str(self.trainer.save(path, extra))

    def load(self, path: str) -> dict:
        return self.trainer.load(path)

    def set_optim(self, optim) -> None:
        self.trainer.set_optim(optim)

    def parameter_checksum(self) -> float:
        return self.trainer.parameter_checksum()

    # Diagnostics: not called by a run; tests and benchmarks use them to compare the trainer with the engines.

    def diagnostic_logprobs(self, batch) -> torch.Tensor:
        """The policy's logprob of every next token of a `TrainBatch` [B, T-1] (for checks against the engine)."""
        from rl.trainer import sequence_logprobs

        with torch.no_grad():
            return sequence_logprobs(self.trainer.policy, batch.input_ids, batch.attention_mask, micro_batch=64)[0]

    def diagnostic_greedy_hf(self, prompt_ids: list[list[int]], max_tokens: int) -> list[str]:
        """Greedy completions by transformers from the trainer's weights (to compare with the engine's)."""
        from core.generate import generate_hf

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


def new_rollout_actor(cfg: GRPOConfig, model_path: str, engine: int = 0):
    """A rollout actor (not yet started) with engine `engine`'s share of the placement."""
    import ray

    p = cfg.placement
    rollout_cfg = cfg.rollout
    if p.rollout_cpu_bind:
        rollout_cfg = dataclasses.replace(rollout_cfg, cpu_bind=p.rollout_cpu_bind[engine % len(p.rollout_cpu_bind)])
    return ray.remote(num_cpus=p.rollout_cpus_per_engine, num_gpus=p.rollout_gpus_per_engine)(RolloutActor).remote(
        model_path, rollout_cfg, engine_seed(cfg.seed, engine))


def start_rollout(cfg: GRPOConfig, model_path: str, engine: int = 0):
    """A started rollout actor."""
    import ray

    actor = new_rollout_actor(cfg, model_path, engine)
    ray.get(actor.start.remote())
    return actor


def new_trainer_actor(cfg: GRPOConfig):
    import ray

    p = cfg.placement
    return ray.remote(num_cpus=p.trainer_cpus, num_gpus=p.trainer_gpus)(TrainerActor).remote(
        cfg.model_path, cfg.trainer, cfg.algo, cfg.max_steps, cfg.seed, p.trainer_cpu_bind)


def connect_weight_transfer(cfg: GRPOConfig, trainer, rollout, engine: int = 0) -> None:
    """A weight-transfer group between the trainer and one engine."""
    import ray

    if cfg.rollout.weight_transfer_backend != "gloo":
        raise NotImplementedError("the nccl backend needs GPUs: its trainer side is vLLM's NCCLTrainerWeightTransferEngine")
    host = ray.util.get_node_ip_address() if cfg.ray.address else "127.0.0.1"
    port = free_port()
    ray.get([trainer.connect.remote(host, port, cfg.rollout.weight_bucket_mib, cfg.rollout.dtype, engine),
             rollout.init_weight_transfer.remote({"master_address": host, "master_port": port, "world_size": 2})])


def sync_weights(trainer, rollout, version: int, engine: int = 0) -> tuple[int, float, int]:
    """Send the trainer's weights to one engine; returns (engine version, seconds, bytes)."""
    import ray

    t0 = time.perf_counter()
    info = ray.get(trainer.update_info.remote())
    sent, engine_version = ray.get([trainer.send_weights.remote(engine), rollout.update_weights.remote(info, version)])
    return engine_version, time.perf_counter() - t0, sent
