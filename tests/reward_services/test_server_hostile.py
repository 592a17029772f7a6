"""Issue 18, `mixrl serve-rm` and the clients training builds: tokens from a GRPO recipe, /metrics behind the
token, TLS with a self-signed certificate.

Before: `build_reward_router` built `RewardModelServiceClient.from_registry(...)` without a token (even with
``MIXRL_RM_TOKEN`` set), so against a token-protected service every chat sample was masked; ``/metrics``
answered anyone; the server and client spoke plaintext only.
"""

from __future__ import annotations

import urllib.error
import urllib.request

import grpc
import pytest

from reward_services.client import RewardServiceClient
from reward_services.registry import LocalRegistry
from reward_services.server import RewardServer, ServerConfig
from reward_services.types import ScoreItem
from tests.hostile_http import self_signed_cert

from .conftest import wait_for

TOKEN = "rm-s3cret"


@pytest.fixture(scope="module")
def scorer(rm_dir):
    from reward_services.models import load_scorer

    return load_scorer(rm_dir, device="cpu")


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return self_signed_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    return LocalRegistry(tmp_path_factory.mktemp("registry"), poll_s=0.1)


@pytest.fixture(scope="module")
def tls_server(scorer, cert, registry):
    """A token-protected TLS server, registered as chat-rm, with a metrics endpoint."""
    certfile, keyfile = cert
    cfg = ServerConfig(model_name="chat-rm", port=0, token=TOKEN, metrics_port=0, max_workers=4,
                       tls_certfile=certfile, tls_keyfile=keyfile)
    server = RewardServer(scorer, cfg, registry=registry, registry_ttl_s=30).start()
    yield server
    server.drain(timeout_s=2)


def _metrics(server, headers=None) -> tuple[int, str]:
    url = f"http://127.0.0.1:{server.metrics_server.server_address[1]}/metrics"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def test_metrics_need_the_token_when_the_server_has_one(tls_server):
    assert _metrics(tls_server)[0] == 401
    assert _metrics(tls_server, {"Authorization": "Bearer nope"})[0] == 401
    status, text = _metrics(tls_server, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and "mixrl_rm_queue_depth" in text


def test_tls_client_scores_and_a_plaintext_or_untrusting_client_cannot(tls_server, cert):
    items = [ScoreItem("a", prompt="Say hi.", response="Hello there, friend!")]
    with RewardServiceClient("chat-rm", addresses=[tls_server.address], token=TOKEN, tls_ca_file=cert[0]) as c:
        [r] = c.score(items, deadline_s=20)
        assert r.ok and r.reward is not None
    for kwargs in ({}, {"tls": True}):  # plaintext to a TLS port; TLS trusting only the system's roots
        with RewardServiceClient("chat-rm", addresses=[tls_server.address], token=TOKEN, **kwargs) as c:
            with pytest.raises(Exception) as info:
                c.score(items, deadline_s=3)
            assert "UNAVAILABLE" in str(info.value) or "deadline" in str(info.value).lower()


def test_refuses_half_a_tls_configuration(scorer, cert):
    with pytest.raises(ValueError, match="tls-keyfile"):
        RewardServer(scorer, ServerConfig(port=0, tls_certfile=cert[0]))


def test_grpo_recipe_token_and_tls_reach_the_reward_model_client(tls_server, registry, cert, monkeypatch):
    """Finding 3: the trainer's RM client carried no token; now the recipe names the variable that holds it."""
    from rewards.types import Sample
    from rl.actors import build_reward_router
    from rl.config import GRPOConfig

    sample = Sample("mixrl/synthetic_chat", "Dear Tara,\n\nWell done!", "ref", prompt="Write a note.", group_id=0)
    cfg = GRPOConfig(reward_model_registry=f"local:{registry.root}", reward_model_token_env="MY_RM_TOKEN",
                     reward_model_tls_ca_file=cert[0])
    monkeypatch.setenv("MY_RM_TOKEN", TOKEN)
    router = build_reward_router(cfg)
    try:
        client = router.rm_client.client("chat-rm")
        assert client._metadata == (("authorization", f"Bearer {TOKEN}"),)
        assert wait_for(lambda: client.admitted() != [])
        [result] = router.score_batch([sample])
        assert result.reward is not None and "rm_score" in result.components
    finally:
        router.close()
        router.rm_client.close()

    monkeypatch.delenv("MY_RM_TOKEN")  # no secret: the service refuses, the sample is masked (never 0)
    router = build_reward_router(cfg)
    try:
        assert router.rm_client.client("chat-rm")._metadata == ()
        assert wait_for(lambda: router.rm_client.client("chat-rm").admitted() != [])
        [result] = router.score_batch([sample])
        assert result.reward is None
    finally:
        router.close()
        router.rm_client.close()


def test_default_recipe_reads_mixrl_rm_token(monkeypatch, registry):
    from rl.actors import build_reward_router
    from rl.config import GRPOConfig

    monkeypatch.setenv("MIXRL_RM_TOKEN", "from-env")
    monkeypatch.setenv("MIXRL_SANDBOX_TOKEN", "sandbox-env")
    router = build_reward_router(GRPOConfig(reward_model_registry=f"local:{registry.root}",
                                            sandbox_url="http://127.0.0.1:9"))
    try:
        assert router.rm_client.token == "from-env"
        assert router.code_client.executor.token == "sandbox-env"
    finally:
        router.close()
        router.rm_client.close()


def test_plaintext_server_still_answers_plaintext_clients(scorer):
    """No TLS flags: unchanged behaviour (the existing deployments)."""
    server = RewardServer(scorer, ServerConfig(model_name="plain", port=0, max_workers=2)).start()
    try:
        with RewardServiceClient("plain", addresses=[server.address]) as c:
            [r] = c.score([ScoreItem("x", prompt="Hi?", response="Hello!")], deadline_s=20)
            assert r.ok
        with pytest.raises(grpc.RpcError):  # and a TLS client cannot talk to it
            ch = grpc.secure_channel(server.address, grpc.ssl_channel_credentials())
            from grpc_health.v1 import health_pb2, health_pb2_grpc

            health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=3)
    finally:
        server.drain(timeout_s=2)
