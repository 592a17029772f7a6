"""Component tests of the reward-model server: real gRPC servers on loopback (child processes, one shared)."""

from __future__ import annotations

import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from reward_services.proto import reward_service_pb2 as pb
from reward_services.proto import reward_service_pb2_grpc as pbg

from .conftest import ServerProc, wait_for

TOKEN = "s3cret"
AUTH = (("authorization", f"Bearer {TOKEN}"),)


@pytest.fixture(scope="module")
def server(rm_dir, tmp_path_factory):
    """One server with a token, a metrics endpoint, a 64-item queue and a 64 KiB message limit."""
    proc = ServerProc(rm_dir, tmp_path_factory.mktemp("srv"), "--token", TOKEN, "--metrics-port", "0",
                      "--max-queue-items", "64", "--max-message-bytes", str(64 * 1024)).wait_ready()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(server.address)
    yield pbg.RewardServiceStub(channel)
    channel.close()


def samples(n, prefix="s", response="Thank you, here is a short and kind answer."):
    return [pb.Sample(id=f"{prefix}{i}", prompt=f"Question {i}?", response=response) for i in range(n)]


def assert_serving(server):
    with grpc.insecure_channel(server.address) as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="mixrl.reward.v1.RewardService"), timeout=5)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_score_is_per_item_and_deterministic(stub, server):
    batch = samples(3) + [pb.Sample(id="empty", prompt="q", response="  "),
                          pb.Sample(id="chat", messages=[pb.Message(role="user", content="hi"),
                                                         pb.Message(role="assistant", content="Hello! How can I help?")])]
    first = stub.Score(pb.ScoreRequest(samples=batch), metadata=AUTH, timeout=20)
    again = stub.Score(pb.ScoreRequest(samples=batch[::-1]), metadata=AUTH, timeout=20)
    assert [r.id for r in first.results] == ["s0", "s1", "s2", "empty", "chat"]
    assert first.results[3].error == pb.INVALID_INPUT and "empty" in first.results[3].error_message
    assert all(r.error == pb.OK for i, r in enumerate(first.results) if i != 3)
    by_id = {r.id: r.reward for r in again.results}
    assert all(abs(by_id[r.id] - r.reward) < 1e-4 for r in first.results)  # batch order/padding does not matter
    assert first.model_digest == server.info["model_digest"]


def test_model_info_reports_limits(stub, server):
    info = stub.GetModelInfo(pb.ModelInfoRequest(), metadata=AUTH, timeout=5)
    assert (info.name, info.kind, info.max_message_bytes) == ("chat-rm", "classifier", 64 * 1024)
    assert info.model_digest.startswith("sha256:") and info.max_length == 512 and info.max_batch_items == 32


def test_too_long_item_fails_alone(stub):
    long = pb.Sample(id="long", prompt="word " * 2000, response="ok then")
    resp = stub.Score(pb.ScoreRequest(samples=[long, *samples(1)]), metadata=AUTH, timeout=20)
    assert resp.results[0].error == pb.TOO_LONG and resp.results[1].error == pb.OK


def test_stream_answers_each_request(stub):
    reqs = [pb.ScoreRequest(samples=samples(2, prefix=f"r{k}-")) for k in range(3)]
    out = list(stub.ScoreStream(iter(reqs), metadata=AUTH, timeout=20))
    assert [[r.id for r in o.results] for o in out] == [["r0-0", "r0-1"], ["r1-0", "r1-1"], ["r2-0", "r2-1"]]


@pytest.mark.parametrize("metadata", [(), (("authorization", "Bearer wrong"),), (("authorization", TOKEN),)])
def test_missing_or_bad_token_is_unauthenticated(stub, metadata):
    with pytest.raises(grpc.RpcError) as info:
        stub.Score(pb.ScoreRequest(samples=samples(1)), metadata=metadata, timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_streaming_rpcs_need_the_token_too(stub, server):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with pytest.raises(grpc.RpcError) as info:
        list(stub.ScoreStream(iter([pb.ScoreRequest(samples=samples(1))]), timeout=5))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with grpc.insecure_channel(server.address) as ch:
        with pytest.raises(grpc.RpcError) as info:
            next(reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_health_needs_no_token_and_reflection_lists_services(server):
    assert_serving(server)
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(server.address) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        resp = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                              metadata=AUTH, timeout=5))
    names = {s.name for s in resp.list_services_response.service}
    assert {"mixrl.reward.v1.RewardService", "grpc.health.v1.Health"} <= names


@pytest.mark.parametrize("bad", ["no samples", "duplicate ids", "empty id"])
def test_malformed_request_is_invalid_argument_and_server_stays_up(stub, server, bad):
    req = {"no samples": pb.ScoreRequest(),
           "duplicate ids": pb.ScoreRequest(samples=[*samples(2), *samples(1)]),
           "empty id": pb.ScoreRequest(samples=[pb.Sample(id="", prompt="q", response="r")])}[bad]
    with pytest.raises(grpc.RpcError) as info:
        stub.Score(req, metadata=AUTH, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert_serving(server)
    assert stub.Score(pb.ScoreRequest(samples=samples(1)), metadata=AUTH, timeout=20).results[0].error == pb.OK


def test_oversized_request_is_refused_and_server_stays_up(stub, server):
    big = pb.ScoreRequest(samples=[pb.Sample(id="big", prompt="x" * (100 * 1024), response="y")])
    with pytest.raises(grpc.RpcError) as info:
        stub.Score(big, metadata=AUTH, timeout=5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_serving(server)


def test_digest_mismatch_is_failed_precondition(stub):
    with pytest.raises(grpc.RpcError) as info:
        stub.Score(pb.ScoreRequest(samples=samples(1), model_digest="sha256:other"), metadata=AUTH, timeout=5)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_full_queue_answers_resource_exhausted(stub, server):
    with pytest.raises(grpc.RpcError) as info:
        stub.Score(pb.ScoreRequest(samples=samples(65)), metadata=AUTH, timeout=5)  # queue holds 64
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and info.value.details().startswith("queue full")
    assert_serving(server)


def test_expired_deadline_work_is_dropped(stub, server):
    """Many concurrent calls with a deadline shorter than the queue's wait: callers get DEADLINE_EXCEEDED and
    the server drops the work instead of scoring it (its metrics count the drops)."""
    codes = []

    def call(k):
        try:
            stub.Score(pb.ScoreRequest(samples=samples(32, prefix=f"d{k}-", response="a long answer " * 20)),
                       metadata=AUTH, timeout=0.05)
            codes.append("ok")
        except grpc.RpcError as e:
            codes.append(e.code())

    threads = [threading.Thread(target=call, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert grpc.StatusCode.DEADLINE_EXCEEDED in codes
    end = time.monotonic() + 10
    metrics = ""
    while time.monotonic() < end and 'outcome="dropped_deadline"' not in metrics:
        time.sleep(0.1)
        metrics = urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{server.info['metrics_port']}/metrics",
                                                         headers={"Authorization": f"Bearer {TOKEN}"}), timeout=5).read().decode()
    assert 'mixrl_rm_items_total{outcome="dropped_deadline"}' in metrics
    assert_serving(server)


def test_metrics_endpoint(stub, server):
    stub.Score(pb.ScoreRequest(samples=samples(4, prefix="m")), metadata=AUTH, timeout=20)
    text = urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{server.info['metrics_port']}/metrics",
                                                         headers={"Authorization": f"Bearer {TOKEN}"}), timeout=5).read().decode()
    for name in ("mixrl_rm_queue_depth", "mixrl_rm_batch_size_bucket", "mixrl_rm_request_latency_seconds_count",
                 'mixrl_rm_items_total{outcome="ok"}'):
        assert name in text


def test_tritonclient_scores_through_the_oip_facade(server, stub):
    """An off-the-shelf Open Inference Protocol client (Triton's) scores through our server."""
    import tritonclient.grpc as tc

    client = tc.InferenceServerClient(server.address)
    try:
        headers = {"authorization": f"Bearer {TOKEN}"}
        assert client.is_server_live(headers=headers) and client.is_model_ready("chat-rm", headers=headers)
        meta = client.get_model_metadata("chat-rm", headers=headers)
        assert meta.versions == [server.info["model_digest"]]
        prompts = np.array([b"Question 0?", b"Question 1?", b"q"], dtype=object)
        responses = np.array([b"Thank you, here is a short and kind answer."] * 2 + [b""], dtype=object)
        inputs = [tc.InferInput("PROMPT", [3], "BYTES"), tc.InferInput("RESPONSE", [3], "BYTES")]
        inputs[0].set_data_from_numpy(prompts)
        inputs[1].set_data_from_numpy(responses)
        out = client.infer("chat-rm", inputs, headers=headers,
                           outputs=[tc.InferRequestedOutput("REWARD"), tc.InferRequestedOutput("ERROR_CODE")])
        rewards, codes = out.as_numpy("REWARD"), out.as_numpy("ERROR_CODE")
        ours = stub.Score(pb.ScoreRequest(samples=samples(2)), metadata=AUTH, timeout=20).results
        assert codes.tolist() == [0, 0, pb.INVALID_INPUT] and np.isnan(rewards[2])
        assert np.allclose(rewards[:2], [r.reward for r in ours], atol=1e-4)
        from tritonclient.utils import InferenceServerException

        with pytest.raises(InferenceServerException, match="UNAUTHENTICATED"):
            client.infer("chat-rm", inputs)
    finally:
        client.close()


def test_refuses_non_loopback_bind_without_token(rm_dir):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "reward_services.server", str(rm_dir), "--host", "0.0.0.0"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "without --token" in out.stderr


def test_sigterm_drains_gracefully(spawn, tmp_path):
    """SIGTERM: health NOT_SERVING and registry entry gone at once, the in-flight call still completes,
    new calls are refused, then the process exits 0."""
    from reward_services.registry import LocalRegistry

    reg = tmp_path / "registry"
    reg.mkdir()
    proc = spawn("--max-batch-items", "4", "--max-queue-items", "4000", registry=f"local:{reg}")
    assert len(LocalRegistry(reg).resolve("chat-rm")) == 1
    channel = grpc.insecure_channel(proc.address)
    stub_ = pbg.RewardServiceStub(channel)
    n = 2000  # long enough (4 per batch) to be in flight when SIGTERM arrives
    fut = stub_.Score.future(pb.ScoreRequest(samples=samples(n, response="a long answer " * 20)), timeout=120)
    time.sleep(0.3)
    assert not fut.done()
    proc.signal(15)
    health = health_pb2_grpc.HealthStub(channel)
    end, status, errors = time.monotonic() + 10, None, []
    while time.monotonic() < end and proc.proc.poll() is None:
        try:
            status = health.Check(health_pb2.HealthCheckRequest(service="mixrl.reward.v1.RewardService"), timeout=2).status
        except grpc.RpcError as e:  # a busy 2-core machine can time a check out: poll again
            errors.append((e.code(), e.details(), fut.done()))
            continue
        if status == health_pb2.HealthCheckResponse.NOT_SERVING:
            break
        time.sleep(0.02)
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING, errors
    assert LocalRegistry(reg).resolve("chat-rm") == []
    if not fut.done():  # still draining: new work is refused
        with pytest.raises(grpc.RpcError) as info:
            stub_.Score(pb.ScoreRequest(samples=samples(1)), timeout=5)
        assert info.value.code() in (grpc.StatusCode.UNAVAILABLE,)
    resp = fut.result()
    assert len(resp.results) == n and all(r.error == pb.OK for r in resp.results)
    assert proc.proc.wait(timeout=30) == 0
    channel.close()


def test_sigterm_that_lands_on_a_worker_thread_still_drains(spawn, tmp_path):
    """The kernel may hand a process's SIGTERM to any thread (here gRPC's, sent there on purpose with tgkill).
    The server still deregisters and exits 0: stop 26's CI hung on an instance that ignored SIGTERM this way."""
    import ctypes
    import os

    from reward_services.registry import LocalRegistry

    reg = tmp_path / "registry"
    reg.mkdir()
    proc = spawn(registry=f"local:{reg}")
    pid = proc.proc.pid
    workers = [int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid]
    assert workers and len(LocalRegistry(reg).resolve("chat-rm")) == 1
    tgkill = {"x86_64": 234, "aarch64": 131}[os.uname().machine]  # the syscall's number; Python has no wrapper
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.syscall(tgkill, pid, max(workers), 15) == 0, ctypes.get_errno()
    assert wait_for(lambda: LocalRegistry(reg).resolve("chat-rm") == [], timeout_s=10)
    assert proc.proc.wait(timeout=30) == 0
