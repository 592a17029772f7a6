"""The engine pool's dispatch: continuous vs static on a long-tail workload, order, in-flight limits, balancing by
tokens, restarts of dying engines; then two real vLLM-CPU rollout engines, one of them killed mid-run.

The fast tests run a small real Ray actor in place of an engine: it serves one request at a time (a fixed
throughput, as an engine at its batch limit has) and takes `length × unit_s` per request, so the time an engine is
busy is set by the lengths it drew.
"""

import doctest
import os
import time
from pathlib import Path

import pytest

from rl import scheduler
from rl.scheduler import EnginePool, EngineRestartError, WorkItem

UNIT_S = 0.02  # seconds per unit of length on the simulated engine


class SimEngine:
    """A stand-in engine: serves requests one at a time, counts how many are outstanding, can die or fail."""

    def __init__(self, unit_s: float = UNIT_S, die_on: int = -1, marker: str = "", fail_on: int = -1, core_dies_on: int = -1):
        import asyncio

        self.lock = asyncio.Lock()
        self.unit_s, self.die_on, self.marker, self.fail_on = unit_s, die_on, marker, fail_on
        self.core_dies_on = core_dies_on  # the actor lives, its "engine core" dies: every request in it fails at once
        self.core_died = asyncio.Event()
        self.outstanding = self.max_outstanding = 0

    async def work(self, index: int, length: int) -> dict:
        import asyncio

        self.outstanding += 1
        self.max_outstanding = max(self.max_outstanding, self.outstanding)
        try:
            if index == self.core_dies_on and not os.path.exists(self.marker):
                Path(self.marker).touch()
                self.core_died.set()
            if self.core_dies_on >= 0:  # every request in flight sees the death on its own, as vLLM's watchers do
                done, _ = await asyncio.wait([asyncio.ensure_future(self.core_died.wait())], timeout=length * self.unit_s)
                if done:
                    from core.engine import EngineCoreDeadError

                    raise EngineCoreDeadError(f"engine core died under request {index}")
                return {"index": index, "length": length, "pid": os.getpid()}
            async with self.lock:
                if index == self.die_on and not (self.marker and os.path.exists(self.marker)):
                    if self.marker:  # die the first time only: the restarted engine finds the marker
                        Path(self.marker).touch()
                    os._exit(1)
                if index == self.fail_on:
                    raise ValueError(f"bad request {index}")
                await asyncio.sleep(length * self.unit_s)
            return {"index": index, "length": length, "pid": os.getpid()}
        finally:
            self.outstanding -= 1

    async def peak(self) -> int:
        return self.max_outstanding

    async def ping(self) -> int:
        return os.getpid()


def sim_factory(ray, log: list | None = None, **kwargs):
    def factory(i: int):
        if log is not None:
            log.append(i)
        return ray.remote(num_cpus=0)(SimEngine).remote(**kwargs)

    return factory


def submit_work(actor, item: WorkItem):
    return actor.work.remote(item.index, item.payload)


def length_items(lengths: list[int]) -> list[WorkItem]:
    return [WorkItem(i, float(n), n) for i, n in enumerate(lengths)]


def kill_all(ray, pool: EnginePool) -> None:
    for actor in pool.engines:
        ray.kill(actor)


# the long tail arrives together (a batch of hard prompts): the first half holds the long requests
LONG_TAIL = [8, 8, 8, 8, 1, 1, 1, 1] + [1] * 8  # static: 36 units vs 8; balanced: 22 each


def test_doctests():
    assert doctest.testmod(scheduler).failed == 0


def test_continuous_beats_static_on_a_long_tail(ray_local):
    ray = ray_local
    pools = {d: EnginePool(sim_factory(ray), 2, dispatch=d, max_inflight_per_engine=2) for d in ("static", "continuous")}
    for pool in pools.values():
        pool.map(lambda a: a.ping.remote())  # actors up before the clock starts
    out = {d: pool.run(length_items(LONG_TAIL), submit_work) for d, pool in pools.items()}
    for d, (results, stats) in out.items():
        assert [r["index"] for r in results] == list(range(len(LONG_TAIL))), d
        assert [r["length"] for r in results] == LONG_TAIL
        assert stats.attempts == [1] * len(LONG_TAIL) and stats.restarts == 0
        assert sum(e.items for e in stats.engines) == len(LONG_TAIL)
        assert sum(e.cost_done for e in stats.engines) == sum(LONG_TAIL)
    static, cont = out["static"][1], out["continuous"][1]
    assert static.engine_of == [0] * 8 + [1] * 8  # contiguous halves
    assert static.wall_s >= 36 * UNIT_S
    assert cont.wall_s < 0.8 * static.wall_s, (cont.wall_s, static.wall_s)  # ideal 22/36 = 0.61
    assert static.engines[1].idle_fraction > 0.5  # engine 1 waits for engine 0's long tail
    assert max(e.idle_fraction for e in cont.engines) < static.engines[1].idle_fraction - 0.3
    assert cont.idle_fraction_mean < static.idle_fraction_mean
    assert min(e.cost_done for e in cont.engines) >= 16  # both engines did a fair share of the work
    for pool in pools.values():
        kill_all(ray, pool)


def test_max_inflight_is_respected_and_results_come_back_in_index_order(ray_local):
    ray = ray_local
    pool = EnginePool(sim_factory(ray, unit_s=0.005), 2, max_inflight_per_engine=3)
    lengths = [5, 1, 3, 1, 1, 7, 2, 1, 1, 4, 1, 1, 2, 1, 6, 1]
    items = length_items(lengths)[::-1]  # handed over in reverse: results still in index order
    results, stats = pool.run(items, submit_work)
    assert [r["index"] for r in results] == list(range(len(lengths)))
    assert [e.max_inflight for e in stats.engines] == [3, 3]
    assert pool.map(lambda a: a.peak.remote()) == [3, 3]  # what the engines saw, not only our bookkeeping
    kill_all(ray, pool)


def test_balance_by_tokens_sends_a_heavy_items_successor_elsewhere(ray_local):
    ray = ray_local
    costs = [100, 1, 1, 1]
    by = {}
    for balance in ("tokens", "requests"):
        pool = EnginePool(sim_factory(ray, unit_s=0.001), 2, balance_by=balance, max_inflight_per_engine=4)
        items = [WorkItem(i, float(c), 1) for i, c in enumerate(costs)]  # equal real lengths: only the estimate differs
        _, stats = pool.run(items, submit_work)
        by[balance] = stats.engine_of
        kill_all(ray, pool)
    assert by["tokens"] == [0, 1, 1, 1]  # engine 0 holds 100 units: everything else goes to engine 1
    assert by["requests"] == [0, 1, 0, 1]


def test_longest_first_is_optional_and_static_ignores_it(ray_local):
    ray = ray_local
    pool = EnginePool(sim_factory(ray, unit_s=0.001), 2, order="longest_first", max_inflight_per_engine=1)
    results, stats = pool.run(length_items([1, 1, 9, 5]), submit_work)
    assert [r["index"] for r in results] == [0, 1, 2, 3]
    assert stats.engine_of[2] == 0 and stats.engine_of[3] == 1  # the two longest start first
    kill_all(ray, pool)
    pool = EnginePool(sim_factory(ray, unit_s=0.001), 2, dispatch="static", order="longest_first")
    assert pool.run(length_items([1, 1, 9, 5]), submit_work)[1].engine_of == [0, 0, 1, 1]  # contiguous chunks still
    kill_all(ray, pool)


def test_a_dying_engine_is_restarted_and_its_items_rerun_once(ray_local, tmp_path):
    ray = ray_local
    for dispatch in ("continuous", "static"):
        made, restarted = [], []
        marker = tmp_path / f"died-{dispatch}"
        pool = EnginePool(sim_factory(ray, made, unit_s=0.005, die_on=5, marker=str(marker)), 2, dispatch=dispatch,
                          max_inflight_per_engine=3,
                          on_restart=lambda i, actor: restarted.append(i) or actor.ping.remote())  # ready when it answers
        first = pool.engines[:]
        lengths = [2, 3, 1, 4, 2, 1, 3, 2, 1, 2, 4, 1]
        results, stats = pool.run(length_items(lengths), submit_work)
        assert marker.exists()
        assert [r["index"] for r in results] == list(range(len(lengths))), dispatch  # every item exactly once
        assert [r["length"] for r in results] == lengths
        [dead] = [i for i, e in enumerate(stats.engines) if e.restarts]
        assert stats.restarts == 1 and made == [0, 1, dead] and restarted == [dead], dispatch
        assert pool.engines[dead] is not first[dead] and pool.engines[1 - dead] is first[1 - dead]
        assert stats.attempts[5] == 2  # the item that killed it ran again
        assert all(a in (1, 2) for a in stats.attempts)
        if dispatch == "static":  # the chunk stays with its engine: item 5 ran on the replacement
            assert dead == 0 and stats.engine_of == [0] * 6 + [1] * 6
            # the item that killed its engine ran on the replacement (an async actor may start its queued
            # requests in any order, so which others were lost with it is up to Ray)
            assert results[5]["pid"] == ray.get(pool.engines[0].ping.remote())
        kill_all(ray, pool)


def test_an_engine_core_death_seen_by_every_request_restarts_once(ray_local, tmp_path):
    """The actor lives but its engine core died, and each outstanding request fails with it at about the same time:
    the siblings' errors (already done when the first is handled) are the same death, not request failures."""
    ray = ray_local
    made, restarted = [], []
    pool = EnginePool(sim_factory(ray, made, unit_s=0.05, core_dies_on=2, marker=str(tmp_path / "died")), 1,
                      max_inflight_per_engine=4, on_restart=lambda i, actor: restarted.append(i) or actor.ping.remote())
    lengths = [4, 4, 4, 4, 1, 1]
    results, stats = pool.run(length_items(lengths), submit_work)
    assert [r["index"] for r in results] == list(range(len(lengths)))  # every item exactly once
    assert stats.restarts == 1 and made == [0, 0] and restarted == [0]
    assert sum(a == 2 for a in stats.attempts) >= 2  # the dying request and its siblings ran again
    kill_all(ray, pool)


def test_too_many_restarts_name_the_engine(ray_local):
    ray = ray_local
    pool = EnginePool(sim_factory(ray, unit_s=0.001, die_on=2), 2, max_restarts=2)  # dies every time
    with pytest.raises(EngineRestartError, match=r"engine \d died .*3 restarts in this run, more than max_restarts=2"):
        pool.run(length_items([1, 1, 1, 1]), submit_work)
    kill_all(ray, pool)


def test_a_failing_request_names_its_item(ray_local):
    ray = ray_local
    pool = EnginePool(sim_factory(ray, unit_s=0.001, fail_on=3), 2)
    with pytest.raises(RuntimeError, match=r"rollout item 3 failed on engine \d: .*bad request 3"):
        pool.run(length_items([1, 1, 1, 1, 1, 1]), submit_work)
    kill_all(ray, pool)


def test_bad_batches_and_options_are_refused():
    with pytest.raises(ValueError, match="index must number the batch"):
        EnginePool(lambda i: None, 1).run([WorkItem(1, 1.0, None)], submit_work)
    with pytest.raises(ValueError, match="dispatch must be 'continuous' or 'static', got 'even'"):
        EnginePool(lambda i: None, 1, dispatch="even")


# ---- two real vLLM-CPU engines ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vllm_pair(ray_local, tiny_grpo_checkpoint, tmp_path_factory):
    """Two rollout actors from the tiny checkpoint, one core each; `factory` makes (and starts) a replacement."""
    from rl.actors import RolloutActor
    from tests.rl.conftest import grpo_test_config

    ray = ray_local
    cfg = grpo_test_config(tiny_grpo_checkpoint, tmp_path_factory.mktemp("unused"))

    def factory(i: int):
        rollout = {**cfg.rollout.__dict__, "cpu_bind": str(i % (os.cpu_count() or 1))}
        return ray.remote(num_cpus=0)(RolloutActor).remote(cfg.model_path, type(cfg.rollout)(**rollout), cfg.seed)

    actors = [factory(0), factory(1)]
    ray.get([a.start.remote() for a in actors])
    made = []
    yield {"actors": actors, "factory": factory, "made": made}
    for actor in actors + made:
        try:
            ray.get(actor.shutdown.remote(), timeout=30)
        except Exception:  # noqa: BLE001  the one killed by the test
            pass
        ray.kill(actor)


@pytest.mark.vllm
def test_two_vllm_engines_skewed_lengths_and_a_killed_engine(ray_local, vllm_pair, tiny_grpo_checkpoint):
    """Exact lengths (ignore_eos) in prompt order from both engines; an engine killed with requests on it is
    replaced, and its requests give the same tokens on the new engine (per-sample seeds)."""
    from transformers import AutoTokenizer

    from core.engine import SamplingSettings

    ray = ray_local
    tok = AutoTokenizer.from_pretrained(tiny_grpo_checkpoint["model"])
    prompts = [tok.encode(f"What is {i} + {2 * i}?") for i in range(8)]
    lengths = [96, 8, 8, 64, 8, 8, 200, 48]  # long tail; prompt + response stay below max_model_len 256
    settings = SamplingSettings(samples_per_prompt=2, max_response_tokens=8, temperature=1.0, seed=1234, ignore_eos=True)
    items = scheduler.rollout_items(prompts, settings, max_response_tokens=lengths)

    made, restarted, initial = vllm_pair["made"], [], list(vllm_pair["actors"])

    def factory(i):  # the pair at construction, a fresh engine for a restart
        if initial:
            return initial.pop(0)
        made.append(vllm_pair["factory"](i))
        return made[-1]

    pool = EnginePool(factory, 2, max_inflight_per_engine=2,
                      on_restart=lambda i, actor: restarted.append(i) or actor.start.remote())

    reference, stats = pool.run(items, scheduler.submit_rollout)  # both engines, no failure
    groups = scheduler.join_groups(items, [r[0] for r in reference])  # generate() of one prompt: one group
    assert [len(g) for g in groups] == [2] * 8
    assert [[len(s.response_ids) for s in g] for g in groups] == [[n, n] for n in lengths]
    assert all(s.prompt_ids == prompts[p] for p, g in enumerate(groups) for s in g)
    assert set(stats.engine_of) == {0, 1} and stats.restarts == 0
    assert groups[0][0].response_ids != groups[0][1].response_ids  # two samples of a group: two seeds

    victim = {}

    def submit_and_kill(actor, item):
        ref = scheduler.submit_rollout(actor, item)
        if item.index == 6 and not victim:  # the engine holding item 6 dies with it (and more) outstanding
            victim["engine"] = pool.engines.index(actor)
            time.sleep(0.1)  # let it start generating (200 tokens take longer than this)
            ray.kill(actor)
        return ref

    results, stats = pool.run(items, submit_and_kill)
    assert stats.restarts == 1 and restarted == [victim["engine"]] and len(made) == 1
    assert stats.attempts[6] == 2 and stats.engine_of[6] in (0, 1)
    for item, ref_result, result in zip(items, reference, results):  # same seed -> same tokens, any engine
        assert [s.response_ids for s in result[0]] == [s.response_ids for s in ref_result[0]], item.index
