"""fp32 against bf16 autocast on this machine, on a model that learns: the quickstart's mixed GRPO stage
(`mixrl.config.quickstart_grpo_default`: math, code through the sandbox, IFEval, chat through the reward-model
service) run from the shipped base, same seed, once per precision, identical but for `trainer.dtype` and
`rollout.dtype` (vLLM's engine and the trainer's autocast together, as `dtype: auto` sets them).

Run:
    .venv/bin/python bench/precision.py                      # 60 steps, 32 held-out prompts per domain, seed 0
    .venv/bin/python bench/precision.py --steps 20 --prompts 8 --dtypes float32 bfloat16
    options: [--seed 0] [--run-root DIR (default: a temporary folder)]

What `dtype: auto` decides on is printed first: `core.device.bf16_speedup()`, one model-shaped GEMM timed in
both precisions (auto picks bf16 at >= 1.25x). Then, per precision: seconds per step, generation and trainer
(medians from step 3 on), start-up; the train-inference mismatch the run carried, the trainer's logprobs of
the sampled tokens against vLLM's (`trainer_rollout_logprob_gap`, mean |log pi_trainer - log pi_vLLM| per
token), the truncated importance weights that correct it (`rollout_correction: token_tis`, cap `tis_cap`: mean
weight, fraction at the cap); KL to the reference and entropy at the end; and held-out before -> after per domain
(greedy and mean@8; the reward model's score for chat). One JSON object; `bf16_vs_fp32` holds the ratios and the
differences in held-out rise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HELDOUT = ("math/mean@8", "math/greedy", "code/mean@8", "code/greedy", "ifeval/mean@8", "ifeval/greedy",
           "chat/mean@8", "chat/rouge-L")


def median_from(rows: list[dict], key: str, first: int = 2) -> float | None:
    values = [r[key] for r in rows[first:] if isinstance(r.get(key), (int, float))]
    return round(statistics.median(values), 3) if values else None


def mean_of(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return round(statistics.fmean(values), 5) if values else None


def run_summary(summary: dict, rows: list[dict]) -> dict:
    """One precision's figures from its GRPO summary and metrics.jsonl rows."""
    heldout = {key: [round(summary[f"heldout/{key}_before"], 4), round(summary[f"heldout/{key}_after"], 4)]
               for key in HELDOUT if f"heldout/{key}_before" in summary}
    return {
        "steps": len(rows),
        "s_per_step": median_from(rows, "time_step_s"),
        "generate_s": median_from(rows, "time_generate_s"),
        "trainer_s": median_from(rows, "time_trainer_s"),
        "startup_s": round(sum(summary.get("startup_phases_s", {}).values()), 1),
        "trainer_rollout_logprob_gap": {"mean": mean_of(rows, "trainer_rollout_logprob_gap"),
                                        "first": rows[0].get("trainer_rollout_logprob_gap"),
                                        "last": rows[-1].get("trainer_rollout_logprob_gap")},
        "is_weight_mean": mean_of(rows, "is_weight_mean"),
        "is_weight_truncated_fraction": mean_of(rows, "is_weight_truncated_fraction"),
        "kl": {"last": rows[-1].get("kl"), "max": max(r.get("kl", 0.0) for r in rows)},
        "entropy_last": rows[-1].get("entropy"),
        "heldout_before_after": heldout,
        "heldout_rise": {key: round(after - before, 4) for key, (before, after) in heldout.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--prompts", type=int, default=32, help="held-out prompts per domain")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    ap.add_argument("--run-root", default="")
    args = ap.parse_args()

    import torch

    from core.config import build
    from core.device import bf16_speedup, resolve_dtype
    from mixrl.config import QuickstartConfig
    from mixrl.data.synthetic import ensure_datasets
    from mixrl.quickstart import chain_paths, shipped_base, start_reward_model_service, stop_instances
    from rl.grpo import run_grpo

    root = Path(args.run_root or tempfile.mkdtemp(prefix="mixrl_precision_"))
    cfg = chain_paths(build(QuickstartConfig, {"run_root": str(root), "grpo": {
        "seed": args.seed, "max_steps": args.steps, "eval": {"prompts": args.prompts}}}, source="bench/precision.py"))
    out: dict = {"machine": {"threads": torch.get_num_threads(), "bf16_gemm_speedup": round(bf16_speedup(), 2),
                             "auto_resolves_to": resolve_dtype("auto", "cpu")},
                 "workload": {"steps": args.steps, "heldout_prompts_per_domain": args.prompts, "seed": args.seed,
                              "run_root": str(root)}}
    shipped_base(cfg)
    ensure_datasets(cfg.pretrain.data)
    rm, instances = start_reward_model_service(cfg)
    try:
        for dtype in args.dtypes:
            print(f"[bench] GRPO in {dtype} ...", file=sys.stderr, flush=True)
            grpo = dataclasses.replace(
                cfg.grpo, reward_model_registry=rm["registry"], run_dir=str(root / f"grpo_{dtype}"),
                trainer=dataclasses.replace(cfg.grpo.trainer, dtype=dtype),
                rollout=dataclasses.replace(cfg.grpo.rollout, dtype=dtype))
            summary = run_grpo(grpo)
            rows = [json.loads(line) for line in (root / f"grpo_{dtype}" / "metrics.jsonl").read_text().splitlines()]
            out[dtype] = run_summary(summary, rows)
    finally:
        stop_instances(instances)
    if {"float32", "bfloat16"} <= out.keys():
        fp32, bf16 = out["float32"], out["bfloat16"]
        ratio = lambda key: round(fp32[key] / bf16[key], 2) if fp32[key] and bf16[key] else None  # noqa: E731
        out["bf16_vs_fp32"] = {
            "step_speedup": ratio("s_per_step"), "trainer_speedup": ratio("trainer_s"),
            "generate_speedup": ratio("generate_s"),
            "logprob_gap_ratio": (round(bf16["trainer_rollout_logprob_gap"]["mean"] / fp32["trainer_rollout_logprob_gap"]["mean"], 1)
                                  if fp32["trainer_rollout_logprob_gap"]["mean"] else None),
            "heldout_rise_difference": {key: round(bf16["heldout_rise"][key] - fp32["heldout_rise"][key], 4)
                                        for key in fp32["heldout_rise"] if key in bf16["heldout_rise"]},
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
