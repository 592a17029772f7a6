"""The metrics logger of every stage: TensorBoard event files, a JSONL file, periodic console lines with rates, and PNG curves.

    with MetricsLogger(run_dir, stage="pretrain", total_steps=600) as log:
        log.log(step, {"loss": 2.3, "lr": 1e-3}, tokens=4096)

A resumed run logs again the steps after its checkpoint that the interrupted run had already logged: the first
`log(step)` drops this stage's rows with that step or later from `metrics.jsonl`, so every step has one row (the
one the run's history kept), and the rows before it are kept in `history` for the curves.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Callable

from torch.utils.tensorboard import SummaryWriter

from core.plots import plot_curves


class MetricsLogger:
    """Writes every step to TensorBoard (`run_dir/tb`) and `run_dir/metrics.jsonl`; prints every `print_every`:
    every metric, or what `console` picks from them (a compact line; the files keep everything)."""

    def __init__(self, run_dir: str | Path, *, stage: str, total_steps: int, print_every: int = 20,
                 console: Callable[[dict[str, float]], dict[str, str]] | None = None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.stage = stage
        self.total_steps = total_steps
        self.print_every = max(1, print_every)
        self.writer = SummaryWriter(str(self.run_dir / "tb"))
        self.jsonl = open(self.run_dir / "metrics.jsonl", "a")
        self.start = time.perf_counter()
        self.tokens = 0
        self.history: dict[str, list[tuple[int, float]]] = {}
        self.trimmed = False
        self.console = console

    def _drop_from(self, step: int) -> None:
        """Drop this stage's rows at `step` or later (logged by a run this one resumes); keep the rest in history."""
        path = self.run_dir / "metrics.jsonl"
        self.jsonl.flush()
        lines = path.read_text().splitlines()
        kept = []
        for line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a killed run
                continue
            if row.get("stage") == self.stage and isinstance(row.get("step"), int) and row["step"] >= step:
                continue
            kept.append(line)
            if row.get("stage") == self.stage:
                for key, value in row.items():
                    if key not in ("stage", "step", "elapsed_s") and isinstance(value, (int, float)):
                        self.history.setdefault(key, []).append((row["step"], float(value)))
        if len(kept) != len(lines):
            self.jsonl.close()
            tmp = path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(k + "\n" for k in kept))
            tmp.replace(path)
            self.jsonl = open(path, "a")

    def log(self, step: int, metrics: dict[str, float], *, tokens: int = 0) -> None:
        if not self.trimmed:
            self._drop_from(step)
            self.trimmed = True
        self.tokens += tokens
        elapsed = time.perf_counter() - self.start
        metrics = {**metrics, "tokens_per_s": self.tokens / max(elapsed, 1e-9)}
        for key, value in metrics.items():
            self.writer.add_scalar(f"{self.stage}/{key}", value, step)
            self.history.setdefault(key, []).append((step, float(value)))
        self.jsonl.write(json.dumps({"stage": self.stage, "step": step, "elapsed_s": round(elapsed, 3), **metrics}) + "\n")
        self.jsonl.flush()
        if step % self.print_every == 0 or step == self.total_steps:
            eta = elapsed / max(step, 1) * max(self.total_steps - step, 0)
            picked = self.console(metrics) if self.console else {k: _fmt(v) for k, v in metrics.items()}
            shown = "  ".join(f"{k} {v}" for k, v in picked.items())
            print(f"[{self.stage}] step {step}/{self.total_steps}  {shown}  elapsed {elapsed:.0f}s  eta {eta:.0f}s", file=sys.stderr, flush=True)

    def plot(self, keys: list[str], path: str | Path | None = None) -> Path | None:
        """PNG curves of the given metric keys (`core.plots.plot_curves`), RUN_DIR/<stage>_curves.png by default."""
        return plot_curves(self.history, keys, path or self.run_dir / f"{self.stage}_curves.png", title=self.stage)

    def close(self) -> None:
        self.writer.close()
        self.jsonl.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _fmt(value: float) -> str:
    if value == 0 or not math.isfinite(value):
        return str(value)
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 0.01:
        return f"{value:.4f}"
    return f"{value:.2e}"
