"""Balancing the two sides (report §4.3.1: "tuned so both phases take about as long"), from measured phase times.

A step's rollout phase and its trainer phase each do a fixed amount of work; on a node with C cores, giving the
rollout side c of them and the trainer C - c makes the phases take about G·c0/c and T·t0/(C - c), where G and T
were measured with c0 and t0 cores. The synchronous trainer runs the phases one after the other, each on every
core (colocated); the one-step asynchronous pipeline runs them side by side, so its step is the longer of the two,
and the best split makes them equal. `recommend_split` does that arithmetic (linear scaling: an upper bound on
what a split can give, since neither vLLM nor torch scales perfectly) and `run_grpo` logs the recommendation
after its first steps (`placement.balance_after_steps`).

    >>> rec = recommend_split(generate_s=6.0, rollout_cores=2, train_s=18.0, trainer_cores=2, total_cores=4)
    >>> rec.rollout_cores, rec.trainer_cores, round(rec.async_step_s, 1), round(rec.sync_step_s, 1)
    (1, 3, 12.0, 12.0)
"""

from __future__ import annotations

from dataclasses import dataclass


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

    @property
    def best(self) -> str:
        """"async" when the split step beats the colocated synchronous one, else "sync"."""
        return "async" if self.async_step_s < self.sync_step_s else "sync"

    def message(self, now_step_s: float) -> str:
        cores = f"rollout {self.rollout_cores} core(s), trainer {self.trainer_cores}"
        return (f"phases measured {self.generate_core_s:.1f} + {self.train_core_s:.1f} core-s per step (rollout + trainer); "
                f"predicted s/step: async with {cores} {self.async_step_s:.2f}, synchronous colocated "
                f"{self.sync_step_s:.2f} (now {now_step_s:.2f}); best: {self.best}")


def recommend_split(*, generate_s: float, rollout_cores: int, train_s: float, trainer_cores: int, total_cores: int) -> SplitAdvice:
    """The split of `total_cores` between the sides that minimises the asynchronous step, from phase times
    `generate_s` (measured on `rollout_cores`) and `train_s` (on `trainer_cores`), assuming linear scaling."""
    gen_work, train_work = generate_s * max(1, rollout_cores), train_s * max(1, trainer_cores)
    total = max(2, total_cores)
    best = min(range(1, total), key=lambda c: max(gen_work / c, train_work / (total - c)))
    return SplitAdvice(best, total - best, max(gen_work / best, train_work / (total - best)),
                       (gen_work + train_work) / total, gen_work, train_work)
