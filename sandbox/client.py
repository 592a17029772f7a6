"""Client of ``mixrl serve-sandbox``, with retries; a :class:`~sandbox.executor.CodeExecutor` for the code reward.

    from sandbox.client import SandboxClient
    client = SandboxClient("http://127.0.0.1:8080", token=None)
    results = client.run_tests(jobs)          # list[TestsResult], in order

Retries (with exponential back-off, honouring ``Retry-After``) on 429, 502, 503, 504 and connection errors.
When the retries run out, each affected job comes back as a ``sandbox_error`` result, so the reward is None
(masked) rather than 0. Errors a caller can act on (400 bad request, 401 wrong token, 404 wrong URL) raise.
Only the standard library is used.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from sandbox.harness import TestJob, TestsResult
from sandbox.isolation import SANDBOX_ERROR, ExecutionResult, Limits

_RETRY_STATUS = (429, 502, 503, 504)


class SandboxClient:
    def __init__(self, url: str, *, token: str | None = None, timeout_s: float = 300.0, max_retries: int = 6,
                 backoff_s: float = 0.5, batch_size: int = 8, max_parallel_requests: int = 4) -> None:
        self.url = url.rstrip("/")
        for suffix in ("/run_code", "/run_tests"):  # accept the endpoint URL verl users are used to
            self.url = self.url.removesuffix(suffix)
        self.token, self.timeout_s, self.max_retries, self.backoff_s = token, timeout_s, max_retries, backoff_s
        self.batch_size, self.max_parallel_requests = batch_size, max_parallel_requests

    def _request(self, method: str, path: str, payload: dict | None = None) -> dict:
        """One call with retries; raises RuntimeError when retries run out, ValueError/PermissionError on 4xx."""
        data = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        last = ""
        for attempt in range(self.max_retries + 1):
            req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
            delay = self.backoff_s * (2 ** attempt)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as e:
                body = e.read().decode(errors="replace")
                if e.code in _RETRY_STATUS:
                    last = f"HTTP {e.code}: {body[:300]}"
                    retry_after = e.headers.get("Retry-After")
                    if retry_after and retry_after.isdigit():
                        delay = max(delay, float(retry_after))
                elif e.code == 401:
                    raise PermissionError(f"sandbox service refused the token: {body[:300]}") from e
                else:
                    raise ValueError(f"sandbox service answered {e.code} to {method} {path}: {body[:500]}") from e
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
                last = f"{type(e).__name__}: {e}"
            if attempt < self.max_retries:
                time.sleep(min(delay, 30.0))
        raise RuntimeError(f"sandbox service at {self.url} unavailable after {self.max_retries + 1} tries: {last}")

    def health(self) -> dict:
        return self._request("GET", "/health")

    def run_code(self, code: str, *, language: str = "python", stdin: str = "",
                 limits: Limits | None = None) -> ExecutionResult:
        limits = limits or Limits()
        payload = {"code": code, "language": language, "stdin": stdin, "run_timeout": limits.wall_time_s,
                   "memory_limit_MB": limits.memory_mb, "files": {}, "fetch_files": []}
        try:
            resp = self._request("POST", "/run_code", payload)
        except RuntimeError as e:
            return ExecutionResult(SANDBOX_ERROR, message=str(e))
        return ExecutionResult.from_dict(resp["mixrl"])

    def run_tests(self, jobs: Sequence[TestJob]) -> list[TestsResult]:
        batches = [list(jobs[i:i + self.batch_size]) for i in range(0, len(jobs), self.batch_size)]
        if not batches:
            return []
        with ThreadPoolExecutor(max_workers=min(self.max_parallel_requests, len(batches))) as pool:
            out = list(pool.map(self._run_batch, batches))
        return [r for batch in out for r in batch]

    def _run_batch(self, batch: list[TestJob]) -> list[TestsResult]:
        try:
            resp = self._request("POST", "/run_tests", {"jobs": [j.to_dict() for j in batch]})
        except RuntimeError as e:
            return [TestsResult(SANDBOX_ERROR, 0, j.spec.num_tests, message=str(e)) for j in batch]
        return [TestsResult.from_dict(r) for r in resp["results"]]
