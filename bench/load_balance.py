"""Load-balance benchmark: continuous dispatch across vLLM engines vs a static even split, on a long-tail workload.

Run:
    .venv/bin/python bench/load_balance.py [--engines 2] [--model mixrl/assets/base_tiny] [--layouts shuffled,by_source]

N real vLLM-CPU rollout actors (`rl.actors.RolloutActor`, engine i on core i mod cores, `--pin`) generate the same
items under each policy of `rl.scheduler.EnginePool`: "static" (contiguous even chunks, all submitted at once),
"continuous" balanced by tokens, by requests, and by tokens with the longest items first. Response lengths are
drawn from a lognormal (a long tail, as reasoning rollouts have) and made exact with `ignore_eos` and a
per-prompt `max_response_tokens`, so every policy does the same work; prompts are random token ids. Layouts:
"shuffled" (one source, random order) and "by_source" (a long-reasoning source first, then a short one, as a
step's prompts come source by source). One item is one prompt's group of `--samples-per-prompt` samples. A
small warm-up batch runs first; then the policies run in turn, `--repeats` times, and the median wall time
counts. Prints one JSON object on stdout: per layout and policy wall seconds, response tokens/s, per-engine
idle (bubble) fraction and items, and the throughput ratio of each continuous policy over static.
Default model: `mixrl/assets/base_tiny` if it exists, else a ~0.1M-parameter random Qwen2 built here.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout carries only the JSON

DEFAULT_MODEL = "mixrl/assets/base_tiny"


def build_tiny(root: Path) -> str:
    """A random ~0.1M-parameter Qwen2 (head_dim 32, which vLLM's CPU attention needs) in Hugging Face form."""
    from core.sections import ModelConfig
    from core.model import build_model, save_checkpoint
    from core.tokenizer import train_tokenizer

    docs = [f"What is {i} + {i + 1}? The answer is {2 * i + 1}." for i in range(2000)]
    tok = train_tokenizer(docs, vocab_size=512, min_frequency=1)
    model = build_model(ModelConfig(hidden_size=64, num_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                    intermediate_size=128, max_position_embeddings=1024), tok)
    return str(save_checkpoint(model, tok, root / "tiny"))


def long_tail_lengths(count: int, median: int, sigma: float, cap: int, rng: random.Random) -> list[int]:
    """Lognormal response lengths (median `median`, shape `sigma`), clipped to [4, cap]."""
    return [min(cap, max(4, round(rng.lognormvariate(0.0, sigma) * median))) for _ in range(count)]


def start_engines(model: str, num_engines: int, max_model_len: int, seed: int, pin: str) -> list:
    """Started rollout actors; engine i on core i mod cores: its OpenMP threads only ("threads", the recipe's
    `cpu_bind`), or its whole process tree ("process": the actor, vLLM's engine core and scheduler, as if every
    engine had a device of its own)."""
    import ray

    from rl.actors import RolloutActor
    from rl.config import RolloutConfig

    class PinnedRolloutActor(RolloutActor):
        def __init__(self, model_path: str, rollout_cfg, seed: int, core: int):
            os.sched_setaffinity(0, {core})  # vLLM's engine-core process, spawned later, inherits it
            super().__init__(model_path, rollout_cfg, seed)

    cores = os.cpu_count() or 1
    actors = []
    for i in range(num_engines):
        cfg = RolloutConfig(max_model_len=max_model_len, kv_cache_gib=1.0, cpu_bind=str(i % cores))
        if pin == "process":
            actors.append(ray.remote(num_cpus=0)(PinnedRolloutActor).remote(model, cfg, seed, i % cores))
        else:
            actors.append(ray.remote(num_cpus=0)(RolloutActor).remote(model, cfg, seed))
    ray.get([a.start.remote() for a in actors])
    return actors


def summarize(runs: list, tokens: int) -> dict:
    """The median-wall run of one policy, as JSON fields."""
    stats = sorted(runs, key=lambda s: s.wall_s)[len(runs) // 2]
    return {"wall_s": round(stats.wall_s, 3), "wall_s_all": [round(s.wall_s, 3) for s in runs],
            "tokens_per_s": round(tokens / stats.wall_s, 1),
            "idle_fraction": [round(e.idle_fraction, 3) for e in stats.engines],
            "idle_fraction_mean": round(stats.idle_fraction_mean, 3),
            "items": [e.items for e in stats.engines], "cost_done": [int(e.cost_done) for e in stats.engines],
            "max_inflight": [e.max_inflight for e in stats.engines]}


POLICIES = {
    "static": {"dispatch": "static"},
    "continuous_tokens": {"dispatch": "continuous", "balance_by": "tokens"},
    "continuous_requests": {"dispatch": "continuous", "balance_by": "requests"},
    # lengths are exact here (ignore_eos): the bound on what knowing them in advance could give
    "continuous_longest_first": {"dispatch": "continuous", "balance_by": "tokens", "order": "longest_first"},
}


def workload_lengths(layout: str, args, rng: random.Random) -> list[int]:
    """"shuffled": one lognormal source in random order. "by_source": a long-reasoning source (4x the median) for
    the first quarter of the batch and a short one after, laid out source by source as `step_prompts` does."""
    cap = args.max_model_len - args.prompt_tokens
    if layout == "shuffled":
        return long_tail_lengths(args.prompts, args.median_tokens, args.sigma, cap, rng)
    if layout == "by_source":
        long_n = args.prompts // 4
        return (long_tail_lengths(long_n, 4 * args.median_tokens, args.sigma, cap, rng)
                + long_tail_lengths(args.prompts - long_n, args.median_tokens, args.sigma, cap, rng))
    raise ValueError(f"unknown layout {layout!r}; valid: shuffled, by_source")


def bench_layout(layout: str, args, actors: list, model_vocab: int) -> dict:
    from core.engine import SamplingSettings
    from rl.scheduler import EnginePool, rollout_items, submit_rollout

    rng = random.Random(args.seed)
    prompts = [[rng.randrange(3, model_vocab) for _ in range(args.prompt_tokens)] for _ in range(args.prompts)]
    lengths = workload_lengths(layout, args, rng)
    settings = SamplingSettings(samples_per_prompt=args.samples_per_prompt, seed=args.seed, ignore_eos=True)
    items = rollout_items(prompts, settings, max_response_tokens=lengths)
    tokens = args.samples_per_prompt * sum(lengths)
    pools = {name: EnginePool(lambda i: actors[i], len(actors), max_inflight_per_engine=args.max_inflight, **kw)
             for name, kw in POLICIES.items()}
    pools["static"].run(items[: 2 * len(actors)], submit_rollout)  # warm-up: first requests pay one-off costs
    runs = {name: [] for name in POLICIES}
    for r in range(args.repeats):
        for name, pool in pools.items():  # policies interleaved: machine noise spreads over all of them
            results, stats = pool.run(items, submit_rollout)
            got = sum(len(s.response_ids) for res in results for s in res[0])
            if got != tokens:
                raise RuntimeError(f"{name}: {got} response tokens, expected {tokens} (ignore_eos lengths)")
            runs[name].append(stats)
            idle = [round(e.idle_fraction, 3) for e in stats.engines]
            print(f"[bench] {layout} repeat {r} {name}: {stats.wall_s:.2f}s idle {idle}", file=sys.stderr, flush=True)
    out = {name: summarize(rs, tokens) for name, rs in runs.items()}
    static_tps = out["static"]["tokens_per_s"]
    return {
        "response_tokens": {"total": tokens, "min": min(lengths), "max": max(lengths),
                            "mean": round(sum(lengths) / len(lengths), 1)},
        "static_chunk_response_tokens": [args.samples_per_prompt * sum(chunk) for chunk in _chunks(lengths, len(actors))],
        "policies": out,
        "throughput_ratio_over_static": {name: round(out[name]["tokens_per_s"] / static_tps, 3)
                                         for name in POLICIES if name != "static"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", type=int, default=2)
    parser.add_argument("--model", default="", help=f"HF checkpoint (default: {DEFAULT_MODEL} if present, else a tiny one)")
    parser.add_argument("--layouts", default="shuffled,by_source", help="workloads: shuffled, by_source (see workload_lengths)")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--samples-per-prompt", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--median-tokens", type=int, default=48, help="median response length (the short source's)")
    parser.add_argument("--sigma", type=float, default=1.2, help="lognormal shape: larger = longer tail")
    parser.add_argument("--max-model-len", type=int, default=512)
    parser.add_argument("--max-inflight", type=int, default=16, help="continuous: items outstanding per engine")
    parser.add_argument("--pin", choices=["threads", "process"], default="threads",
                        help="engine i on core i: its OpenMP threads (cpu_bind) or its whole process tree")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import ray

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or (DEFAULT_MODEL if Path(DEFAULT_MODEL, "config.json").exists() else build_tiny(Path(tmp)))
        vocab = json.loads(Path(model, "config.json").read_text())["vocab_size"]
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        t0 = time.perf_counter()
        actors = start_engines(model, args.engines, args.max_model_len, args.seed, args.pin)
        print(f"[bench] {args.engines} engines started in {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
        layouts = {layout: bench_layout(layout, args, actors, vocab) for layout in args.layouts.split(",")}
        ray.get([a.shutdown.remote() for a in actors])
        ray.shutdown()

    print(json.dumps({
        "benchmark": "load_balance", "model": model, "engines": args.engines, "cores": os.cpu_count(),
        "prompts": args.prompts, "samples_per_prompt": args.samples_per_prompt, "prompt_tokens": args.prompt_tokens,
        "median_tokens": args.median_tokens, "sigma": args.sigma, "max_inflight_per_engine": args.max_inflight, "pin": args.pin,
        "repeats": args.repeats, "layouts": layouts,
    }, indent=2))


def _chunks(values: list[int], n: int) -> list[list[int]]:
    bounds = [len(values) * i // n for i in range(n + 1)]
    return [values[bounds[i]:bounds[i + 1]] for i in range(n)]


if __name__ == "__main__":
    main()
