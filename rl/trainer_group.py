"""The trainer side of a GRPO run: N trainer actors forming one torch.distributed group, driven as one.

`placement.trainer_workers: N` Ray actors, placed by a placement group (one bundle per worker:
`trainer_cpus_per_worker` CPUs, `trainer_gpus_per_worker` GPUs, `trainer_strategy` PACK or SPREAD), join one
torch.distributed group (gloo on CPU, NCCL on GPU) whose rendezvous is hosted by rank 0 on its own node, and shard
the policy and the reference with FSDP2 (`rl.trainer.shard_fsdp2`). Each step's sequences are split evenly across
the ranks (`rl.trainer.shard_batch`); the loss is normalised by the whole batch's token (or sequence) count and
FSDP sums the gradients, so N ranks make the same update as one process on the whole batch.

Weights reach the engines from rank 0: every rank takes part in gathering each full tensor (`DTensor.full_tensor()`,
a collective), rank 0 sends it (gloo here; vLLM's NCCL trainer engine on GPUs), and the rendezvous of that transfer
is also rank 0's node and port, never the driver's.

A placement the cluster cannot hold fails within seconds naming the missing resource (`PlacementError`): Ray
would otherwise wait forever on an unschedulable placement group.

    trainer = TrainerGroup(cfg)                      # actors started; the group forms and models load meanwhile
    refs = trainer.launch_train_step(batch)          # non-blocking: the rollout side works meanwhile
    metrics = trainer.wait(refs)
    trainer.connect(0, rollout_actor); trainer.sync(0, rollout_actor, version)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rl.config import GRPOConfig, PlacementConfig
from rl.trainer import TrainBatch, minibatch_cuts, shard_batch

PLACEMENT_TIMEOUT_S = 30.0


class PlacementError(RuntimeError):
    """A placement the Ray cluster cannot hold; the message names the resource and what the cluster has."""


@dataclass
class Bundle:
    """One actor's reservation: CPUs, GPUs and custom Ray resources (node labels such as {"trainer_node": 1})."""

    cpus: float
    gpus: float
    custom: dict[str, float] = field(default_factory=dict)

    def as_ray(self) -> dict[str, float]:
        # a bundle needs some resource: a CPU-less actor still takes a sliver of a CPU to be placed
        return {"CPU": self.cpus or 0.01, **({"GPU": self.gpus} if self.gpus else {}), **self.custom}


def trainer_bundles(p: PlacementConfig) -> list[Bundle]:
    return [Bundle(p.trainer_cpus_per_worker, p.trainer_gpus_per_worker, dict(p.trainer_resources)) for _ in range(p.trainer_workers)]


def rollout_bundles(p: PlacementConfig) -> list[Bundle]:
    return [Bundle(p.rollout_cpus_per_engine, p.rollout_gpus_per_engine, dict(p.rollout_resources)) for _ in range(p.rollout_engines)]


def check_placement(bundles: list[Bundle], strategy: str, what: str) -> None:
    """Fail before waiting when the live cluster cannot hold `bundles`: each resource in total, each bundle on some
    one node, and STRICT_SPREAD's one node per bundle."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    need: dict[str, float] = {}
    for b in bundles:
        for key, value in b.as_ray().items():
            need[key] = need.get(key, 0.0) + value
    totals = {key: sum(n["Resources"].get(key, 0.0) for n in nodes) for key in need}
    for key in sorted(need, key=lambda k: (k != "GPU", k != "CPU", k)):
        if need[key] > totals[key] + 1e-9:
            raise PlacementError(f"{what}: {len(bundles)} actor(s) need {need[key]:g} {key} in all; the Ray cluster has "
                                 f"{totals[key]:g} {key} over {len(nodes)} node(s)")
    for b in bundles:
        fits = [n for n in nodes if all(n["Resources"].get(k, 0.0) + 1e-9 >= v for k, v in b.as_ray().items())]
        if not fits:
            have = [{k: n["Resources"].get(k, 0.0) for k in b.as_ray()} for n in nodes]
            raise PlacementError(f"{what}: one actor needs {b.as_ray()} on one node; the nodes have {have}")
    if strategy == "STRICT_SPREAD" and len(bundles) > len(nodes):
        raise PlacementError(f"{what}: STRICT_SPREAD over {len(bundles)} worker(s) needs as many nodes; the cluster has {len(nodes)}")


def reserve(bundles: list[Bundle], strategy: str, what: str):
    """A ready placement group for `bundles`, or PlacementError within `PLACEMENT_TIMEOUT_S`."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    check_placement(bundles, strategy, what)
    group = placement_group([b.as_ray() for b in bundles], strategy=strategy)
    ready, _ = ray.wait([group.ready()], timeout=PLACEMENT_TIMEOUT_S)
    if not ready:
        remove_placement_group(group)
        raise PlacementError(f"{what}: placement group {[b.as_ray() for b in bundles]} ({strategy}) not schedulable within "
                             f"{PLACEMENT_TIMEOUT_S:.0f} s; available now: {ray.available_resources()}")
    return group


def join_both(refs: list, what: str) -> list:
    """The results of the two sides of a rendezvous. Unlike `ray.get`, which raises at the first failure, this
    waits for every side to end (each gives up within `rl.weight_sync.RENDEZVOUS_TIMEOUT`), so a failed join never
    leaves an engine blocked in it, holding up the next run that uses the engine; then raises the first failure."""
    import ray

    ray.wait(refs, num_returns=len(refs))
    results, errors = [], []
    for ref in refs:
        try:
            results.append(ray.get(ref))
        except Exception as err:  # noqa: BLE001 - every side's failure is reported, the first one raised
            errors.append(err)
    if errors:
        cause = getattr(errors[0], "cause", None) or errors[0]  # a task's own exception, not Ray's wrapped traceback
        raise RuntimeError(f"{what} failed on {len(errors)} of {len(refs)} side(s): {type(cause).__name__}: {cause}") from errors[0]
    return results


class TrainerGroup:
    """N trainer actors as one trainer: the handle `rl.grpo` and `rl.rollout` drive."""

    def __init__(self, cfg: GRPOConfig):
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        from rl.actors import TrainerActor, actor_runtime_env

        p = cfg.placement
        self.cfg = cfg
        self.world_size = p.trainer_workers
        bundles = trainer_bundles(p)
        self.group = reserve(bundles, p.trainer_strategy, "placement.trainer_workers")
        # a kept copy of the published weights lets a restarted engine catch up while an update is in flight
        keep = cfg.max_staleness >= 1 and cfg.rollout.weight_transfer_backend == "gloo"
        self.actors = [
            ray.remote(TrainerActor).options(
                num_cpus=b.as_ray()["CPU"], num_gpus=b.gpus,
                # two threads: the catch-up of a restarted engine (`resync`) runs beside an update in flight
                max_concurrency=2,
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.group, placement_group_bundle_index=rank),
                runtime_env=actor_runtime_env(),  # malloc that keeps a step's memory for the next
            ).remote(cfg.model_path, cfg.trainer, cfg.algo, cfg.max_steps, cfg.seed, p.trainer_cpu_bind, rank, self.world_size, keep)
            for rank, b in enumerate(bundles)
        ]
        # rank 0's node hosts the process group's store. Nothing here waits for the actors: Ray hands every rank's
        # setup the resolved endpoint, and the models load while the caller goes on (the engines' actors start
        # meanwhile, their processes spawning beside these); the first call that needs the models waits
        self._endpoint = self.actors[0].endpoint.remote()
        self._loading = [a.setup.remote(self._endpoint) for a in self.actors]

    @property
    def rendezvous(self) -> tuple[str, int]:
        """Rank 0's (host, port), where the trainer's process group meets (waits for rank 0's actor to start)."""
        import ray

        return ray.get(self._endpoint)

    def ready(self) -> "TrainerGroup":
        """Wait until every rank has joined the group and loaded its models (once; later calls return at once)."""
        import ray

        if self._loading:
            loading, self._loading = self._loading, []
            ray.get(loading)
        return self

    # training ---------------------------------------------------------------------------------------------

    def launch_train_step(self, batch: TrainBatch) -> list:
        """Start one step on every rank (each gets its share of the sequences); returns the pending results."""
        self.ready()
        shards = shard_batch(batch, self.world_size, minibatch_cuts(batch, self.cfg.algo))
        return [a.train_step.remote(shard) for a, shard in zip(self.actors, shards)]

    def wait(self, refs: list) -> dict[str, float]:
        """The step's metrics (every rank returns the same, reduced over the group)."""
        import ray

        return ray.get(refs)[0]

    def train_step(self, batch: TrainBatch) -> dict[str, float]:
        return self.wait(self.launch_train_step(batch))

    def _all(self, method: str, *args):
        import ray

        self.ready()
        return ray.get([getattr(a, method).remote(*args) for a in self.actors])

    def save(self, path: str, extra: dict) -> None:
        self._all("save", path, extra)

    def load(self, path: str) -> dict:
        return self._all("load", path)[0]

    def set_optim(self, optim) -> None:
        self._all("set_optim", optim)

    def parameter_checksum(self) -> float:
        return self._all("parameter_checksum")[0]

    # weight transfer --------------------------------------------------------------------------------------

    def connect(self, engine: int, rollout) -> None:
        """A weight-transfer group between rank 0 and one engine, its rendezvous on rank 0's node."""
        import ray

        r = self.cfg.rollout
        self.ready()
        if r.weight_transfer_backend == "nccl":
            host, port = ray.get(self.actors[0].nccl_endpoint.remote())
            self._all("connect_nccl", engine, rollout, r.tensor_parallel_size, host, port)
            return
        wire_dtype = ray.get(rollout.engine_dtype.remote())  # the engine's resolved precision
        info = ray.get(self.actors[0].listen.remote(r.weight_bucket_mib, wire_dtype, engine))  # bound before anyone joins
        join_both([self.actors[0].connect.remote(engine), rollout.init_weight_transfer.remote(info)],
                  f"weight transfer to engine {engine} at {info['master_address']}:{info['master_port']}")

    def sync(self, engine: int, rollout, version: int) -> tuple[int, float, int]:
        """The trainer's weights into one engine as `version`; returns (engine version, seconds, bytes)."""
        import ray

        self.ready()
        t0 = time.perf_counter()
        if self.cfg.rollout.weight_transfer_backend == "nccl":  # rank 0 drives the engine's side itself
            sent = self._all("send_weights_nccl", engine, version)[0]
            return ray.get(rollout.weight_version.remote()), time.perf_counter() - t0, sent
        info = ray.get(self.actors[0].update_info.remote())
        results = ray.get([a.send_weights.remote(engine) for a in self.actors] + [rollout.update_weights.remote(info, version)])
        return results[-1], time.perf_counter() - t0, results[0]

    def resync(self, engine: int, rollout, version: int) -> tuple[int, float, int]:
        """A restarted engine gets the weights the others hold (the last published, labelled `version`), even while
        an update is in flight on the trainer (it runs beside it: the actors have a second thread). NCCL: the
        current weights (vLLM's NCCL trainer engine reads the live module)."""
        import ray

        if self.cfg.rollout.weight_transfer_backend == "nccl":
            return self.sync(engine, rollout, version)
        t0 = time.perf_counter()
        info = ray.get(self.actors[0].update_info.remote())
        results = ray.get([a.send_weights.remote(engine, True) for a in self.actors] + [rollout.update_weights.remote(info, version)])
        return results[-1], time.perf_counter() - t0, results[0]

    # diagnostics (tests and benchmarks; every rank takes part, rank 0 answers) --------------------------------

    def diagnostic_logprobs(self, batch: TrainBatch):
        return self._all("diagnostic_logprobs", batch)[0]

    def diagnostic_greedy_hf(self, prompt_ids: list[list[int]], max_tokens: int) -> list[str]:
        return self._all("diagnostic_greedy_hf", prompt_ids, max_tokens)[0]

    def diagnostic_node(self) -> list[str]:
        """The Ray node id of every rank."""
        return self._all("diagnostic_node")

    def shutdown(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        for a in self.actors:
            ray.kill(a)
        remove_placement_group(self.group)


def check_ray_placement(cfg: GRPOConfig) -> None:
    """Both sides together against the live Ray cluster, before anything is placed (`PlacementError`)."""
    p = cfg.placement
    check_placement(trainer_bundles(p) + rollout_bundles(p), "PACK", "placement (trainer workers + rollout engines)")
    check_placement(trainer_bundles(p), p.trainer_strategy, "placement.trainer_workers")
    check_placement(rollout_bundles(p), p.rollout_strategy, "placement.rollout_engines")
