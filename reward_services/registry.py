"""Service discovery for reward models: the local-folder and etcd backends, `Heartbeat` and `open_registry`.

    registry = open_registry("local:runs/registry")          # or "etcd://127.0.0.1:2379", "k8s://namespace"
    beat = Heartbeat(registry, Instance("chat-rm", "127.0.0.1:50051", digest), ttl_s=5.0)   # keeps it alive
    registry.resolve("chat-rm")                              # [Instance(...)] — only live ones
    stop = registry.watch("chat-rm", on_change)              # on_change(list[Instance]) on every change

Liveness is a lease: an instance that stops heart-beating (crashed, SIGKILLed) disappears within ``ttl_s``.
Backends:

- `LocalRegistry` — a folder of JSON files with expiry times; needs no server (the embedded default, one machine).
  Writes are atomic renames, so readers never see half a file.
- `EtcdRegistry` — keys ``/mixrl/rm/<model>/<instance>`` attached to an etcd lease (etcd's own TTL), through
  etcd's JSON gateway with ``etcd3gw`` (``etcd3`` 0.12 breaks with current protobuf). Watch uses etcd's watch API.
- `reward_services.registry_k8s.KubernetesRegistry` — EndpointSlices of a headless Service (Kubernetes itself
  registers ready pods; see that module).

Every backend implements `Registry` (register / deregister / resolve / watch by RM identifier), defined with
`RegistryError` and `WatchCallback` in `reward_services.registry_types` and importable from here too.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from reward_services.registry_types import Registry, RegistryError, WatchCallback
from reward_services.types import Instance

log = logging.getLogger(__name__)

# the shared contract lives in `registry_types` (so `registry_k8s` need not import this module); callers keep
# importing it from here
__all__ = ["EtcdRegistry", "Heartbeat", "LocalRegistry", "PollingWatch", "Registry", "RegistryError",
           "WatchCallback", "open_registry"]


def _instance_to_json(instance: Instance, expires_at: float | None = None) -> str:
    data = {"model": instance.model, "address": instance.address, "model_digest": instance.model_digest,
            "instance_id": instance.instance_id, "metadata": dict(instance.metadata)}
    if expires_at is not None:
        data["expires_at"] = expires_at
    return json.dumps(data, sort_keys=True)


def _instance_from_json(text: str | bytes) -> Instance:
    data = json.loads(text)
    return Instance(data["model"], data["address"], data.get("model_digest", ""), data.get("instance_id", ""),
                    data.get("metadata", {}))


class PollingWatch:
    """Calls ``callback`` when ``resolve(model)`` changes, polling every `interval_s`; registry errors are skipped
    (the previous list stays in force). Used by backends without a native watch, and as their fallback."""

    def __init__(self, resolve: Callable[[], list[Instance]], callback: WatchCallback, interval_s: float,
                 wake: threading.Event | None = None) -> None:
        self._resolve, self._callback, self._interval_s = resolve, callback, interval_s
        self._stop = threading.Event()
        self._wake = wake or threading.Event()
        self._last: list[Instance] | None = None
        self._down = False  # log the transitions, not every failed poll
        self._thread = threading.Thread(target=self._run, daemon=True, name="mixrl-registry-watch")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                current = self._resolve()
            except Exception as exc:  # noqa: BLE001 - registry down: keep the last known good list
                if not self._down:
                    log.warning("registry unreachable (%r); keeping the last known good list", exc)
                self._down = True
                current = None
            else:
                if self._down:
                    log.info("registry reachable again")
                self._down = False
            if current is not None and current != self._last:
                self._last = current
                self._callback(current)
            self._wake.wait(self._interval_s)
            self._wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()


class LocalRegistry:
    """A folder of ``<model>/<key>.json`` files, each with an absolute ``expires_at`` (wall clock).

    Processes on one machine share it; a crashed server's file simply expires. Expired files are ignored by
    `resolve` and removed by `gc`."""

    def __init__(self, root: str | Path, *, poll_s: float = 0.2) -> None:
        self.root = Path(root)
        self.poll_s = poll_s

    def _path(self, instance: Instance) -> Path:
        safe = instance.key.replace("/", "_").replace(":", "_")
        return self.root / instance.model / f"{safe}.json"

    def register(self, instance: Instance, ttl_s: float) -> None:
        path = self._path(instance)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(_instance_to_json(instance, time.time() + ttl_s))
        os.replace(tmp, path)  # atomic: a reader sees the old or the new file, never half of one

    refresh = register

    def deregister(self, instance: Instance) -> None:
        self._path(instance).unlink(missing_ok=True)

    def resolve(self, model: str) -> list[Instance]:
        folder = self.root / model
        if not self.root.exists():
            raise RegistryError(f"local registry folder {self.root} does not exist")
        now, out = time.time(), []
        for path in sorted(folder.glob("*.json")) if folder.exists() else []:
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # deleted or replaced between listing and reading
            if data.get("expires_at", 0) > now:
                out.append(_instance_from_json(json.dumps(data)))
        if not self.root.exists():  # removed while we listed it: what we saw is not the registry's answer
            raise RegistryError(f"local registry folder {self.root} does not exist")
        return sorted(out, key=lambda i: i.key)

    def gc(self) -> int:
        """Delete expired registrations; returns how many."""
        removed, now = 0, time.time()
        for path in self.root.glob("*/*.json"):
            try:
                if json.loads(path.read_text()).get("expires_at", 0) <= now:
                    path.unlink(missing_ok=True)
                    removed += 1
            except (OSError, ValueError):
                continue
        return removed

    def watch(self, model: str, callback: WatchCallback) -> Callable[[], None]:
        return PollingWatch(lambda: self.resolve(model), callback, self.poll_s).stop


class EtcdRegistry:
    """Instances under ``<prefix><model>/<key>``, each attached to its own etcd lease of ``ttl_s``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 2379, *, prefix: str = "/mixrl/rm/",
                 timeout_s: float = 2.0) -> None:
        import etcd3gw

        self.prefix = prefix
        self.client = etcd3gw.client(host=host, port=port, timeout=timeout_s)
        self._leases: dict[str, object] = {}
        self._lock = threading.Lock()

    def _key(self, instance: Instance) -> str:
        return f"{self.prefix}{instance.model}/{instance.key}"

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - etcd3gw raises requests/etcd exceptions of several kinds
            raise RegistryError(f"etcd: {type(e).__name__}: {e}") from e

    def register(self, instance: Instance, ttl_s: float) -> None:
        lease = self._call(self.client.lease, ttl=max(1, round(ttl_s)))
        self._call(self.client.put, self._key(instance), _instance_to_json(instance), lease=lease)
        with self._lock:
            self._leases[instance.key] = lease

    def refresh(self, instance: Instance, ttl_s: float) -> None:
        """Keep the lease alive; if it already expired (a stalled process, a partition longer than the TTL),
        register again under a new lease. Raises `RegistryError` when etcd is unreachable."""
        with self._lock:
            lease = self._leases.get(instance.key)
        if lease is not None:
            try:
                if int(lease.refresh()) > 0:  # an expired lease answers TTL <= 0 (or an error)
                    return
            except Exception as exc:  # noqa: BLE001 - expired or unreachable: registering tells them apart
                log.debug("lease refresh for %s failed (%r); registering again", instance.key, exc)
        self.register(instance, ttl_s)

    def deregister(self, instance: Instance) -> None:
        self._call(self.client.delete, self._key(instance))
        with self._lock:
            lease = self._leases.pop(instance.key, None)
        if lease is not None:
            self._call(lease.revoke)

    def resolve(self, model: str) -> list[Instance]:
        items = self._call(self.client.get_prefix, f"{self.prefix}{model}/")
        return sorted((_instance_from_json(value) for value, _ in items), key=lambda i: i.key)

    def watch(self, model: str, callback: WatchCallback) -> Callable[[], None]:
        """etcd's watch wakes a re-resolve at once; a slow poll covers a broken watch stream."""
        wake = threading.Event()
        poller = PollingWatch(lambda: self.resolve(model), callback, 2.0, wake=wake)
        try:
            events, cancel = self.client.watch_prefix(f"{self.prefix}{model}/")
        except Exception as exc:  # noqa: BLE001 - no watch stream: polling alone
            log.warning("etcd watch on %r unavailable (%r); polling every 2 s instead", model, exc)
            return poller.stop

        def pump() -> None:
            try:
                for _ in events:
                    wake.set()
            except Exception as exc:  # noqa: BLE001 - stream broke; the poller carries on
                log.warning("etcd watch stream on %r broke (%r); polling every 2 s instead", model, exc)

        threading.Thread(target=pump, daemon=True, name="mixrl-etcd-watch").start()

        def stop() -> None:
            poller.stop()
            try:
                cancel()
            except Exception as exc:  # noqa: BLE001 - the stream is already gone; nothing left to stop
                log.debug("cancelling the etcd watch on %r: %r", model, exc)

        return stop


class Heartbeat:
    """Registers `instance` now and refreshes it every ``ttl_s / 3`` in a daemon thread until `stop`.
    A failed refresh (registry down) is retried at the next beat; the registration then lapses on its own."""

    def __init__(self, registry: Registry, instance: Instance, ttl_s: float = 5.0) -> None:
        self.registry, self.instance, self.ttl_s = registry, instance, ttl_s
        self._stop = threading.Event()
        registry.register(instance, ttl_s)
        self._thread = threading.Thread(target=self._run, daemon=True, name="mixrl-rm-heartbeat")
        self._thread.start()

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.registry.refresh(self.instance, self.ttl_s)
            except Exception as exc:  # noqa: BLE001 - next beat retries; the registration lapses after its TTL
                if not failing:
                    log.warning("heartbeat for %s failed (%r); retrying every %.1f s", self.instance.key, exc, self.ttl_s / 3)
                failing = True
            else:
                if failing:
                    log.info("heartbeat for %s recovered", self.instance.key)
                failing = False

    def stop(self, deregister: bool = True) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        if deregister:
            try:
                self.registry.deregister(self.instance)
            except Exception as exc:  # noqa: BLE001 - it expires by itself after its TTL
                log.warning("deregistering %s failed (%r); it expires after %.1f s", self.instance.key, exc, self.ttl_s)


def open_registry(spec: str) -> Registry:
    """``local:PATH`` (or a bare path), ``etcd://HOST:PORT``, ``k8s://NAMESPACE[/SERVICE_LABEL]``."""
    if spec.startswith("etcd://"):
        host, _, port = spec.removeprefix("etcd://").rstrip("/").rpartition(":")
        return EtcdRegistry(host or "127.0.0.1", int(port or 2379))
    if spec.startswith("k8s://"):
        from reward_services.registry_k8s import KubernetesRegistry

        return KubernetesRegistry(namespace=spec.removeprefix("k8s://").strip("/") or "default")
    return LocalRegistry(spec.removeprefix("local:"))
