r"""The code that runs inside a verification worker process: math-verify with a strict, reward-oriented configuration.

Run as ``python -m rewards.verify_worker FD`` by `rewards.verify.VerifierPool` (FD: its end of a socketpair); the
trainer's process never imports math-verify through this module unless it calls `compare` directly (the in-process
baseline of ``bench/rewards.py`` does).

Configuration and why:
- both answers are parsed from ``\boxed{...}`` with LaTeX extraction only (the answer was already extracted, so no
  anchor search over free text may pick a different number);
- the gold answer is parsed first and passed as ``gold`` (math-verify is not symmetric: assignments such as
  ``x=3`` are simplified on the gold side);
- ``strict=True`` (variables matter, sets are not tuples) and no set/relation comparison;
- math-verify's own ``signal.alarm`` timeouts are switched off: the worker sets a soft ``ITIMER_REAL`` deadline
  around the whole comparison and the parent kills the worker at the hard deadline.
"""

from __future__ import annotations

import logging
import signal

from math_verify import LatexExtractionConfig, parse, verify

# math-verify warns once that its timeouts are disabled; that is intended here.
logging.getLogger("math_verify").setLevel(logging.ERROR)

_BOXED_ONLY = [LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False)]


class GoldParseError(Exception):
    """The ground truth could not be parsed: a data problem, not the policy's."""


class SoftTimeout(BaseException):
    """Raised by the worker's own timer. A BaseException so that math-verify's ``except Exception`` cannot swallow it."""


def _parse_boxed(answer: str) -> list:
    return parse("\\boxed{" + answer + "}", extraction_config=_BOXED_ONLY, parsing_timeout=None)


def compare(gold: str, pred: str) -> bool:
    r"""math-verify's verdict for two already-extracted answers (no timeout: callers provide one).

    >>> compare("\\frac{1}{2}", "0.5")
    True
    >>> compare("[1,2)", "(1,2)")
    False
    """
    gold_parsed = _parse_boxed(gold)
    if not gold_parsed:
        raise GoldParseError(f"math-verify cannot parse the ground truth {gold[:200]!r}")
    pred_parsed = _parse_boxed(pred)
    if not pred_parsed:
        return False
    return bool(
        verify(
            gold_parsed,
            pred_parsed,
            strict=True,
            allow_set_relation_comp=False,
            float_rounding=6,
            numeric_precision=15,
            timeout_seconds=None,
        )
    )


def _on_alarm(signum, frame):
    raise SoftTimeout()


def serve(conn) -> None:
    """Worker main loop: answer ``(gold, pred, soft_timeout_s)`` requests on ``conn`` until it closes.

    Replies: ``("ok", bool)``, ``("timeout", None)``, ``("bad_gold", message)``, ``("error", message)``.
    """
    signal.signal(signal.SIGALRM, _on_alarm)
    # The parent handles Ctrl-C; a worker dying on SIGINT mid-item would only turn into a spurious error.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conn.send(("ready", None))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        gold, pred, soft_timeout_s = request
        try:
            signal.setitimer(signal.ITIMER_REAL, soft_timeout_s)
            try:
                reply = ("ok", compare(gold, pred))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except SoftTimeout:
            reply = ("timeout", None)
        except GoldParseError as e:
            reply = ("bad_gold", str(e))
        except Exception as e:  # noqa: BLE001 - reported to the parent as an infrastructure error
            reply = ("error", f"{type(e).__name__}: {e}"[:500])
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when its parent dies, so a worker stuck in sympy is never orphaned."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the worker still exits on EOF once it is back in its loop


def main(argv: list[str] | None = None) -> None:
    import sys
    from multiprocessing.connection import Connection

    args = sys.argv[1:] if argv is None else argv
    _die_with_parent()
    serve(Connection(int(args[0])))


if __name__ == "__main__":
    main()
