"""Every seed a run derives from its recipe's `seed`, in one place: what makes runs reproducible and resume exact.

A GRPO step's prompts and samples are pure functions of (seed, step), never of how many steps this process has
run, so a resumed run draws exactly what an uninterrupted one would. Sample j of prompt i in a batch gets its own
seed whatever engine, request split or order generates it.

>>> sample_seed(sampling_seed(0, 3), 2, 8, 1) - sampling_seed(0, 3)
17
"""

from __future__ import annotations

import random

_STEP_STRIDE = 1_000_003  # prime: (seed, step) pairs never collide for steps below it
_SAMPLES_PER_STEP = 1_000_000  # room for this many samples per step before step seed blocks overlap
_EVAL_OFFSET = 7_777_777


def step_seed(seed: int, step: int) -> int:
    """The seed of step `step` of a run seeded `seed` (its prompt draw)."""
    return seed * _STEP_STRIDE + step


def step_rng(seed: int, step: int) -> random.Random:
    """The random stream that draws step `step`'s prompts."""
    return random.Random(step_seed(seed, step))


def sampling_seed(seed: int, step: int) -> int:
    """The base sampling seed of step `step`: one block of `_SAMPLES_PER_STEP` sample seeds per step."""
    return step_seed(seed, step) * _SAMPLES_PER_STEP


def sample_seed(base: int, prompt: int, samples_per_prompt: int, sample: int = 0) -> int:
    """The seed of sample `sample` of prompt `prompt` in a batch whose sampling seed is `base` (vLLM gives child j
    of an n-sample request `seed + j`, so a request for a whole group passes `sample=0`)."""
    return base + prompt * samples_per_prompt + sample


def engine_seed(seed: int, engine: int) -> int:
    """vLLM's engine-level seed of rollout engine `engine` (requests carry their own seeds; this one is a default)."""
    return seed + engine


def eval_sampling_seed(seed: int) -> int:
    """The sampling seed of held-out mean@k evaluation: the same before and after training, so the two are
    compared on the same random stream."""
    return seed + _EVAL_OFFSET
