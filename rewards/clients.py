"""The interfaces the reward router calls for rewards it cannot compute itself.

Implemented elsewhere (DESIGN.md): the sandbox service's client implements `CodeExecutionClient` (issue: sandbox;
``rewards.code.SandboxCodeClient``), the reward-model services' client implements `RewardModelClient` (issue:
reward_services). ``rewards`` defines the contract only; of the packages behind it, this module imports only
`sandbox.spec` -- `TestSpec`, the data type of the code contract, which the sandbox package (below ``rewards`` in
the layering) owns together with its one parser, `sandbox.spec.spec_from_ground_truth`. Either client can be
swapped for a test double or a remote service.

Contract shared by both: a client raises (any exception) or returns ``error`` when it could not produce a result —
the router then masks the sample (reward ``None``). A client never encodes "I failed" as a low score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from sandbox.spec import TestSpec


@dataclass(frozen=True)
class CodeTestResult:
    """Outcome of running a program against its tests.

    passed/total: tests passed and tests run; the answer reward is 1 only when ``passed == total > 0``.
    error: set when the tests could not be run at all (sandbox down, timeout of the service itself...): the
        sample is masked. A program that crashes or times out on a test is NOT an error: that test failed.
    """

    passed: int
    total: int
    error: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class CodeExecutionClient(Protocol):
    """Runs untrusted code against tests in isolation (the sandbox service)."""

    def run_tests(self, program: str, tests: TestSpec, *, language: str = "python", timeout_s: float = 10.0) -> CodeTestResult:
        """Run ``program`` on every test of ``tests`` (a `sandbox.spec.TestSpec`: stdio, call or assert-style, as
        `sandbox.spec.spec_from_ground_truth` built it); ``timeout_s`` bounds each test. Thread-safe: the router
        calls it concurrently from several threads."""
        ...


@dataclass(frozen=True)
class RewardModelRequest:
    """One response to be scored by a reward model.

    model: the service identifier the registry resolves (e.g. ``"chat-rm"``); ``ground_truth`` lets a generative
    RM judge a free-form answer against a reference (BlueLM-2.5 §2.3.6).
    """

    model: str
    prompt: str
    response: str
    ground_truth: str | None = None
    extra_info: Mapping[str, Any] | None = None


@runtime_checkable
class RewardModelClient(Protocol):
    """Scores responses with a reward-model service."""

    def score(self, requests: Sequence[RewardModelRequest]) -> list[float | None]:
        """One score per request, in order; ``None`` for a request the service could not score. Raising means the
        whole batch failed (all masked). Thread-safe."""
        ...
