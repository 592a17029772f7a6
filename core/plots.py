"""Curves of run metrics as PNG: the one plotter behind `MetricsLogger.plot` and `mixrl plot RUN_DIR`.

Run:
    mixrl plot runs/grpo_math_tiny [--keys reward,accuracy,kl]
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

DEFAULT_KEYS = ["reward", "accuracy", "heldout_accuracy", "kl", "entropy", "clip_fraction", "grad_norm",
                "response_tokens_mean", "time_step_s", "generate_tokens_per_s"]

Series = dict[str, list[tuple[int, float]]]  # metric -> [(step, value)]


def plot_curves(series: Series, keys: list[str], path: str | Path, *, title: str = "") -> Path | None:
    """One panel per key that has values (at most 4 per row), step on x; None when no key has any."""
    shown = [k for k in keys if series.get(k)]
    if not shown:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(shown))
    rows = (len(shown) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat[len(shown):]:
        ax.axis("off")
    for ax, key in zip(axes.flat, shown):
        steps, values = zip(*sorted(series[key]))
        ax.plot(steps, values, marker="." if len(steps) < 30 else None)
        ax.set_title(f"{title}: {key}" if title else key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def read_metrics(run_dir: str | Path) -> dict[str, Series]:
    """A run's `metrics.jsonl` as {stage: {metric: [(step, value)]}}; a bad line names its file and line."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no metrics (is {run_dir} a run directory?)")
    series: dict[str, Series] = defaultdict(lambda: defaultdict(list))
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
    return series


def plot_run(run_dir: str | Path, keys: list[str] | None = None) -> list[Path]:
    """Write `RUN_DIR/<stage>_curves.png` for every stage in metrics.jsonl; returns the paths written."""
    written = []
    for stage, metrics in read_metrics(run_dir).items():
        out = plot_curves(metrics, keys or DEFAULT_KEYS, Path(run_dir) / f"{stage}_curves.png")
        if out is not None:
            written.append(out)
    return written
