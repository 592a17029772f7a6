"""A small loopback stub of the Kubernetes API server: EndpointSlice list and watch only.

No real API server can run in this environment, so the Kubernetes registry backend is tested against this stub
through the real ``kubernetes`` client. It keeps resourceVersions and an event history; `compact()` drops the
history so that a watch from an old version gets ``410 Gone``, as a real API server does after etcd compaction.
"""

from __future__ import annotations

import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class EndpointSliceStub:
    def __init__(self) -> None:
        self.slices: dict[tuple[str, str], dict] = {}
        self.events: list[tuple[int, str, dict]] = []
        self.rv = 100
        self.oldest_rv = 0
        self.cond = threading.Condition()
        self.requests: list[str] = []
        self.gone_sent = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # the body ends when the connection closes (watch streams)

            def do_GET(self):  # noqa: N802
                stub.handle(self)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    # ---------------------------------------------------------------- state changes (the "cluster")

    def set_slice(self, namespace: str, service: str, name: str, endpoints: list[tuple[str, bool]], port: int) -> None:
        with self.cond:
            self.rv += 1
            obj = {
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                "metadata": {"name": name, "namespace": namespace, "resourceVersion": str(self.rv),
                             "labels": {"kubernetes.io/service-name": service}},
                "ports": [{"name": "grpc", "port": port, "protocol": "TCP"}],
                "endpoints": [{"addresses": [ip], "conditions": {"ready": ready},
                               "targetRef": {"kind": "Pod", "name": f"{service}-{ip}-{port}", "namespace": namespace}}
                              for ip, ready in endpoints],
            }
            kind = "MODIFIED" if (namespace, name) in self.slices else "ADDED"
            self.slices[(namespace, name)] = obj
            self.events.append((self.rv, kind, copy.deepcopy(obj)))
            self.cond.notify_all()

    def delete_slice(self, namespace: str, name: str) -> None:
        with self.cond:
            self.rv += 1
            obj = self.slices.pop((namespace, name))
            obj["metadata"]["resourceVersion"] = str(self.rv)
            self.events.append((self.rv, "DELETED", obj))
            self.cond.notify_all()

    def compact(self) -> None:
        """Forget the event history and end open watches: resuming from an old version now gets 410 Gone."""
        with self.cond:
            self.oldest_rv = self.rv + 1
            self.events.clear()
            self.cond.notify_all()

    def close(self) -> None:
        self.server.shutdown()

    # ---------------------------------------------------------------- HTTP

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urlparse(h.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.requests.append(h.path)
        parts = url.path.strip("/").split("/")
        # /apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices
        if len(parts) != 6 or parts[:3] != ["apis", "discovery.k8s.io", "v1"] or parts[5] != "endpointslices":
            h.send_error(404)
            return
        ns = parts[4]
        selector = q.get("labelSelector", "")
        want = dict(kv.split("=", 1) for kv in selector.split(",") if "=" in kv)

        def match(obj):
            return obj["metadata"]["namespace"] == ns and all(obj["metadata"]["labels"].get(k) == v for k, v in want.items())

        if q.get("watch") in ("true", "True", "1"):
            self._watch(h, match, int(q.get("resourceVersion") or 0), float(q.get("timeoutSeconds") or 5))
            return
        with self.cond:
            body = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
                    "metadata": {"resourceVersion": str(self.rv)},
                    "items": [copy.deepcopy(o) for o in self.slices.values() if match(o)]}
        data = json.dumps(body).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _watch(self, h, match, since: int, timeout_s: float) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.end_headers()
        if since < self.oldest_rv:
            gone = {"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                                 "message": f"too old resource version: {since}", "reason": "Expired",
                                                 "code": 410}}
            h.wfile.write((json.dumps(gone) + "\n").encode())
            self.gone_sent += 1
            return
        import time

        end = time.monotonic() + min(timeout_s, 3.0)
        sent = since
        epoch = self.oldest_rv
        while time.monotonic() < end:
            with self.cond:
                if self.oldest_rv != epoch:
                    return  # compacted: end the stream; the client re-watches from its version and gets 410
                pending = [(rv, kind, obj) for rv, kind, obj in self.events if rv > sent and match(obj)]
                if not pending:
                    self.cond.wait(max(0.0, end - time.monotonic()))
                    continue
            for rv, kind, obj in pending:
                h.wfile.write((json.dumps({"type": kind, "object": obj}) + "\n").encode())
                sent = rv
            h.wfile.flush()
