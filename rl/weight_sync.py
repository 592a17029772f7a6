"""Trainer -> rollout-engine weight transfer through vLLM's weight-transfer API (`vllm.distributed.weight_transfer`).

One code path, two transports:
  * GPU: vLLM's own NCCL backend (`WeightTransferConfig(backend="nccl")`, `NCCLTrainerWeightTransferEngine`).
  * CPU: the gloo backend: its trainer side and wire format here, its engine side in `rl.weight_receiver`, which
    registers it with `WeightTransferEngineFactory.register_engine("gloo", ...)`.

The worker side of the gloo backend follows vLLM's dense NCCL engine: it joins a two-party process group with the
trainer (rank 0 = trainer, rank 1 = the inference worker), receives packed flat buffers (one broadcast per bucket
instead of one per tensor), and loads them inside vLLM's layerwise reload lifecycle
(`initialize_layerwise_reload` / `finalize_layerwise_reload`). That lifecycle is why this works on the CPU
backend, where calling `model.load_weights` a second time directly fails (linear weights are repacked after the
first load): reload restores the layers to their checkpoint layout, loads, then re-runs the post-load processing.

The engine is registered in the worker process by vLLM's `worker_extension_cls` hook: the engine args name
`WORKER_EXTENSION` (`rl.weight_receiver.WeightVersionExtension`), and importing that module (which the hook does
before the worker loads the model) registers the backend, whatever process vLLM spawned the worker in. This module
imports no vLLM: the trainer's process, which sends, never loads it.

Weight versions: the trainer counts versions (`GlooWeightSender.version`); the engine records the version it
last finished loading (`finish_weight_update(weight_version=...)`, read back with `get_weight_version()`).

    sender = GlooWeightSender(host)
    info = sender.listen()                         # trainer process: its store binds a port the OS picks
    sender.connect()                               # trainer process, concurrently with
    await engine.init_weight_transfer_engine(...)  # the engine joining with `info`
"""

from __future__ import annotations

import collections
import datetime
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from core.device import full_value

BACKEND = "gloo"
DEFAULT_BUCKET_BYTES = 64 << 20  # one broadcast per 64 MiB: few round trips, bounded extra memory
_TIMEOUT = datetime.timedelta(seconds=600)  # one collective (a bucket's broadcast) once the group exists
# joining: a side whose peer never comes (its call failed, it was killed) gives up in this time, so a failed
# rendezvous costs minutes, never a queue of 20-minute hangs on an engine shared by later runs
RENDEZVOUS_TIMEOUT = datetime.timedelta(seconds=120)


def listen(host: str, world_size: int = 2, port: int = 0):
    """Rank 0's TCP store, listening before anyone joins. Port 0 (the default): the OS picks a free port at bind
    time and `store.port` names it, so no other process can take it between choosing and binding it (the race of
    picking a "free" port first and binding it later)."""
    return torch.distributed.TCPStore(host, port, world_size, is_master=True, wait_for_workers=False, timeout=RENDEZVOUS_TIMEOUT)


def open_group(host: str, port: int, rank: int, world_size: int = 2, store=None):
    """A private gloo process group (rank 0 hosts the TCP store: `store` from `listen`, or one bound here on
    `port`); it never touches torch's default group, which vLLM's CPU worker already uses for its own collectives.
    Every rank announces itself and waits for the others for at most `RENDEZVOUS_TIMEOUT`; the error then names
    the address and the ranks that never came."""
    if store is None:
        if rank == 0:
            store = listen(host, world_size, port)
        else:
            try:
                store = torch.distributed.TCPStore(host, port, world_size, is_master=False, timeout=RENDEZVOUS_TIMEOUT)
            except torch.distributed.DistNetworkError as err:
                raise TimeoutError(f"weight transfer: rank {rank} could not reach the trainer's store at {host}:{port} within "
                                   f"{RENDEZVOUS_TIMEOUT.seconds} s (its side failed or is gone)") from err
    prefixed = torch.distributed.PrefixStore("mixrl_weight_sync", store)
    prefixed.set(f"joined/{rank}", b"1")
    try:
        prefixed.wait([f"joined/{r}" for r in range(world_size)], RENDEZVOUS_TIMEOUT)
    except torch.distributed.DistStoreError as err:
        missing = [r for r in range(world_size) if not prefixed.check([f"joined/{r}"])]
        raise TimeoutError(f"weight transfer at {host}:{port}: rank(s) {missing} did not join within "
                           f"{RENDEZVOUS_TIMEOUT.seconds} s") from err
    group = torch.distributed.ProcessGroupGloo(prefixed, rank, world_size, _TIMEOUT)
    store.set_timeout(_TIMEOUT)
    return store, group


@dataclass
class GlooWeightTransferInitInfo:
    """What a worker needs to join the trainer's group (sent through `init_weight_transfer_engine`)."""

    master_address: str
    master_port: int
    world_size: int = 2
    rank_offset: int = 1  # the trainer is rank 0; workers follow


@dataclass
class GlooWeightTransferUpdateInfo:
    """Per-sync metadata: every parameter's name, wire dtype and shape, in send order, and the bucket size."""

    names: list[str]
    dtype_names: list[str]
    shapes: list[list[int]]
    bucket_bytes: int = DEFAULT_BUCKET_BYTES

    def __post_init__(self):
        if not len(self.names) == len(self.dtype_names) == len(self.shapes):
            raise ValueError(f"names/dtype_names/shapes differ in length: {len(self.names)}/{len(self.dtype_names)}/{len(self.shapes)}")


def plan_buckets(dtype_names: list[str], shapes: list[list[int]], bucket_bytes: int) -> list[list[int]]:
    """Indices of parameters per flat buffer: consecutive, same dtype, at most `bucket_bytes` (a larger single
    tensor gets a bucket of its own). Both sides call this with the same metadata, so they agree on the split.

    >>> plan_buckets(["float32"] * 3, [[2], [2], [4]], bucket_bytes=16)
    [[0, 1], [2]]
    """
    buckets: list[list[int]] = []
    current: list[int] = []
    size = 0
    for i, (dtype_name, shape) in enumerate(zip(dtype_names, shapes)):
        nbytes = numel(shape) * getattr(torch, dtype_name).itemsize
        if current and (size + nbytes > bucket_bytes or dtype_names[current[0]] != dtype_name):
            buckets.append(current)
            current, size = [], 0
        current.append(i)
        size += nbytes
    if current:
        buckets.append(current)
    return buckets


def numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


# the engine side of the gloo backend (`rl.weight_receiver`, which imports vLLM): vLLM imports this name's module in
# its worker process, and the rollout engine imports it at its start. Only a name here, so that the trainer's process
# never imports vLLM (3 s and 200 MB of a trainer's start)
WORKER_EXTENSION = "rl.weight_receiver.WeightVersionExtension"


def gather_full_tensors(model: torch.nn.Module, wire_dtype: str | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Every parameter's full value on the CPU, in `named_parameters` order (tied weights once; vLLM re-ties them).
    With an FSDP2-sharded model every rank must run this loop in step: each `full_tensor()` is a collective."""
    for name, p in model.named_parameters():
        t = full_value(p.detach()).cpu()
        yield name, (t.to(getattr(torch, wire_dtype)) if wire_dtype else t)


class PublishedWeights:
    """Full weights as last sent to the engines, kept on trainer rank 0 (CPU, wire dtype): what a restarted engine
    must get while the policy itself may already be one update ahead. Quacks like a module for the sender.

    >>> w = PublishedWeights([("a", torch.zeros(2, 3))]); [(n, tuple(p.shape)) for n, p in w.named_parameters()]
    [('a', (2, 3))]
    """

    def __init__(self, named: list[tuple[str, torch.Tensor]]):
        self.named = named

    def named_parameters(self) -> Iterator[tuple[str, torch.Tensor]]:
        return iter(self.named)


def join_gathers(model: torch.nn.Module) -> None:
    """What a trainer rank other than 0 does during a sync: take part in every full-tensor gather of
    `gather_full_tensors` in the same order (each is a collective), keeping nothing; rank 0 sends."""
    collections.deque(gather_full_tensors(model), maxlen=0)  # drive the generator to its end


def weights_update_info(model: torch.nn.Module, wire_dtype: str | None, bucket_bytes: int) -> dict:
    """What the engine needs to receive one sync (names, dtypes, full shapes, bucket size), read from the
    parameters' global metadata: a sharded model is not gathered for it."""
    named = list(model.named_parameters())
    return {"names": [n for n, _ in named],
            "dtype_names": [wire_dtype or str(p.dtype).removeprefix("torch.") for _, p in named],
            "shapes": [list(p.shape) for _, p in named], "bucket_bytes": bucket_bytes}


class RolloutActorClient:
    """vLLM's weight-sync client protocol over one `rl.actors.RolloutActor`, for vLLM's NCCL trainer engine (trainer
    rank 0 drives the engine's init / start / update / finish through it). `version` labels the next update."""

    def __init__(self, actor):
        self.actor = actor
        self.version = 0

    def init_weight_transfer_engine(self, init_info: dict) -> None:
        import ray

        ray.get(self.actor.init_weight_transfer.remote(init_info))

    def shutdown_weight_transfer_engine(self) -> None:
        """Nothing to do: the engine's transfer group ends with the engine."""

    def start_weight_update(self) -> None:
        import ray

        ray.get(self.actor.start_weight_update.remote())

    def update_weights(self, update_info: dict) -> None:
        import ray

        ray.get(self.actor.receive_weights.remote(update_info))

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        import ray

        ray.get(self.actor.finish_weight_update.remote(self.version if weight_version is None else int(weight_version)))


@dataclass
class GlooWeightSender:
    """Trainer side of the gloo backend: rank 0 of the group; broadcasts packed buckets of the policy's weights.

    `listen()` binds the store and returns the `init_info()` that goes to the engine's `init_weight_transfer_engine`;
    `connect()` must run concurrently with that (it waits, at most `RENDEZVOUS_TIMEOUT`, until every rank joined). Per sync: `update_info(model)` to the engine's
    `update_weights` while `send(model)` runs here. A sharded (FSDP2) model is gathered tensor by tensor as the
    buckets fill: the other trainer ranks run `gather_full_tensors(model)` meanwhile.
    """

    master_address: str
    master_port: int = 0  # 0: the OS picks a free one when `listen` binds it
    world_size: int = 2
    bucket_bytes: int = DEFAULT_BUCKET_BYTES
    wire_dtype: str | None = None  # cast to the engine's dtype before sending (halves bytes for bf16 engines)
    version: int = 0
    _group: object = field(default=None, repr=False)
    _store: object = field(default=None, repr=False)

    def listen(self) -> dict:
        """Bind the group's store now (port 0: a port the OS picks, read back here); returns `init_info()`."""
        if self._store is None:
            self._store = listen(self.master_address, self.world_size, self.master_port)
            self.master_port = self._store.port
        return self.init_info()

    def init_info(self) -> dict:
        return {"master_address": self.master_address, "master_port": self.master_port, "world_size": self.world_size}

    def connect(self) -> None:
        """Wait (at most `RENDEZVOUS_TIMEOUT`) for the engine's workers, then form the group."""
        self.listen()
        self._store, self._group = open_group(self.master_address, self.master_port, 0, self.world_size, store=self._store)

    def update_info(self, model: torch.nn.Module) -> dict:
        return weights_update_info(model, self.wire_dtype, self.bucket_bytes)

    def send(self, model: torch.nn.Module) -> int:
        """Broadcast the weights bucket by bucket; returns the bytes sent. Bumps `version`."""
        if self._group is None:
            raise RuntimeError("GlooWeightSender.connect() has not run")
        info = GlooWeightTransferUpdateInfo(**self.update_info(model))
        tensors = gather_full_tensors(model, self.wire_dtype)
        sent = 0
        for bucket in plan_buckets(info.dtype_names, info.shapes, info.bucket_bytes):
            flat = torch.cat([next(tensors)[1].reshape(-1) for _ in bucket])  # [sum of numels]
            self._group.broadcast(flat, 0).wait()
            sent += flat.numel() * flat.element_size()
        self.version += 1
        return sent

    def close(self) -> None:
        self._group = None
        self._store = None
