"""One-step asynchronous GRPO vs the synchronous trainer, on the same recipe, measured in the same run.

Run:
    .venv/bin/python bench/async_speedup.py [--steps 10] [--warmup 2] [--rollout-cores 0 --trainer-cores 1]

Three `mixrl train` runs of one recipe (each its own process, Ray session and vLLM engine):

- sync_colocated: `max_staleness: 0`, each phase uses every core in turn (the engine's OpenMP threads bound to
  all cores, the trainer's torch threads on all cores) — the usual synchronous trainer;
- sync_split: `max_staleness: 0` with the asynchronous resource split (engine on `--rollout-cores`, trainer on
  `--trainer-cores`): what the split costs when nothing overlaps;
- async: `max_staleness: 1` with the same split — generating batch t+1 overlaps training on batch t.

From the runs' metrics (steps after `--warmup`): seconds per step, the speed-ups of async over both synchronous
runs, and the ideal speed-up of overlapping the two phases computed from sync_split's measured phase times,
(gen + train) / max(gen, train), where gen is the whole rollout phase of a synchronous step (generation, rewards,
batch preparation: step − train − sync) and train the trainer's time (also with the weight sync, which cannot
overlap, on both sides; and with vLLM's generation time alone), so the overlap efficiency = measured / ideal
is visible. Also each side's waiting time in the async run. Prints one JSON object
on stdout. Needs `make quickstart`'s SFT checkpoint and data (or `--model`/`--data`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def recipe(args, run_dir: Path, *, staleness: int, rollout_cores: str, trainer_cores: str) -> dict:
    return {
        "run_dir": str(run_dir),
        "model_path": args.model,
        "seed": 0,
        "sources": [{"name": "math", "path": f"{args.data}/math/train.parquet", "difficulties": [1], "mode": "think"}],
        "prompts_per_step": args.prompts,
        "max_steps": args.steps,
        "max_staleness": staleness,
        "rollout": {"samples_per_prompt": args.samples, "max_response_tokens": args.response_tokens, "temperature": 1.0,
                    "cpu_bind": rollout_cores},
        "placement": {"trainer_cpu_bind": trainer_cores},
        "trainer": {"micro_batch_sequences": 64, "optim": {"lr_peak": 1e-4, "lr_warmup_steps": 0, "lr_min_ratio": 1.0}},
        "checkpoint_every_steps": 0,
        "ray": {"num_cpus": os.cpu_count() or 2},
    }


def run_mode(args, tmp: Path, name: str, **kw) -> list[dict]:
    import yaml

    run_dir = tmp / name
    path = tmp / f"grpo_{name}.yaml"  # the grpo_ prefix tells the CLI the recipe kind
    path.write_text(yaml.safe_dump(recipe(args, run_dir, **kw)))
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    proc = subprocess.run([sys.executable, "-m", "mixrl.cli", "train", str(path)], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise SystemExit(f"{name}: mixrl train failed")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if r["step"] > args.warmup]


def phase_times(rows: list[dict]) -> dict[str, float]:
    mean = lambda key: statistics.fmean(r[key] for r in rows)  # noqa: E731
    return {"step_s": mean("time_step_s"), "generate_s": mean("time_generate_s"),
            "train_s": statistics.fmean(r["time_reference_s"] + r["time_train_s"] for r in rows), "sync_s": mean("time_sync_s"),
            "wait_trainer_s": mean("wait_trainer_s"), "wait_rollout_s": mean("wait_rollout_s"),
            "staleness_max": max(r["staleness_max"] for r in rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="runs/quickstart/sft/final")
    ap.add_argument("--data", default="runs/quickstart/data")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2, help="steps left out of the means (start-up, the pipeline filling)")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--response-tokens", type=int, default=64)
    ap.add_argument("--all-cores", default=f"0-{(os.cpu_count() or 2) - 1}")
    ap.add_argument("--rollout-cores", default="0")
    ap.add_argument("--trainer-cores", default="1")
    args = ap.parse_args()
    if not Path(args.model).exists():
        raise SystemExit(f"{args.model}: no SFT checkpoint; run `make quickstart` first or pass --model/--data")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        modes = {
            "sync_colocated": run_mode(args, tmp, "sync_colocated", staleness=0, rollout_cores=args.all_cores, trainer_cores=""),
            "sync_split": run_mode(args, tmp, "sync_split", staleness=0, rollout_cores=args.rollout_cores, trainer_cores=args.trainer_cores),
            "async": run_mode(args, tmp, "async", staleness=1, rollout_cores=args.rollout_cores, trainer_cores=args.trainer_cores),
        }
    t = {name: phase_times(rows) for name, rows in modes.items()}
    split = t["sync_split"]
    train, sync = split["train_s"], split["sync_s"]
    # the rollout phase is everything the trainer waits for in a synchronous step: generation, rewards and the
    # driver's batch preparation (all of it overlaps training in the async run); vLLM's generation alone is
    # reported too
    gen = split["step_s"] - train - sync
    ideal = (gen + train) / max(gen, train)
    ideal_with_sync = (gen + train + sync) / (max(gen, train) + sync)
    g = split["generate_s"]
    ideal_generate_only = (g + train) / max(g, train)
    vs_split = split["step_s"] / t["async"]["step_s"]
    out = {
        "workload": {"prompts": args.prompts, "samples": args.samples, "response_tokens": args.response_tokens, "steps": args.steps,
                     "warmup": args.warmup, "model": args.model, "cores": os.cpu_count(),
                     "split": {"rollout": args.rollout_cores, "trainer": args.trainer_cores}},
        "modes": t,
        "speedup_vs_sync_colocated": t["sync_colocated"]["step_s"] / t["async"]["step_s"],
        "speedup_vs_sync_split": vs_split,
        "rollout_phase_s": gen,
        "train_phase_s": train,
        "ideal_speedup": ideal,
        "ideal_speedup_generate_only": ideal_generate_only,
        "ideal_speedup_with_sync": ideal_with_sync,
        "overlap_efficiency": vs_split / ideal,
        "overlap_efficiency_with_sync": vs_split / ideal_with_sync,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
