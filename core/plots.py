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
    return plot_panels(series, {(f"{title}: {k}" if title else k): [k] for k in keys}, path, cols=4)


def plot_panels(series: Series, panels: dict[str, list[str]], path: str | Path, *, title: str = "", cols: int = 3) -> Path | None:
    """A grid of panels (`cols` per row), each overlaying the metrics its patterns match (`fnmatch`, e.g. "reward/*" =
    one line per domain), with a legend when a panel has several lines; None when no panel has any values."""
    from fnmatch import fnmatch

    filled = {}
    for name, patterns in panels.items():
        keys = [k for pattern in patterns for k in sorted(series) if fnmatch(k, pattern) and series[k]]
        if keys:
            filled[name] = list(dict.fromkeys(keys))
    if not filled:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(cols, len(filled))
    rows = (len(filled) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.0 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(filled):]:
        ax.axis("off")
    for ax, (name, keys) in zip(axes.flat, filled.items()):
        for key in keys:
            steps, values = zip(*sorted(series[key]))
            ax.plot(steps, values, label=key, marker="." if len(steps) < 30 else None, linewidth=1.4)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_before_after(results: dict[str, dict[str, tuple[float, float]]], path: str | Path, *, title: str = "") -> Path:
    """Grouped bars: for each label (a domain), each metric's value before and after (e.g. greedy, mean@8)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(results)
    metrics = list(dict.fromkeys(m for r in results.values() for m in r))
    width = 0.8 / max(1, 2 * len(metrics))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.8 * len(labels) * len(metrics)), 3.8))
    for j, metric in enumerate(metrics):
        for k, (when, alpha) in enumerate((("before", 0.45), ("after", 1.0))):
            xs = [i + (2 * j + k - len(metrics) + 0.5) * width for i in range(len(labels))]
            ys = [results[label].get(metric, (float("nan"), float("nan")))[k] for label in labels]
            bars = ax.bar(xs, ys, width, alpha=alpha, color=f"C{j}", label=f"{metric} {when}")
            ax.bar_label(bars, labels=[f"{y:.0%}" for y in ys], fontsize=7, padding=1)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, min(1.05, max([v for r in results.values() for pair in r.values() for v in pair] + [0.1]) * 1.25))
    ax.legend(fontsize=8, ncols=2)
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

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
