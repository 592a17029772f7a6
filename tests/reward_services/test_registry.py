"""Registry backends: the local folder, a real etcd (Debian's etcd-server, started here on loopback; skipped
when the binary is missing) and the Kubernetes backend against a loopback stub of the API server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

from reward_services.registry import EtcdRegistry, Heartbeat, LocalRegistry, RegistryError, open_registry
from reward_services.types import Instance

from .conftest import wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


A = Instance("chat-rm", "127.0.0.1:5001", "sha256:a", "a")
B = Instance("chat-rm", "127.0.0.1:5002", "sha256:a", "b")
OTHER = Instance("math-rm", "127.0.0.1:5003", "sha256:m", "m")


def contract(registry):
    """What every backend must do: register/resolve per model, TTL expiry, refresh, deregister, watch."""
    registry.register(A, ttl_s=30)
    registry.register(OTHER, ttl_s=30)
    assert registry.resolve("chat-rm") == [A]
    seen: list[list[Instance]] = []
    stop = registry.watch("chat-rm", seen.append)
    try:
        assert wait_for(lambda: seen and seen[-1] == [A])
        registry.register(B, ttl_s=1)  # short lease, never refreshed: expires
        assert wait_for(lambda: seen[-1] == [A, B])
        assert wait_for(lambda: registry.resolve("chat-rm") == [A], timeout_s=5)
        assert wait_for(lambda: seen[-1] == [A], timeout_s=5)
        registry.deregister(A)
        assert wait_for(lambda: seen[-1] == [])
    finally:
        stop()
    beat = Heartbeat(registry, B, ttl_s=1.2)  # refreshed every 0.4 s: outlives its TTL
    time.sleep(2.0)
    assert registry.resolve("chat-rm") == [B]
    beat.stop()
    assert registry.resolve("chat-rm") == []
    assert registry.resolve("math-rm") == [OTHER]


def test_local_registry(tmp_path):
    registry = open_registry(f"local:{tmp_path}")
    assert isinstance(registry, LocalRegistry)
    contract(registry)


def test_local_registry_missing_folder_is_a_registry_error(tmp_path):
    with pytest.raises(RegistryError):
        LocalRegistry(tmp_path / "nope").resolve("chat-rm")


def test_local_registry_removed_while_listing_is_a_registry_error(tmp_path, monkeypatch):
    """The folder vanishes between resolve's first check and its listing (a poll racing a move or a delete): that
    is the registry being down, not a registry with no instances, which would retire every live endpoint."""
    registry = LocalRegistry(tmp_path / "registry")
    registry.register(A, ttl_s=30)
    glob = type(registry.root).glob

    def moved_during_listing(self, pattern):
        registry.root.rename(tmp_path / "registry_gone")
        return glob(self, pattern)

    monkeypatch.setattr(type(registry.root), "glob", moved_during_listing)
    with pytest.raises(RegistryError):
        registry.resolve("chat-rm")


@pytest.fixture
def etcd(tmp_path):
    binary = shutil.which("etcd")
    if binary is None:
        pytest.skip("etcd not installed (Debian package etcd-server; `make install` installs it as root)")
    client_port, peer_port = free_port(), free_port()
    url = f"http://127.0.0.1:{client_port}"
    proc = subprocess.Popen(
        [binary, "--data-dir", str(tmp_path / "etcd"), "--listen-client-urls", url, "--advertise-client-urls", url,
         "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
         "--initial-cluster", f"default=http://127.0.0.1:{peer_port}", "--name", "default"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    registry = EtcdRegistry("127.0.0.1", client_port, timeout_s=1.0)

    def up():
        try:
            registry.resolve("x")
            return True
        except RegistryError:
            return False

    try:
        assert wait_for(up, timeout_s=20), "etcd did not start"
        yield proc, registry, client_port
    finally:
        proc.kill()
        proc.wait()


def test_etcd_registry(etcd):
    _, registry, port = etcd
    assert isinstance(open_registry(f"etcd://127.0.0.1:{port}"), EtcdRegistry)
    contract(registry)


def test_etcd_expired_lease_is_re_registered_on_refresh(etcd):
    _, registry, _ = etcd
    registry.register(A, ttl_s=1)
    assert wait_for(lambda: registry.resolve("chat-rm") == [], timeout_s=6)  # e.g. the process was stopped
    registry.refresh(A, ttl_s=30)
    assert registry.resolve("chat-rm") == [A]


def test_etcd_down_raises_and_client_keeps_last_known_good(etcd):
    from reward_services.client import RewardServiceClient

    proc, registry, _ = etcd
    registry.register(A, ttl_s=30)
    client = RewardServiceClient("chat-rm", registry=registry)
    try:
        assert [i.key for i in client.instances()] == ["a"]
        proc.kill()
        proc.wait()
        with pytest.raises(RegistryError):
            registry.resolve("chat-rm")
        time.sleep(2.5)  # past a poll of the watch's fallback
        assert [i.key for i in client.instances()] == ["a"]
    finally:
        client.close()


@pytest.fixture
def k8s():
    from kubernetes import client

    from .k8s_stub import EndpointSliceStub

    stub = EndpointSliceStub()
    config = client.Configuration()
    config.host = stub.url
    from reward_services.registry_k8s import KubernetesRegistry

    registry = KubernetesRegistry("rl", api_client=client.ApiClient(config), watch_timeout_s=2)
    yield stub, registry
    stub.close()


def test_kubernetes_registry_list_watch_and_relist_on_410(k8s):
    """Against the loopback API stub (no API server can run here): ready endpoints resolve, watch events update
    the list, a compacted history (410 Gone) makes the watcher re-list and catch up."""
    stub, registry = k8s
    stub.set_slice("rl", "chat-rm", "chat-rm-abc", [("10.0.0.1", True), ("10.0.0.2", False)], 50051)
    stub.set_slice("rl", "math-rm", "math-rm-xyz", [("10.0.1.1", True)], 50051)
    assert [i.address for i in registry.resolve("chat-rm")] == ["10.0.0.1:50051"]  # not-ready skipped
    seen: list = []
    stop = registry.watch("chat-rm", lambda inst: seen.append([i.address for i in inst]))
    try:
        assert wait_for(lambda: seen and seen[-1] == ["10.0.0.1:50051"])
        stub.set_slice("rl", "chat-rm", "chat-rm-abc", [("10.0.0.1", True), ("10.0.0.2", True)], 50051)  # now ready
        assert wait_for(lambda: seen[-1] == ["10.0.0.1:50051", "10.0.0.2:50051"])
        stub.set_slice("rl", "chat-rm", "chat-rm-def", [("10.0.0.3", True)], 50051)  # scale-up: a second slice
        assert wait_for(lambda: len(seen[-1]) == 3)
        relists = sum(1 for r in stub.requests if "watch" not in r)
        stub.compact()  # 410 Gone for the next resume ...
        stub.delete_slice("rl", "chat-rm-def")  # ... and a change made while the watcher was cut off
        assert wait_for(lambda: seen[-1] == ["10.0.0.1:50051", "10.0.0.2:50051"])
        assert stub.gone_sent >= 1 and sum(1 for r in stub.requests if "watch" not in r) > relists  # it re-listed
    finally:
        stop()
    # registration is Kubernetes' job: these are no-ops, resolve still reflects the cluster
    registry.register(A, 5)
    registry.deregister(A)
    assert len(registry.resolve("chat-rm")) == 2


def test_kubernetes_api_down_is_a_registry_error():
    from kubernetes import client

    from reward_services.registry_k8s import KubernetesRegistry

    config = client.Configuration()
    config.host = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RegistryError):
        KubernetesRegistry("rl", api_client=client.ApiClient(config), request_timeout_s=1).resolve("chat-rm")
