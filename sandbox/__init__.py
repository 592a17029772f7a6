"""Isolated execution of untrusted code and test harnesses, as a library and as an HTTP service.

- `sandbox.isolation`  `Sandbox.run_code(...) -> ExecutionResult`: namespaces, unprivileged uid, cgroups, rlimits,
                       seccomp (module docstring: what is covered and what is not)
- `sandbox.spec`       `TestSpec` and `spec_from_ground_truth`: the tests of one problem (stdlib only; the reward
                       side's code-client contract uses it)
- `sandbox.harness`    `run_tests(sandbox, code, TestSpec) -> TestsResult`: stdin/stdout, function-call, assert tests
- `sandbox.executor`   `CodeExecutor` (``run_tests(jobs)``) and `LocalExecutor`
- `sandbox.service`    `serve(host, port, ...)`: SandboxFusion-compatible ``/run_code``, batched ``/run_tests``
- `sandbox.client`     `SandboxClient`: the service's client with retries (also a `CodeExecutor`)
- `sandbox.http_server` hardened HTTP plumbing (Starlette on uvicorn) shared with `mixrl serve-rewards`
- `sandbox.cleanup`    removes cgroup folders and staging dirs of owners that died without ``close()``
- `bench/sandbox.py`: isolated runs/s and latency against plain subprocess (JSON)
"""

from sandbox.harness import TestJob, TestsResult, run_tests
from sandbox.isolation import ExecutionResult, Limits, Sandbox
from sandbox.spec import TestSpec

__all__ = ["ExecutionResult", "Limits", "Sandbox", "TestJob", "TestSpec", "TestsResult", "run_tests"]
