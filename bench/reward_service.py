"""Reward-service benchmark: scored samples/s and latency through the gRPC service (1 and 3 instances, found in
the local registry) against the same model scoring the same batches in-process, in the same run; then the
throughput kept while one of 3 instances is killed.

    .venv/bin/python bench/reward_service.py                          # tiny untrained RM; prints one JSON object
    .venv/bin/python bench/reward_service.py --model-dir runs/rm/final --batches 40 --batch-size 64

Each server runs with one torch thread (``--threads 1``) and so does the in-process baseline, so
``ratio_vs_inprocess`` is service throughput over in-process throughput at equal per-worker compute. On a machine
with fewer cores than instances, 3 instances cannot beat 1: the JSON records ``cpu_count``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reward_services.client import ClientConfig, RewardServiceClient  # noqa: E402
from reward_services.registry import LocalRegistry  # noqa: E402
from reward_services.types import ScoreItem  # noqa: E402


def tiny_model(out: Path) -> Path:
    from reward_services.train import build_reward_model, pairs_from_rows
    from mixrl.data.chat_prompts import generate_chat
    from core.tokenizer import train_tokenizer

    pairs = pairs_from_rows(generate_chat(200, "train", 0))
    tok = train_tokenizer([f"{p.prompt}\n{p.chosen}\n{p.rejected}" for p in pairs], 1000)
    build_reward_model(tok, max_position_embeddings=2048).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def batches_of(n_batches: int, size: int) -> list[list[ScoreItem]]:
    from reward_services.train import pairs_from_rows
    from mixrl.data.chat_prompts import generate_chat

    pairs = pairs_from_rows(generate_chat(n_batches * size // 2 + 1, "test", 3))
    texts = [(p.prompt, r) for p in pairs for r in (p.chosen, p.rejected)]
    return [[ScoreItem(f"{b}-{k}", prompt=texts[b * size + k][0], response=texts[b * size + k][1]) for k in range(size)]
            for b in range(n_batches)]


def summarize(latencies: list[float], samples: int, seconds: float) -> dict:
    lat = sorted(latencies)
    return {"samples_per_s": round(samples / seconds, 1), "p50_ms": round(1000 * statistics.median(lat), 1),
            "p99_ms": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1), "calls": len(lat)}


def run_inprocess(model_dir: Path, batches) -> dict:
    import torch

    from reward_services.models import load_scorer

    torch.set_num_threads(1)
    scorer = load_scorer(model_dir)
    for sub in (batches[0][i:i + 32] for i in range(0, len(batches[0]), 32)):  # warm-up
        scorer.score(sub, [scorer.encode(it) for it in sub])
    lat, start = [], time.monotonic()
    for batch in batches:
        t = time.monotonic()
        for i in range(0, len(batch), 32):  # same micro-batch size as the service's max_batch_items
            sub = batch[i:i + 32]
            scorer.score(sub, [scorer.encode(it) for it in sub])
        lat.append(time.monotonic() - t)
    return summarize(lat, sum(map(len, batches)), time.monotonic() - start)


def start_servers(model_dir: Path, registry: Path, n: int, tmp: Path) -> list[subprocess.Popen]:
    procs, readies = [], []
    for k in range(n):
        ready = tmp / f"ready-{k}-{time.monotonic_ns()}.json"
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "reward_services.server", str(model_dir), "--model-name", "bench-rm", "--port", "0",
             "--threads", "1", "--registry", f"local:{registry}", "--registry-ttl-s", "2", "--ready-file", str(ready)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"}))
        readies.append(ready)
    end = time.monotonic() + 180
    for p, ready in zip(procs, readies):
        while not ready.exists():
            if p.poll() is not None or time.monotonic() > end:
                raise RuntimeError("a server failed to start")
            time.sleep(0.05)
    return procs


def run_service(client: RewardServiceClient, batches, concurrency: int, on_progress=None) -> tuple[dict, list]:
    lat: list[float] = []
    done_at: list[tuple[float, int]] = []
    lock = threading.Lock()

    def one(batch):
        t = time.monotonic()
        results = client.score(batch)
        assert len(results) == len(batch) and all(r.ok for r in results), "a sample was not scored"
        with lock:
            lat.append(time.monotonic() - t)
            done_at.append((time.monotonic(), len(batch)))
            if on_progress:
                on_progress(len(done_at))

    client.score(batches[0][:8])  # warm-up (connections, first batches)
    start = time.monotonic()
    with ThreadPoolExecutor(concurrency) as ex:
        list(ex.map(one, batches))
    return summarize(lat, sum(map(len, batches)), time.monotonic() - start), [(t - start, n) for t, n in done_at]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", default=None, help="default: a tiny untrained Qwen2 RM built here")
    ap.add_argument("--batches", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=3, help="calls in flight from the client")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mixrl-bench-rm-"))
    try:
        model_dir = Path(args.model_dir) if args.model_dir else tiny_model(tmp / "model")
        batches = batches_of(args.batches, args.batch_size)
        out: dict = {"cpu_count": os.cpu_count(), "batches": args.batches, "batch_size": args.batch_size,
                     "concurrency": args.concurrency, "model_dir": str(model_dir) if args.model_dir else "tiny-untrained"}
        out["inprocess"] = run_inprocess(model_dir, batches)
        cfg = ClientConfig(deadline_s=120, max_batch_items=32, hedge_initial_delay_s=5.0)
        for n in (1, 3):
            registry = tmp / f"registry-{n}"
            registry.mkdir()
            procs = start_servers(model_dir, registry, n, tmp)
            try:
                with RewardServiceClient("bench-rm", registry=LocalRegistry(registry), config=cfg) as client:
                    stats, _ = run_service(client, batches, args.concurrency)
                    stats["ratio_vs_inprocess"] = round(stats["samples_per_s"] / out["inprocess"]["samples_per_s"], 3)
                    out[f"service_{n}_instance{'s' if n > 1 else ''}"] = stats
                    if n == 3:  # kill one instance halfway through a second pass
                        killed = threading.Event()

                        def progress(done):
                            if done >= len(batches) // 2 and not killed.is_set():
                                killed.set()
                                procs[0].send_signal(signal.SIGKILL)

                        kill_stats, timeline = run_service(client, batches, args.concurrency, progress)
                        # rates before and after the kill, within this pass (same warm state, same load)
                        timeline.sort()
                        cut = timeline[len(timeline) // 2 - 1][0]
                        before = sum(k for t, k in timeline if t <= cut) / max(1e-9, cut)
                        after = [(t, k) for t, k in timeline if t > cut]
                        after_rate = sum(k for _, k in after) / max(1e-9, after[-1][0] - cut) if after else 0.0
                        out["kill_one_of_3"] = {
                            **kill_stats, "samples_per_s_before_kill": round(before, 1),
                            "samples_per_s_after_kill": round(after_rate, 1),
                            "throughput_kept": round(after_rate / before, 3),
                            "all_samples_scored": True, "client_retries": client.stats.retries,
                        }
            finally:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
                    p.wait()
        print(json.dumps(out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
