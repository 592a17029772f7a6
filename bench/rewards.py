"""Answer-reward throughput and latency: mixrl's verifier (exact rationals + worker pool) vs naive math-verify.

Run:  .venv/bin/python bench/rewards.py [--items 400] [--workers 2] [--seed 0]
Prints one JSON object.

The mix (deterministic for a seed) is what a math GRPO batch looks like: long reasoning responses ending in a boxed
answer; many repeated integer answers (the same prompt sampled k times), unique symbolic answers (fractions with
symbols, roots, polynomials, intervals, sets), and a few pathological ones (towers of powers, huge factorials).

Measured in the same run:
- ``mixrl``: `extract_answer` + `VerifierPool.verify_many` (exact pre-check on, the default);
- ``mixrl_no_exact``: the same with every item sent to the workers (the pool's own cost);
- ``naive``: ``verify(parse(gold), parse(response))`` in-process, math-verify's defaults (its signal-based
  timeouts), on the non-pathological items only — on pathological ones it blocks the caller;
- ``hang``: the wall time one planted hanging input costs the caller, ours (deadline) vs naive (math-verify's own
  timeouts, run in a subprocess capped at ``--hang-cap-s`` so the benchmark itself cannot hang).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rewards.extract import extract_answer  # noqa: E402
from rewards.verify import VerifierPool  # noqa: E402

FILLER = (
    "Let me set up the equations carefully. We have a + b = {a} and a - b = {b}, so 2a = {c}. "
    "Checking the boundary case, the expression stays positive, so no extra solutions appear. "
)
PATHOLOGICAL = ["9^{9^{9}}", "10^{10^{10}}", "1000000000!", "(x+1)^{100000}"]


def make_mix(n: int, seed: int) -> list[tuple[str, str, str]]:
    """``(kind, gold, response)`` triples."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        r = rng.random()
        if i % 100 == 99:
            kind, gold, pred = "pathological", "2", PATHOLOGICAL[(i // 100) % len(PATHOLOGICAL)]
        elif r < 0.5:  # repeated integer answers, right or wrong
            gold = str(rng.choice([12, 33, 72, 144, 1000]))
            kind, pred = "repeated_int", gold if rng.random() < 0.6 else str(int(gold) + 1)
        elif r < 0.65:
            p, q = rng.randint(1, 50), rng.randint(51, 99)
            kind, gold, pred = "fraction", f"\\frac{{{p}}}{{{q}}}", rng.choice([f"\\dfrac{{{p}}}{{{q}}}", f"{p}/{q}", f"{p / q:.4f}"])
        else:
            k = rng.randint(2, 9)
            kind, gold, pred = "symbolic", *rng.choice(
                [
                    (f"\\frac{{\\sqrt{{{k}}}}}{{2}}", f"\\frac{{1}}{{2}}\\sqrt{{{k}}}"),
                    (f"x^2+{2 * k}x+{k * k}", f"(x+{k})^2"),
                    (f"[{k},{k + 1})", f"[{k},{k + 1})" if rng.random() < 0.5 else f"({k},{k + 1})"),
                    (f"\\{{{k},{k + 1}\\}}", f"\\{{{k + 1},{k}\\}}"),
                    (f"{k}\\pi", f"{k}\\pi" if rng.random() < 0.5 else f"{3.14 * k:.2f}"),
                    (f"x={k}", f"{k}"),
                ]
            )
        reasoning = "".join(FILLER.format(a=rng.randint(1, 99), b=rng.randint(1, 99), c=rng.randint(1, 99)) for _ in range(rng.randint(10, 40)))
        response = f"<think>\n{reasoning}\n</think>\n\nTherefore the answer is $\\boxed{{{pred}}}$."
        items.append((kind, gold, response))
    return items


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def run_pool(pool: VerifierPool, items, use_exact: bool) -> dict:
    pairs = [(gold, extract_answer(response)) for _, gold, response in items]
    t0 = time.perf_counter()
    verdicts = pool.verify_many(pairs, use_exact=use_exact)
    wall = time.perf_counter() - t0
    lat = [v.seconds for v in verdicts]
    return {
        "items": len(items),
        "wall_s": round(wall, 3),
        "verdicts_per_s": round(len(items) / wall, 1),
        "p50_ms": round(1000 * percentile(lat, 0.5), 3),
        "p99_ms": round(1000 * percentile(lat, 0.99), 1),
        "timeouts": sum(v.status == "timeout" for v in verdicts),
        "by_method": {m: sum(v.method == m for v in verdicts) for m in sorted({v.method for v in verdicts})},
        "_verdicts": [v.correct for v in verdicts],
    }


def run_naive(items) -> dict:
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    lat, verdicts = [], []
    t0 = time.perf_counter()
    for _, gold, response in items:
        s = time.perf_counter()
        verdicts.append(bool(verify(parse(f"${gold}$"), parse(response))))
        lat.append(time.perf_counter() - s)
    wall = time.perf_counter() - t0
    return {
        "items": len(items),
        "wall_s": round(wall, 3),
        "verdicts_per_s": round(len(items) / wall, 1),
        "p50_ms": round(1000 * percentile(lat, 0.5), 3),
        "p99_ms": round(1000 * percentile(lat, 0.99), 1),
        "_verdicts": verdicts,
    }


NAIVE_HANG = """
import logging, time
from math_verify import parse, verify
logging.disable(logging.CRITICAL)
t = time.perf_counter()
verify(parse("$2$"), parse("The answer is $\\\\boxed{%s}$."))
print(time.perf_counter() - t)
"""


def naive_hang_seconds(pred: str, cap_s: float) -> tuple[float, bool]:
    """Seconds naive math-verify spends on one input (import excluded), or the cap if it had to be killed."""
    try:
        out = subprocess.run([sys.executable, "-c", NAIVE_HANG % pred], capture_output=True, text=True, timeout=cap_s)
        return float(out.stdout.strip().splitlines()[-1]), False
    except subprocess.TimeoutExpired:
        return cap_s, True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=400)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout-s", type=float, default=2.0)
    ap.add_argument("--hang-cap-s", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    items = make_mix(args.items, args.seed)
    normal = [it for it in items if it[0] != "pathological"]

    def fresh_pool() -> tuple[VerifierPool, float]:
        # Each measured run gets cold workers (math-verify caches parses per process), started outside the timing.
        pool = VerifierPool(num_workers=args.workers, timeout_s=args.timeout_s)
        t0 = time.perf_counter()
        pool.verify_many([("x", "x")] * args.workers, use_exact=False)
        return pool, time.perf_counter() - t0

    pool, startup = fresh_pool()
    with pool:
        ours = run_pool(pool, items, use_exact=True)
    pool, _ = fresh_pool()
    with pool:
        ours_normal = run_pool(pool, normal, use_exact=True)
    pool, _ = fresh_pool()
    with pool:
        no_exact = run_pool(pool, normal, use_exact=False)
        hang_pred = "9^{9^{9}}"
        t0 = time.perf_counter()
        hang_verdict = pool.verify("2", hang_pred)
        ours_hang = time.perf_counter() - t0
    naive = run_naive(normal)
    naive_hang, killed = naive_hang_seconds(hang_pred, args.hang_cap_s)

    disagreements = sum(a != b for a, b in zip(ours_normal["_verdicts"], naive["_verdicts"]))
    for d in (ours, ours_normal, no_exact, naive):
        d.pop("_verdicts")
    kinds = {k: sum(1 for it in items if it[0] == k) for k in sorted({it[0] for it in items})}
    print(
        json.dumps(
            {
                "benchmark": "answer_reward_verification",
                "workers": args.workers,
                "deadline_s": args.timeout_s,
                "mix": kinds,
                "mean_response_chars": round(statistics.mean(len(r) for _, _, r in items)),
                "pool_startup_s": round(startup, 3),
                "mixrl_full_mix": ours,
                "mixrl_without_pathological": ours_normal,
                "mixrl_no_exact_without_pathological": no_exact,
                "naive_inprocess_without_pathological": naive,
                "speedup_vs_naive": round(naive["wall_s"] / ours_normal["wall_s"], 2),
                "speedup_vs_naive_no_exact": round(naive["wall_s"] / no_exact["wall_s"], 2),
                "verdict_disagreements_vs_naive": disagreements,
                "hanging_input": {
                    "input": hang_pred,
                    "mixrl_s": round(ours_hang, 3),
                    "mixrl_status": hang_verdict.status,
                    "naive_s": round(naive_hang, 3),
                    "naive_killed_at_cap": killed,
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
