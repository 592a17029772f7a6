"""The sandbox as an HTTP service that many RL workers share (stdlib ``http.server``, no framework).

    mixrl serve-sandbox --host 127.0.0.1 --port 8080 --max-concurrency 2      (wired to :func:`serve`)
    python -m sandbox.service --port 8080                                     (the same, without the CLI)

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
``Authorization: Bearer <token>``. Bad requests get 400/401/404/413 with a message and the server stays up.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import ipaddress
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sandbox.harness import TestJob, run_job
from sandbox.isolation import (LANGUAGES, MEMORY, OK, OUTPUT_LIMIT, SANDBOX_ERROR, TIMEOUT, ExecutionResult, Limits,
                               Sandbox)

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 32 << 20


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


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
        if self.token is None:
            return
        given = (header or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            raise HTTPError(401, "missing or wrong token (Authorization: Bearer <token>)")

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
        try:
            jobs = [TestJob.from_dict(j) for j in raw]
        except (ValueError, TypeError, KeyError) as e:
            raise HTTPError(400, f"bad job: {e}") from e
        for j in jobs:
            if j.total_timeout_s > self.max_wall_time_s or (j.memory_mb or 0) > self.max_memory_mb:
                raise HTTPError(400, f"limits above this server's maximum ({self.max_wall_time_s} s, "
                                     f"{self.max_memory_mb} MB)")
        self._admit(len(jobs))
        try:
            results = list(self._pool.map(lambda job: run_job(self.sandbox, job), jobs))
        finally:
            self._release(len(jobs))
        self.served["run_tests"] += len(jobs)
        return {"results": [r.to_dict() for r in results]}

    def _limits(self, run_timeout, memory_mb) -> Limits:
        limits = self.sandbox.limits
        try:
            if run_timeout is not None:
                limits = replace(limits, wall_time_s=min(float(run_timeout), self.max_wall_time_s),
                                 cpu_time_s=min(float(run_timeout), self.max_wall_time_s))
            if memory_mb is not None and int(memory_mb) > 0:
                limits = replace(limits, memory_mb=min(int(memory_mb), self.max_memory_mb))
        except (TypeError, ValueError) as e:
            raise HTTPError(400, f"bad limit: {e}") from e
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


def _make_handler(service: SandboxService):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "mixrl-sandbox/1"

        def log_message(self, fmt, *args):  # route to logging, not stderr
            log.debug("%s %s", self.address_string(), fmt % args)

        def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path.rstrip("/") in ("/health", "/healthz", "/v1/ping"):
                self._send(200, service.health())
            else:
                self._send(404, {"error": f"no route GET {self.path}; try GET /health"})

        def do_POST(self):
            routes = {"/run_code": service.run_code, "/run_tests": service.run_tests}
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY_BYTES:
                    self.close_connection = True
                    raise HTTPError(413, f"body of {length} bytes exceeds {MAX_BODY_BYTES}")
                body = self.rfile.read(length)
                route = routes.get(self.path.rstrip("/"))
                if route is None:
                    raise HTTPError(404, f"no route POST {self.path}; valid: {sorted(routes)}")
                service.check_token(self.headers.get("Authorization"))
                try:
                    payload = json.loads(body or b"{}")
                except json.JSONDecodeError as e:
                    raise HTTPError(400, f"body is not JSON: {e}") from e
                if not isinstance(payload, dict):
                    raise HTTPError(400, "body must be a JSON object")
                self._send(200, route(payload))
            except HTTPError as e:
                self._send(e.status, {"error": e.message}, e.headers)
            except Exception as e:  # noqa: BLE001 - the server stays up; the client sees a 500 with the reason
                log.exception("request failed")
                self._send(500, {"error": f"{type(e).__name__}: {e}"})

    return Handler


def _is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(host: str = "127.0.0.1", port: int = 8080, *, token: str | None = None, max_concurrency: int = 2,
                max_pending: int | None = None, limits: Limits | None = None,
                sandbox: Sandbox | None = None) -> tuple[ThreadingHTTPServer, SandboxService]:
    """Build (not start) the server; ``port=0`` picks a free port (``server.server_address[1]``)."""
    if not _is_loopback(host) and not token:
        raise ValueError(f"binding to {host!r} exposes the sandbox beyond this machine: pass a token")
    sandbox = sandbox or Sandbox(max_concurrency, limits=limits)
    service = SandboxService(sandbox, token=token, max_pending=max_pending)
    server = ThreadingHTTPServer((host, port), _make_handler(service))
    server.daemon_threads = True
    return server, service


def serve(host: str = "127.0.0.1", port: int = 8080, *, token: str | None = None, max_concurrency: int = 2,
          max_pending: int | None = None, limits: Limits | None = None) -> None:
    """Run the service until interrupted (what ``mixrl serve-sandbox`` calls)."""
    server, service = make_server(host, port, token=token, max_concurrency=max_concurrency,
                                  max_pending=max_pending, limits=limits)
    log.warning("sandbox service on http://%s:%d (isolation: %s)", host, server.server_address[1],
                service.sandbox.report.to_dict())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        service.close()
        service.sandbox.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="mixrl sandbox service (SandboxFusion-compatible /run_code)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--token", default=None, help="required when --host is not loopback")
    p.add_argument("--max-concurrency", type=int, default=2)
    p.add_argument("--max-pending", type=int, default=None)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    serve(a.host, a.port, token=a.token, max_concurrency=a.max_concurrency, max_pending=a.max_pending)


if __name__ == "__main__":
    main()
