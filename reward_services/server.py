"""The reward-model gRPC server: dynamic batching, deadlines, backpressure, drain, auth, health, reflection.

    mixrl serve-rm runs/rm/final --port 50051 --registry local:runs/registry --model-name chat-rm
    python -m reward_services.server runs/rm/final --port 0 --ready-file /tmp/rm.json   # same, for tests

Services on one port: ``mixrl.reward.v1.RewardService`` (ours), ``inference.GRPCInferenceService`` (Open Inference
Protocol v2 facade, `reward_services.oip`), ``grpc.health.v1.Health`` and server reflection.

What it protects against:

- overload: a bounded queue (``max_queue_items``); past it a request fails fast with RESOURCE_EXHAUSTED
  ("queue full", retryable elsewhere) instead of queueing unboundedly;
- wasted work: items whose caller's deadline passed, or whose call was cancelled, are dropped before scoring;
- one bad sample failing a batch: validation and scoring errors are per item (`ErrorCode`); a malformed
  *request* (no samples, duplicate ids) is INVALID_ARGUMENT and leaves the server healthy;
- oversized messages: gRPC's receive limit (``max_message_bytes``) answers RESOURCE_EXHAUSTED before parsing;
- mixing reward functions: a request pinning another ``model_digest`` fails with FAILED_PRECONDITION;
- unauthenticated use: with a token, every RPC but health checks needs ``authorization: Bearer <token>``, and
  so does the Prometheus ``/metrics`` endpoint; the server refuses to bind a non-loopback address without one;
- eavesdropping and tampering on the wire: ``--tls-certfile``/``--tls-keyfile`` serve TLS (clients:
  `RewardServiceClient(tls=True, tls_ca_file=...)`); without them the port is plaintext gRPC;
- lost work on shutdown: SIGTERM drains — deregister, health NOT_SERVING, new work UNAVAILABLE, queued and
  in-flight work finishes, then the port closes.

Not covered: client certificates (mutual TLS: terminate it in front, e.g. a mesh sidecar), TLS on the
``/metrics`` port (plain HTTP, token-protected), per-tenant quotas.
"""

from __future__ import annotations

import argparse
import collections
import hmac
import json
import os
import signal
import sys
import threading
import time
import uuid
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from reward_services.cli_args import add_serve_arguments
from reward_services.metrics import ServerMetrics, serve_metrics
from reward_services.oip import add_oip_facade
from reward_services.proto import reward_service_pb2 as pb
from reward_services.proto import reward_service_pb2_grpc as pb_grpc
from reward_services.types import ErrorCode, Instance, ItemResult, ModelInfo, ScoreItem

SERVICE_NAME = "mixrl.reward.v1.RewardService"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
QUEUE_FULL = "queue full"


@dataclass
class ServerConfig:
    """Limits and behaviour of one server. ``batch_wait_s`` is how long the batcher waits for more items after
    the first one arrives (latency traded for batch size)."""

    model_name: str = "reward-model"
    host: str = "127.0.0.1"
    port: int = 50051
    token: str | None = None
    max_batch_items: int = 32
    max_batch_tokens: int = 8192
    max_queue_items: int = 1024
    batch_wait_s: float = 0.005
    max_message_bytes: int = 4 * 1024 * 1024
    max_workers: int = 16
    metrics_port: int | None = None  # None: no metrics endpoint; 0: any free port
    drain_timeout_s: float = 30.0
    tls_certfile: str | None = None  # PEM certificate (chain) and its key: serve TLS instead of plaintext
    tls_keyfile: str | None = None
    # every item in a forward of its own: an item's reward then does not depend on which items share its batch.
    # Batched, it does at rounding level (the quickstart's classifier: up to 7e-7 between batch compositions),
    # and batches form by timing, so a GRPO run that trains on these rewards could not repeat itself exactly.
    # vLLM's VLLM_BATCH_INVARIANT and SGLang's deterministic inference make the same trade for the same reason.
    batch_invariant: bool = False


@dataclass
class _Work:
    item: ScoreItem
    encoded: list[int]
    deadline: float | None  # monotonic
    cancelled: threading.Event
    done: threading.Event = field(default_factory=threading.Event)
    result: ItemResult | None = None

    def finish(self, result: ItemResult) -> None:
        self.result = result
        self.done.set()


class Batcher:
    """One scoring thread; requests enqueue items, the thread forms batches capped by items and tokens."""

    def __init__(self, scorer, cfg: ServerConfig, metrics: ServerMetrics) -> None:
        self.scorer, self.cfg, self.metrics = scorer, cfg, metrics
        self._queue: collections.deque[_Work] = collections.deque()
        self._cond = threading.Condition()
        self._stopped = False
        self.busy = False
        self._thread = threading.Thread(target=self._run, daemon=True, name="mixrl-rm-batcher")
        self._thread.start()

    def submit(self, works: list[_Work]) -> bool:
        """Enqueue all or nothing; False when the queue would exceed its cap (backpressure)."""
        with self._cond:
            if len(self._queue) + len(works) > self.cfg.max_queue_items:
                return False
            self._queue.extend(works)
            self.metrics.queue_depth = len(self._queue)
            self._cond.notify()
        return True

    def idle(self) -> bool:
        with self._cond:
            return not self._queue and not self.busy

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _take_batch(self) -> list[_Work]:
        with self._cond:
            while not self._queue and not self._stopped:
                self._cond.wait()
            if self._stopped and not self._queue:
                return []
            self.busy = True
            first_at = time.monotonic()
            # wait window: gather more items unless the batch is already full
            while len(self._queue) < self.cfg.max_batch_items:
                remaining = first_at + self.cfg.batch_wait_s - time.monotonic()
                if remaining <= 0 or self._stopped:
                    break
                self._cond.wait(remaining)
            batch: list[_Work] = []
            tokens = 0
            while self._queue and len(batch) < self.cfg.max_batch_items:
                n = len(self._queue[0].encoded)
                if batch and tokens + n > self.cfg.max_batch_tokens:
                    break
                batch.append(self._queue.popleft())
                tokens += n
            self.metrics.queue_depth = len(self._queue)
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                if self._stopped:
                    return
                continue
            try:
                now = time.monotonic()
                live = []
                for w in batch:  # drop work nobody waits for any more
                    if w.cancelled.is_set() or (w.deadline is not None and w.deadline <= now):
                        w.finish(ItemResult(w.item.id, None, ErrorCode.DEADLINE, "caller's deadline passed"))
                        self.metrics.count_item("dropped_deadline")
                    else:
                        live.append(w)
                if live:
                    self.metrics.observe_batch(len(live))
                    try:
                        results = ([r for w in live for r in self.scorer.score([w.item], [w.encoded])]
                                   if self.cfg.batch_invariant else
                                   self.scorer.score([w.item for w in live], [w.encoded for w in live]))
                    except Exception as e:  # noqa: BLE001 - a model failure fails these items, not the server
                        results = [ItemResult(w.item.id, None, ErrorCode.INTERNAL, f"{type(e).__name__}: {e}")
                                   for w in live]
                    for w, r in zip(live, results):
                        w.finish(r)
                        self.metrics.count_item(r.error.name.lower())
            finally:
                with self._cond:
                    self.busy = False


def item_from_pb(sample: pb.Sample) -> ScoreItem:
    return ScoreItem(
        id=sample.id, prompt=sample.prompt, response=sample.response,
        messages=tuple((m.role, m.content) for m in sample.messages),
        reference=sample.reference if sample.HasField("reference") else None, metadata=dict(sample.metadata),
    )


def result_to_pb(result: ItemResult) -> pb.Result:
    return pb.Result(id=result.id, reward=result.reward if result.reward is not None else 0.0,
                     head_scores=dict(result.head_scores), judge_text=result.judge_text,
                     error=int(result.error), error_message=result.error_message)


class RequestError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class RewardServicer(pb_grpc.RewardServiceServicer):
    """``RewardService`` over a `Batcher`; also the scoring core the OIP facade calls."""

    def __init__(self, scorer, cfg: ServerConfig, metrics: ServerMetrics) -> None:
        self.scorer, self.cfg, self.metrics = scorer, cfg, metrics
        self.batcher = Batcher(scorer, cfg, metrics)
        self.draining = threading.Event()
        self._inflight = 0
        self._inflight_lock = threading.Lock()
        self.info = ModelInfo(cfg.model_name, scorer.kind, scorer.digest, scorer.max_length, cfg.max_batch_items,
                              cfg.max_batch_tokens, cfg.max_message_bytes)

    # -------------------------------------------------------------- the core, shared by every front end

    def score_items(self, items: list[ScoreItem], context, digest: str = "") -> list[ItemResult]:
        """Validate, enqueue, wait; raises `RequestError` for request-level failures."""
        if self.draining.is_set():
            self.metrics.count_rejected("draining")
            raise RequestError(grpc.StatusCode.UNAVAILABLE, "server is draining")
        if digest and digest != self.scorer.digest:
            self.metrics.count_rejected("digest")
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"model digest mismatch: serving {self.scorer.digest}, caller pinned {digest}")
        if not items:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "request has no samples")
        ids = [it.id for it in items]
        if any(not i for i in ids) or len(set(ids)) != len(ids):
            self.metrics.count_rejected("bad_ids")
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "every sample needs a unique, non-empty id")
        remaining = context.time_remaining() if context is not None else None
        # no deadline reads as a huge remaining time, which overflows timed waits
        deadline = time.monotonic() + remaining if remaining is not None and remaining < 1e6 else None
        cancelled = threading.Event()
        if context is not None:
            context.add_callback(cancelled.set)  # fires when the RPC ends, including a client cancel
        results: list[ItemResult | None] = [None] * len(items)
        works: list[tuple[int, _Work]] = []
        for i, item in enumerate(items):
            encoded = self.scorer.encode(item)
            if isinstance(encoded, ItemResult):
                results[i] = encoded
                self.metrics.count_item(encoded.error.name.lower())
            else:
                works.append((i, _Work(item, encoded, deadline, cancelled)))
        if works and not self.batcher.submit([w for _, w in works]):
            self.metrics.count_rejected("queue_full")
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{QUEUE_FULL}: retry on another instance")
        for i, w in works:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not w.done.wait(timeout):
                cancelled.set()
                raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before scoring finished")
            results[i] = w.result
        return results  # type: ignore[return-value]

    def _guarded(self, context, fn):
        with self._inflight_lock:
            self._inflight += 1
            self.metrics.inflight_requests = self._inflight
        start = time.monotonic()
        try:
            return fn()
        except RequestError as e:
            context.abort(e.code, e.message)
        finally:
            self.metrics.observe_request(time.monotonic() - start)
            with self._inflight_lock:
                self._inflight -= 1
                self.metrics.inflight_requests = self._inflight

    def inflight(self) -> int:
        with self._inflight_lock:
            return self._inflight

    # -------------------------------------------------------------- RPCs

    def Score(self, request, context):  # noqa: N802 - gRPC method name
        def run():
            results = self.score_items([item_from_pb(s) for s in request.samples], context, request.model_digest)
            return pb.ScoreResponse(results=[result_to_pb(r) for r in results], model_digest=self.scorer.digest)

        return self._guarded(context, run)

    def ScoreStream(self, request_iterator, context):  # noqa: N802
        for request in request_iterator:
            yield self.Score(request, context)

    def GetModelInfo(self, request, context):  # noqa: N802
        i = self.info
        return pb.ModelInfo(name=i.name, kind=i.kind, model_digest=i.model_digest, max_length=i.max_length,
                            max_batch_items=i.max_batch_items, max_batch_tokens=i.max_batch_tokens,
                            max_message_bytes=i.max_message_bytes)


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Rejects RPCs without ``authorization: Bearer <token>`` (UNAUTHENTICATED); health checks are exempt so
    that kubelet's gRPC probes work without the secret."""

    EXEMPT_PREFIX = "/grpc.health.v1.Health/"

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or bad bearer token")

        # the refusal must have the same streaming shape as the method it replaces
        self._deny = {
            (False, False): grpc.unary_unary_rpc_method_handler(deny),
            (False, True): grpc.unary_stream_rpc_method_handler(deny),
            (True, False): grpc.stream_unary_rpc_method_handler(deny),
            (True, True): grpc.stream_stream_rpc_method_handler(deny),
        }

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(self.EXEMPT_PREFIX):
            return handler
        meta = dict(handler_call_details.invocation_metadata or ())
        got = (meta.get("authorization") or "").encode()
        if hmac.compare_digest(got, self._expected):
            return handler
        return self._deny[(handler.request_streaming, handler.response_streaming)]


class RewardServer:
    """A running server. `start` binds and serves; `drain` shuts it down gracefully."""

    def __init__(self, scorer, cfg: ServerConfig, *, registry=None, registry_ttl_s: float = 5.0) -> None:
        if cfg.host not in LOOPBACK_HOSTS and not cfg.token:
            raise ValueError(f"refusing to bind non-loopback address {cfg.host!r} without a bearer token (--token)")
        if bool(cfg.tls_certfile) != bool(cfg.tls_keyfile):
            raise ValueError("TLS needs both --tls-certfile and --tls-keyfile")
        self.cfg = cfg
        self.metrics = ServerMetrics()
        self.servicer = RewardServicer(scorer, cfg, self.metrics)
        self.health = health.HealthServicer()
        self.registry, self.registry_ttl_s = registry, registry_ttl_s
        self.heartbeat = None
        self.metrics_server = None
        self.port: int | None = None
        self.instance: Instance | None = None
        self._stopped = threading.Event()
        options = [("grpc.max_receive_message_length", cfg.max_message_bytes),
                   ("grpc.max_send_message_length", cfg.max_message_bytes),
                   ("grpc.so_reuseport", 0)]
        interceptors = [BearerTokenInterceptor(cfg.token)] if cfg.token else []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=cfg.max_workers,
                                                             thread_name_prefix="mixrl-rm-rpc"),
                                  options=options, interceptors=interceptors)

    def start(self) -> RewardServer:
        pb_grpc.add_RewardServiceServicer_to_server(self.servicer, self.server)
        add_oip_facade(self.servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        # the OIP facade is not listed: its descriptors live in our package, not under its wire name
        names = (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self.server)
        host = f"[{self.cfg.host.strip('[]')}]" if ":" in self.cfg.host else self.cfg.host
        if self.cfg.tls_certfile:
            with open(self.cfg.tls_keyfile, "rb") as k, open(self.cfg.tls_certfile, "rb") as c:
                credentials = grpc.ssl_server_credentials([(k.read(), c.read())])
            self.port = self.server.add_secure_port(f"{host}:{self.cfg.port}", credentials)
        else:
            self.port = self.server.add_insecure_port(f"{host}:{self.cfg.port}")
        if not self.port:
            raise OSError(f"could not bind {self.cfg.host}:{self.cfg.port}")
        self.server.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self.cfg.metrics_port is not None:
            self.metrics_server = serve_metrics(self.metrics, self.cfg.host.strip("[]"), self.cfg.metrics_port,
                                                token=self.cfg.token)
        self.instance = Instance(self.cfg.model_name, f"{self.cfg.host}:{self.port}", self.servicer.scorer.digest,
                                 f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:6]}")
        if self.registry is not None:
            from reward_services.registry import Heartbeat

            self.heartbeat = Heartbeat(self.registry, self.instance, self.registry_ttl_s)
        return self

    @property
    def address(self) -> str:
        return f"{self.cfg.host}:{self.port}"

    def drain(self, timeout_s: float | None = None) -> None:
        """Deregister, flip health to NOT_SERVING, refuse new work, finish queued and in-flight work, stop."""
        if self._stopped.is_set():
            return
        timeout_s = self.cfg.drain_timeout_s if timeout_s is None else timeout_s
        if self.heartbeat is not None:
            self.heartbeat.stop(deregister=True)
        self.health.enter_graceful_shutdown()  # every service NOT_SERVING
        self.servicer.draining.set()
        end = time.monotonic() + timeout_s
        while time.monotonic() < end and (self.servicer.inflight() or not self.servicer.batcher.idle()):
            time.sleep(0.01)
        self.server.stop(grace=max(0.0, end - time.monotonic())).wait()
        self.servicer.batcher.stop()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
        self._stopped.set()

    def wait(self) -> None:
        # Timed waits, not one untimed wait: the kernel may deliver SIGTERM to any of the process's threads (gRPC's
        # event engine, the heartbeat), and CPython runs the handler only when the main thread next executes
        # bytecode. An untimed lock wait is never woken then, so the server would ignore SIGTERM for good.
        stopped = False
        while not stopped:  # each 0.2 s timeout returns to bytecode, where a pending SIGTERM handler runs
            stopped = self._stopped.wait(0.2)


# ------------------------------------------------------------------------------------------ command line

def run_server(args: argparse.Namespace, scorer=None) -> int:
    """Serve until SIGTERM/SIGINT, then drain. ``scorer``: one already built (the ``mixrl`` CLI builds the
    rule-based kinds, whose functions live in ``rewards``); default: loaded from ``args.model_dir``."""
    import torch

    from reward_services.models import RULE_KINDS, load_scorer
    from reward_services.registry import open_registry

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = ServerConfig(model_name=args.model_name, host=args.host, port=args.port, token=args.token,
                       max_batch_items=args.max_batch_items, max_batch_tokens=args.max_batch_tokens,
                       max_queue_items=args.max_queue_items, batch_wait_s=args.batch_wait_ms / 1000,
                       max_message_bytes=args.max_message_bytes, metrics_port=args.metrics_port,
                       tls_certfile=args.tls_certfile, tls_keyfile=args.tls_keyfile, batch_invariant=args.batch_invariant)
    if cfg.host not in LOOPBACK_HOSTS and not cfg.token:  # fail before loading the model
        print(f"mixrl serve-rm: refusing to bind {cfg.host} without --token", file=sys.stderr)
        return 2
    if scorer is None:
        if args.kind in RULE_KINDS:
            print(f"serve-rm: --kind {args.kind} is rule-based; serve it with `mixrl serve-rm --kind {args.kind}`",
                  file=sys.stderr)
            return 2
        if args.model_dir is None:
            print("serve-rm: a model folder is required for this kind", file=sys.stderr)
            return 2
        dimensions = tuple(d.strip() for d in args.dimensions.split(",") if d.strip()) if args.dimensions else None
        scorer = load_scorer(args.model_dir, max_length=args.max_length, kind=args.kind, device=args.device,
                             dimensions=dimensions)
    registry = open_registry(args.registry) if args.registry else None
    server = RewardServer(scorer, cfg, registry=registry, registry_ttl_s=args.registry_ttl_s).start()

    def on_signal(signum, frame):
        threading.Thread(target=server.drain, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    info = {"address": server.address, "model_digest": scorer.digest, "kind": scorer.kind, "pid": os.getpid(),
            "metrics_port": server.metrics_server.server_address[1] if server.metrics_server else None,
            "instance_id": server.instance.instance_id}
    if args.ready_file:
        tmp = Path(f"{args.ready_file}.tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, args.ready_file)
    print(json.dumps({"serving": info}), flush=True)
    server.wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reward_services.server", description=__doc__.split("\n")[0])
    add_serve_arguments(parser)
    return run_server(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
