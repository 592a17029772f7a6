"""Hardened HTTP plumbing for mixrl's JSON services: Starlette routes served by uvicorn (h11).

    server = ServiceServer(app, "127.0.0.1", 0)             # bound and listening, not yet serving
    threading.Thread(target=server.serve_forever).start()   # socketserver-like: serve_forever / shutdown / server_close
    server.server_address                                   # (host, port)

Used by the sandbox service (`sandbox.service`) and `mixrl serve-rewards` (`rewards.compat`); it lives in the
sandbox package because that is the lowest floor both may import (DESIGN.md), and it needs only third-party code.

What it protects against:

- **unauthenticated use**: `check_bearer` runs before a byte of the body is read, so a caller without the token
  gets 401 after sending headers only (and the body is never buffered);
- **oversized bodies**: the cap is enforced on the stream itself (`read_body`): a declared ``Content-Length``
  above it is refused (413) before reading; a chunked body is counted as it arrives and refused the moment it
  passes the cap; a malformed ``Content-Length`` (negative, not a number, two values) is a 400 from h11;
- **slow clients (slowloris)**: a request must arrive whole (headers and body) within ``request_timeout_s`` of
  its first byte, or of the connection opening; an idle keep-alive connection closes after ``keep_alive_s``;
  headers larger than ``max_header_bytes`` are a 400;
- **connection floods**: listen backlog 2048 (the old stdlib servers had 5 and reset 40-65% of a
  200-connection burst) and an asyncio accept loop, so connections queue instead of being reset;
- **hostile JSON**: `parse_json_object` answers 400 (never 500) for invalid UTF-8, nesting deeper than
  ``max_depth``, NaN/Infinity or numbers that overflow a float (naming where they are), and integers of more
  than 4300 digits; the endpoints validate the ranges of the numbers they use.

Not covered: rate limiting per client, TLS client certificates (TLS itself: ``ssl_certfile``/``ssl_keyfile``),
request bodies the endpoint decides to read slowly itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import math
import signal
import socket
import threading
from collections.abc import Callable
from typing import Any

import h11
import uvicorn
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

DEFAULT_BACKLOG = 2048


class HTTPError(Exception):
    """A refusal with a status code and a message the caller can act on (STYLE.md §13)."""

    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (``localhost``, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bearer(header: str | None, token: str | None) -> None:
    """Raise 401 unless ``header`` is ``Bearer <token>`` (constant-time); no token configured: anyone."""
    if not token:
        return
    given = (header or "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise HTTPError(401, "missing or wrong token (Authorization: Bearer <token>)", {"WWW-Authenticate": "Bearer"})


def json_response(status: int, payload: Any, headers: dict | None = None, *, allow_nan: bool = False) -> Response:
    return Response(json.dumps(payload, allow_nan=allow_nan).encode(), status, headers=headers,
                    media_type="application/json")


# ------------------------------------------------------------------------------------------------ request body

async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, never buffering more than ``max_bytes`` (413 past it)."""
    declared = request.headers.get("content-length")
    if declared is not None:  # h11 has already refused malformed values; this one is digits only
        if int(declared) > max_bytes:
            raise HTTPError(413, f"body of {declared} bytes exceeds this server's limit of {max_bytes}")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise HTTPError(413, f"body exceeds this server's limit of {max_bytes} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise HTTPError(400, "client went away before sending the whole body") from None
    return b"".join(chunks)


def _parse_constant(name: str) -> float:
    return float("nan") if name == "NaN" else float(name.replace("Infinity", "inf"))


def parse_json_object(body: bytes, *, max_depth: int = 64) -> dict:
    """Decode a request body that must be a JSON object; every failure is an `HTTPError` 400 with the reason.

    >>> parse_json_object(b'{"a": [1, 2.5]}')
    {'a': [1, 2.5]}
    >>> try: parse_json_object(b'{"jobs": [{"total_timeout_s": NaN}]}')
    ... except HTTPError as e: print(e.status, e.message)
    400 jobs[0].total_timeout_s: NaN/Infinity is not a number this service accepts
    """
    if not body.strip():
        raise HTTPError(400, "empty body: send a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise HTTPError(400, f"body is not UTF-8: {e}") from None
    try:
        value = json.loads(text, parse_constant=_parse_constant)
    except RecursionError:
        raise HTTPError(400, f"JSON nested too deeply (limit {max_depth})") from None
    except ValueError as e:  # JSONDecodeError, and ints past Python's 4300-digit conversion limit
        raise HTTPError(400, f"body is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise HTTPError(400, "body must be a JSON object")
    _check_tree(value, max_depth)
    return value


def _path(parts: tuple) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(body)"


def _check_tree(value: Any, max_depth: int) -> None:
    """Depth limit, and no non-finite float anywhere (1e999 parses as inf); iterative, so no recursion."""
    stack: list[tuple[Any, tuple]] = [(value, ())]
    while stack:
        v, where = stack.pop()
        if isinstance(v, float):
            if not math.isfinite(v):
                raise HTTPError(400, f"{_path(where)}: NaN/Infinity is not a number this service accepts")
        elif isinstance(v, (dict, list)):
            if len(where) >= max_depth:
                raise HTTPError(400, f"JSON nested too deeply at {_path(where)} (limit {max_depth})")
            items = v.items() if isinstance(v, dict) else enumerate(v)
            stack.extend((child, (*where, key)) for key, child in items)


def finite_number(value: Any, field: str, *, low: float, high: float, default: float | None = None) -> float:
    """``value`` as a float in [low, high] (``None`` -> ``default``); otherwise 400 naming ``field``.

    >>> finite_number(2, "run_timeout", low=0.001, high=60)
    2.0
    >>> try: finite_number(float("nan"), "total_timeout_s", low=0.001, high=60)
    ... except HTTPError as e: print(e.message)
    'total_timeout_s' must be a finite number in [0.001, 60]; got nan
    """
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise HTTPError(400, f"{field!r} must be a finite number in [{low:g}, {high:g}]; got {value!r}")
    try:
        x = float(value)
    except (ValueError, OverflowError):
        x = float("nan")
    if not (math.isfinite(x) and low <= x <= high):
        raise HTTPError(400, f"{field!r} must be a finite number in [{low:g}, {high:g}]; got {str(value)[:40]}")
    return x


def json_endpoint(handler: Callable[[dict], Any], *, token: Callable[[], str | None] | str | None,
                  max_body_bytes: int, allow_nan_out: bool = False):
    """A Starlette endpoint: token check, capped body read, JSON parse, then ``handler(payload)`` in a worker
    thread (it may block: run code, score). ``HTTPError`` -> its status; anything else -> 500, server stays up."""
    from starlette.concurrency import run_in_threadpool

    async def endpoint(request: Request) -> Response:
        try:
            check_bearer(request.headers.get("authorization"), token() if callable(token) else token)
            body = await read_body(request, max_body_bytes)
            payload = await run_in_threadpool(parse_json_object, body)
            result = await run_in_threadpool(handler, payload)
            return json_response(200, result, allow_nan=allow_nan_out)
        except HTTPError as e:
            return json_response(e.status, {"error": e.message}, e.headers)
        except Exception as e:  # noqa: BLE001 - the server stays up; the client sees a 500 with the reason
            log.exception("request to %s failed", request.url.path)
            return json_response(500, {"error": f"{type(e).__name__}: {e}"})

    return endpoint


def json_not_found(hint: str):
    """Starlette exception handlers for 404/405: a JSON ``{"error"}`` naming the valid routes."""

    async def handler(request: Request, exc) -> Response:
        status = getattr(exc, "status_code", 404)
        return json_response(status, {"error": f"no route {request.method} {request.url.path}; {hint}"})

    return {404: handler, 405: handler}


# ------------------------------------------------------------------------------------------------ the server

class _GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for receiving each request whole.

    uvicorn times out idle keep-alive connections only after a response; a connection that opens and trickles
    (or sends nothing) is held forever. Here a timer runs from the connection's start, and from the first byte
    of each later request, until the request's last byte (h11 state DONE); when it fires the connection closes.
    """

    request_timeout_s: float = 10.0

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._request_timer: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        if self._request_timer is None:
            self._request_timer = self.loop.call_later(self.request_timeout_s, self._on_request_timeout)

    def _disarm(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _on_request_timeout(self) -> None:
        self._request_timer = None
        if not self.transport.is_closing():
            log.info("closing %s: request not received within %.1f s", self.client, self.request_timeout_s)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
            self._arm()  # a request is (or may be) under way: it must finish in time
        else:
            self._disarm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):
        # uvicorn re-raises a captured SIGTERM after shutting down, which kills the process before the caller's
        # clean-up (the sandbox's cgroups) runs; `ServiceServer.serve_forever` handles the signals instead.
        yield


def _bind(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


class ServiceServer:
    """An ASGI app on uvicorn over a socket bound at construction (``port=0``: any free port), with the
    socketserver interface the services had before (``serve_forever``, ``shutdown``, ``server_close``,
    ``server_address``), so callers can run it in a thread."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, *, backlog: int = DEFAULT_BACKLOG,
                 request_timeout_s: float = 10.0, keep_alive_s: int = 5, max_header_bytes: int = 64 * 1024,
                 ssl_certfile: str | None = None, ssl_keyfile: str | None = None,
                 graceful_shutdown_s: int = 5) -> None:
        if bool(ssl_certfile) != bool(ssl_keyfile):
            raise ValueError("TLS needs both a certificate file and its key file")
        self.socket = _bind(host, port, backlog)
        self.server_address = self.socket.getsockname()[:2]
        self.scheme = "https" if ssl_certfile else "http"
        protocol = type("GuardedH11Protocol", (_GuardedH11Protocol,), {"request_timeout_s": request_timeout_s})
        config = uvicorn.Config(app, http=protocol, loop="asyncio", lifespan="off", backlog=backlog,
                                timeout_keep_alive=keep_alive_s, timeout_graceful_shutdown=graceful_shutdown_s,
                                h11_max_incomplete_event_size=max_header_bytes, log_config=None, access_log=False,
                                proxy_headers=False, server_header=False, ssl_certfile=ssl_certfile,
                                ssl_keyfile=ssl_keyfile)
        try:
            config.load()  # fail here, not in serve_forever, on unreadable TLS files
        except BaseException:
            self.socket.close()
            raise
        self._server = _Server(config)
        self._running = threading.Event()
        self._stopped = threading.Event()

    @property
    def url(self) -> str:
        host, port = self.server_address[0], self.server_address[1]
        return f"{self.scheme}://{f'[{host}]' if ':' in host else host}:{port}"

    def serve_forever(self) -> None:
        """Serve until `shutdown`, or, in the main thread, SIGINT/SIGTERM (then return normally, so the caller's
        clean-up runs; a second SIGINT stops without waiting for open requests)."""
        previous = {}
        if threading.current_thread() is threading.main_thread():
            def on_signal(signum, frame):
                if self._server.should_exit and signum == signal.SIGINT:
                    self._server.force_exit = True
                self._server.should_exit = True

            previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        self._running.set()
        try:
            self._server.run(sockets=[self.socket])
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._stopped.set()

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Stop serving and wait for `serve_forever` to return."""
        self._server.should_exit = True
        if self._running.is_set():
            self._stopped.wait(timeout_s)

    def server_close(self) -> None:
        self.socket.close()
