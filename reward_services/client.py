"""The resilient reward-service client: discovery, balancing, deadlines, retries, hedging, ejection, pinning.

    client = RewardServiceClient("chat-rm", registry=open_registry("local:runs/registry"), token="...")
    results = client.score([ScoreItem("0", prompt="...", response="...")])   # list[ItemResult], in order
    fut = client.submit(item)                                               # per-sample calls, micro-batched

    router = RewardRouter(rm_client=RewardModelServiceClient(open_registry("local:runs/registry")))

Policy (what each part protects against):

- **deadline** per `score` call (``deadline_s``): nothing waits longer; verl's router retries forever, we don't.
- **retries** only for errors that say "this instance could not do it" (UNAVAILABLE, a per-attempt timeout,
  RESOURCE_EXHAUSTED "queue full"), each on a *different* instance, with exponential backoff and full jitter.
  INVALID_ARGUMENT, UNAUTHENTICATED, FAILED_PRECONDITION, oversized messages are not retried: another instance
  would answer the same.
- **retry budget**: a token bucket (every call earns ``retry_budget_ratio`` tokens, every retry or hedge spends
  one), so a fleet-wide outage cannot multiply the load by ``max_attempts`` (a retry storm).
- **hedging**: an attempt not answered after the ``hedge_percentile`` latency of recent calls is duplicated on
  another instance; the first answer wins, the other is cancelled. grpcio ignores the hedging policy of
  service configs, so this is done here.
- **balancing**: power of two choices on this client's in-flight calls per instance.
- **ejection**: ``eject_after_failures`` consecutive failures (errors or lost hedges) eject an instance; a
  background probe (gRPC health check) re-admits it when it answers SERVING. An instance that answered
  "draining" is skipped until a probe says SERVING again.
- **digest pinning**: every call uses instances of one model digest only (the pinned one, or, unpinned, the
  digest most live instances serve, chosen at the start of the call), and the server re-checks it; a rolling
  update never mixes two reward functions within one call — one call per training step per reward model.
- **registry outages**: the last list the registry returned stays in force.
- **protocol errors**: a response whose ids do not match the request's is rejected (`ProtocolError`), never
  zipped onto the wrong samples.
- **credentials**: ``token`` travels as ``authorization: Bearer`` metadata on every RPC (GetModelInfo too);
  ``tls=True`` (with ``tls_ca_file`` for a private CA or self-signed certificate, ``tls_server_name`` when the
  registry's addresses are not the certificate's names) talks TLS to every instance.

Failed items come back with an error, never a made-up score; `RewardModelServiceClient` turns them into None so
the reward router masks those samples.
"""

from __future__ import annotations

import collections
import random
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from reward_services.proto import reward_service_pb2 as pb
from reward_services.proto import reward_service_pb2_grpc as pb_grpc
from reward_services.registry import Registry, RegistryError
from reward_services.types import ErrorCode, Instance, ItemResult, ScoreItem

SERVICE_NAME = "mixrl.reward.v1.RewardService"


class RewardServiceError(RuntimeError):
    """Base of the client's typed errors."""


class NoInstancesError(RewardServiceError):
    """No live, admitted instance of the model (all down, ejected or unregistered)."""


class DeadlineExceededError(RewardServiceError):
    """The call's deadline passed before any instance answered."""


class InvalidRequestError(RewardServiceError):
    """The service refused the request itself (bad input, bad token, digest mismatch, too large): not retried."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code


class ProtocolError(RewardServiceError):
    """A response that does not answer the request (mismatched or missing ids)."""


@dataclass
class ClientConfig:
    deadline_s: float = 30.0
    attempt_timeout_s: float | None = None  # None: the rest of the call's deadline
    max_attempts: int = 3
    backoff_base_s: float = 0.02
    backoff_max_s: float = 1.0
    retry_budget_ratio: float = 0.2  # tokens earned per call
    retry_budget_max: float = 10.0  # bucket size (and initial content)
    hedge: bool = True
    hedge_percentile: float = 95.0
    hedge_min_delay_s: float = 0.05
    hedge_initial_delay_s: float = 1.0  # until `hedge_min_samples` latencies are known
    hedge_min_samples: int = 20
    hedge_fixed_delay_s: float | None = None  # overrides the percentile
    max_batch_items: int = 32  # micro-batch size; also capped by the server's advertised max_batch_items
    coalesce_window_s: float = 0.002  # `submit`: how long per-sample calls are gathered into one batch
    eject_after_failures: int = 3
    probe_interval_s: float = 0.5  # first re-admission probe; doubles per failed probe, capped at 8x
    probe_timeout_s: float = 0.5
    max_workers: int = 16


@dataclass
class _Endpoint:
    instance: Instance
    channel: grpc.Channel
    stub: pb_grpc.RewardServiceStub
    health: health_pb2_grpc.HealthStub
    inflight: int = 0
    failures: int = 0
    ejected: bool = False
    not_serving: bool = False
    probe_at: float = 0.0
    probe_backoff: int = 0
    retired: bool = False  # gone from the registry; closed once idle
    digest: str = ""  # from the registry, or learned with GetModelInfo (registries without digests: Kubernetes)
    info_requested: bool = False
    info_retry_at: float = 0.0

    @property
    def admitted(self) -> bool:
        return not (self.ejected or self.not_serving or self.retired)


@dataclass
class ClientStats:
    calls: int = 0
    attempts: int = 0
    retries: int = 0
    hedges: int = 0
    hedge_wins: int = 0
    budget_exhausted: int = 0
    ejections: int = 0
    readmissions: int = 0
    per_instance_ok: dict[str, int] = field(default_factory=dict)


_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
              grpc.StatusCode.ABORTED}


def _is_retryable(err: grpc.RpcError) -> bool:
    code = err.code()
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return (err.details() or "").startswith("queue full")  # backpressure, not "message too large"
    return code in _RETRYABLE


class RewardServiceClient:
    """Scores items with the live instances of one reward model. Thread-safe."""

    def __init__(self, model: str, *, registry: Registry | None = None, addresses: Sequence[str] = (),
                 token: str | None = None, config: ClientConfig | None = None,
                 model_digest: str | None = None, seed: int | None = None, tls: bool = False,
                 tls_ca_file: str | None = None, tls_server_name: str | None = None) -> None:
        if registry is None and not addresses:
            raise ValueError("give a registry or static addresses")
        self._credentials = None
        self._channel_options: list[tuple[str, object]] = [("grpc.enable_retries", 0)]
        if tls or tls_ca_file:
            ca = Path(tls_ca_file).read_bytes() if tls_ca_file else None  # None: the system's roots
            self._credentials = grpc.ssl_channel_credentials(root_certificates=ca)
            if tls_server_name:
                self._channel_options.append(("grpc.ssl_target_name_override", tls_server_name))
        self.model, self.registry, self.cfg = model, registry, config or ClientConfig()
        self.pinned_digest = model_digest
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._lock = threading.Lock()
        self._endpoints: dict[str, _Endpoint] = {}
        self._latencies: collections.deque[float] = collections.deque(maxlen=256)
        self._budget = self.cfg.retry_budget_max
        self._rng = random.Random(seed)
        self.stats = ClientStats()
        self._server_max_items: int | None = None
        self._closed = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=self.cfg.max_workers, thread_name_prefix="mixrl-rm-client")
        self._pending: list[tuple[ScoreItem, Future]] = []
        self._pending_cond = threading.Condition()
        self._stop_watch = None
        if registry is not None:
            try:
                self._set_instances(registry.resolve(model))
            except RegistryError:
                pass  # nothing known yet: calls fail with NoInstancesError until the watch delivers a list
            self._stop_watch = registry.watch(model, self._set_instances)
        else:
            self._set_instances([Instance(model, a, "", a) for a in addresses])
        self._prober = threading.Thread(target=self._probe_loop, daemon=True, name="mixrl-rm-probe")
        self._prober.start()
        self._coalescer = threading.Thread(target=self._coalesce_loop, daemon=True, name="mixrl-rm-coalesce")
        self._coalescer.start()

    # ------------------------------------------------------------------ instances

    def _set_instances(self, instances: list[Instance]) -> None:
        """The registry's current list (a watch callback): add new endpoints, retire vanished ones."""
        with self._lock:
            keys = set()
            for inst in instances:
                keys.add(inst.key)
                ep = self._endpoints.get(inst.key)
                if ep is None:
                    channel = (grpc.secure_channel(inst.address, self._credentials, options=self._channel_options)
                               if self._credentials is not None
                               else grpc.insecure_channel(inst.address, options=self._channel_options))
                    self._endpoints[inst.key] = _Endpoint(inst, channel, pb_grpc.RewardServiceStub(channel),
                                                          health_pb2_grpc.HealthStub(channel),
                                                          digest=inst.model_digest)
                elif ep.retired:
                    ep.retired = False
            for key, ep in list(self._endpoints.items()):
                if key not in keys and not ep.retired:
                    ep.retired = True
                self._close_if_idle(key, ep)

    def _close_if_idle(self, key: str, ep: _Endpoint) -> None:  # holds self._lock
        if ep.retired and ep.inflight == 0:
            ep.channel.close()
            del self._endpoints[key]

    def instances(self) -> list[Instance]:
        with self._lock:
            return [ep.instance for ep in self._endpoints.values() if not ep.retired]

    def admitted(self) -> list[str]:
        """Keys of the instances calls may use now."""
        with self._lock:
            return [k for k, ep in self._endpoints.items() if ep.admitted]

    def _call_digest(self) -> str | None:
        """The digest this call uses: the pin, or the one most live instances serve."""
        if self.pinned_digest:
            return self.pinned_digest
        with self._lock:
            counts = collections.Counter(ep.digest for ep in self._endpoints.values() if ep.admitted and ep.digest)
        return counts.most_common(1)[0][0] if counts else None

    def pin(self, digest: str | None) -> None:
        """Pin calls to one model digest (None: follow the majority, chosen per call)."""
        self.pinned_digest = digest

    def _pick(self, digest: str | None, exclude: set[str]) -> _Endpoint | None:
        """Power of two choices on in-flight calls among admitted instances of `digest`, avoiding `exclude`."""
        with self._lock:
            eligible = [ep for k, ep in self._endpoints.items() if ep.admitted and k not in exclude
                        and (not digest or ep.digest == digest)]
            if not eligible:
                return None
            a, b = (self._rng.sample(eligible, 2) if len(eligible) >= 2 else (eligible[0], eligible[0]))
            ep = a if a.inflight <= b.inflight else b
            ep.inflight += 1
            return ep

    def _release(self, ep: _Endpoint, *, ok: bool | None, not_serving: bool = False) -> None:
        """End of an attempt: ok True/False updates the failure streak, None (cancelled hedge loser) does not."""
        with self._lock:
            ep.inflight -= 1
            if ok:
                ep.failures = 0
            elif ok is False:
                ep.failures += 1
                if not_serving:
                    ep.not_serving = True
                    ep.probe_at = time.monotonic() + self.cfg.probe_interval_s
                if ep.failures >= self.cfg.eject_after_failures and not ep.ejected:
                    ep.ejected = True
                    ep.probe_backoff = 0
                    ep.probe_at = time.monotonic() + self.cfg.probe_interval_s
                    self.stats.ejections += 1
            self._close_if_idle(ep.instance.key, ep)

    def _probe_loop(self) -> None:
        while not self._closed.wait(0.05):
            now = time.monotonic()
            with self._lock:
                due = [ep for ep in self._endpoints.values()
                       if (ep.ejected or ep.not_serving) and not ep.retired and ep.probe_at <= now]
                for ep in due:
                    ep.probe_at = float("inf")  # one probe at a time per endpoint
                unknown = [ep for ep in self._endpoints.values()
                           if not ep.digest and not ep.info_requested and ep.info_retry_at <= now]
                for ep in unknown:
                    ep.info_requested = True
            for ep in due:
                self._pool.submit(self._probe, ep)
            for ep in unknown:
                self._pool.submit(self._learn_digest, ep)

    def _learn_digest(self, ep: _Endpoint) -> None:
        """Instances registered without a digest: ask them (GetModelInfo), so that pinning covers them too."""
        try:
            info = ep.stub.GetModelInfo(pb.ModelInfoRequest(), timeout=self.cfg.probe_timeout_s * 4,
                                        metadata=self._metadata)
            with self._lock:
                ep.digest = info.model_digest
        except grpc.RpcError:
            with self._lock:
                ep.info_requested = False  # try again later
                ep.info_retry_at = time.monotonic() + 1.0

    def _probe(self, ep: _Endpoint) -> None:
        try:
            resp = ep.health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME),
                                   timeout=self.cfg.probe_timeout_s)
            serving = resp.status == health_pb2.HealthCheckResponse.SERVING
        except grpc.RpcError:
            serving = False
        with self._lock:
            if serving:
                if ep.ejected:
                    self.stats.readmissions += 1
                ep.ejected = ep.not_serving = False
                ep.failures = ep.probe_backoff = 0
            else:
                ep.probe_backoff = min(ep.probe_backoff + 1, 3)
                ep.probe_at = time.monotonic() + self.cfg.probe_interval_s * (2 ** ep.probe_backoff)

    # ------------------------------------------------------------------ budget, backoff, hedge delay

    def _spend_budget(self) -> bool:
        with self._lock:
            if self._budget >= 1.0:
                self._budget -= 1.0
                return True
            self.stats.budget_exhausted += 1
            return False

    def _hedge_delay(self) -> float:
        if self.cfg.hedge_fixed_delay_s is not None:
            return self.cfg.hedge_fixed_delay_s
        with self._lock:
            samples = sorted(self._latencies)
        if len(samples) < self.cfg.hedge_min_samples:
            return self.cfg.hedge_initial_delay_s
        idx = min(len(samples) - 1, int(len(samples) * self.cfg.hedge_percentile / 100))
        return max(self.cfg.hedge_min_delay_s, samples[idx])

    def _backoff(self, retry: int, deadline: float) -> None:
        cap = min(self.cfg.backoff_max_s, self.cfg.backoff_base_s * (2 ** retry))
        time.sleep(max(0.0, min(self._rng.uniform(0, cap), deadline - time.monotonic())))

    # ------------------------------------------------------------------ one micro-batch

    def _check_ids(self, items: Sequence[ScoreItem], response: pb.ScoreResponse) -> list[ItemResult]:
        got = [r.id for r in response.results]
        want = [it.id for it in items]
        if got != want:
            raise ProtocolError(f"response ids {got[:5]}... do not match request ids {want[:5]}... "
                                f"({len(got)} results for {len(want)} samples)")
        return [ItemResult(r.id, r.reward if r.error == 0 else None, ErrorCode(r.error), r.error_message,
                           dict(r.head_scores), r.judge_text) for r in response.results]

    def _attempt(self, ep: _Endpoint, request: pb.ScoreRequest, deadline: float) -> grpc.Future:
        timeout = deadline - time.monotonic()
        if self.cfg.attempt_timeout_s is not None:
            timeout = min(timeout, self.cfg.attempt_timeout_s)
        with self._lock:
            self.stats.attempts += 1
        return ep.stub.Score.future(request, timeout=max(0.001, timeout), metadata=self._metadata)

    def _score_batch(self, items: Sequence[ScoreItem], deadline: float, digest: str | None) -> list[ItemResult]:
        request = pb.ScoreRequest(samples=[_item_to_pb(it) for it in items], model_digest=digest or "")
        tried: set[str] = set()
        last_error: Exception | None = None
        for attempt in range(self.cfg.max_attempts):
            if time.monotonic() >= deadline:
                break
            if attempt > 0:
                if not self._spend_budget():
                    break
                with self._lock:
                    self.stats.retries += 1
                self._backoff(attempt - 1, deadline)
            ep = self._pick(digest, tried) or self._pick(digest, set())
            if ep is None:
                raise NoInstancesError(f"no admitted instance of {self.model!r}"
                                       + (f" with digest {digest}" if digest else "")
                                       + (f" (last error: {last_error})" if last_error else ""))
            tried.add(ep.instance.key)
            try:
                return self._hedged(ep, request, items, deadline, digest, tried)
            except grpc.RpcError as e:
                last_error = RewardServiceError(f"{ep.instance.address}: {e.code().name}: {e.details()}")
                if not _is_retryable(e):
                    raise InvalidRequestError(e.code(), e.details() or "") from None
            except ProtocolError as e:
                last_error = e
        if last_error is None or time.monotonic() >= deadline:
            raise DeadlineExceededError(f"deadline passed scoring {len(items)} items on {self.model!r}"
                                        + (f" (last error: {last_error})" if last_error else ""))
        if isinstance(last_error, ProtocolError):
            raise last_error
        raise NoInstancesError(f"{self.model!r}: attempts or retry budget exhausted; last error: {last_error}")

    def _hedged(self, ep: _Endpoint, request, items, deadline: float, digest, tried: set[str]) -> list[ItemResult]:
        """The attempt on `ep`, plus one hedge on another instance if `ep` is slower than the hedge delay."""
        start = time.monotonic()
        racers: list[tuple[_Endpoint, grpc.Future]] = [(ep, self._attempt(ep, request, deadline))]
        done = threading.Event()
        racers[0][1].add_done_callback(lambda f: done.set())
        if self.cfg.hedge and not done.wait(min(self._hedge_delay(), max(0.0, deadline - start))):
            other = self._pick(digest, tried)
            if other is not None:
                if self._spend_budget():
                    tried.add(other.instance.key)
                    with self._lock:
                        self.stats.hedges += 1
                    fut = self._attempt(other, request, deadline)
                    fut.add_done_callback(lambda f: done.set())
                    racers.append((other, fut))
                else:
                    self._release(other, ok=None)
        # first success wins; an error waits for the other racer, if any
        pending = list(racers)
        error: Exception | None = None
        while pending:
            done.wait(max(0.0, deadline - time.monotonic()) + 0.05)
            done.clear()
            finished = [(e, f) for e, f in pending if f.done()]
            if not finished and time.monotonic() >= deadline:
                for e, f in pending:
                    f.cancel()
                    self._release(e, ok=False)
                raise error or DeadlineExceededError(f"deadline passed waiting for {self.model!r}")
            for e, f in finished:
                pending.remove((e, f))
                try:
                    response = f.result()
                    results = self._check_ids(items, response)
                except grpc.RpcError as rpc_err:
                    not_serving = rpc_err.code() == grpc.StatusCode.UNAVAILABLE and "draining" in (rpc_err.details() or "")
                    self._release(e, ok=False if _is_retryable(rpc_err) else True, not_serving=not_serving)
                    error = error if isinstance(error, grpc.RpcError) and not _is_retryable(error) else rpc_err
                    continue
                except ProtocolError as perr:
                    self._release(e, ok=False)
                    error = perr
                    continue
                self._release(e, ok=True)
                with self._lock:
                    self._latencies.append(time.monotonic() - start)
                    key = e.instance.key
                    self.stats.per_instance_ok[key] = self.stats.per_instance_ok.get(key, 0) + 1
                    if e is not ep:
                        self.stats.hedge_wins += 1
                for loser, lf in pending:  # the slower racer lost: cancel it and count it against its instance
                    lf.cancel()
                    self._release(loser, ok=False)
                return results
        assert error is not None
        raise error

    # ------------------------------------------------------------------ public calls

    def score(self, items: Sequence[ScoreItem], *, deadline_s: float | None = None) -> list[ItemResult]:
        """One result per item, in order. Items of a micro-batch that failed come back with an error (code
        UNAVAILABLE or DEADLINE); when every micro-batch failed the typed error is raised instead."""
        if not items:
            return []
        deadline = time.monotonic() + (deadline_s if deadline_s is not None else self.cfg.deadline_s)
        with self._lock:
            self.stats.calls += 1
            self._budget = min(self.cfg.retry_budget_max, self._budget + self.cfg.retry_budget_ratio)
        digest = self._call_digest()
        size = min(self.cfg.max_batch_items, self._server_max_items or self.cfg.max_batch_items)
        chunks = [list(items[i:i + size]) for i in range(0, len(items), size)]
        futures = [self._pool.submit(self._score_batch, chunk, deadline, digest) for chunk in chunks]
        out: list[ItemResult] = []
        errors: list[Exception] = []
        for chunk, fut in zip(chunks, futures):
            try:
                out.extend(fut.result())
            except RewardServiceError as e:
                if isinstance(e, InvalidRequestError):
                    raise
                errors.append(e)
                code = ErrorCode.DEADLINE if isinstance(e, DeadlineExceededError) else ErrorCode.UNAVAILABLE
                out.extend(ItemResult(it.id, None, code, str(e)) for it in chunk)
        if errors and len(errors) == len(chunks):
            raise errors[0]
        return out

    def submit(self, item: ScoreItem) -> Future:
        """Score one item; concurrent calls within ``coalesce_window_s`` are sent as one batch.
        The future resolves to an `ItemResult` (or raises the typed error of its batch)."""
        fut: Future = Future()
        with self._pending_cond:
            self._pending.append((item, fut))
            self._pending_cond.notify()
        return fut

    def _coalesce_loop(self) -> None:
        while not self._closed.is_set():
            with self._pending_cond:
                while not self._pending and not self._closed.is_set():
                    self._pending_cond.wait(0.1)
                if self._closed.is_set():
                    return
                end = time.monotonic() + self.cfg.coalesce_window_s
                while len(self._pending) < self.cfg.max_batch_items and time.monotonic() < end:
                    self._pending_cond.wait(max(0.0, end - time.monotonic()))
                batch, self._pending = self._pending[: self.cfg.max_batch_items], self._pending[self.cfg.max_batch_items:]
            self._pool.submit(self._run_coalesced, batch)

    def _run_coalesced(self, batch: list[tuple[ScoreItem, Future]]) -> None:
        # per-sample callers may reuse ids: give the wire unique ones, map back
        items = [ScoreItem(str(i), it.prompt, it.response, it.messages, it.reference, it.metadata)
                 for i, (it, _) in enumerate(batch)]
        try:
            results = self.score(items)
        except Exception as e:  # noqa: BLE001 - every waiter gets the error
            for _, fut in batch:
                fut.set_exception(e)
            return
        for (item, fut), r in zip(batch, results):
            fut.set_result(ItemResult(item.id, r.reward, r.error, r.error_message, r.head_scores, r.judge_text))

    def model_info(self, timeout_s: float = 5.0) -> pb.ModelInfo:
        """`GetModelInfo` of one admitted instance; remembers its max_batch_items for micro-batching."""
        ep = self._pick(self._call_digest(), set())
        if ep is None:
            raise NoInstancesError(f"no admitted instance of {self.model!r}")
        try:
            info = ep.stub.GetModelInfo(pb.ModelInfoRequest(), timeout=timeout_s, metadata=self._metadata)
        finally:
            self._release(ep, ok=None)
        self._server_max_items = info.max_batch_items or None
        return info

    def close(self) -> None:
        self._closed.set()
        if self._stop_watch is not None:
            self._stop_watch()
        with self._pending_cond:
            self._pending_cond.notify_all()
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for ep in self._endpoints.values():
                ep.channel.close()
            self._endpoints.clear()

    def __enter__(self) -> RewardServiceClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _item_to_pb(item: ScoreItem) -> pb.Sample:
    sample = pb.Sample(id=item.id, prompt=item.prompt, response=item.response,
                       messages=[pb.Message(role=r, content=c) for r, c in item.messages],
                       metadata={str(k): str(v) for k, v in item.metadata.items()})
    if item.reference is not None:
        sample.reference = item.reference
    return sample


class RewardModelServiceClient:
    """`rewards.clients.RewardModelClient` over reward services found in a registry: one
    `RewardServiceClient` per model identifier (``RewardModelRequest.model``), created on first use.

    An item the service could not score is None (the router masks it); a call that failed as a whole raises
    (the router masks the batch). Never 0."""

    def __init__(self, registry: Registry, *, token: str | None = None, config: ClientConfig | None = None,
                 digests: Mapping[str, str] | None = None, tls: bool = False, tls_ca_file: str | None = None,
                 tls_server_name: str | None = None) -> None:
        self.registry, self.token, self.config = registry, token, config
        self.tls = {"tls": tls, "tls_ca_file": tls_ca_file, "tls_server_name": tls_server_name}
        self.digests = dict(digests or {})
        self._clients: dict[str, RewardServiceClient] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_registry(cls, spec: str, **kwargs) -> RewardModelServiceClient:
        """``RewardModelServiceClient.from_registry("local:runs/registry")`` (or ``etcd://...``, ``k8s://...``)."""
        from reward_services.registry import open_registry

        return cls(open_registry(spec), **kwargs)

    def client(self, model: str) -> RewardServiceClient:
        with self._lock:
            if model not in self._clients:
                self._clients[model] = RewardServiceClient(model, registry=self.registry, token=self.token,
                                                           config=self.config, model_digest=self.digests.get(model),
                                                           **self.tls)
            return self._clients[model]

    def score(self, requests) -> list[float | None]:
        out: list[float | None] = [None] * len(requests)
        by_model: dict[str, list[int]] = collections.defaultdict(list)
        for i, r in enumerate(requests):
            by_model[r.model].append(i)
        for model, idx in by_model.items():
            items = []
            for i in idx:
                r = requests[i]
                meta = {k: str(v) for k, v in (r.extra_info or {}).items() if isinstance(v, (str, int, float, bool))}
                items.append(ScoreItem(str(i), prompt=r.prompt, response=r.response, reference=r.ground_truth,
                                       metadata=meta))
            for i, result in zip(idx, self.client(model).score(items)):
                out[i] = result.reward if result.ok else None
        return out

    def close(self) -> None:
        with self._lock:
            for c in self._clients.values():
                c.close()
            self._clients.clear()
