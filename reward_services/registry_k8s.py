"""Kubernetes discovery backend: EndpointSlices of the headless Service named after the RM identifier.

    registry = KubernetesRegistry(namespace="rl")          # in-cluster config, else ~/.kube/config
    registry.resolve("chat-rm")                            # ready endpoints of Service "chat-rm"
    stop = registry.watch("chat-rm", on_change)            # list + watch, re-list on 410 Gone

Registration is Kubernetes' job here: a pod appears in its Service's EndpointSlices when its readiness probe
(the gRPC health check) passes and leaves them when it fails, is deleted, or starts terminating (the server's
drain flips health to NOT_SERVING first). So `register`/`refresh`/`deregister` do nothing; the "lease" is
the readiness probe. Endpoints whose ``ready`` condition is false are not resolved.

Model digests are not in EndpointSlices: instances resolve with an empty digest and the client learns each
instance's digest from ``GetModelInfo`` before pinning calls to it.

Tested against a small loopback stub of the API server (tests/reward_services/k8s_stub.py) that implements
EndpointSlice list and watch (with resourceVersions and 410 Gone), because no real API server can be installed
in this environment; it exercises this code through the real ``kubernetes`` client, not a mock of it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from reward_services.registry_types import RegistryError, WatchCallback
from reward_services.types import Instance

SERVICE_LABEL = "kubernetes.io/service-name"


class KubernetesRegistry:
    def __init__(self, namespace: str = "default", *, api_client=None, port_name: str = "grpc",
                 watch_timeout_s: int = 30, request_timeout_s: float = 5.0) -> None:
        from kubernetes import client, config

        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            api_client = client.ApiClient()
        self.namespace, self.port_name = namespace, port_name
        self.api = client.DiscoveryV1Api(api_client)
        self.watch_timeout_s, self.request_timeout_s = watch_timeout_s, request_timeout_s

    # registration is done by Kubernetes (readiness); these exist to satisfy the Registry protocol
    def register(self, instance: Instance, ttl_s: float) -> None:
        pass

    def refresh(self, instance: Instance, ttl_s: float) -> None:
        pass

    def deregister(self, instance: Instance) -> None:
        pass

    def _instances(self, model: str, slices) -> list[Instance]:
        out = {}
        for sl in slices:
            ports = [p.port for p in (sl.ports or []) if p.name == self.port_name or len(sl.ports) == 1]
            if not ports:
                continue
            for ep in sl.endpoints or []:
                cond = ep.conditions
                if cond is not None and (cond.ready is False or cond.terminating is True):
                    continue
                name = ep.target_ref.name if ep.target_ref is not None else None
                for addr in ep.addresses or []:
                    address = f"[{addr}]:{ports[0]}" if ":" in addr else f"{addr}:{ports[0]}"
                    out[address] = Instance(model, address, "", name or address)
        return sorted(out.values(), key=lambda i: i.key)

    def _list(self, model: str):
        from kubernetes.client.rest import ApiException

        try:
            resp = self.api.list_namespaced_endpoint_slice(self.namespace, label_selector=f"{SERVICE_LABEL}={model}",
                                                           _request_timeout=self.request_timeout_s)
        except (ApiException, OSError, Exception) as e:  # noqa: BLE001 - urllib3 errors of many kinds
            raise RegistryError(f"kubernetes: {type(e).__name__}: {e}") from e
        return resp

    def resolve(self, model: str) -> list[Instance]:
        return self._instances(model, self._list(model).items)

    def watch(self, model: str, callback: WatchCallback) -> Callable[[], None]:
        """List, then watch from the list's resourceVersion; 410 Gone (history compacted) or a broken stream
        re-lists. Errors keep the last delivered list in force."""
        from kubernetes import watch as k8s_watch
        from kubernetes.client.rest import ApiException

        stop = threading.Event()
        state: dict = {"w": None}

        def run() -> None:
            last: list[Instance] | None = None
            backoff = 0.1
            while not stop.is_set():
                try:
                    listed = self._list(model)
                except RegistryError:
                    stop.wait(backoff)
                    backoff = min(2.0, backoff * 2)
                    continue
                slices = {s.metadata.name: s for s in listed.items}
                rv = listed.metadata.resource_version
                current = self._instances(model, slices.values())
                if current != last:
                    last = current
                    callback(current)
                backoff = 0.1
                while not stop.is_set():  # watch until 410 / error; a normal timeout resumes from rv
                    w = k8s_watch.Watch()
                    state["w"] = w
                    try:
                        for event in w.stream(self.api.list_namespaced_endpoint_slice, self.namespace,
                                              label_selector=f"{SERVICE_LABEL}={model}", resource_version=rv,
                                              timeout_seconds=self.watch_timeout_s,
                                              _request_timeout=self.watch_timeout_s + 5):
                            if stop.is_set():
                                break
                            obj = event["object"]
                            rv = obj.metadata.resource_version or rv
                            if event["type"] == "DELETED":
                                slices.pop(obj.metadata.name, None)
                            elif event["type"] in ("ADDED", "MODIFIED"):
                                slices[obj.metadata.name] = obj
                            current = self._instances(model, slices.values())
                            if current != last:
                                last = current
                                callback(current)
                    except ApiException as e:
                        if e.status != 410:
                            stop.wait(backoff)
                        break  # 410 Gone or another API error: re-list
                    except Exception:  # noqa: BLE001 - connection dropped: re-list
                        stop.wait(backoff)
                        break

        threading.Thread(target=run, daemon=True, name="mixrl-k8s-watch").start()

        def stop_watch() -> None:
            stop.set()
            if state["w"] is not None:
                state["w"].stop()

        return stop_watch
