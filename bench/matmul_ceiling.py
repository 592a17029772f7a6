"""The matmul ceiling of this machine: GEMM GFLOP/s at a dtype and thread count, on model-shaped matrices.

Run:
    .venv/bin/python bench/matmul_ceiling.py [--threads 2] [--m 9664 --k 384 --n 1024] [--seconds 1.0]
    .venv/bin/python bench/matmul_ceiling.py --model .bench/peer/models/small --tokens 9664   # the model's GEMM mix

`matmul_gflops(dtype, threads, m, k, n, seconds)` times `[m, k] @ [k, n]` (2·m·k·n FLOPs a call) for about
`seconds` after one warm-up call and returns the best call's rate: the ceiling, not the average, because the
host is shared and a slower call says more about the neighbours than about the hardware.
`model_gemm_gflops` does the same for every distinct linear layer of a Qwen2-style config at `tokens` rows and
returns the FLOP-weighted rate (total FLOPs / total time at each shape's ceiling), the rate a forward pass of
that model would run at if it were nothing but its GEMMs. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def matmul_gflops(dtype: str | torch.dtype, threads: int, m: int, k: int, n: int, seconds: float = 1.0) -> float:
    """Best GFLOP/s of `[m, k] @ [k, n]` in `dtype` on `threads` torch threads over about `seconds` of calls."""
    dt = DTYPES[dtype] if isinstance(dtype, str) else dtype
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(m, k, generator=gen).to(dt)  # [m, k]  activations
        b = torch.randn(k, n, generator=gen).to(dt)  # [k, n]  a weight, as nn.Linear uses it (x @ W.T)
        out = torch.empty(m, n, dtype=dt)
        torch.matmul(a, b, out=out)  # warm-up: oneDNN/MKL picks and caches its kernel here
        best, spent = float("inf"), 0.0
        while spent < seconds or best == float("inf"):
            t0 = time.perf_counter()
            torch.matmul(a, b, out=out)
            dt_s = time.perf_counter() - t0
            best, spent = min(best, dt_s), spent + dt_s
        return 2.0 * m * k * n / best / 1e9
    finally:
        torch.set_num_threads(before)


def qwen2_linear_shapes(cfg: dict) -> list[tuple[int, int, int]]:
    """(in_features, out_features, count) of every linear layer of a Qwen2-style config, lm_head included.

    >>> qwen2_linear_shapes({"hidden_size": 4, "intermediate_size": 8, "num_hidden_layers": 2,
    ...                      "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 16})
    [(4, 4, 4), (4, 2, 4), (4, 8, 4), (8, 4, 2), (4, 16, 1)]
    """
    h, i, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    kv = h // cfg["num_attention_heads"] * cfg["num_key_value_heads"]
    return [(h, h, 2 * L), (h, kv, 2 * L), (h, i, 2 * L), (i, h, L), (h, cfg["vocab_size"], 1)]  # q,o | k,v | gate,up | down | lm_head


def model_gemm_gflops(cfg: dict, tokens: int, dtype: str, threads: int, seconds_per_shape: float = 0.5) -> dict:
    """Ceiling GFLOP/s per distinct linear shape at `tokens` rows, and their FLOP-weighted rate."""
    shapes, flops, time_s = {}, 0.0, 0.0
    for k, n, count in qwen2_linear_shapes(cfg):
        key = f"{k}x{n}"
        if key not in shapes:
            shapes[key] = matmul_gflops(dtype, threads, tokens, k, n, seconds_per_shape)
        f = 2.0 * tokens * k * n * count
        flops, time_s = flops + f, time_s + f / (shapes[key] * 1e9)
    return {"dtype": dtype, "threads": threads, "rows": tokens, "per_shape_gflops": {k: round(v, 1) for k, v in shapes.items()},
            "gflops": round(flops / time_s / 1e9, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--m", type=int, default=64 * 151, help="rows: sequences x tokens of one step (64 x (23 + 128))")
    ap.add_argument("--k", type=int, default=384)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--model", default="", help="HF model folder: measure its linear layers' shapes instead of m,k,n")
    ap.add_argument("--tokens", type=int, default=64 * 151, help="rows for --model")
    args = ap.parse_args()
    out = {}
    for dtype in args.dtypes.split(","):
        if args.model:
            cfg = json.load(open(f"{args.model}/config.json"))
            out[dtype] = model_gemm_gflops(cfg, args.tokens, dtype, args.threads, args.seconds / 2)
        else:
            out[dtype] = round(matmul_gflops(dtype, args.threads, args.m, args.k, args.n, args.seconds), 1)
    print(json.dumps({"bench": "matmul_ceiling", "threads": args.threads, **out}))


if __name__ == "__main__":
    main()
