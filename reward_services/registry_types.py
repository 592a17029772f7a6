"""The registry contract every discovery backend shares: the `Registry` protocol, `RegistryError`, `WatchCallback`.

Backends (`reward_services.registry`: local folder and etcd; `reward_services.registry_k8s`: EndpointSlices)
import from here, and `reward_services.registry.open_registry` picks one, so the backends never import each
other. Callers keep importing these names from `reward_services.registry`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from reward_services.types import Instance

WatchCallback = Callable[[list[Instance]], None]


class RegistryError(RuntimeError):
    """The registry itself could not be reached or answered nonsense (callers keep their last known good list)."""


@runtime_checkable
class Registry(Protocol):
    def register(self, instance: Instance, ttl_s: float) -> None:
        """Announce `instance` for `ttl_s` seconds; call `refresh` before that or it expires."""

    def refresh(self, instance: Instance, ttl_s: float) -> None:
        """Extend the lease of a registered instance (re-registers it if it expired)."""

    def deregister(self, instance: Instance) -> None:
        """Remove `instance` now (graceful shutdown)."""

    def resolve(self, model: str) -> list[Instance]:
        """Live instances of `model`, sorted by key; raises `RegistryError` when the registry is unreachable."""

    def watch(self, model: str, callback: WatchCallback) -> Callable[[], None]:
        """Call ``callback(instances)`` whenever the live set of `model` changes; returns a function that stops."""
