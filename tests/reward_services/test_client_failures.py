"""Failure tests of the client against real servers (child processes) on loopback, found through the local
registry: kills, stalls (SIGSTOP), scale-up, registry outage, stale registrations, retry storms, bad servers."""

from __future__ import annotations

import signal
import time
from concurrent import futures

import grpc
import pytest

from reward_services.client import (ClientConfig, InvalidRequestError, NoInstancesError, ProtocolError,
                                    RewardModelServiceClient, RewardServiceClient)
from reward_services.proto import reward_service_pb2 as pb
from reward_services.proto import reward_service_pb2_grpc as pbg
from reward_services.registry import LocalRegistry
from reward_services.types import ScoreItem

from .conftest import ServerProc, wait_for


def items(n, prefix="i", response="A clear, kind and complete answer to the question."):
    return [ScoreItem(f"{prefix}{k}", prompt=f"Question {k}?", response=response) for k in range(n)]


@pytest.fixture
def registry(tmp_path):
    root = tmp_path / "registry"
    root.mkdir()
    return LocalRegistry(root, poll_s=0.1)


def start_fleet(rm_dir, tmp_path, registry, n, *extra):
    procs = [ServerProc(rm_dir, tmp_path, "--registry-ttl-s", "1.5", *extra, registry=f"local:{registry.root}")
             for _ in range(n)]
    return [p.wait_ready() for p in procs]


@pytest.fixture
def fleet(rm_dir, tmp_path, registry):
    started: list[ServerProc] = []

    def start(n, *extra):
        procs = start_fleet(rm_dir, tmp_path, registry, n, *extra)
        started.extend(procs)
        return procs

    yield start
    for p in started:
        p.stop()


def test_instance_killed_mid_batch_every_sample_scored_once_elsewhere(fleet, registry):
    procs = fleet(3, "--max-batch-items", "8")
    cfg = ClientConfig(deadline_s=60, max_batch_items=8, hedge=False, max_workers=6)
    with RewardServiceClient("chat-rm", registry=registry, config=cfg, seed=0) as client:
        assert wait_for(lambda: len(client.admitted()) == 3)
        batch = items(960, response="A clear, kind and complete answer to the question. " * 3)
        victim = procs[0].info["instance_id"]
        with futures.ThreadPoolExecutor(1) as ex:
            fut = ex.submit(client.score, batch)
            assert wait_for(lambda: client.stats.per_instance_ok.get(victim, 0) >= 2, step_s=0.005)
            procs[0].proc.kill()  # SIGKILL while it holds in-flight micro-batches
            results = fut.result(timeout=60)
        assert [r.id for r in results] == [it.id for it in batch]  # each sample exactly once, in order
        assert all(r.ok for r in results)
        assert client.stats.retries >= 1  # the killed instance's batches were retried
        killed = procs[0].info["instance_id"]
        survivors = {p.info["instance_id"] for p in procs[1:]}
        assert set(client.stats.per_instance_ok) - {killed} <= survivors


def test_all_instances_down_is_a_typed_error_within_the_deadline(fleet, registry):
    procs = fleet(2)
    with RewardServiceClient("chat-rm", registry=registry, config=ClientConfig(deadline_s=3.0)) as client:
        assert wait_for(lambda: len(client.admitted()) == 2)
        for p in procs:
            p.proc.kill()
            p.proc.wait()
        start = time.monotonic()
        with pytest.raises(NoInstancesError):
            client.score(items(4))
        assert time.monotonic() - start < 3.5


def test_stalled_instance_is_hedged_ejected_and_readmitted(fleet, registry):
    procs = fleet(2)
    cfg = ClientConfig(deadline_s=20, hedge_fixed_delay_s=0.2, eject_after_failures=2, probe_interval_s=0.2,
                       probe_timeout_s=0.3, retry_budget_max=50)
    with RewardServiceClient("chat-rm", registry=registry, config=cfg, seed=1) as client:
        assert wait_for(lambda: len(client.admitted()) == 2)
        client.score(items(2))
        stalled = procs[1].info["instance_id"]
        procs[1].signal(signal.SIGSTOP)
        try:
            for k in range(30):  # bounded: the stalled instance is ejected after 2 lost hedges
                assert all(r.ok for r in client.score(items(2, prefix=f"c{k}-")))
                if stalled not in client.admitted():
                    break
            assert client.stats.hedges >= 1 and client.stats.hedge_wins >= 1
            assert stalled not in client.admitted() and client.stats.ejections >= 1
            hedges = client.stats.hedges
            start = time.monotonic()
            client.score(items(2, prefix="after"))
            assert time.monotonic() - start < 0.2 + 1.0 and client.stats.hedges == hedges  # no more waiting on it
        finally:
            procs[1].signal(signal.SIGCONT)
        # its lease may have lapsed while stopped; after SIGCONT it heart-beats again and the probe re-admits it
        assert wait_for(lambda: stalled in client.admitted(), timeout_s=10)
        assert client.stats.readmissions >= 1 or client.stats.ejections >= 1


def test_scale_up_is_picked_up_through_the_registry(fleet, registry):
    fleet(1)
    with RewardServiceClient("chat-rm", registry=registry, config=ClientConfig(max_batch_items=4), seed=0) as client:
        assert wait_for(lambda: len(client.admitted()) == 1)
        fleet(1)
        assert wait_for(lambda: len(client.admitted()) == 2)
        for k in range(5):
            client.score(items(16, prefix=f"u{k}-"))
        assert len(client.stats.per_instance_ok) == 2  # both served


def test_registry_down_keeps_the_last_known_good_list(fleet, registry):
    fleet(1)
    with RewardServiceClient("chat-rm", registry=registry) as client:
        assert wait_for(lambda: len(client.admitted()) == 1)
        # the registry is gone: resolve raises RegistryError. Moved away in one rename: an rmtree would let a poll
        # in the middle of it see the folder with its files deleted, which is a registry listing no instances
        registry.root.rename(registry.root.with_name(registry.root.name + "_gone"))
        time.sleep(0.5)
        assert len(client.admitted()) == 1
        assert all(r.ok for r in client.score(items(3)))


def test_stale_registration_expires_within_ttl(fleet, registry):
    procs = fleet(1)
    assert len(registry.resolve("chat-rm")) == 1
    procs[0].proc.kill()  # no deregistration: only the lease can remove it
    start = time.monotonic()
    assert wait_for(lambda: registry.resolve("chat-rm") == [], timeout_s=5)
    assert time.monotonic() - start <= 1.5 + 0.2
    assert registry.gc() == 1


def test_retry_storm_is_bounded_by_the_budget():
    """50 calls to 3 dead instances with 5 attempts each would be 250 attempts; the budget (10 tokens plus
    0.2 per call) caps the retries."""
    dead = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
    cfg = ClientConfig(deadline_s=2, max_attempts=5, eject_after_failures=10**6, backoff_base_s=0.001,
                       retry_budget_ratio=0.2, retry_budget_max=10)
    with RewardServiceClient("chat-rm", addresses=dead, config=cfg) as client:
        for _ in range(50):
            with pytest.raises(NoInstancesError):
                client.score(items(1))
        assert client.stats.retries <= 10 + 0.2 * 50 + 1
        assert client.stats.attempts <= 50 + client.stats.retries
        assert client.stats.budget_exhausted > 0


def test_invalid_argument_is_not_retried(fleet, registry):
    fleet(2)
    with RewardServiceClient("chat-rm", registry=registry) as client:
        assert wait_for(lambda: len(client.admitted()) == 2)
        with pytest.raises(InvalidRequestError) as info:
            client.score([ScoreItem("dup", response="a"), ScoreItem("dup", response="b")])
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert client.stats.attempts == 1 and len(client.admitted()) == 2


def test_deadline_expiry_marks_items_not_zero(fleet, registry):
    fleet(1)
    with RewardServiceClient("chat-rm", registry=registry, config=ClientConfig(hedge=False)) as client:
        assert wait_for(lambda: len(client.admitted()) == 1)
        from reward_services.client import DeadlineExceededError

        with pytest.raises((DeadlineExceededError, NoInstancesError)):
            client.score(items(64, response="long " * 100), deadline_s=0.01)


class _WrongIds(pbg.RewardServiceServicer):
    def Score(self, request, context):  # noqa: N802
        return pb.ScoreResponse(results=[pb.Result(id=f"x{i}", reward=1.0) for i, _ in enumerate(request.samples)])


def test_mismatched_ids_are_detected():
    server = grpc.server(futures.ThreadPoolExecutor(2))
    pbg.add_RewardServiceServicer_to_server(_WrongIds(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with RewardServiceClient("chat-rm", addresses=[f"127.0.0.1:{port}"], config=ClientConfig(deadline_s=5)) as client:
            with pytest.raises(ProtocolError, match="do not match"):
                client.score(items(3))
    finally:
        server.stop(0)


def test_submit_micro_batches_per_sample_calls(fleet, registry):
    fleet(1)
    with RewardServiceClient("chat-rm", registry=registry, config=ClientConfig(coalesce_window_s=0.05)) as client:
        assert wait_for(lambda: len(client.admitted()) == 1)
        futs = [client.submit(ScoreItem("same-id", prompt=f"q{k}", response=f"answer number {k}")) for k in range(20)]
        results = [f.result(timeout=30) for f in futs]
        assert all(r.ok and r.id == "same-id" for r in results)
        assert client.stats.calls < 20  # coalesced


def test_reward_router_scores_chat_through_a_registered_service_and_masks_failures(fleet, registry):
    from rewards import RewardRouter
    from rewards.types import Sample

    fleet(1)
    rm_client = RewardModelServiceClient(registry)
    router = RewardRouter(rm_client=rm_client)
    try:
        ok = Sample("mixrl/synthetic_chat", "Dear Tara,\n\nCongratulations on the new job!", "ref", prompt="Write a note.",
                    group_id=0)
        empty = Sample("mixrl/synthetic_chat", "   ", "ref", prompt="Write a note.", group_id=0)
        assert wait_for(lambda: rm_client.client("chat-rm").admitted() != [])
        results = router.score_batch([ok, empty])
        assert results[0].reward is not None and "rm_score" in results[0].components
        assert results[1].reward is None and results[1].error  # masked, never 0
    finally:
        router.close()
        rm_client.close()


def test_calls_pin_one_model_digest_during_a_rolling_update(fleet, registry, tiny_tokenizer, tmp_path, rm_dir):
    """Old and new model serve under one name: every call uses one digest (the pin, or the majority), and the
    server itself refuses a request pinned to another digest."""
    from reward_services.train import build_reward_model

    new_dir = tmp_path / "new-model"
    build_reward_model(tiny_tokenizer, max_position_embeddings=512, seed=1).save_pretrained(new_dir)
    tiny_tokenizer.save_pretrained(new_dir)
    old = fleet(2)
    new = start_fleet(new_dir, tmp_path, registry, 1)
    try:
        old_digest, new_digest = old[0].info["model_digest"], new[0].info["model_digest"]
        assert old_digest != new_digest
        with RewardServiceClient("chat-rm", registry=registry, config=ClientConfig(max_batch_items=2), seed=0) as client:
            assert wait_for(lambda: len(client.admitted()) == 3)
            for k in range(4):  # unpinned: the majority digest (old, 2 of 3)
                assert all(r.ok for r in client.score(items(8, prefix=f"m{k}-")))
            assert set(client.stats.per_instance_ok) <= {p.info["instance_id"] for p in old}
            client.pin(new_digest)
            client.score(items(8, prefix="n"))
            assert new[0].info["instance_id"] in client.stats.per_instance_ok
        with grpc.insecure_channel(new[0].address) as ch:
            with pytest.raises(grpc.RpcError) as info:
                pbg.RewardServiceStub(ch).Score(pb.ScoreRequest(samples=[pb.Sample(id="a", response="x")],
                                                                model_digest=old_digest), timeout=10)
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        for p in new:
            p.stop()


def test_graceful_drain_under_load_loses_nothing(fleet, registry):
    """SIGTERM one of two instances while calls are in flight: every call still succeeds (in-flight work on the
    draining instance finishes, new work goes to the other) and the drained instance leaves the client's set."""
    procs = fleet(2, "--max-batch-items", "8")
    cfg = ClientConfig(deadline_s=60, max_batch_items=8, hedge=False)
    with RewardServiceClient("chat-rm", registry=registry, config=cfg, seed=2) as client:
        assert wait_for(lambda: len(client.admitted()) == 2)
        drained = procs[0].info["instance_id"]
        with futures.ThreadPoolExecutor(3) as ex:
            calls = [ex.submit(client.score, items(96, prefix=f"g{k}-")) for k in range(12)]
            assert wait_for(lambda: client.stats.per_instance_ok.get(drained, 0) >= 1, step_s=0.005)
            procs[0].signal(signal.SIGTERM)
            results = [r for c in calls for r in c.result(timeout=60)]
        assert len(results) == 12 * 96 and all(r.ok for r in results)
        assert procs[0].proc.wait(timeout=30) == 0  # drained and exited cleanly
        assert wait_for(lambda: drained not in client.admitted())


def test_grpo_run_scores_chat_through_a_service_found_in_its_registry(fleet, registry):
    """A GRPO recipe's `reward_model_registry` gives its reward router a client that finds the RM service."""
    from rewards.types import Sample
    from rl.config import GRPOConfig
    from rl.actors import build_reward_router

    fleet(1)
    router = build_reward_router(GRPOConfig(reward_model_registry=f"local:{registry.root}"))
    try:
        assert wait_for(lambda: router.rm_client.client("chat-rm").admitted() != [])
        [result] = router.score_batch([Sample("mixrl/synthetic_chat", "Dear Tara,\n\nWell done!", "ref", prompt="Write a note.", group_id=0)])
        assert result.reward is not None and "rm_score" in result.components
        assert router.code_client is not None  # code answers run in the sandbox, not masked
    finally:
        router.close()
        router.rm_client.close()
