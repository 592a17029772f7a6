"""Prometheus metrics of one server (text exposition format 0.0.4 on a plain HTTP endpoint; no client library).

    GET http://HOST:METRICS_PORT/metrics
    mixrl_rm_queue_depth 3
    mixrl_rm_batch_size_bucket{le="8"} 12 ...
"""

from __future__ import annotations

import bisect
import hmac
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class _Histogram:
    def __init__(self, buckets) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for le, c in zip((*map(str, self.buckets), "+Inf"), self.counts):
            running += c
            out.append(f'{name}_bucket{{le="{le}"}} {running}')
        return out + [f"{name}_sum {self.sum}", f"{name}_count {self.count}"]


class ServerMetrics:
    """Counters and histograms the batcher and the handlers update; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.queue_depth = 0
        self.inflight_requests = 0
        self.items_total: dict[str, int] = {}
        self.requests_rejected_total: dict[str, int] = {}
        self.batch_size = _Histogram(BATCH_BUCKETS)
        self.latency = _Histogram(LATENCY_BUCKETS_S)

    def observe_batch(self, size: int) -> None:
        with self._lock:
            self.batch_size.observe(size)

    def observe_request(self, seconds: float) -> None:
        with self._lock:
            self.latency.observe(seconds)

    def count_item(self, outcome: str, n: int = 1) -> None:
        with self._lock:
            self.items_total[outcome] = self.items_total.get(outcome, 0) + n

    def count_rejected(self, reason: str) -> None:
        with self._lock:
            self.requests_rejected_total[reason] = self.requests_rejected_total.get(reason, 0) + 1

    def render(self) -> str:
        with self._lock:
            lines = [
                "# TYPE mixrl_rm_queue_depth gauge", f"mixrl_rm_queue_depth {self.queue_depth}",
                "# TYPE mixrl_rm_inflight_requests gauge", f"mixrl_rm_inflight_requests {self.inflight_requests}",
                "# TYPE mixrl_rm_items_total counter",
                *(f'mixrl_rm_items_total{{outcome="{k}"}} {v}' for k, v in sorted(self.items_total.items())),
                "# TYPE mixrl_rm_requests_rejected_total counter",
                *(f'mixrl_rm_requests_rejected_total{{reason="{k}"}} {v}'
                  for k, v in sorted(self.requests_rejected_total.items())),
                "# TYPE mixrl_rm_batch_size histogram", *self.batch_size.lines("mixrl_rm_batch_size"),
                "# TYPE mixrl_rm_request_latency_seconds histogram",
                *self.latency.lines("mixrl_rm_request_latency_seconds"),
            ]
        return "\n".join(lines) + "\n"


def serve_metrics(metrics: ServerMetrics, host: str, port: int, token: str | None = None) -> ThreadingHTTPServer:
    """Start the /metrics endpoint in a daemon thread; ``server.server_address[1]`` is the bound port. With a
    token, a scrape needs ``Authorization: Bearer <token>`` (the gRPC port's token; Prometheus: ``authorization``)."""

    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # seconds a connection may stay silent (a slow client cannot hold a thread forever)

        def do_GET(self):  # noqa: N802 - http.server's name
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404)
                return
            if token and not hmac.compare_digest((self.headers.get("Authorization") or "").encode(),
                                                 f"Bearer {token}".encode()):
                self.send_error(401, "missing or wrong token (Authorization: Bearer <token>)")
                return
            body = metrics.render().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # quiet
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="mixrl-rm-metrics").start()
    return server
