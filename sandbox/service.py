"""The sandbox as an HTTP service that many RL workers share (Starlette on uvicorn, `sandbox.http_server`).

    mixrl serve-sandbox --host 127.0.0.1 --port 8080 --max-concurrency 2      (wired to :func:`serve`)
    python -m sandbox.service --port 8080                                     (the same, without the CLI)
    MIXRL_SANDBOX_TOKEN=... mixrl serve-sandbox --host 0.0.0.0 --ssl-certfile c.pem --ssl-keyfile k.pem

Endpoints:
- ``POST /run_code`` -- SandboxFusion's request and response, so verl's ``sandbox_fusion`` client works as is.
  Request: ``{"code", "language": "python"|"bash", "stdin", "run_timeout", "compile_timeout" (ignored: no
  compiled languages yet), "memory_limit_MB", "files": {} , "fetch_files": []}``. Response:
  ``{"status": "Success"|"Failed"|"SandboxError", "message", "compile_result": null, "run_result": {"status":
  "Finished"|"TimeLimitExceeded"|"Error", "execution_time", "return_code", "stdout", "stderr"},
  "executor_pod_name": null, "files": {}, "mixrl": <ExecutionResult>}``. A failure of the sandbox itself is
  ``SandboxError`` (verl scores it -1, not as a wrong answer).
- ``POST /run_tests`` -- batched: ``{"jobs": [TestJob.to_dict(), ...]}`` -> ``{"results": [TestsResult...]}``.
- ``GET /health`` -- liveness, load and what isolation the host allowed. No token needed.

Bounded concurrency: at most ``max_concurrency`` programs run at once; at most ``max_pending`` executions
(running + queued; a ``/run_tests`` job counts one) are admitted, beyond that the answer is 429 with
``Retry-After``. Binds loopback by default; binding any other address requires a token, sent as
``Authorization: Bearer <token>`` and checked before the body is read. Bad requests get 400/401/404/413 with a
message and the server stays up. Every time limit a request sets must be a finite number within this server's
maximum (a NaN ``total_timeout_s`` once skipped the cap and held a slot for as long as the program liked); the
HTTP layer's own protections (body cap on the stream, slow-client deadline, backlog, hostile JSON) are listed in
`sandbox.http_server`.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from starlette.applications import Starlette
from starlette.routing import Route

from sandbox.harness import TestJob, run_job
from sandbox.http_server import (HTTPError, ServiceServer, check_bearer, finite_number, is_loopback, json_endpoint,
                                 json_not_found, json_response)
from sandbox.isolation import (LANGUAGES, MEMORY, OK, OUTPUT_LIMIT, SANDBOX_ERROR, TIMEOUT, ExecutionResult, Limits,
                               Sandbox)

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 32 << 20
TOKEN_ENV = "MIXRL_SANDBOX_TOKEN"


class SandboxService:
    """Request handling, independent of the HTTP plumbing (so it can be tested and embedded)."""

    def __init__(self, sandbox: Sandbox, *, token: str | None = None, max_pending: int | None = None,
                 max_wall_time_s: float = 60.0, max_memory_mb: int = 4096, retry_after_s: int = 1) -> None:
        self.sandbox = sandbox
        self.token = token
        self.max_pending = max_pending or 4 * sandbox.max_concurrency
        self.max_wall_time_s, self.max_memory_mb, self.retry_after_s = max_wall_time_s, max_memory_mb, retry_after_s
        self._pending = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=sandbox.max_concurrency, thread_name_prefix="sandbox-job")
        self.served = {"run_code": 0, "run_tests": 0, "rejected_busy": 0}

    # ---- admission -------------------------------------------------------------------------------------

    def _admit(self, units: int) -> None:
        if units > self.max_pending:
            raise HTTPError(413, f"{units} executions in one request; this server admits at most {self.max_pending}")
        with self._lock:
            if self._pending + units > self.max_pending:
                self.served["rejected_busy"] += 1
                raise HTTPError(429, f"busy: {self._pending} executions pending (max {self.max_pending})",
                                {"Retry-After": str(self.retry_after_s)})
            self._pending += units

    def _release(self, units: int) -> None:
        with self._lock:
            self._pending -= units

    def check_token(self, header: str | None) -> None:
        check_bearer(header, self.token)

    # ---- endpoints ------------------------------------------------------------------------------------

    def health(self) -> dict:
        with self._lock:
            pending = self._pending
        return {"status": "ok" if self.sandbox.report.mode != "unavailable" else "unavailable",
                "pending": pending, "max_pending": self.max_pending,
                "max_concurrency": self.sandbox.max_concurrency, "isolation": self.sandbox.report.to_dict(),
                "served": dict(self.served)}

    def run_code(self, body: dict) -> dict:
        code = body.get("code")
        if not isinstance(code, str):
            raise HTTPError(400, "'code' (string) is required")
        language = body.get("language", "python")
        if language not in LANGUAGES:
            raise HTTPError(400, f"unsupported language {language!r}; supported: {sorted(LANGUAGES)}")
        stdin = body.get("stdin") or ""
        if not isinstance(stdin, str):
            raise HTTPError(400, "'stdin' must be a string or null")
        files = body.get("files") or {}
        if not isinstance(files, dict):
            raise HTTPError(400, "'files' must be an object of name -> base64 content")
        try:
            decoded = {name: base64.b64decode(content, validate=True) for name, content in files.items()}
        except (ValueError, TypeError) as e:
            raise HTTPError(400, f"'files' values must be base64: {e}") from e
        limits = self._limits(body.get("run_timeout"), body.get("memory_limit_MB"))
        self._admit(1)
        try:
            result = self.sandbox.run_code(code, language=language, stdin=stdin, limits=limits, files=decoded)
        except ValueError as e:
            raise HTTPError(400, str(e)) from e
        finally:
            self._release(1)
        self.served["run_code"] += 1
        return sandbox_fusion_response(result)

    def run_tests(self, body: dict) -> dict:
        raw = body.get("jobs")
        if not isinstance(raw, list) or not raw:
            raise HTTPError(400, "'jobs' must be a non-empty list")
        for i, j in enumerate(raw):  # before TestJob.from_dict: float("nan") is a float, and NaN > cap is False
            if isinstance(j, dict):
                self._check_job_limits(j, f"jobs[{i}]")
        try:
            jobs = [TestJob.from_dict(j) for j in raw]
        except (ValueError, TypeError, KeyError) as e:
            raise HTTPError(400, f"bad job: {e}") from e
        self._admit(len(jobs))
        try:
            results = list(self._pool.map(lambda job: run_job(self.sandbox, job), jobs))
        finally:
            self._release(len(jobs))
        self.served["run_tests"] += len(jobs)
        return {"results": [r.to_dict() for r in results]}

    def _check_job_limits(self, job: dict, where: str) -> None:
        """Each time limit in (0, max_wall_time_s], memory in [1, max_memory_mb]: finite, or a 400 naming it."""
        for key in ("per_test_timeout_s", "total_timeout_s"):
            if key in job:
                finite_number(job[key], f"{where}.{key}", low=1e-3, high=self.max_wall_time_s)
        if job.get("memory_mb") is not None:
            finite_number(job["memory_mb"], f"{where}.memory_mb", low=1, high=self.max_memory_mb)

    def _limits(self, run_timeout, memory_mb) -> Limits:
        """SandboxFusion's limits: finite and positive, clamped to this server's maxima (verl sends its own)."""
        limits = self.sandbox.limits
        if run_timeout is not None:
            t = min(finite_number(run_timeout, "run_timeout", low=1e-3, high=1e9), self.max_wall_time_s)
            limits = replace(limits, wall_time_s=t, cpu_time_s=t)
        if memory_mb is not None:
            mb = finite_number(memory_mb, "memory_limit_MB", low=-1e9, high=1e12)
            if int(mb) > 0:
                limits = replace(limits, memory_mb=min(int(mb), self.max_memory_mb))
        return limits

    def close(self) -> None:
        self._pool.shutdown(wait=False)


def sandbox_fusion_response(r: ExecutionResult) -> dict:
    """Translate an ExecutionResult into SandboxFusion's RunCodeResponse."""
    if r.status == SANDBOX_ERROR:
        return {"status": "SandboxError", "message": r.message, "compile_result": None, "run_result": None,
                "executor_pod_name": None, "files": {}, "mixrl": r.to_dict()}
    run_status = "TimeLimitExceeded" if r.status == TIMEOUT else "Finished"
    return_code = r.exit_code if r.exit_code is not None else 128 + (r.signal or 9)
    if r.status in (MEMORY, OUTPUT_LIMIT) and return_code == 0:
        return_code = 137
    return {
        "status": "Success" if r.status == OK else "Failed",
        "message": "" if r.status == OK else r.status,
        "compile_result": None,
        "run_result": {"status": run_status, "execution_time": r.wall_time_s, "return_code": return_code,
                       "stdout": r.stdout, "stderr": r.stderr},
        "executor_pod_name": None,
        "files": {},
        "mixrl": r.to_dict(),
    }


def make_app(service: SandboxService, *, max_body_bytes: int = MAX_BODY_BYTES) -> Starlette:
    """The ASGI app: the token is checked before the body is read; the body is capped on the stream."""

    async def health(request):
        return json_response(200, service.health())

    def post(fn):
        return json_endpoint(fn, token=lambda: service.token, max_body_bytes=max_body_bytes, allow_nan_out=True)

    routes = [Route(p, health, methods=["GET"]) for p in ("/health", "/healthz", "/v1/ping")]
    for path, fn in (("/run_code", service.run_code), ("/run_tests", service.run_tests)):
        routes += [Route(path, post(fn), methods=["POST"]), Route(path + "/", post(fn), methods=["POST"])]
    return Starlette(routes=routes, exception_handlers=json_not_found(
        "valid: GET /health, POST /run_code, POST /run_tests"))


def make_server(host: str = "127.0.0.1", port: int = 8080, *, token: str | None = None, max_concurrency: int = 2,
                max_pending: int | None = None, limits: Limits | None = None, sandbox: Sandbox | None = None,
                max_body_bytes: int = MAX_BODY_BYTES, request_timeout_s: float = 10.0,
                ssl_certfile: str | None = None, ssl_keyfile: str | None = None,
                max_wall_time_s: float = 60.0) -> tuple[ServiceServer, SandboxService]:
    """Build the server, bound and listening but not yet serving (``server.serve_forever()``); ``port=0`` picks a
    free port (``server.server_address[1]``)."""
    if not is_loopback(host) and not token:
        raise ValueError(f"binding to {host!r} exposes the sandbox beyond this machine: pass a token "
                         f"(--token or ${TOKEN_ENV})")
    sandbox = sandbox or Sandbox(max_concurrency, limits=limits)
    service = SandboxService(sandbox, token=token, max_pending=max_pending, max_wall_time_s=max_wall_time_s)
    server = ServiceServer(make_app(service, max_body_bytes=max_body_bytes), host, port,
                           request_timeout_s=request_timeout_s, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile)
    return server, service


def serve(host: str = "127.0.0.1", port: int = 8080, *, token: str | None = None, max_concurrency: int = 2,
          max_pending: int | None = None, limits: Limits | None = None, ssl_certfile: str | None = None,
          ssl_keyfile: str | None = None) -> None:
    """Run the service until interrupted (what ``mixrl serve-sandbox`` calls); SIGTERM/SIGINT stop it cleanly,
    so the sandbox's cgroups and staging directory are removed."""
    server, service = make_server(host, port, token=token, max_concurrency=max_concurrency,
                                  max_pending=max_pending, limits=limits, ssl_certfile=ssl_certfile,
                                  ssl_keyfile=ssl_keyfile)
    log.warning("sandbox service on %s (isolation: %s)", server.url, service.sandbox.report.to_dict())
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # Ctrl-C ends `serve-sandbox` quietly; cleanup runs below
        pass
    finally:
        server.server_close()
        service.close()
        service.sandbox.close()


def add_tls_token_arguments(p: argparse.ArgumentParser, token_env: str) -> None:
    """``--token`` (default from ``token_env``), ``--ssl-certfile``, ``--ssl-keyfile`` (shared by the CLIs)."""
    p.add_argument("--token", default=os.environ.get(token_env) or None,
                   help=f"bearer token clients must send (default: ${token_env}); required off loopback")
    p.add_argument("--ssl-certfile", default=None, help="serve HTTPS with this PEM certificate (chain)")
    p.add_argument("--ssl-keyfile", default=None, help="the private key of --ssl-certfile (PEM)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="mixrl sandbox service (SandboxFusion-compatible /run_code)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    add_tls_token_arguments(p, TOKEN_ENV)
    p.add_argument("--max-concurrency", type=int, default=2)
    p.add_argument("--max-pending", type=int, default=None)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    serve(a.host, a.port, token=a.token, max_concurrency=a.max_concurrency, max_pending=a.max_pending,
          ssl_certfile=a.ssl_certfile, ssl_keyfile=a.ssl_keyfile)


if __name__ == "__main__":
    main()
