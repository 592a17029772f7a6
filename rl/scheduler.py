"""Rollout scheduling across engines: spread a batch of requests over a pool of Ray actors by load.

Run (the benchmark against the static split, two real vLLM-CPU engines):
    .venv/bin/python bench/load_balance.py [--engines 2] [--model runs/quickstart/sft/final]

`EnginePool` holds N actor handles and dispatches `WorkItem`s to them through a caller-given
`submit(actor, item) -> ObjectRef`; it knows nothing about what the actors do (vLLM generation, reward models,
anything with a remote method). Two policies (report §4.3.1: "requests are scheduled continuously across
engines by load, not split statically"):

- "continuous": at most `max_inflight_per_engine` items are outstanding per engine; as soon as any request
  finishes (`ray.wait(num_returns=1)`) the next item goes to the live engine with capacity whose outstanding
  load is least: the sum of `WorkItem.cost` (`balance_by="tokens"`) or the number of requests
  (`balance_by="requests"`). An engine that drew long requests simply gets fewer of the rest, so no engine idles
  while another still has a queue. `max_inflight_per_engine` should be large enough to keep an engine's own
  continuous batching busy (its batch is what makes a vLLM step cheap per token), and small enough that the
  tail of the batch is still held back here to be placed where capacity frees up.
- "static": the baseline. Items are split in contiguous, even chunks (engine i gets the i-th chunk) and all
  submitted at once; an engine that drew the long tail finishes last while the others idle.

Results come back in `WorkItem.index` order. `DispatchStats` says, per run, the wall time and per engine the
items done, the seconds with at least one request outstanding (`busy_s`), the idle ("bubble") fraction
`1 - busy_s / wall_s` and the cost done, plus restarts and the attempts of every item. Busy time is what the
driver sees (a request queued inside an engine counts as busy).

A group of samples kept together or not is the caller's choice of item granularity: one item per prompt (its
`samples_per_prompt` samples share the prompt's prefill and land on one engine) or one item per sample (finer
balancing, the prompt is prefilled on every engine that draws one of its samples). `rollout_items` builds
either kind for `RolloutActor.generate` with the seeds the engine would have used for the whole batch, so both
give the same tokens for the same seed; `join_groups` puts the results back into one group per prompt
(the GRPO rollout side uses both).

Concurrent runs. Several `run` calls may be in flight at once from different threads of the driver (partial
rollouts: the next step's batch starts while the current one's long requests finish); each balances its own items.
A dead engine is replaced once: the first run to see it replaces it (under the pool's lock) and every run
requeues its own items; a restarting engine takes no new item from any run until its replacement is ready.

Fault tolerance. Protects against: an engine (actor) dying mid-run — a crash, an OOM kill, a preempted node,
`ray.kill` — and the vLLM engine core inside a live actor dying (`EngineDeadError`: killed, OOM): both are
handled alike. The first `RayActorError` from an engine replaces it with `factory(i)`, calls `on_restart(i, actor)`
(start it, sync its weights; it may return an `ObjectRef` that says when the new engine is ready, and the pool
keeps feeding the other engines meanwhile), and re-dispatches every item that was outstanding on the dead
engine. Every item's result is taken exactly once (a request's late result from a replaced engine is never
read); more than `max_restarts` restarts in one run raise `EngineRestartError` naming the engine. Not covered:
an engine that hangs without dying (no per-request timeout), and a request that fails inside a live engine —
its exception propagates with the item's index, the rest of the batch is cancelled.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal, TypeVar

from core.seeds import sample_seed

if TYPE_CHECKING:
    from core.engine import SamplingSettings

Dispatch = Literal["continuous", "static"]
BalanceBy = Literal["tokens", "requests"]
Order = Literal["given", "longest_first"]


@dataclass
class WorkItem:
    """One request of a batch."""

    index: int  # position in the batch; results come back in index order
    cost: float  # estimated load, e.g. prompt tokens + n * max_response_tokens (balance_by="tokens")
    payload: Any  # what submit() sends


@dataclass
class EngineStats:
    """One engine's share of one `EnginePool.run`."""

    items: int = 0  # results taken from this engine
    busy_s: float = 0.0  # seconds with at least one request outstanding
    idle_fraction: float = 0.0  # 1 - busy_s / wall_s: the bubble
    cost_done: float = 0.0  # sum of the costs of the items it completed
    max_inflight: int = 0  # most requests outstanding at once
    restarts: int = 0


@dataclass
class DispatchStats:
    """What one `EnginePool.run` did."""

    dispatch: str
    wall_s: float
    engines: list[EngineStats]
    restarts: int  # engines replaced during the run
    attempts: list[int]  # per item (index order): submissions, 1 unless its engine died under it
    engine_of: list[int]  # per item: the engine its result came from

    @property
    def idle_fraction_mean(self) -> float:
        return sum(e.idle_fraction for e in self.engines) / max(1, len(self.engines))

    def metrics(self, prefix: str = "dispatch") -> dict[str, float]:
        """Flat scalars for metrics.jsonl / TensorBoard."""
        out = {f"{prefix}/wall_s": self.wall_s, f"{prefix}/restarts": float(self.restarts),
               f"{prefix}/idle_fraction_mean": self.idle_fraction_mean,
               f"{prefix}/idle_fraction_max": max((e.idle_fraction for e in self.engines), default=0.0),
               f"{prefix}/retried_items": float(sum(a > 1 for a in self.attempts))}
        for i, e in enumerate(self.engines):
            out[f"{prefix}/engine{i}/items"] = float(e.items)
            out[f"{prefix}/engine{i}/idle_fraction"] = e.idle_fraction
        return out


# errors that mean the engine inside a live actor is gone (vLLM's engine-core process died: killed, OOM, crashed)
ENGINE_DEATH = ("EngineDeadError", "EngineCoreDeadError")


def engine_died(err: BaseException) -> bool:
    """Whether a failed request's error (a `ray.exceptions.RayTaskError` wrapping the actor's exception) says the
    engine itself died, rather than this one request failing.

    >>> engine_died(RuntimeError("x")), engine_died(type("EngineDeadError", (Exception,), {})())
    (False, True)
    """
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if type(err).__name__ in ENGINE_DEATH or any(c.__name__ in ENGINE_DEATH for c in type(err).__mro__):
            return True
        err = getattr(err, "cause", None) or err.__cause__
    return False


class EngineRestartError(RuntimeError):
    """An engine died more often in one run than `max_restarts` allows."""


class EnginePool:
    """N actor handles and the policy that spreads a batch over them (module docstring)."""

    def __init__(self, factory: Callable[[int], Any], num_engines: int, *, dispatch: Dispatch = "continuous",
                 balance_by: BalanceBy = "tokens", max_inflight_per_engine: int = 4, max_restarts: int = 3,
                 on_restart: Callable[[int, Any], Any] | None = None, order: Order = "given"):
        if num_engines < 1:
            raise ValueError(f"num_engines must be >= 1, got {num_engines}")
        if dispatch not in ("continuous", "static"):
            raise ValueError(f"dispatch must be 'continuous' or 'static', got {dispatch!r}")
        if balance_by not in ("tokens", "requests"):
            raise ValueError(f"balance_by must be 'tokens' or 'requests', got {balance_by!r}")
        if order not in ("given", "longest_first"):
            raise ValueError(f"order must be 'given' or 'longest_first', got {order!r}")
        if max_inflight_per_engine < 1:
            raise ValueError(f"max_inflight_per_engine must be >= 1, got {max_inflight_per_engine}")
        self.factory = factory
        self.dispatch = dispatch
        self.balance_by = balance_by
        self.max_inflight_per_engine = max_inflight_per_engine
        self.max_restarts = max_restarts
        self.on_restart = on_restart
        self.order = order
        self.engines = [factory(i) for i in range(num_engines)]
        self.lock = threading.RLock()  # engine replacement, shared by concurrent runs
        self.starting: dict[Any, int] = {}  # on_restart's ready-ref -> engine (no run feeds it until it resolves)

    def map(self, fn: Callable[[Any], Any]) -> list[Any]:
        """`fn(actor) -> ObjectRef` on every engine at once, e.g. a weight sync; their results in engine order."""
        import ray

        return ray.get([fn(actor) for actor in self.engines])

    def run(self, items: list[WorkItem], submit: Callable[[Any, WorkItem], Any]) -> tuple[list[Any], DispatchStats]:
        """Every item's result (in index order) and what the dispatch did."""
        return _Run(self, items, submit).run()


class _Run:
    """The state of one `EnginePool.run`: outstanding refs, per-engine load, the queue, the clock."""

    def __init__(self, pool: EnginePool, items: list[WorkItem], submit):
        if sorted(it.index for it in items) != list(range(len(items))):
            raise ValueError("WorkItem.index must number the batch 0..len(items)-1, each index once")
        self.pool, self.submit = pool, submit
        n = len(pool.engines)
        self.results: list[Any] = [None] * len(items)
        self.stats = [EngineStats() for _ in range(n)]
        self.attempts = [0] * len(items)
        self.engine_of = [-1] * len(items)
        self.restarts = 0
        self.outstanding: dict[Any, tuple[int, WorkItem]] = {}  # ref -> (engine, item)
        self.sent_to: dict[Any, Any] = {}  # ref -> the actor handle it went to (a replaced engine is not replaced twice)
        self.inflight: list[dict[int, WorkItem]] = [{} for _ in range(n)]  # engine -> index -> item
        self.busy_since: list[float | None] = [None] * n
        if pool.dispatch == "static":  # engine i gets the i-th contiguous chunk, whatever `order` says
            bounds = [len(items) * i // n for i in range(n + 1)]
            self.queues = [deque(items[bounds[i]:bounds[i + 1]]) for i in range(n)]
        else:
            ordered = sorted(items, key=lambda it: -it.cost) if pool.order == "longest_first" else list(items)
            self.queues = [deque(ordered)]  # one queue shared by all engines

    def run(self) -> tuple[list[Any], DispatchStats]:
        import ray

        self.t0 = time.perf_counter()
        try:
            while True:
                self.feed()
                with self.pool.lock:
                    starting = list(self.pool.starting)
                if not self.outstanding and not any(self.queues):
                    break
                if not self.outstanding and not starting:  # items left, no engine to take them, none coming back
                    raise RuntimeError(f"rollout dispatch stalled: {sum(map(len, self.queues))} item(s) queued and no engine ready")
                [ready], _ = ray.wait(list(self.outstanding) + starting, num_returns=1)
                if ready in self.outstanding:
                    self.collect(ready)
                else:
                    self.engine_started(ready)
        except BaseException:
            self.cancel_outstanding()
            raise
        wall = time.perf_counter() - self.t0
        for s in self.stats:
            s.idle_fraction = max(0.0, 1.0 - s.busy_s / wall) if wall > 0 else 0.0
        return self.results, DispatchStats(self.pool.dispatch, wall, self.stats, self.restarts, self.attempts, self.engine_of)

    # ---- dispatch -------------------------------------------------------------------------------------------

    def load(self, engine: int) -> float:
        inflight = self.inflight[engine].values()
        return sum(it.cost for it in inflight) if self.pool.balance_by == "tokens" else float(len(inflight))

    def ready_engines(self) -> list[int]:
        with self.pool.lock:
            starting = set(self.pool.starting.values())
        return [e for e in range(len(self.pool.engines)) if e not in starting]

    def feed(self) -> None:
        """Submit every item the policy allows now."""
        if self.pool.dispatch == "static":
            for e in self.ready_engines():
                while self.queues[e]:
                    self.send(e, self.queues[e].popleft())
            return
        queue = self.queues[0]
        while queue:
            open_engines = [e for e in self.ready_engines() if len(self.inflight[e]) < self.pool.max_inflight_per_engine]
            if not open_engines:
                return
            self.send(min(open_engines, key=lambda e: (self.load(e), e)), queue.popleft())

    def send(self, engine: int, item: WorkItem) -> None:
        actor = self.pool.engines[engine]
        ref = self.submit(actor, item)
        self.outstanding[ref] = (engine, item)
        self.sent_to[ref] = actor
        self.inflight[engine][item.index] = item
        self.attempts[item.index] += 1
        if self.busy_since[engine] is None:
            self.busy_since[engine] = time.perf_counter()
        s = self.stats[engine]
        s.max_inflight = max(s.max_inflight, len(self.inflight[engine]))

    def settle(self, engine: int, index: int) -> None:
        """Item `index` is no longer outstanding on `engine`; close the engine's busy span if it was the last."""
        del self.inflight[engine][index]
        if not self.inflight[engine] and self.busy_since[engine] is not None:
            self.stats[engine].busy_s += time.perf_counter() - self.busy_since[engine]
            self.busy_since[engine] = None

    # ---- results and failures -------------------------------------------------------------------------------

    def collect(self, ref) -> None:
        import ray

        engine, item = self.outstanding.pop(ref)
        actor = self.sent_to.pop(ref)
        try:
            result = ray.get(ref)
        except ray.exceptions.RayActorError as err:  # `item` is still in the engine's inflight: replace() requeues it
            self.replace(engine, err, actor)
            return
        except Exception as err:
            if engine_died(err):  # the actor lives but its engine is gone: the same as a dead actor
                self.replace(engine, err, actor)
                return
            raise _item_error(item, engine, err) from err
        self.take(engine, item, result)

    def take(self, engine: int, item: WorkItem, result: Any) -> None:
        self.settle(engine, item.index)
        self.results[item.index] = result
        self.engine_of[item.index] = engine
        self.stats[engine].items += 1
        self.stats[engine].cost_done += item.cost

    def requeue(self, engine: int, item: WorkItem) -> None:
        """Back to the front of the queue it came from (a dead engine's work goes first)."""
        self.queues[engine if self.pool.dispatch == "static" else 0].appendleft(item)

    def replace(self, engine: int, err: Exception, dead=None) -> None:
        """Engine `engine` (the actor `dead`) died: a new actor in its place, and everything it still held is
        dispatched again. If another run already replaced it, only this run's items are requeued."""
        import ray

        refs = [ref for ref, (e, _item) in self.outstanding.items() if e == engine]
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=0) if refs else ([], [])
        for ref in refs:
            self.sent_to.pop(ref, None)
            item = self.outstanding.pop(ref)[1]
            if ref in done:  # finished before the engine died: keep it (vLLM work is worth salvaging)
                try:
                    self.take(engine, item, ray.get(ref))
                except ray.exceptions.RayActorError:
                    pass  # lost with the engine: still in its inflight, requeued below
                except Exception as other:
                    if not engine_died(other):
                        raise _item_error(item, engine, other) from other
                    # its engine-core died under it as well (each request sees the death on its own): requeued below
        # the rest is never read again: those items run once more, and each result is taken once
        lost = sorted(self.inflight[engine])
        for index in reversed(lost):
            item = self.inflight[engine][index]
            self.settle(engine, index)
            self.requeue(engine, item)
        with self.pool.lock:
            if dead is not None and self.pool.engines[engine] is not dead:
                return  # another run replaced it already: its replacement takes these items once it is ready
            self._replace_locked(engine, err, lost)

    def _replace_locked(self, engine: int, err: Exception, lost: list[int]) -> None:
        import ray

        self.restarts += 1
        self.stats[engine].restarts += 1
        if self.restarts > self.pool.max_restarts:
            raise EngineRestartError(f"engine {engine} died ({type(err).__name__}): {self.restarts} restarts in this run, "
                                     f"more than max_restarts={self.pool.max_restarts}; items it held: {lost}") from err
        try:  # an unreachable actor may still be alive (ActorUnavailableError): do not leave it holding memory
            ray.kill(self.pool.engines[engine], no_restart=True)
        except Exception:  # noqa: BLE001  already gone
            pass
        actor = self.pool.factory(engine)
        self.pool.engines[engine] = actor
        ready = self.pool.on_restart(engine, actor) if self.pool.on_restart else None
        if ready is not None:
            self.pool.starting[ready] = engine

    def engine_started(self, ref) -> None:
        import ray

        with self.pool.lock:
            engine = self.pool.starting.pop(ref, None)
        if engine is None:  # another run saw it first
            return
        try:
            ray.get(ref)
        except ray.exceptions.RayActorError as err:  # died while starting: counts as another restart
            self.replace(engine, err, self.pool.engines[engine])
        except Exception as err:
            raise RuntimeError(f"engine {engine} failed to start after a restart: {err}") from err

    def cancel_outstanding(self) -> None:
        """Best effort: do not leave the rest of a failed batch running on the engines."""
        import ray

        for ref in list(self.outstanding):
            try:
                ray.cancel(ref)
            except Exception:  # noqa: BLE001  already finished or its actor is gone: nothing to cancel
                pass


def _item_error(item: WorkItem, engine: int, err: Exception) -> RuntimeError:
    cause = getattr(err, "cause", None) or err  # RayTaskError carries the request's own exception
    return RuntimeError(f"rollout item {item.index} failed on engine {engine}: {type(cause).__name__}: {cause}")


# ---- rollout requests (RolloutActor.generate) -----------------------------------------------------------------


@dataclass
class RolloutRequest:
    """The payload of one rollout item: one prompt, its whole group or one of its samples."""

    prompt: int  # the prompt's position in the batch
    sample: int  # the first sample of the group this item holds
    prompt_ids: list[int]
    settings: Any  # SamplingSettings with this item's samples_per_prompt, max tokens and seed


def rollout_items(prompt_ids: list[list[int]], settings: SamplingSettings, *, per_sample: bool = False,
                  positions: list[int] | None = None, max_response_tokens: list[int] | None = None) -> list[WorkItem]:
    """Work items for `RolloutActor.generate`: one per prompt (a group stays on one engine) or one per sample.

    Seeds are the ones `RolloutEngine.generate` gives the whole batch (`core.seeds.sample_seed`: sample j of
    prompt p gets seed + p*n + j), so any split, on any engine, samples the same tokens. `positions[i]`: prompt i's
    place in the whole batch when only some of its prompts are generated (a regenerated group keeps its seeds).
    `max_response_tokens` sets it per prompt (benchmarks with controlled lengths); cost = prompt tokens + samples *
    max response tokens.

    >>> from core.engine import SamplingSettings
    >>> items = rollout_items([[1, 2], [3]], SamplingSettings(samples_per_prompt=2, max_response_tokens=8, seed=100), per_sample=True)
    >>> [(it.index, it.cost, it.payload.prompt, it.payload.sample, it.payload.settings.seed) for it in items]
    [(0, 10.0, 0, 0, 100), (1, 10.0, 0, 1, 101), (2, 9.0, 1, 0, 102), (3, 9.0, 1, 1, 103)]
    """
    n = settings.samples_per_prompt
    items = []
    for p, ids in enumerate(prompt_ids):
        max_tokens = max_response_tokens[p] if max_response_tokens else settings.max_response_tokens
        place = positions[p] if positions is not None else p
        for j in range(n) if per_sample else [0]:
            k = 1 if per_sample else n
            item_settings = dataclasses.replace(settings, samples_per_prompt=k, max_response_tokens=max_tokens,
                                                seed=sample_seed(settings.seed, place, n, j))
            cost = float(len(ids) + k * max_tokens)
            items.append(WorkItem(len(items), cost, RolloutRequest(p, j, list(ids), item_settings)))
    return items


def submit_rollout(actor, item: WorkItem):
    """`submit` for `EnginePool.run` with `rollout_items`: one prompt (or sample) per `generate` call."""
    return actor.generate.remote([item.payload.prompt_ids], item.payload.settings)


T = TypeVar("T")


def join_groups(items: list[WorkItem], per_item: list[list[T]]) -> list[list[T]]:
    """Results of `rollout_items` back as one group per prompt, samples in order: `per_item[i]` holds item i's
    samples (its whole group, or its one sample), in any form (samples, or (sample, reward) pairs)."""
    groups: dict[int, list[tuple[int, T]]] = {}
    for item, entries in zip(items, per_item):
        groups.setdefault(item.payload.prompt, []).extend((item.payload.sample + j, e) for j, e in enumerate(entries))
    return [[e for _, e in sorted(groups[p], key=lambda je: je[0])] for p in sorted(groups)]
