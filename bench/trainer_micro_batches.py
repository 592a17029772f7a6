"""The trainer's length-sorted, cut-to-length micro-batches against the former in-order, batch-width ones, on one
step's batch of long-tail lengths, measured in the same run.

Run:
    .venv/bin/python bench/trainer_micro_batches.py                 # the quickstart's shipped base, 128 sequences
    options: [--model mixrl/assets/base_tiny] [--sequences 128] [--max-response 192] [--median-response 40]
             [--micro-batch 16] [--kl-coef 0.001] [--repeats 3] [--threads 0 (all cores)] [--seed 0]

The batch is what a mixed-domain GRPO step hands the trainer: prompts of 20-60 tokens and response lengths drawn
log-normal around `--median-response`, capped at `--max-response` (a few long traces, many short answers). Both
ways run `PolicyTrainer.train_step` (the reference pass, then forward and backward of the update) on the same batch
from the same weights; the former way is `length_sorted_micro_batches` replaced by rows in order, each micro-batch
as wide as the whole batch. Prints one JSON object: seconds per train step (median of `--repeats`), the speed-up,
the fraction of computed positions that are real tokens under each way, and the largest gap between the two ways'
losses and gradient norms (the same update, so it should be float noise).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def batch_width_micro_batches(attention_mask, micro_batch):
    """The former micro-batching: rows in order, every micro-batch as wide as the batch."""
    import torch

    width = attention_mask.shape[1]
    return [(idx, width) for idx in torch.arange(attention_mask.shape[0]).split(micro_batch)]


def long_tail_batch(n: int, median: int, cap: int, vocab: int, pad_id: int, seed: int):
    from rl.trainer import build_batch

    rng = random.Random(seed)
    seqs, advs = [], []
    for _ in range(n):
        p = [rng.randrange(3, vocab) for _ in range(rng.randint(20, 60))]
        r_len = max(1, min(cap, int(rng.lognormvariate(0.0, 0.8) * median)))
        r = [rng.randrange(3, vocab) for _ in range(r_len)]
        seqs.append((p, r, [-1.0] * r_len))
        advs.append(rng.gauss(0.0, 1.0))
    return build_batch(seqs, advs, [True] * n, pad_id)


def real_fraction(batch, parts) -> float:
    computed = sum(len(idx) * width for idx, width in parts)
    return float(batch.attention_mask.sum()) / computed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "mixrl/assets/base_tiny"))
    ap.add_argument("--sequences", type=int, default=128)
    ap.add_argument("--max-response", type=int, default=192)
    ap.add_argument("--median-response", type=int, default=40)
    ap.add_argument("--micro-batch", type=int, default=16, help="the trainer's default (trainer.micro_batch_sequences)")
    ap.add_argument("--kl-coef", type=float, default=0.001)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    import rl.trainer as trainer_mod
    from core.sections import OptimConfig
    from rl.config import AlgoConfig, GRPOTrainerConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = GRPOTrainerConfig(micro_batch_sequences=args.micro_batch, dtype="float32", num_threads=args.threads,
                            optim=OptimConfig(lr_peak=5e-5, lr_warmup_steps=0, lr_min_ratio=1.0, weight_decay=0.0))
    trainer = trainer_mod.PolicyTrainer(args.model, cfg, AlgoConfig(kl_coef=args.kl_coef), total_steps=10, seed=args.seed)
    trainer.optimizer.step = lambda: None  # the same weights for every timed step: compare like with like
    tok = trainer.tokenizer
    batch = long_tail_batch(args.sequences, args.median_response, args.max_response, len(tok), tok.pad_token_id, args.seed)

    ways = {"length_sorted": trainer_mod.length_sorted_micro_batches, "batch_width": batch_width_micro_batches}
    result: dict = {"sequences": args.sequences, "batch_width_tokens": batch.input_ids.shape[1],
                    "mean_sequence_tokens": float(batch.attention_mask.sum(-1).float().mean()),
                    "micro_batch": args.micro_batch, "threads": torch.get_num_threads()}
    metrics = {}
    for name, fn in ways.items():
        trainer_mod.length_sorted_micro_batches = fn
        result[f"{name}_real_token_fraction"] = round(real_fraction(batch, fn(batch.attention_mask, args.micro_batch)), 3)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            metrics[name] = trainer.train_step(batch)
            times.append(time.perf_counter() - t0)
        result[f"{name}_s_per_step"] = round(statistics.median(times), 3)
        result[f"{name}_reference_s"] = round(metrics[name]["time_reference_s"], 3)
    result["speedup"] = round(result["batch_width_s_per_step"] / result["length_sorted_s_per_step"], 2)
    result["max_relative_gap"] = max(
        abs(metrics["length_sorted"][k] - metrics["batch_width"][k]) / max(abs(metrics["batch_width"][k]), 1e-12)
        for k in ("loss", "grad_norm", "kl", "entropy"))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
