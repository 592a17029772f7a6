"""The group-overlong length penalty on and off, from the same start (report §2.3.5 and Fig. 5; Kimi k1.5's
long2short): how much shorter the correct responses get, and what it costs in accuracy.

Run:
    .venv/bin/python bench/length_penalty.py                        # recipes/grpo_math_tiny.yaml's workload, 60 steps
    .venv/bin/python bench/length_penalty.py --steps 20 --min-span 8 --alpha 0.2
    options: [--recipe recipes/grpo_math_tiny.yaml] [--seed 0] [--staleness 1]

Two `mixrl train` runs of the recipe (each its own process, Ray session and vLLM engine), identical but for the
math domain's length term: "off" (`rewards.domains.math.length.group_overlong: false`) and "on" (the term with
its Δ_L floor `min_span_tokens` and a constant α; the report's 500-token floor is for 32k-token reasoning, not the
tiny model's ~25-token answers, where it would leave every λ at about 0.5). Both are evaluated on the recipe's
held-out slice before and after (greedy accuracy, mean@k, and the mean length of the correct sampled responses,
`heldout_correct_tokens`). Prints one JSON object: both runs' numbers, the fall in correct-response length of "on"
against "off" (target ≥ 30%) and the accuracy cost (mean@k, target ≤ 2 points).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def recipe(base: dict, run_dir: Path, length: dict, args) -> dict:
    out = {**base, "run_dir": str(run_dir), "seed": args.seed, "max_steps": args.steps, "max_staleness": args.staleness,
           "checkpoint_every_steps": 0}
    rewards = dict(out.get("rewards") or {})
    rewards["domains"] = {**rewards.get("domains", {}), "math": {"length": length}}
    out["rewards"] = rewards
    return out


def run(base: dict, tmp: Path, name: str, length: dict, args) -> dict:
    import yaml

    run_dir = tmp / name
    path = tmp / f"grpo_{name}.yaml"  # the grpo_ prefix tells the CLI the recipe kind
    path.write_text(yaml.safe_dump(recipe(base, run_dir, length, args)))
    print(f"[bench] length penalty {name} ...", file=sys.stderr, flush=True)
    proc = subprocess.run([sys.executable, "-m", "mixrl.cli", "train", str(path)], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        return {"ok": False, "error": (proc.stdout[-1500:] + proc.stderr[-3000:]).strip()}
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    k = base.get("eval", {}).get("samples", 8)
    keep = ("heldout_accuracy", f"heldout_mean_at_{k}", "heldout_correct_tokens")
    out = {"ok": True, "length": length, **{f"{m}_{when}": summary.get(f"{m}_{when}") for m in keep for when in ("before", "after")},
           "train_response_tokens_first": rows[0]["response_tokens_mean"], "train_response_tokens_last": rows[-1]["response_tokens_mean"],
           "kl_last": rows[-1].get("kl"), "grpo_seconds": round(sum(r["time_step_s"] for r in rows), 1)}
    return out


def main() -> None:
    import yaml

    from mixrl.data.synthetic import ensure_quickstart_data

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="recipes/grpo_math_tiny.yaml")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--staleness", type=int, default=1)
    ap.add_argument("--min-span", type=int, default=8, help="the Δ_L floor of the 'on' run, in tokens")
    ap.add_argument("--alpha", type=float, default=0.2, help="α of the 'on' run (held constant)")
    args = ap.parse_args()
    base = yaml.safe_load((ROOT / args.recipe).read_text())
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON only
        ensure_quickstart_data([s["path"] for s in base["sources"]])
    on = {"group_overlong": True, "min_span_tokens": args.min_span, "alpha_init": args.alpha, "alpha_floor": args.alpha}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {"off": run(base, Path(tmp), "off", {"group_overlong": False}, args),
                "on": run(base, Path(tmp), "on", on, args)}
    result: dict = {"recipe": args.recipe, "steps": args.steps, "seed": args.seed, "runs": runs}
    if all(r["ok"] for r in runs.values()):
        k = base.get("eval", {}).get("samples", 8)
        off, on_ = runs["off"], runs["on"]
        result["correct_length_fall"] = 1.0 - on_["heldout_correct_tokens_after"] / off["heldout_correct_tokens_after"]
        result["mean_at_k_cost_points"] = 100 * (off[f"heldout_mean_at_{k}_after"] - on_[f"heldout_mean_at_{k}_after"])
        result["greedy_cost_points"] = 100 * (off["heldout_accuracy_after"] - on_["heldout_accuracy_after"])
        result["meets_target"] = result["correct_length_fall"] >= 0.30 and result["mean_at_k_cost_points"] <= 2.0
    print(json.dumps(result, indent=1))
    if not all(r["ok"] for r in runs.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
