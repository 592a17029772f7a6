"""Code reward: 1 if the program passes every test, else 0 (pass rate as an option); None if the sandbox failed.

BlueLM-2.5 §2.3.5: coding tasks are rewarded by running the model's code against test cases. The code runs in
the sandbox (``sandbox/``): a local pool in this process, or a remote ``mixrl serve-sandbox`` when a recipe gives
``sandbox_url``. Two ways in:

- the reward router: ``RewardRouter(code_client=make_code_client(sandbox_url=...))`` -- :class:`SandboxCodeClient`
  implements ``rewards.clients.CodeExecutionClient``;
- standalone, batch in, floats out: ``reward = make_code_reward(sandbox_url=None)`` then
  ``reward(responses, ground_truths, extra_infos) -> list[float | None]``.

Tests, from the dataset convention: ``extra_info["test_code"]`` (assert-style) when present, else
``ground_truth`` = JSON ``{"fn_name", "inputs", "outputs"}`` (function calls) or ``{"inputs", "outputs"}``
(stdin/stdout); one parser for both ways in, `sandbox.spec.spec_from_ground_truth`. The program is the last
fenced code block after any ``<think>`` block; no block scores 0.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from rewards.clients import CodeTestResult
from rewards.extract import extract_answer
from sandbox.executor import CodeExecutor, LocalExecutor
from sandbox.harness import SANDBOX_ERROR, TestJob, TestsResult
from sandbox.spec import TestSpec, spec_from_ground_truth

log = logging.getLogger(__name__)

CodeReward = Callable[[Sequence[str], Sequence[Any], Sequence[dict | None]], list[float | None]]


def extract_code(response: str) -> str | None:
    """The last fenced code block after the reasoning, or None.

    >>> extract_code("<think>```python\\nx = 1\\n```</think>\\nSo:\\n```python\\nprint(2)\\n```")
    'print(2)\\n'
    >>> extract_code("no code here") is None
    True
    """
    return extract_answer(response, ("code",))


def score_from_result(result: TestsResult, *, pass_rate: bool = False) -> float | None:
    """1.0 if every test passed, else 0.0 (or the pass rate); None when the sandbox failed.

    >>> from sandbox.harness import TestsResult
    >>> score_from_result(TestsResult("passed", 3, 3)), score_from_result(TestsResult("failed", 1, 4))
    (1.0, 0.0)
    >>> score_from_result(TestsResult("failed", 1, 4), pass_rate=True), score_from_result(TestsResult("sandbox_error", 0, 4))
    (0.25, None)
    """
    if result.status == SANDBOX_ERROR:
        return None
    if pass_rate:
        return result.pass_rate
    return 1.0 if result.passed else 0.0


def make_executor(*, sandbox_url: str | None = None, token: str | None = None,
                  max_concurrency: int = 2) -> CodeExecutor:
    """A remote client when ``sandbox_url`` is given, else a local sandbox pool."""
    if sandbox_url:
        from sandbox.client import SandboxClient

        return SandboxClient(sandbox_url, token=token)
    return LocalExecutor(max_concurrency)


def code_reward(responses: Sequence[str], ground_truths: Sequence[Any], extra_infos: Sequence[dict | None], *,
                executor: CodeExecutor, pass_rate: bool = False, per_test_timeout_s: float = 5.0,
                total_timeout_s: float = 30.0, memory_mb: int | None = None) -> list[float | None]:
    """Score a batch. A row whose tests cannot be read is None (a data problem, logged), never 0."""
    scores: list[float | None] = [None] * len(responses)
    jobs, where = [], []
    for i, (response, gt, extra) in enumerate(zip(responses, ground_truths, extra_infos, strict=True)):
        try:
            spec = spec_from_ground_truth(gt, extra)
        except (ValueError, TypeError, KeyError) as e:
            log.warning("code reward: row %d has unreadable tests (%s); masked", i, e)
            continue
        code = extract_code(response)
        if code is None:
            scores[i] = 0.0
            continue
        jobs.append(TestJob(code, spec, per_test_timeout_s, total_timeout_s, not pass_rate, memory_mb))
        where.append(i)
    for i, result in zip(where, executor.run_tests(jobs)):
        scores[i] = score_from_result(result, pass_rate=pass_rate)
    return scores


def make_code_reward(*, sandbox_url: str | None = None, token: str | None = None, pass_rate: bool = False,
                     per_test_timeout_s: float = 5.0, total_timeout_s: float = 30.0, memory_mb: int | None = None,
                     max_concurrency: int = 2) -> CodeReward:
    """The code reward with its executor bound (local pool, or the service at ``sandbox_url``)."""
    executor = make_executor(sandbox_url=sandbox_url, token=token, max_concurrency=max_concurrency)

    def reward(responses, ground_truths, extra_infos):
        return code_reward(responses, ground_truths, extra_infos, executor=executor, pass_rate=pass_rate,
                           per_test_timeout_s=per_test_timeout_s, total_timeout_s=total_timeout_s,
                           memory_mb=memory_mb)

    reward.executor = executor  # type: ignore[attr-defined]
    return reward


class SandboxCodeClient:
    """``rewards.clients.CodeExecutionClient`` over a sandbox executor (what the reward router calls).

    ``run_tests(program, tests, language="python", timeout_s=10.0) -> CodeTestResult``, ``tests`` a
    `sandbox.spec.TestSpec` (run as given): stops at the first failing test (``passed`` counts the tests passed
    before it); ``error`` is set only when the sandbox itself failed. Thread-safe.
    """

    def __init__(self, executor: CodeExecutor, *, total_timeout_s: float = 60.0, memory_mb: int | None = None,
                 stop_at_first_failure: bool = True) -> None:
        self.executor, self.total_timeout_s, self.memory_mb = executor, total_timeout_s, memory_mb
        self.stop_at_first_failure = stop_at_first_failure

    def run_tests(self, program: str, tests: TestSpec, *, language: str = "python",
                  timeout_s: float = 10.0) -> CodeTestResult:
        if language != "python":
            return CodeTestResult(0, 0, error=f"language {language!r} has no test harness yet (python only)")
        job = TestJob(program, tests, per_test_timeout_s=timeout_s,
                      total_timeout_s=min(self.total_timeout_s, timeout_s * tests.num_tests + 5.0),
                      stop_at_first_failure=self.stop_at_first_failure, memory_mb=self.memory_mb)
        [result] = self.executor.run_tests([job])
        if result.status == SANDBOX_ERROR:
            return CodeTestResult(0, tests.num_tests, error=result.message or "sandbox error")
        return CodeTestResult(result.num_passed, result.num_tests,
                              details={"status": result.status,
                                       "outcomes": [(o.index, o.reason) for o in result.outcomes]})


def make_code_client(*, sandbox_url: str | None = None, token: str | None = None, max_concurrency: int = 2,
                     memory_mb: int | None = None) -> SandboxCodeClient:
    """The router's code client: remote when the recipe gives ``sandbox_url``, else a local sandbox pool."""
    return SandboxCodeClient(make_executor(sandbox_url=sandbox_url, token=token, max_concurrency=max_concurrency),
                             memory_mb=memory_mb)
