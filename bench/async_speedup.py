"""One-step asynchronous GRPO vs the synchronous trainer, on the same recipe, measured in the same run.

Run:
    .venv/bin/python bench/async_speedup.py                          # the peer workload (random-init 9.8M Qwen2)
    .venv/bin/python bench/async_speedup.py --workload longtail      # the same model, EOS honoured, long-tail lengths
    .venv/bin/python bench/async_speedup.py --workload quickstart    # the quickstart's SFT model (make quickstart)
    .venv/bin/python bench/async_speedup.py --workload longtail --peer-size tiny --modes async_colocated,partial_colocated
                                                                     # partial rollouts where generation dominates
    options: [--steps 10] [--warmup 2] [--rollout-cores 0 --trainer-cores 1] [--modes a,b,...]

Workloads: `peer` is bench/vs_trl.py's (8 prompts x 8 samples x 128 tokens, EOS ignored, lr 1e-6, β 0.04: every
step does the same work); `longtail` honours EOS with up to 384 tokens, so a step waits for its longest samples
(a random-init model stops with probability ~2/1024 per token: lengths spread from a few tokens to the cap);
`quickstart` is level-1 division in thinking mode from the quickstart's SFT checkpoint (16 x 8 x 64).

Four `mixrl train` runs of one recipe (each its own process, Ray session and vLLM engine):

- sync_colocated: `max_staleness: 0`, each phase uses every core in turn (the engine's OpenMP threads bound to
  all cores, the trainer's torch threads on all cores) — the usual synchronous trainer;
- sync_split: `max_staleness: 0` with the asynchronous resource split (engine on `--rollout-cores`, trainer on
  `--trainer-cores`): what the split costs when nothing overlaps;
- async: `max_staleness: 1` with the same split — generating batch t+1 overlaps training on batch t;
- async_colocated: `max_staleness: 1`, both sides on every core (they contend for them);
- partial, partial_colocated: async and async_colocated with partial rollouts (`rollout.partial_rollouts`): the
  weight sync lands while the next batch is generating (its requests freeze, take the new weights, go on) and the
  batch after starts right after it, beside the long tails, instead of at the step boundary.
  `partial_speedup_vs_step_boundary` compares each with its step-boundary twin.

From the runs' metrics (steps after `--warmup`): seconds per step, the speed-ups of async over the synchronous
runs, and the ideal speed-up of overlapping the two phases computed from sync_split's measured phase times,
(gen + train) / max(gen, train), where gen is the whole rollout phase of a synchronous step (generation, rewards,
batch preparation: step − train − sync) and train the trainer's whole update (`time_trainer_s`; also with the
weight sync, which cannot overlap, on both sides; and with vLLM's generation time alone), so the overlap
efficiency = measured / ideal is visible. Also each side's waiting time, and the placement advice the runs logged.
Prints one JSON object on stdout.
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


def workload(args) -> dict:
    """The recipe keys that define the workload (model, data, batch, lengths, objective)."""
    if args.workload == "quickstart":
        if not Path(args.model).exists():
            raise SystemExit(f"{args.model}: no SFT checkpoint; run `make quickstart` first or pass --model/--data")
        return {"model_path": args.model,
                "sources": [{"name": "math", "path": f"{args.data}/math/train.parquet", "difficulties": [1], "mode": "think"}],
                "prompts_per_step": 16,
                "rollout": {"samples_per_prompt": 8, "max_response_tokens": 64, "temperature": 1.0},
                "trainer": {"optim": {"lr_peak": 1e-4, "lr_warmup_steps": 0, "lr_min_ratio": 1.0}}}
    sys.path.insert(0, str(ROOT / "bench"))
    from vs_trl import ensure_workload  # the peer model and task, made once under .bench/peer

    model, task = ensure_workload(args.peer_size)
    longtail = args.workload == "longtail"
    return {"model_path": str(model), "sources": [{"name": "arith", "path": str(task), "mode": "direct"}],
            "prompts_per_step": 8, "rewards": {"routes": {"synthetic/arith": "math"}},
            "rollout": {"samples_per_prompt": 8, "max_response_tokens": 384 if longtail else 128, "temperature": 1.0,
                        "top_p": 1.0, "top_k": -1, "ignore_eos": not longtail, "max_model_len": 512},
            "algo": {"kl_coef": 0.04, "kl_estimator": "k3", "clip_ratio_low": 0.2, "clip_ratio_high": 0.2},
            "trainer": {"optim": {"lr_peak": 1e-6, "lr_warmup_steps": 0, "lr_min_ratio": 0.0,
                                                               "weight_decay": 0.0}}}


def recipe(args, run_dir: Path, *, staleness: int, rollout_cores: str, trainer_cores: str, partial: bool = False) -> dict:
    raw = {"run_dir": str(run_dir), "seed": 0, "max_steps": args.steps, "max_staleness": staleness,
           "checkpoint_every_steps": 0, "eval": {"prompts": 0}, "ray": {"num_cpus": os.cpu_count() or 2}, **workload(args)}
    raw["rollout"] = {**raw["rollout"], "cpu_bind": rollout_cores, "partial_rollouts": partial}
    raw["placement"] = {"trainer_cpu_bind": trainer_cores}
    return raw


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
    summary = json.loads((run_dir / "summary.json").read_text())
    advice = summary.get("placement_advice")
    return [dict(r, _advice=advice, _startup_s=summary.get("startup_s")) for r in rows if r["step"] > args.warmup]


def phase_times(rows: list[dict]) -> dict[str, float]:
    mean = lambda key: statistics.fmean(r[key] for r in rows)  # noqa: E731
    return {"step_s": mean("time_step_s"), "generate_s": mean("time_generate_s"), "train_s": mean("time_trainer_s"),
            "sync_s": mean("time_sync_s"), "wait_trainer_s": mean("wait_trainer_s"), "wait_rollout_s": mean("wait_rollout_s"),
            "response_tokens_mean": mean("response_tokens_mean"), "trainer_threads": mean("trainer_threads"),
            "staleness_max": max(r["staleness_max"] for r in rows), "startup_s": rows[0]["_startup_s"],
            "partial_samples_mean": mean("partial_samples"), "staleness_tokens_mean": mean("staleness_tokens_mean"),
            "placement_advice": rows[0]["_advice"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workload", choices=["peer", "longtail", "quickstart"], default="peer")
    ap.add_argument("--model", default="mixrl/assets/base_tiny", help="--workload quickstart: the SFT checkpoint")
    ap.add_argument("--data", default="runs/quickstart/data", help="--workload quickstart: the datasets")
    ap.add_argument("--peer-size", default="small", choices=["tiny", "small", "medium"],
                    help="peer/longtail: the random-init model (tiny 0.43M: generation-bound; small 9.8M: trainer-bound here)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2, help="steps left out of the means (start-up, the pipeline filling)")
    ap.add_argument("--all-cores", default=f"0-{(os.cpu_count() or 2) - 1}")
    ap.add_argument("--rollout-cores", default="0")
    ap.add_argument("--trainer-cores", default="1")
    ap.add_argument("--modes", default="sync_colocated,sync_split,async,async_colocated,partial,partial_colocated")
    args = ap.parse_args()
    settings = {"sync_colocated": dict(staleness=0, rollout_cores=args.all_cores, trainer_cores=""),
                "sync_split": dict(staleness=0, rollout_cores=args.rollout_cores, trainer_cores=args.trainer_cores),
                "async": dict(staleness=1, rollout_cores=args.rollout_cores, trainer_cores=args.trainer_cores),
                "async_colocated": dict(staleness=1, rollout_cores=args.all_cores, trainer_cores=""),
                "partial": dict(staleness=1, rollout_cores=args.rollout_cores, trainer_cores=args.trainer_cores, partial=True),
                "partial_colocated": dict(staleness=1, rollout_cores=args.all_cores, trainer_cores="", partial=True)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        modes = {name: run_mode(args, tmp, name, **settings[name]) for name in args.modes.split(",")}
    t = {name: phase_times(rows) for name, rows in modes.items()}
    out: dict = {"workload": {"name": args.workload, "peer_size": args.peer_size, "steps": args.steps, "warmup": args.warmup, "cores": os.cpu_count(),
                              "split": {"rollout": args.rollout_cores, "trainer": args.trainer_cores},
                              "loadavg_1m_end": os.getloadavg()[0]},
                 "modes": t,
                 # step-boundary sync / partial rollouts, same placement (> 1: partial rollouts are faster)
                 "partial_speedup_vs_step_boundary": {p: t[a]["step_s"] / t[p]["step_s"] for p, a in
                                                      (("partial", "async"), ("partial_colocated", "async_colocated"))
                                                      if p in t and a in t}}
    if not {"sync_colocated", "sync_split", "async"} <= set(t):  # the overlap figures need these three
        print(json.dumps(out, indent=2))
        return
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
    best_async = min((m for m in ("async", "async_colocated") if m in t), key=lambda m: t[m]["step_s"])
    out.update({
        "speedup_vs_sync_colocated": t["sync_colocated"]["step_s"] / t["async"]["step_s"],
        "best_async_mode": best_async,
        "best_async_speedup_vs_sync_colocated": t["sync_colocated"]["step_s"] / t[best_async]["step_s"],
        "speedup_vs_sync_split": vs_split,
        "rollout_phase_s": gen,
        "train_phase_s": train,
        "ideal_speedup": ideal,
        "ideal_speedup_generate_only": ideal_generate_only,
        "ideal_speedup_with_sync": ideal_with_sync,
        "overlap_efficiency": vs_split / ideal,
        "overlap_efficiency_with_sync": vs_split / ideal_with_sync,
    })
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
