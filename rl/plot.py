"""`mixrl plot RUN_DIR`: PNG curves from a run's `metrics.jsonl` (one panel per metric, one PNG per stage).

Run:
    mixrl plot runs/grpo_math_tiny [--keys reward,accuracy,kl]
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

DEFAULT_KEYS = ["reward", "accuracy", "heldout_accuracy", "kl", "entropy", "clip_fraction", "grad_norm",
                "response_tokens_mean", "time_step_s", "generate_tokens_per_s"]


def plot_run(run_dir: str | Path, keys: list[str] | None = None) -> list[Path]:
    """Write `RUN_DIR/<stage>_curves.png` for every stage in metrics.jsonl; returns the paths written."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no metrics (is {run_dir} a run directory?)")
    series: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{path}:{line_no}: not JSON") from None
        for k, v in rec.items():
            if isinstance(v, (int, float)) and k not in ("step", "elapsed_s"):
                series[rec.get("stage", "run")][k].append((rec["step"], float(v)))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for stage, metrics in series.items():
        shown = [k for k in (keys or DEFAULT_KEYS) if metrics.get(k)]
        if not shown:
            continue
        cols = min(4, len(shown))
        rows = (len(shown) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
        for ax in axes.flat[len(shown):]:
            ax.axis("off")
        for ax, key in zip(axes.flat, shown):
            steps, values = zip(*sorted(metrics[key]))
            ax.plot(steps, values, marker="." if len(steps) < 30 else None)
            ax.set_title(key)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        out = run_dir / f"{stage}_curves.png"
        fig.savefig(out, dpi=100)
        plt.close(fig)
        written.append(out)
    return written
