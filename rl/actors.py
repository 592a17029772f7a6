"""The two sides of a GRPO run as Ray actors: rollout engines (generation + rewards) and the trainer.

Placement (report §4.3.1 balances the phases by tuning this split) is the recipe's `placement:` section: each
rollout actor takes bundle i of the rollout side's placement group (`rollout_cpus_per_engine` CPUs /
`rollout_gpus_per_engine` GPUs, `rollout_strategy`) and binds vLLM-CPU's OpenMP threads to `rollout_cpu_bind[i]`;
each of the `trainer_workers` trainer ranks takes a bundle of the trainer's group (`trainer_cpus_per_worker` /
`trainer_gpus_per_worker`, `trainer_strategy`) and pins its threads to `trainer_cpu_bind`. The same code runs on a
local Ray and on a cluster (`ray.address`).

Rewards are computed on the rollout side: `RolloutActor.rollout` scores a group (or one sample) in a thread as
soon as vLLM finishes it, while the engine keeps generating the rest of the batch.

Weight transfer: trainer rank 0 holds one sender per engine (its own gloo group, rank 0 = trainer, the rendezvous
on the trainer's node), so a restarted engine gets a new group without disturbing the others; on GPUs the backend
is vLLM's NCCL trainer engine (`TrainerActor.connect_nccl`). The trainer side as a whole (N ranks) is
`rl.trainer_group.TrainerGroup`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import time
from dataclasses import dataclass

import torch

from core.device import available_cores, parse_cores, worker_env
from core.engine import RolloutEngine, RolloutSample, SamplingSettings
from core.seeds import engine_seed
from rewards import RewardResult, RewardRouter, Sample
from rl.config import GRPOConfig
from rl.placement import rollout_eager, rollout_threads


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

        rm_client = RewardModelServiceClient.from_registry(
            cfg.reward_model_registry, token=_secret_from_env(cfg.reward_model_token_env),
            tls_ca_file=cfg.reward_model_tls_ca_file or None)
    code_client = make_code_client(sandbox_url=cfg.sandbox_url or None, token=_secret_from_env(cfg.sandbox_token_env))
    return RewardRouter(reward_config_from_dict(cfg.rewards), code_client=code_client, rm_client=rm_client)


def _secret_from_env(name: str) -> str | None:
    """The token in environment variable ``name`` (recipes name the variable, not the secret); None if unset."""
    return (os.environ.get(name) or None) if name else None


def think_token_ids(tokenizer) -> tuple[list[int], list[int]]:
    """(open, close) token ids vLLM's thinking budget looks for and forces: `core.engine`'s ReasoningConfig strings."""
    from core.tokenizer import THINK_CLOSE, THINK_OPEN

    return (tokenizer.encode(THINK_OPEN, add_special_tokens=False),
            tokenizer.encode(f"\n{THINK_CLOSE}\n\n", add_special_tokens=False))


def mark_forced_think(samples: list[RolloutSample], open_ids: list[int], close_ids: list[int], budget: int) -> None:
    """Fill each sample's `forced_mask` / `budget_hit` (`rl.algo_extras.forced_think_mask`); nothing without a budget."""
    from rl.algo_extras import forced_think_mask

    if budget <= 0:
        return
    for s in samples:
        mask = forced_think_mask(s.response_ids, close_ids, thinking_budget=budget, open_ids=open_ids,
                                 prompt_ids=s.prompt_ids)
        s.budget_hit = bool(mask.any())
        s.forced_mask = [int(v) for v in mask.tolist()] if s.budget_hit else []


class RolloutActor:
    """Ray actor around `RolloutEngine` plus a reward router (async: Ray runs its coroutines on the actor's loop)."""

    def __init__(self, model_path: str, rollout_cfg, seed: int):
        from rl.weight_sync import WORKER_EXTENSION  # a name: the engine's start imports it (and vLLM) in this process

        r = rollout_cfg
        self.engine = RolloutEngine(model_path, dtype=r.dtype, max_model_len=r.max_model_len, seed=seed, kv_cache_gib=r.kv_cache_gib,
                                    max_num_seqs=r.max_num_seqs, kv_cache_seq_tokens=r.kv_cache_seq_tokens,
                                    weight_transfer_backend=r.weight_transfer_backend, worker_extension_cls=WORKER_EXTENSION,
                                    cpu_bind=r.cpu_bind, tensor_parallel_size=r.tensor_parallel_size,
                                    gpu_memory_utilization=r.gpu_memory_utilization, enforce_eager=r.enforce_eager,
                                    enable_chunked_prefill=r.enable_chunked_prefill, partial_rollouts=r.partial_rollouts,
                                    cpu_threads=r.cpu_threads, cpu_executor=r.cpu_executor,
                                    # a fresh actor process: no OpenMP pool yet (core.engine.fork_engine_core)
                                    fork_core=r.fork_engine_core)
        self.router = None
        self.reward_key = None
        self.model_path = model_path
        self.think_ids: tuple[list[int], list[int]] | None = None  # (open, close), loaded when a budget is first used

    async def start(self) -> None:
        await self.engine.start()

    async def engine_dtype(self) -> str:
        """The engine's precision once started ("auto" resolved on the engine's own hardware): the wire dtype of
        weight transfers to it."""
        return self.engine.dtype

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
        if request.settings.thinking_token_budget > 0:
            if self.think_ids is None:
                from transformers import AutoTokenizer

                self.think_ids = think_token_ids(AutoTokenizer.from_pretrained(self.model_path))
            mark_forced_think(group, *self.think_ids, request.settings.thinking_token_budget)
        t1 = time.perf_counter()
        samples = [dataclasses.replace(template, response=s.text, response_tokens=len(s.response_ids), budget_hit=s.budget_hit) for s in group]
        rewards = await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.router.score_batch(samples, global_step=global_step, length_terms=length_terms))
        return RolloutResult(group, rewards, time_generate_s=t1 - t0, time_reward_s=time.perf_counter() - t1)

    async def init_weight_transfer(self, init_info: dict) -> None:
        await self.engine.init_weight_transfer(init_info)

    async def update_weights(self, update_info: dict, version: int) -> int:
        return await self.engine.update_weights(update_info, version)

    # the phases apart: vLLM's NCCL trainer engine drives them from trainer rank 0 (`rl.weight_sync.RolloutActorClient`)
    async def start_weight_update(self) -> None:
        await self.engine.start_weight_update()

    async def receive_weights(self, update_info: dict) -> None:
        await self.engine.receive_weights(update_info)

    async def finish_weight_update(self, version: int) -> int:
        return await self.engine.finish_weight_update(version)

    async def weight_version(self) -> int:
        return self.engine.weight_version

    async def diagnostic_tokens_in_flight(self) -> int:
        """Tokens generated so far by the samples in flight (partial rollouts): tests wait on it to update weights
        mid-request."""
        return self.engine.tokens_in_flight()

    async def diagnostic_pid(self) -> int:
        """The actor's process id (diagnostics: tests check that a crashed engine was replaced)."""
        return os.getpid()

    async def diagnostic_engine_threads(self) -> list[int]:
        """The model's intra-op threads in each of vLLM's worker processes (tests check the placement's count)."""
        return await self.engine.engine.collective_rpc("torch_threads")

    async def diagnostic_kill_engine_core(self) -> int:
        """SIGKILL vLLM's engine-core process under this actor (fault-injection tests); returns its pid."""
        import signal

        import psutil

        # the processes vLLM started under this engine (`RolloutEngine.core_pids`, spawned or forked), the engine
        # core first (its title names it), never multiprocessing's resource tracker
        cores = sorted((psutil.Process(pid) for pid in self.engine.core_pids if psutil.pid_exists(pid)),
                       key=lambda c: "EngineCore" not in " ".join([c.name()] + c.cmdline()))
        cores = [c for c in cores if "resource_tracker" not in " ".join(c.cmdline())]
        if not cores:
            raise RuntimeError("no vLLM engine-core process under this actor")
        os.kill(cores[0].pid, signal.SIGKILL)
        return cores[0].pid

    async def shutdown(self) -> None:
        if self.router is not None:
            self.router.close()
        self.engine.shutdown()


class TrainerActor:
    """Ray actor around one rank of the trainer (`PolicyTrainer`) and its side of the weight transfer (one sender
    per engine, on rank 0). `rl.trainer_group.TrainerGroup` creates N of them and drives them as one."""

    def __init__(self, model_path: str, trainer_cfg, algo_cfg, total_steps: int, seed: int, cpu_bind: str = "",
                 rank: int = 0, world_size: int = 1, keep_published: bool = False):
        import ray

        from core.device import worker_threads

        bound = 0
        if cpu_bind:  # the training side's share of this node's cores
            cores = parse_cores(cpu_bind)
            os.sched_setaffinity(0, cores)
            bound = len(cores)
        reserved = ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0) if ray.is_initialized() else 0.0
        threads = worker_threads(trainer_cfg.num_threads, bound_cores=bound, reserved_cpus=reserved, shared_by=world_size)
        trainer_cfg = dataclasses.replace(trainer_cfg, num_threads=threads)
        self.args = (model_path, trainer_cfg, algo_cfg, total_steps, seed)
        self.rank, self.world_size = rank, world_size
        self.trainer = None
        # rank 0 keeps the full weights it last sent (on the CPU, in the wire dtype) when an update can be in flight
        # while an engine restarts (max_staleness >= 1): the replacement gets what the others hold, not weights
        # half a step newer under an old label
        self.keep_published = keep_published
        self.published = None  # rl.weight_sync.PublishedWeights
        self.synced = False
        self.store = None  # rank 0: the trainer group's TCP store (`endpoint`)
        self.senders: dict[int, object] = {}
        self.nccl: dict[int, tuple] = {}

    def endpoint(self) -> tuple[str, int]:
        """Rank 0: this node's address and the port of the trainer group's TCP store, bound here now on a port the
        OS picks (no race with another process for a port chosen earlier). Rank 0 hosts the rendezvous of the
        trainer's process group and of every weight-transfer group (never the driver's node)."""
        import ray

        from rl.weight_sync import listen

        host = ray.util.get_node_ip_address()
        self.store = listen(host, self.world_size)
        return host, self.store.port

    def setup(self, endpoint: tuple[str, int]) -> None:
        """Join the trainer's process group (gloo on CPU, NCCL on GPU) at rank 0's `endpoint` (host, port) and load
        the models, sharded when N > 1."""
        import datetime

        import torch.distributed as dist

        from core.device import collective_backend, resolve_device
        from rl.trainer import PolicyTrainer

        model_path, trainer_cfg, algo_cfg, total_steps, seed = self.args
        if self.world_size > 1 or trainer_cfg.fsdp:  # FSDP2 needs a process group, even a group of one
            backend = collective_backend(resolve_device(trainer_cfg.device))
            store = self.store if self.rank == 0 else None
            if store is None:  # ranks > 0 join rank 0's store
                host, port = endpoint
                store = dist.TCPStore(host, port, self.world_size, is_master=False, timeout=datetime.timedelta(seconds=300))
            store.set_timeout(datetime.timedelta(minutes=30))  # torch's default for the group's collectives
            dist.init_process_group(backend, store=store, rank=self.rank, world_size=self.world_size)
        self.trainer = PolicyTrainer(model_path, trainer_cfg, algo_cfg, total_steps=total_steps, seed=seed)

    # weight transfer: gloo (ours) ---------------------------------------------------------------------------

    def listen(self, bucket_mib: int, wire_dtype: str, engine: int = 0) -> dict:
        """A weight-transfer group for `engine`, its store bound on this node (a port the OS picks); returns what
        the engine joins with. `connect` then waits for the engine."""
        import ray

        from rl.weight_sync import GlooWeightSender

        old = self.senders.pop(engine, None)
        if old is not None:
            old.close()
        sender = GlooWeightSender(ray.util.get_node_ip_address(), bucket_bytes=bucket_mib << 20, wire_dtype=wire_dtype)
        self.senders[engine] = sender
        return sender.listen()

    def connect(self, engine: int = 0) -> None:
        self.senders[engine].connect()

    def update_info(self) -> dict:
        """Names, dtypes and shapes of a sync (parameter metadata only: safe while an update runs)."""
        from rl.weight_sync import weights_update_info

        return weights_update_info(self.trainer.policy, self.senders[next(iter(self.senders))].wire_dtype,
                                   self.senders[next(iter(self.senders))].bucket_bytes)

    def send_weights(self, engine: int = 0, published: bool = False) -> int:
        """Rank 0 sends to the engine; the other ranks only take part in gathering each full tensor.
        `published`: the weights last sent (a restarted engine catching up with the others), not the current ones;
        without a kept copy (nothing can have changed since: synchronous runs) the current ones."""
        from rl.weight_sync import PublishedWeights, gather_full_tensors, join_gathers

        from_copy = published and self.keep_published and self.synced
        self.synced = True
        if self.rank != 0:
            if not from_copy:
                join_gathers(self.trainer.policy)  # no sender here: only the gathers' collectives
            return 0
        sender = self.senders[engine]
        if from_copy:
            return sender.send(self.published)
        if self.keep_published:
            # a copy: on the CPU the gathered tensors may BE the parameters, which the next update changes in place
            self.published = PublishedWeights([(n, t.clone()) for n, t in gather_full_tensors(self.trainer.policy, sender.wire_dtype)])
            return sender.send(self.published)
        return sender.send(self.trainer.policy)

    # weight transfer: NCCL (vLLM's trainer engine, GPUs) -----------------------------------------------------

    def nccl_endpoint(self) -> tuple[str, int]:
        """This node's address and a free port for vLLM's NCCL trainer engine, which binds the port it is given
        (its API takes a port, not a bound store)."""
        import ray

        host = ray.util.get_node_ip_address()
        return host, free_port(host)

    def connect_nccl(self, engine: int, rollout, engine_world_size: int, host: str, port: int) -> None:
        """vLLM's `NCCLTrainerWeightTransferEngine` for one engine: rank 0 opens the NCCL endpoint at its own
        address and drives the engine's side through the rollout actor; other ranks only join the gathers."""
        from vllm.distributed.weight_transfer.base import ModuleSource
        from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo, NCCLTrainerWeightTransferEngine

        from rl.weight_sync import RolloutActorClient

        client = RolloutActorClient(rollout)
        info = NCCLTrainerInitInfo(master_address=host, master_port=port, world_size=1 + engine_world_size, rank=self.rank)
        sender = NCCLTrainerWeightTransferEngine.trainer_init(info, client=client, source=ModuleSource(self.trainer.policy))
        self.nccl[engine] = (sender, client)

    def send_weights_nccl(self, engine: int, version: int) -> int:
        sender, client = self.nccl[engine]
        client.version = version  # finish_weight_update labels the engine's weights with it
        sender.send_weights()
        return sum(p.numel() * p.element_size() for p in self.trainer.policy.parameters()) if self.rank == 0 else 0

    # training and checkpoints -------------------------------------------------------------------------------

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
    # With N ranks every rank must call them (the sharded forward is a collective).

    def diagnostic_logprobs(self, batch) -> torch.Tensor:
        """The policy's logprob of every next token of a `TrainBatch` [B, T-1] (for checks against the engine)."""
        from rl.trainer import sequence_logprobs

        with torch.no_grad():
            batch = batch.to(self.trainer.device)
            return sequence_logprobs(self.trainer.policy, batch.input_ids, batch.attention_mask, micro_batch=64)[0].cpu()

    def diagnostic_greedy_hf(self, prompt_ids: list[list[int]], max_tokens: int) -> list[str]:
        """Greedy completions by transformers from the trainer's weights (to compare with the engine's)."""
        from core.generate import generate_hf

        return generate_hf(self.trainer.policy, self.trainer.tokenizer, prompt_ids, max_tokens=max_tokens)

    def diagnostic_node(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ensure_ray(cfg: GRPOConfig) -> bool:
    """Connect to (or start) the recipe's Ray unless this process already has one; True when it connected here,
    so the run that called it also disconnects (`ray.shutdown`, which stops a Ray it started)."""
    import ray

    if ray.is_initialized():
        return False
    import logging

    from core.quiet_logs import quiet_ray_notes, verbose

    quiet_ray_notes()
    address = ray_address(cfg.ray.address)
    kwargs = {"num_cpus": cfg.ray.num_cpus} if cfg.ray.num_cpus and address == "local" else {}
    env = worker_env() if address == "local" else {}
    with environment(env):  # what a Ray started here hands every worker it starts (`actor_runtime_env`)
        # the actors' output reaches the console (their errors, vLLM's warnings); Ray's own INFO lines only if verbose
        ray.init(address=address, include_dashboard=False, log_to_driver=True,
                 logging_level=logging.INFO if verbose() else logging.WARNING, **kwargs)
    if address == "local":
        _RAY_STARTED_WITH.update(gcs=ray.get_runtime_context().gcs_address, env=env)
    return True


_RAY_STARTED_WITH: dict = {}  # the Ray `ensure_ray` started here: its GCS address and the workers' environment


def started_ray_here() -> bool:
    """Whether this process's Ray is one `ensure_ray` started on this machine (its actors run here)."""
    import ray

    return ray.is_initialized() and _RAY_STARTED_WITH.get("gcs") == ray.get_runtime_context().gcs_address


def actor_runtime_env() -> dict:
    """The runtime environment of a trainer or rollout actor: the workers' environment (`core.device.worker_env`:
    an allocator goes in the environment a process starts with). None is needed when the Ray this process started
    was given that environment (`ensure_ray`): its workers inherit it, and one that Ray started in advance then
    hosts the actor at once. An actor with an environment of its own waits for a new worker: 1.0 s to a ready
    actor against 0.4 s, on the quickstart's start-up path (trainer and engine start side by side)."""
    env = worker_env()
    return {} if not env or (_RAY_STARTED_WITH.get("env") == env and started_ray_here()) else {"env_vars": env}


@contextlib.contextmanager
def environment(env: dict[str, str]):
    """`env` in this process's environment for the block (the processes it starts inherit it), then as it was."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def engine_dtype_decided_here(cfg: GRPOConfig) -> bool:
    """Whether the engines' `auto` precision is decided in this process (`rl.grpo`, beside Ray's start) rather than
    by each engine at its start (0.3 s on its start-up path): when the run is about to start a Ray on this machine
    (`ensure_ray`) and the engines get no GPU, they run on this machine's CPUs, and the one-thread probe an engine
    would run (`core.device.resolve_dtype`) gives the same answer here. Call before `ensure_ray`."""
    import ray

    return (cfg.rollout.dtype == "auto" and not cfg.placement.rollout_gpus_per_engine and not ray.is_initialized()
            and ray_address(cfg.ray.address) == "local")


def ray_address(configured: str) -> str | None:
    """What `ray.init` gets: the recipe's `ray.address`; else RAY_ADDRESS's (a job submitted to a cluster, Ray's
    own convention: None lets Ray read it); else "local", a new Ray for this run. Never Ray's fallback for
    None, the cluster named in /tmp/ray/ray_current_cluster, which outlives a cluster killed without
    `ray stop` and then fails every later run ("When connecting to an existing cluster, num_cpus ...").

    >>> ray_address("auto"), ray_address("ray://head:10001")
    ('auto', 'ray://head:10001')
    """
    if configured:
        return configured
    return None if os.environ.get("RAY_ADDRESS") else "local"


def default_max_num_seqs(cfg: GRPOConfig) -> int:
    """Sequences an engine runs at once: one step's rollout batch, at least the held-out evaluation's, at most 256
    (the KV cache is sized by it on CPUs)."""
    batch = cfg.prompts_per_step * cfg.rollout.samples_per_prompt
    evaluation = cfg.eval.prompts * max(1, cfg.eval.samples) if cfg.eval.prompts else 0
    return max(1, min(256, max(batch, evaluation)))


def new_rollout_actor(cfg: GRPOConfig, model_path: str, engine: int = 0, group=None):
    """A rollout actor (not yet started) with engine `engine`'s share of the placement (bundle `engine` of the
    rollout side's placement group, when there is one)."""
    import ray

    p = cfg.placement
    rollout_cfg = cfg.rollout
    if not rollout_cfg.max_num_seqs:
        rollout_cfg = dataclasses.replace(rollout_cfg, max_num_seqs=default_max_num_seqs(cfg))
    if p.rollout_cpu_bind:
        rollout_cfg = dataclasses.replace(rollout_cfg, cpu_bind=p.rollout_cpu_bind[engine % len(p.rollout_cpu_bind)])
    rollout_cfg = dataclasses.replace(rollout_cfg, cpu_threads=rollout_threads(cfg, available_cores()),
                                      enforce_eager=rollout_eager(cfg))
    options: dict = {"num_cpus": p.rollout_cpus_per_engine, "num_gpus": p.rollout_gpus_per_engine}
    if group is not None:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        options = {"num_cpus": p.rollout_cpus_per_engine or 0.01, "num_gpus": p.rollout_gpus_per_engine,
                   "scheduling_strategy": PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=engine)}
    options["runtime_env"] = actor_runtime_env()  # the engine's processes inherit it
    return ray.remote(RolloutActor).options(**options).remote(model_path, rollout_cfg, engine_seed(cfg.seed, engine))


def start_rollout(cfg: GRPOConfig, model_path: str, engine: int = 0):
    """A started rollout actor."""
    import ray

    actor = new_rollout_actor(cfg, model_path, engine)
    ray.get(actor.start.remote())
    return actor
