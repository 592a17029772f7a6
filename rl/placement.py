"""Balancing the two sides (report §4.3.1: "tuned so both phases take about as long"), from measured phase times.

A step's rollout phase and its trainer phase each do a fixed amount of work; on a node with C cores, giving the
rollout side c of them and the trainer C - c makes the phases take about G·c0/c and T·t0/(C - c), where G and T
were measured with c0 and t0 cores. The synchronous trainer runs the phases one after the other, each on every
core (colocated); the one-step asynchronous pipeline runs them side by side, so its step is the longer of the two,
and the best split makes them equal. `recommend_split` does that arithmetic (linear scaling: an upper bound on
what a split can give, since neither vLLM nor torch scales perfectly) and `run_grpo` logs the recommendation
after its first steps (`placement.balance_after_steps`). When the run's own measured step is already shorter than
both predictions (overlapped phases fill each other's idle cores, which linear scaling cannot see: measured on the
quickstart, one-step async colocated took 4.0 s a step against 7.4 predicted split and 6.2 synchronous), the advice
is to keep the current placement.

    >>> rec = recommend_split(generate_s=6.0, rollout_cores=2, train_s=18.0, trainer_cores=2, total_cores=4)
    >>> rec.rollout_cores, rec.trainer_cores, round(rec.async_step_s, 1), round(rec.sync_step_s, 1)
    (1, 3, 12.0, 12.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rl.config import GRPOConfig


@dataclass
class SplitAdvice:
    """The best integer split of a node's cores for the one-step asynchronous pipeline, against the synchronous
    colocated step, both predicted from measured phase times (linear scaling)."""

    rollout_cores: int
    trainer_cores: int
    async_step_s: float  # max(rollout phase, trainer phase) with this split
    sync_step_s: float  # rollout phase + trainer phase, each on every core
    generate_core_s: float  # the rollout phase's work in core-seconds
    train_core_s: float  # the trainer phase's work in core-seconds
    now_step_s: float | None = None  # the run's measured step with its current placement (None: not measured)

    @property
    def best(self) -> str:
        """"keep" when the measured step beats both predictions; else "async" when the split step beats the
        colocated synchronous one, else "sync"."""
        if self.now_step_s is not None and self.now_step_s <= min(self.async_step_s, self.sync_step_s):
            return "keep"
        return "async" if self.async_step_s < self.sync_step_s else "sync"

    def message(self, now_step_s: float) -> str:
        cores = f"rollout {self.rollout_cores} core(s), trainer {self.trainer_cores}"
        now = self.now_step_s if self.now_step_s is not None else now_step_s
        best = "keep the current placement (its measured step beats both)" if self.best == "keep" else self.best
        return (f"phases measured {self.generate_core_s:.1f} + {self.train_core_s:.1f} core-s per step (rollout + trainer); "
                f"predicted s/step: async with {cores} {self.async_step_s:.2f}, synchronous colocated "
                f"{self.sync_step_s:.2f} (now {now:.2f}); best: {best}")


def recommend_split(*, generate_s: float, rollout_cores: int, train_s: float, trainer_cores: int, total_cores: int,
                    now_step_s: float | None = None) -> SplitAdvice:
    """The split of `total_cores` between the sides that minimises the asynchronous step, from phase times
    `generate_s` (measured on `rollout_cores`) and `train_s` (on `trainer_cores`), assuming linear scaling;
    `now_step_s`, the measured step with the current placement, is weighed against both predictions."""
    gen_work, train_work = generate_s * max(1, rollout_cores), train_s * max(1, trainer_cores)
    total = max(2, total_cores)
    best = min(range(1, total), key=lambda c: max(gen_work / c, train_work / (total - c)))
    return SplitAdvice(best, total - best, max(gen_work / best, train_work / (total - best)),
                       (gen_work + train_work) / total, gen_work, train_work, now_step_s)


# vLLM-CPU with its model compiled (torch.compile, inductor: `enforce_eager: false`) samples 25-30% faster than eager
# (peer bench model, 2-core Xeon, fp32 and bf16), but the compile costs the engine's start: about 5 s with vLLM's
# compile cache warm, 14-27 s cold. A synchronous step waits for generation, so it gains all of that (peer workload:
# 3.44 -> 2.4 s of a 6.8 s step) and a long run pays the start back many times. A one-step asynchronous step waits
# for the trainer while generation runs beside it: compiled, the quickstart's step went 4.39 -> 4.22 s (the engine
# takes less of the cores from the trainer), 17 s over its 100 steps against 14 s more start-up, cold.
CPU_COMPILE_MIN_STEPS = 50


def rollout_eager(cfg: GRPOConfig) -> bool | None:
    """`rollout.enforce_eager` for the run's engines: the recipe's value when set; None (the engine's default: CUDA
    graphs) for GPU engines; on CPUs, compiled for synchronous runs of `CPU_COMPILE_MIN_STEPS` steps or more, where
    generation is on every step's critical path, when a C++ compiler is there for inductor; else eager.

    >>> from rl.config import GRPOConfig
    >>> long, short = GRPOConfig(max_steps=100, max_staleness=0), GRPOConfig(max_steps=10, max_staleness=0)
    >>> rollout_eager(short), rollout_eager(GRPOConfig(max_steps=100, max_staleness=1))
    (True, True)
    >>> rollout_eager(long) == (cpp_compiler() is None)  # compiled wherever inductor finds a C++ compiler
    True
    """
    if cfg.rollout.enforce_eager is not None or cfg.placement.rollout_gpus_per_engine > 0:
        return cfg.rollout.enforce_eager
    return cfg.max_staleness > 0 or cfg.max_steps < CPU_COMPILE_MIN_STEPS or not cpp_compiler()


def cpp_compiler() -> str | None:
    """The C++ compiler inductor would build the compiled CPU model with (CXX, else g++ or clang++), if any: without
    one a compiled engine could not start, so the engines stay eager."""
    import os
    import shutil

    names = (os.environ.get("CXX", ""), "g++", "clang++")
    return next((path for name in names if name and (path := shutil.which(name))), None)


def rollout_threads(cfg: GRPOConfig, total_cores: int) -> int:
    """vLLM-CPU model threads per engine (`rollout.cpu_threads: 0`, the single-process engine of `core.engine`):
    0 when the engines are bound to cores (one thread per bound core); the CPUs an engine reserves from Ray; the
    node's cores shared by the engines when synchronous (the trainer waits while they generate); else what the
    trainer side leaves: its reserved or bound cores, or half the node when it reserves none (colocated, each side
    runs while the other does). At least one.

    >>> from rl.config import GRPOConfig
    >>> rollout_threads(GRPOConfig(max_staleness=0), 8), rollout_threads(GRPOConfig(max_staleness=1), 8)
    (8, 4)
    """
    p, requested = cfg.placement, cfg.rollout.cpu_threads
    if requested > 0:
        return requested
    if p.rollout_cpu_bind:
        return 0
    if p.rollout_cpus_per_engine >= 1:
        return int(p.rollout_cpus_per_engine)
    engines = max(1, p.rollout_engines)
    if cfg.max_staleness == 0:
        return max(1, total_cores // engines)
    if p.trainer_cpu_bind:
        from core.device import parse_cores

        trainer = len(parse_cores(p.trainer_cpu_bind)) * p.trainer_workers
    else:
        trainer = int(p.trainer_cpus_per_worker * p.trainer_workers) or total_cores // 2
    return max(1, (total_cores - trainer) // engines)
