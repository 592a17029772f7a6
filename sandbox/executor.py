"""The code-execution interface the code reward uses, and its local implementation.

    from sandbox.executor import LocalExecutor
    from sandbox.harness import TestJob, TestSpec
    ex = LocalExecutor(max_concurrency=2)
    [r] = ex.run_tests([TestJob("print(int(input()) * 2)", TestSpec.stdio(["2"], ["4"]))])
    r.passed                                                  # True

Two implementations share one method, ``run_tests(jobs) -> list[TestsResult]`` (same order as ``jobs``):
:class:`LocalExecutor` (a :class:`~sandbox.isolation.Sandbox` pool in this process) and
:class:`sandbox.client.SandboxClient` (a remote ``mixrl serve-sandbox``). A sandbox failure comes back as a
result with ``status == "sandbox_error"``, never as a failed test.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, Sequence

from sandbox.harness import TestJob, TestsResult, run_job
from sandbox.isolation import Limits, Sandbox


class CodeExecutor(Protocol):
    def run_tests(self, jobs: Sequence[TestJob]) -> list[TestsResult]: ...


class LocalExecutor:
    """Runs jobs on a local Sandbox, ``max_concurrency`` at a time."""

    def __init__(self, max_concurrency: int = 2, *, limits: Limits | None = None,
                 sandbox: Sandbox | None = None) -> None:
        self.sandbox = sandbox or Sandbox(max_concurrency, limits=limits)
        self._pool = ThreadPoolExecutor(max_workers=self.sandbox.max_concurrency, thread_name_prefix="sandbox")

    def run_tests(self, jobs: Sequence[TestJob]) -> list[TestsResult]:
        return list(self._pool.map(lambda job: run_job(self.sandbox, job), jobs))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.sandbox.close()

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
