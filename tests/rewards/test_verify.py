"""Answer verification: the acceptance table, exact rationals, deadlines, kill-and-replace, threads and asyncio."""

import asyncio
import os
import signal
import threading
import time

import pytest

from rewards.exact import exact_equal, parse_rational
from rewards.verify import VerifierPool, verify_answer

# (gold, predicted answer, expected verdict). Each row states a decision; the comment says why where it is ours.
TABLE = [
    (r"\frac{1}{2}", r"\frac12", True),
    (r"\frac12", r"\frac{1}{2}", True),
    ("0.5", r"\dfrac12", True),
    (r"\dfrac12", "0.5", True),
    (r"25\%", "25", True),  # a percent sign is a unit: 25% is the answer 25 ...
    (r"25\%", "0.25", False),  # ... so it is not 0.25
    ("0.25", r"25\%", False),
    ("1000000", "1,000,000", True),
    ("1,000,000", "1000000", True),
    ("1000000", "1{,}000{,}000", True),
    ("3", "x=3", True),
    ("x=3", "3", True),
    ("10", r"10\text{ cm}", True),  # units in \text{} are dropped
    (r"10 \text{ cm}", "10", True),
    ("[1,2)", "(1,2)", False),
    ("[1,2)", "[1,2)", True),
    (r"\pi", "3.14", False),
    (r"\pi", r"\pi", True),
    ("1/3", "0.333", False),
    (r"\frac13", "0.333333", False),  # exact rationals: a truncated decimal is not 1/3 (math-verify says True)
    (r"\frac{1}{2^{99}}", r"\frac{1}{2^{98}}", False),  # Math-Verify#14
    ("2^{-99}", r"\frac{1}{2^{99}}", True),
    (r"\sqrt{2}", r"\sqrt 2", True),
    ("x^2+2x+1", "(x+1)^2", True),
    (r"\{1,2\}", r"\{2,1\}", True),
    ("33", "33.0", True),
    ("33", "-33", False),
]


@pytest.mark.parametrize("gold,pred,expected", TABLE)
def test_verification_table(pool, gold, pred, expected):
    verdict = pool.verify(gold, pred)
    assert verdict.correct is expected, verdict


def test_no_answer_is_incorrect_not_masked(pool):
    v = pool.verify("5", None)
    assert (v.correct, v.status) == (False, "no_answer")


def test_exact_precheck_bypasses_workers():
    # Both rational: decided in the caller, even without a usable pool.
    class NoPool:
        def compare(self, gold, pred):
            raise AssertionError("the pool must not be used for exact rationals")

    v = verify_answer(r"\frac{3}{4}", "0.75", pool=NoPool())
    assert (v.correct, v.method) == (True, "exact")


@pytest.mark.parametrize(
    "text,value",
    [("7", 7), ("-2^{-3}", -0.125), (r"\frac{\frac12}{3}", 1 / 6), ("(1+2)*3", 9), (r"3 \cdot 4", 12), ("1.", 1)],
)
def test_parse_rational(text, value):
    assert float(parse_rational(text)) == pytest.approx(value)


@pytest.mark.parametrize("text", [r"\pi", "x", "1e5", "2(3)", "9^{9^{9}}", "2^{0.5}", "1/0", "(1,2)"])
def test_parse_rational_declines(text):
    assert parse_rational(text) is None


def test_exact_equal_none_when_either_side_symbolic():
    assert exact_equal("3", "x=3") is None
    assert exact_equal(r"\sqrt{4}", "2") is None


@pytest.mark.parametrize("gold", ["", "  ", "}{"])
def test_bad_gold_is_masked(pool, gold):
    # A ground truth nobody can parse is a data problem: no verdict, never "incorrect".
    v = pool.verify(gold, "1")
    assert v.correct is None and v.status == "bad_gold", v


def test_hanging_input_returns_within_deadline(pool):
    # sympy evaluates 9^(9^9) (a 370-million-digit integer) forever; the worker's timer cuts it off.
    t0 = time.perf_counter()
    v = pool.verify("2", "9^{9^{9}}")
    elapsed = time.perf_counter() - t0
    assert v.status == "timeout" and v.correct is None
    assert elapsed < pool.timeout_s + pool.kill_grace_s + 1.0
    assert pool.verify(r"\frac{1}{2}", r"\sqrt{\frac14}").correct is True  # the pool still works


def _worker_pids(p):
    return [w.process.pid for w in list(p._all)]


def test_unresponsive_worker_is_killed_and_replaced():
    # A stopped process never answers, like a worker stuck in C code that ignores its timer.
    with VerifierPool(num_workers=1, timeout_s=0.5, kill_grace_s=0.5) as p:
        assert p.verify("x", "x").correct is True
        (pid,) = _worker_pids(p)
        os.kill(pid, signal.SIGSTOP)
        t0 = time.perf_counter()
        v = p.verify("y", "y")
        assert v.status == "timeout" and time.perf_counter() - t0 < 2.0
        assert p.kills == 1
        with pytest.raises(ProcessLookupError):
            for _ in range(50):  # reaped by the pool; give the kernel a moment
                os.kill(pid, 0)
                time.sleep(0.02)
        assert p.verify("z", "z").correct is True  # served by the replacement
        assert _worker_pids(p) != [pid]


def test_dead_worker_is_retried_on_a_fresh_one():
    with VerifierPool(num_workers=1, timeout_s=2.0) as p:
        assert p.verify("x", "x").correct is True
        (pid,) = _worker_pids(p)
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
        v = p.verify("x+1", "1+x")
        assert v.correct is True, v
        assert p.kills == 0


def test_from_non_main_thread(pool):
    # math-verify's own signal.alarm timeouts raise outside the main thread; the pool does not care.
    out = {}

    def run():
        out["a"] = pool.verify("x^2+2x+1", "(x+1)^2")
        out["b"] = pool.verify(r"\pi", "3.14")

    t = threading.Thread(target=run)
    t.start()
    t.join(30)
    assert out["a"].correct is True and out["b"].correct is False


def test_from_asyncio(pool):
    async def main():
        return await asyncio.gather(pool.averify("3", "x=3"), pool.averify("[1,2)", "(1,2)"))

    a, b = asyncio.run(main())
    assert a.correct is True and b.correct is False


def test_verify_many_keeps_order(pool):
    pairs = [("1", "1"), (r"\sqrt{2}", r"\sqrt{3}"), ("x", "x"), ("2", None)]
    assert [v.correct for v in pool.verify_many(pairs)] == [True, False, True, False]
