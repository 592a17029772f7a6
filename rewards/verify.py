r"""Answer verification that never hangs the trainer: exact rationals in-process, math-verify in a worker pool.

Why a pool of processes: math-verify's timeouts use ``signal.alarm``, which raises outside the main thread (verl
calls ``compute_score`` from executor threads, Ray actors run methods in threads) and some inputs hang past the
alarm anyway, inside C code that never returns to the interpreter (Math-Verify#50, #55, #65; verl #5635, #5839).

Protects against (covered):
- an input that makes sympy spin or allocate without end: the worker is SIGKILLed at the hard deadline
  (``timeout_s + kill_grace_s``), replaced, and the item gets a ``timeout`` verdict;
- a comparison that is merely slow: the worker's own timer interrupts it at ``timeout_s`` without a restart;
- a worker that dies (OOM killer, segfault): the item is retried once on a fresh worker, then gets ``error``;
- being called from any thread, from asyncio (`VerifierPool.averify`), or inside a Ray actor (the pool is
  created in whatever process uses it, lazily, and re-created after a fork).

Not covered: time spent waiting for a free worker is not part of the per-item deadline (a batch larger than the
pool queues); memory is not capped (use the sandbox for untrusted code; math answers are strings).

Verdict semantics: ``correct`` is ``True``/``False`` when a verdict was reached; ``None`` for ``timeout``,
``error`` and ``bad_gold`` (the reward layer masks those, never scores them 0; see `rewards.answer`).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection

from rewards.exact import exact_equal


@dataclass(frozen=True)
class Verdict:
    """The outcome of comparing one predicted answer with its gold answer.

    correct: ``True``/``False``, or ``None`` when no verdict could be reached (see ``status``).
    status: ``correct`` | ``incorrect`` | ``no_answer`` | ``timeout`` | ``error`` | ``bad_gold``.
    method: ``exact`` (rational pre-check), ``math_verify``, ``string`` (choice letters) or ``none``.
    detail: a message for ``error``/``bad_gold``.
    seconds: wall time spent, including any wait for a worker.
    """

    correct: bool | None
    status: str
    method: str
    detail: str | None = None
    seconds: float = 0.0


_PERCENT = re.compile(r"\s*(?:\\%|%|\\text\{\s*%\s*\})\s*$")


def strip_percent(answer: str) -> str:
    r"""Drop a trailing percent sign: ``25\%`` is the answer ``25``.

    Why: "what percent" golds in GSM8K/MATH are written as the bare number, and math-verify 0.9 cannot parse a
    boxed ``25\%`` at all. Consequence (deliberate): ``25\%`` does NOT equal ``0.25``.

    >>> strip_percent("25\\%")
    '25'
    >>> strip_percent("0.25")
    '0.25'
    """
    return _PERCENT.sub("", answer)


class _Worker:
    """One ``python -m rewards.verify_worker`` subprocess, spoken to over a socketpair with pickled messages.

    Why a plain subprocess and not `multiprocessing`: spawn/forkserver children re-import the caller's ``__main__``
    (breaking any script without an ``if __name__ == "__main__"`` guard), and fork is unsafe from the threaded
    processes this runs in (Ray actors, verl's executor threads).
    """

    def __init__(self) -> None:
        parent_sock, child_sock = socket.socketpair()
        env = dict(os.environ)
        # The child must import `rewards` exactly as this process does (editable install or a source checkout).
        env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p] + [env.get("PYTHONPATH", "")])
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "rewards.verify_worker", str(child_sock.fileno())],
                pass_fds=(child_sock.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
                close_fds=True,
            )
        finally:
            child_sock.close()
        self.conn = Connection(parent_sock.detach())
        self.ready = False

    def wait_ready(self, timeout_s: float) -> bool:
        if self.ready:
            return True
        try:
            if self.conn.poll(timeout_s):
                self.ready = self.conn.recv()[0] == "ready"
        except (EOFError, OSError):
            self.ready = False
        return self.ready

    def kill(self) -> None:
        try:
            self.process.kill()
            self.process.wait(timeout=5)
        except Exception:  # noqa: BLE001 - best effort on a process we are discarding
            pass
        try:
            self.conn.close()
        except OSError:
            pass


class VerifierPool:
    """A fixed number of math-verify worker processes, each item under a hard deadline.

    Usage::

        pool = VerifierPool(num_workers=2, timeout_s=5.0)
        pool.verify("\\frac{1}{2}", "0.5")            # Verdict(correct=True, status='correct', ...)
        pool.verify_many([("1", "1"), ("2", "3")])      # concurrent, order kept
        await pool.averify("3", "x=3")                  # from asyncio
        pool.close()

    Thread-safe. Workers start lazily on first use (a worker pays a sympy import, ~1-2 s on 2 cores, once); a
    killed worker's replacement is started at once so it warms up while the pool carries on. ``verify`` with
    ``use_exact=True`` settles plain rationals in the calling thread without touching a worker.
    """

    def __init__(
        self,
        num_workers: int = 2,
        timeout_s: float = 5.0,
        kill_grace_s: float = 1.0,
        start_timeout_s: float = 60.0,
    ) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.num_workers = num_workers
        self.timeout_s = timeout_s
        self.kill_grace_s = kill_grace_s
        self.start_timeout_s = start_timeout_s
        self._lock = threading.Lock()
        self._pid = -1
        self._closed = False
        self.kills = 0  # workers killed at the hard deadline (for metrics and tests)
        self._setup()

    def _setup(self) -> None:
        self._pid = os.getpid()
        self._idle: queue.Queue[_Worker | None] = queue.Queue()
        self._all: set[_Worker] = set()
        for _ in range(self.num_workers):
            self._idle.put(None)  # a slot; the worker is started on first use
        self._executor = ThreadPoolExecutor(max_workers=self.num_workers, thread_name_prefix="mixrl-verify")

    def _ensure_process(self) -> None:
        # After a fork (a DataLoader worker, a forked Ray worker) the child must not talk to the parent's workers.
        if os.getpid() != self._pid:
            with self._lock:
                if os.getpid() != self._pid:
                    self._setup()

    def _acquire(self) -> _Worker:
        slot = self._idle.get()
        try:
            if slot is None:
                worker = _Worker()
                with self._lock:
                    self._all.add(worker)
            else:
                worker = slot
            if not worker.wait_ready(self.start_timeout_s):
                self._discard(worker)
                raise RuntimeError("verification worker failed to start")
            return worker
        except BaseException:
            self._idle.put(None)
            raise

    def _release(self, worker: _Worker | None) -> None:
        self._idle.put(worker)

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._all.discard(worker)

    def _replace(self, worker: _Worker) -> None:
        """Kill a worker and start its replacement now, so that it imports sympy while the caller moves on."""
        self._discard(worker)
        if self._closed:
            self._idle.put(None)
            return
        fresh = _Worker()
        with self._lock:
            self._all.add(fresh)
        self._idle.put(fresh)

    def _run_once(self, gold: str, pred: str) -> tuple[str, object]:
        worker = self._acquire()
        try:
            worker.conn.send((gold, pred, self.timeout_s))
            if not worker.conn.poll(self.timeout_s + self.kill_grace_s):
                self.kills += 1
                self._replace(worker)  # hung past the soft timer: kill it, a fresh worker takes the slot
                return ("timeout", None)
            reply = worker.conn.recv()
        except (EOFError, OSError) as e:
            self._replace(worker)
            return ("died", f"worker died: {type(e).__name__}: {e}")
        except BaseException:
            self._replace(worker)  # e.g. KeyboardInterrupt mid-item: the worker's state is unknown
            raise
        self._release(worker)
        return reply

    def compare(self, gold: str, pred: str) -> Verdict:
        """math-verify's verdict in a worker, under the deadline; no exact pre-check."""
        if self._closed:
            raise RuntimeError("VerifierPool is closed")
        self._ensure_process()
        t0 = time.perf_counter()
        try:
            status, value = self._run_once(gold, pred)
            if status == "died":  # one retry on a fresh worker: the crash may be the worker's, not the input's
                status, value = self._run_once(gold, pred)
        except RuntimeError as e:
            status, value = "error", str(e)
        seconds = time.perf_counter() - t0
        if status == "ok":
            return Verdict(bool(value), "correct" if value else "incorrect", "math_verify", None, seconds)
        if status == "timeout":
            return Verdict(None, "timeout", "math_verify", f"no verdict within {self.timeout_s} s", seconds)
        if status == "bad_gold":
            return Verdict(None, "bad_gold", "math_verify", str(value), seconds)
        return Verdict(None, "error", "math_verify", str(value), seconds)

    def verify(self, gold: str, pred: str | None, use_exact: bool = True) -> Verdict:
        """Verdict for a predicted answer (already extracted; ``None`` = no answer) against the gold answer."""
        return verify_answer(gold, pred, pool=self, use_exact=use_exact)

    def verify_many(self, pairs: Sequence[tuple[str, str | None]], use_exact: bool = True) -> list[Verdict]:
        """Verdicts for many ``(gold, pred)`` pairs, computed concurrently on the pool; order is kept."""
        self._ensure_process()
        futures = [self._executor.submit(self.verify, gold, pred, use_exact) for gold, pred in pairs]
        return [f.result() for f in futures]

    async def averify(self, gold: str, pred: str | None, use_exact: bool = True) -> Verdict:
        """`verify` for asyncio code: runs on the pool's threads, never blocks the event loop."""
        self._ensure_process()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.verify, gold, pred, use_exact)

    def close(self) -> None:
        """Kill the workers. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if os.getpid() == self._pid:
            self._executor.shutdown(wait=False, cancel_futures=True)
            with self._lock:
                workers, self._all = list(self._all), set()
            for worker in workers:
                worker.kill()

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def verify_answer(gold: str, pred: str | None, pool: VerifierPool | None = None, use_exact: bool = True) -> Verdict:
    r"""Verdict for an extracted answer: no answer → incorrect; exact rationals compared exactly; else math-verify.

    ``pool=None`` uses the process-wide `default_pool`.

    >>> verify_answer("33", "33.0").status
    'correct'
    >>> verify_answer("\\frac{1}{2^{99}}", "\\frac{1}{2^{98}}").correct   # Math-Verify#14
    False
    >>> verify_answer("5", None).status
    'no_answer'
    """
    t0 = time.perf_counter()
    if not gold.strip():
        return Verdict(None, "bad_gold", "none", "empty ground truth")
    if pred is None or not pred.strip():
        return Verdict(False, "no_answer", "none")
    gold_s, pred_s = strip_percent(gold), strip_percent(pred)
    if use_exact:
        same = exact_equal(gold_s, pred_s)
        if same is not None:
            return Verdict(same, "correct" if same else "incorrect", "exact", None, time.perf_counter() - t0)
    return (pool or default_pool()).compare(gold_s, pred_s)


_default_pool: VerifierPool | None = None
_default_lock = threading.Lock()


def default_pool() -> VerifierPool:
    """The process-wide pool (2 workers, 5 s per item; ``MIXRL_VERIFY_WORKERS`` / ``MIXRL_VERIFY_TIMEOUT_S``)."""
    global _default_pool
    with _default_lock:
        if _default_pool is None or _default_pool._closed:
            _default_pool = VerifierPool(
                num_workers=int(os.environ.get("MIXRL_VERIFY_WORKERS", "2")),
                timeout_s=float(os.environ.get("MIXRL_VERIFY_TIMEOUT_S", "5")),
            )
            atexit.register(_default_pool.close)
        return _default_pool
