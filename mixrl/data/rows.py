"""What every synthetic generator shares: seeded RNG streams, the train/test partition, and row assembly.

A generator module only writes `sample(rng, difficulty) -> Sample`; `generate_rows` turns samples into
verl rows. Two properties hold for every domain because they are enforced here, once:

- **Deterministic across processes.** RNG streams are seeded with strings (`random.Random(str)` hashes
  them with SHA-512, never with the per-process salted `hash()`), and the partition uses SHA-256.
- **Train and test are disjoint for any sizes.** Each prompt's `split_key` is hashed into a fixed
  partition (`TEST_SHARE` of the key space is test). A split keeps only samples from its own part, so no
  test prompt can occur in train whatever `num_rows` either side asked for — a stronger guarantee than
  generating both and filtering, and it lets `generate_x(n, "test", seed)` run without the train set.

Example:
    >>> s = Sample(prompt="What is 1 + 1?", difficulty=1, reasoning="1 + 1 = 2",
    ...            response="The answer is \\\\boxed{2}.", ground_truth="2")
    >>> split_of(s.split_key) in ("train", "test")
    True
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any, Callable

SPLITS = ("train", "test")
# Share of the prompt-key space reserved for test. Generating a split rejects samples from the other part,
# so this only sets how often a sample is redrawn, not how many rows a split has.
TEST_SHARE = 0.2
# Redraws allowed per row to find a prompt not yet used in this split. Small template spaces (code tasks)
# can run out of fresh prompts for large num_rows: after this many tries a repeat is accepted (the row is
# still in its own split), rather than looping forever.
MAX_UNIQUE_TRIES = 200
# Redraws allowed per row to land in the requested split at all (expected ~1/TEST_SHARE for test).
MAX_SPLIT_TRIES = 10_000


@dataclass(frozen=True)
class Sample:
    """One generated item before it becomes a verl row.

    `extra` holds the domain's own extra_info fields; every sample of one domain must use the same keys
    (parquet stores extra_info as one struct type). `split_key` decides the train/test part; it defaults
    to the prompt, and a domain can coarsen it (code uses a parameterised task's statement without its
    example) so that test holds unseen tasks rather than unseen wordings of seen ones.
    """

    prompt: str
    difficulty: int
    reasoning: str
    response: str
    ground_truth: str
    extra: dict[str, Any] = field(default_factory=dict)
    key: str | None = None

    @property
    def split_key(self) -> str:
        return self.prompt if self.key is None else self.key


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")


def rng_stream(domain: str, split: str, seed: int) -> random.Random:
    """An RNG private to (domain, split, seed), identical in every process.

    >>> rng_stream("math", "train", 0).random() == rng_stream("math", "train", 0).random()
    True
    """
    return random.Random(f"mixrl/{domain}/{split}/{seed}")


def split_of(key: str) -> str:
    """The split a prompt key belongs to: a fixed function of the text, the same for every seed.

    >>> split_of("What is 2 + 2?") == split_of("What is 2 + 2?")
    True
    """
    bucket = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64
    return "test" if bucket < TEST_SHARE else "train"


def make_row(domain: str, ability: str, style: str, sample: Sample, split: str, index: int) -> dict[str, Any]:
    """Assemble one row in verl's schema (`extra_info` = the common fields + the sample's own)."""
    return {
        "data_source": f"mixrl/synthetic_{domain}",
        "prompt": [{"role": "user", "content": sample.prompt}],
        "ability": ability,
        "reward_model": {"style": style, "ground_truth": sample.ground_truth},
        "extra_info": {
            "split": split,
            "index": index,
            "difficulty": sample.difficulty,
            "reasoning": sample.reasoning,
            "response": sample.response,
            **sample.extra,
        },
    }


def generate_rows(
    domain: str,
    ability: str,
    style: str,
    sample: Callable[[random.Random, int], Sample],
    levels: tuple[int, ...],
    num_rows: int,
    split: str,
    seed: int,
) -> list[dict[str, Any]]:
    """Draw `num_rows` samples of `split`, difficulty cycling through `levels` (an even spread).

    Rows are drawn in order from one stream, so the first k rows of a larger request equal a request
    for k rows.
    """
    check_split(split)
    if num_rows < 0:
        raise ValueError(f"num_rows must be >= 0, got {num_rows}")
    rng = rng_stream(domain, split, seed)
    seen: set[str] = set()
    rows = []
    for index in range(num_rows):
        difficulty = levels[index % len(levels)]
        chosen = None
        for _ in range(MAX_UNIQUE_TRIES):
            candidate = _draw_in_split(sample, rng, difficulty, split)
            chosen = candidate
            if candidate.prompt not in seen:
                break
        assert chosen is not None
        seen.add(chosen.prompt)
        rows.append(make_row(domain, ability, style, chosen, split, index))
    return rows


def _draw_in_split(
    sample: Callable[[random.Random, int], Sample], rng: random.Random, difficulty: int, split: str
) -> Sample:
    for _ in range(MAX_SPLIT_TRIES):
        candidate = sample(rng, difficulty)
        if split_of(candidate.split_key) == split:
            return candidate
    raise RuntimeError(f"no {split} sample of difficulty {difficulty} in {MAX_SPLIT_TRIES} draws")
