"""Sandbox benchmark: isolated executions/s and latency at several concurrencies, against plain subprocess.

    .venv/bin/python bench/sandbox.py                 # prints one JSON object (needs root)
    .venv/bin/python bench/sandbox.py --runs 80 --concurrency 1 2 4 8

Both sides run the same programs with the same interpreter, in the same process and run: "isolated" through
Sandbox.run_code (launcher, namespaces, cgroups, seccomp), "plain" as ``subprocess.run([python, -I, -S, -c,
code])`` with no isolation. ``overhead_ratio`` is plain throughput over isolated throughput at equal concurrency.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox.isolation import LANGUAGES, OK, Limits, Sandbox  # noqa: E402

PROGRAMS = [
    "print(sum(range(10000)))",
    "import json\nprint(json.dumps({'a': [1, 2, 3]}))",
    "s = input()\nprint(s[::-1])",
]


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def _measure(fn, runs: int, concurrency: int) -> dict:
    latencies: list[float] = []

    def one(i: int) -> None:
        t = time.perf_counter()
        fn(PROGRAMS[i % len(PROGRAMS)])
        latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(runs)))
    wall = time.perf_counter() - start
    return {"executions_per_s": round(runs / wall, 2), "p50_ms": round(1000 * statistics.median(latencies), 2),
            "p99_ms": round(1000 * _percentile(latencies, 0.99), 2)}


def run(runs: int = 60, concurrencies: tuple[int, ...] = (1, 2, 4, 8)) -> dict:
    sb = Sandbox(max(concurrencies), limits=Limits(wall_time_s=10))
    python = LANGUAGES["python"].run_argv[0]

    def isolated(code: str) -> None:
        r = sb.run_code(code, stdin="abc\n")
        assert r.status == OK, r

    def plain(code: str) -> None:
        subprocess.run([python, "-I", "-S", "-c", code], input=b"abc\n", capture_output=True, check=True, timeout=10)

    try:
        out = {"isolation": sb.report.to_dict(), "runs_per_level": runs, "levels": {}}
        for c in concurrencies:
            iso, pl = _measure(isolated, runs, c), _measure(plain, runs, c)
            out["levels"][str(c)] = {"isolated": iso, "plain_subprocess": pl,
                                     "overhead_ratio": round(pl["executions_per_s"] / iso["executions_per_s"], 2)}
        return out
    finally:
        sb.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=60)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    a = p.parse_args(argv)
    print(json.dumps(run(a.runs, tuple(a.concurrency)), indent=2))


if __name__ == "__main__":
    main()
