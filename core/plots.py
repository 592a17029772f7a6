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
        for i, key in enumerate(keys):
            steps, values = zip(*sorted(series[key]))
            trend = smoothed(values)
            if trend is None:
                ax.plot(steps, values, label=key, marker="." if len(steps) < 30 else None, linewidth=1.4, color=f"C{i}")
            else:  # the steps faint, their trailing mean bold: a per-step accuracy of 8 prompts hides its trend
                ax.plot(steps, values, linewidth=0.8, alpha=0.3, color=f"C{i}")
                ax.plot(steps, trend, label=key, linewidth=1.8, color=f"C{i}")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


SMOOTH_FROM = 30  # points; shorter series are drawn as they are


def smoothed(values, min_points: int = SMOOTH_FROM) -> list[float] | None:
    """The trailing mean over max(5, n // 10) points of a series of n >= `min_points` values (fewer at its start),
    drawn over the faint per-step values; None for a shorter series.

    >>> smoothed([1.0, 3.0] * 20)[:3], len(smoothed([0.0] * 40)), smoothed([1.0] * 29)
    ([1.0, 2.0, 1.6666666666666667], 40, None)
    """
    if len(values) < min_points:
        return None
    import pandas as pd

    return pd.Series(values, dtype=float).rolling(max(5, len(values) // 10), min_periods=1).mean().tolist()


def plot_before_after(results: dict[str, dict[str, tuple[float, float]]], path: str | Path, *, title: str = "") -> Path:
    """One small panel per label (a domain): each metric's bars before and after (e.g. greedy, mean@8). A domain
    whose values all lie in [0, 1] is an accuracy (percent labels, axis 0..1); any other (a reward model's score,
    possibly negative) gets its own scale."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(results)
    finite = {label: [v for pair in results[label].values() for v in pair if v is not None and math.isfinite(v)] for label in labels}
    accuracies = {label for label, vals in finite.items() if all(0.0 <= v <= 1.0 for v in vals)}
    top = min(1.05, max([v for label in accuracies for v in finite[label]] + [0.1]) * 1.3)  # one scale for accuracies
    fig, axes = plt.subplots(1, len(labels), figsize=(3.2 * len(labels) + 0.6, 3.6), squeeze=False)
    for ax, label in zip(axes[0], labels):
        metrics = list(results[label])
        values, accuracy = finite[label], label in accuracies
        for j, metric in enumerate(metrics):
            for k, (when, alpha) in enumerate((("before", 0.45), ("after", 1.0))):
                y = results[label][metric][k]
                bar = ax.bar(2.4 * j + k, y if y is not None else float("nan"), 0.9, alpha=alpha, color=f"C{j}",
                             label=f"{metric} {when}")
                text = "n/a" if y is None else (f"{y:.0%}" if accuracy else f"{y:.2f}")
                ax.bar_label(bar, labels=[text], fontsize=7, padding=1)
        ax.set_xticks([2.4 * j + 0.5 for j in range(len(metrics))], metrics, fontsize=8)
        ax.set_title(label, fontsize=10)
        ax.axhline(0.0, color="black", linewidth=0.6)
        if accuracy:
            ax.set_ylim(0, top)
            ax.set_ylabel("held-out accuracy", fontsize=8)
        else:
            span = max(values + [0.0]) - min(values + [0.0]) or 1.0
            ax.set_ylim(min(values + [0.0]) - 0.15 * span, max(values + [0.0]) + 0.2 * span)
            ax.set_ylabel("held-out score", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=7, ncols=2, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=11)
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
