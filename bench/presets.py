"""Every algorithm preset (`algo.preset`: dapo, dr_grpo, gspo, cispo; `rl/presets.py`) trains the quickstart's model
for a few steps without error, beside the default objective, and the default objective with PPO mini-batches
(clipping fires only there: with one optimizer step per batch the ratio is 1), measured in the same run.

Run:
    .venv/bin/python bench/presets.py                    # 10 steps each, the quickstart's shipped base checkpoint
    .venv/bin/python bench/presets.py --steps 3 --presets dapo gspo --minibatches 0
    options: [--model mixrl/assets/base_tiny --data runs/quickstart/data] [--prompts 8] [--minibatches 4]

Each run is one `mixrl train` of recipes/grpo_math_tiny.yaml's workload (its own process, Ray session and vLLM
engine), with `algo.preset` (or `algo.mini_batches_per_update`) set and nothing else changed; the quickstart's
synthetic data is generated first when missing. Prints one JSON object on stdout: per run whether it ran, its
steps, mean reward of the first and last step, clip fraction, dynamic-sampling metrics (dapo) and s/step.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def recipe(model: str, data: str, run_dir: Path, preset: str, args) -> dict:
    algo = {"kl_coef": 0.01, "kl_estimator": "k3"}
    if preset.startswith("minibatches"):
        algo["mini_batches_per_update"] = args.minibatches
    elif preset:
        algo = {"preset": preset}  # the preset alone decides the objective
    return {"run_dir": str(run_dir), "model_path": model, "seed": 0, "max_steps": args.steps, "max_staleness": 1,
            "sources": [{"name": "math", "path": f"{data}/math/train.parquet", "mode": "think"}],
            "prompts_per_step": args.prompts, "checkpoint_every_steps": 0, "eval": {"prompts": 0},
            "rollout": {"samples_per_prompt": 8, "max_response_tokens": 64, "temperature": 1.0, "max_model_len": 512},
            "algo": algo, "trainer": {"optim": {"lr_peak": 1e-4, "lr_warmup_steps": 0, "lr_min_ratio": 1.0}},
            "ray": {"num_cpus": os.cpu_count() or 2}}


def run_preset(model: str, data: str, tmp: Path, preset: str, args) -> dict:
    import yaml

    name = preset or "default"
    run_dir = tmp / name
    path = tmp / f"grpo_{name}.yaml"  # the grpo_ prefix tells the CLI the recipe kind
    path.write_text(yaml.safe_dump(recipe(model, data, run_dir, preset, args)))
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    proc = subprocess.run([sys.executable, "-m", "mixrl.cli", "train", str(path)], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        return {"ok": False, "error": (proc.stdout[-1500:] + proc.stderr[-3000:]).strip()}
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    out = {"ok": len(rows) == args.steps, "steps": len(rows), "reward_first": rows[0].get("reward"),
           "reward_last": rows[-1].get("reward"),
           "clip_fraction_mean": statistics.fmean(r.get("clip_fraction", 0.0) for r in rows),
           "step_s_mean": statistics.fmean(r["time_step_s"] for r in rows)}
    if any("dynamic/filtered_fraction" in r for r in rows):
        out["dynamic_filtered_fraction_mean"] = statistics.fmean(r["dynamic/filtered_fraction"] for r in rows)
        out["dynamic_extra_rounds_total"] = sum(r["dynamic/extra_rounds"] for r in rows)
    return out


def main() -> None:
    from mixrl.data.synthetic import ensure_quickstart_data
    from rl.presets import PRESETS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--prompts", type=int, default=8, help="prompts per step")
    ap.add_argument("--presets", nargs="*", default=["", *sorted(PRESETS)], help='"" = the default objective')
    ap.add_argument("--model", default="mixrl/assets/base_tiny")
    ap.add_argument("--data", default="runs/quickstart/data")
    ap.add_argument("--minibatches", type=int, default=4, help="also the default objective with this many PPO "
                    "mini-batches per update (0 = not)")
    args = ap.parse_args()
    model, data = args.model, args.data
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON only
        ensure_quickstart_data([f"{data}/math/train.parquet"])
    runs = args.presets + ([f"minibatches{args.minibatches}"] if args.minibatches > 1 else [])
    with tempfile.TemporaryDirectory() as tmp:
        results = {p or "default": run_preset(model, data, Path(tmp), p, args) for p in runs}
    print(json.dumps({"model": model, "steps": args.steps, "presets": results}, indent=1))
    if not all(r["ok"] for r in results.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
