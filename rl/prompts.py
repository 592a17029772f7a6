"""What a GRPO step trains on: the data sources, the prompts step s draws, and step s's sampling settings.

Data position is the step: step s draws its prompts with `core.seeds.step_rng(seed, s)` and samples with the
seed block `core.seeds.sampling_seed(seed, s)`, so a resumed run continues exactly where an uninterrupted one
would be, whatever this process did before.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from core.data import DataError, load_rows
from core.engine import SamplingSettings
from core.seeds import sampling_seed, step_rng
from rl.config import GRPOConfig, GRPOSource


@dataclass
class StepPrompt:
    """One prompt of a step: its source's name, its verl row, and whether thinking mode is on for it."""

    source: str
    row: dict
    think: bool

    @property
    def messages(self) -> list[dict]:
        return self.row["prompt"]


def filter_rows(rows: list[dict], difficulties: list[int], prompt_pattern: str) -> list[dict]:
    """Rows whose `extra_info.difficulty` is listed (if any are) and whose last prompt message matches the regex."""
    if difficulties:
        rows = [r for r in rows if (r.get("extra_info") or {}).get("difficulty") in difficulties]
    if prompt_pattern:
        pattern = re.compile(prompt_pattern)
        rows = [r for r in rows if pattern.search(r["prompt"][-1]["content"])]
    return rows


def load_sources(sources: list[GRPOSource]) -> dict[str, list[dict]]:
    """Rows per source, filtered by difficulty and prompt pattern and capped at `max_rows`."""
    out = {}
    for src in sources:
        rows = filter_rows(load_rows(src.path), src.difficulties, src.prompt_pattern)
        if src.max_rows:
            rows = rows[: src.max_rows]
        if not rows:
            raise DataError(f"{src.path}: no rows left for source '{src.name}' "
                            f"(difficulties={src.difficulties}, prompt_pattern={src.prompt_pattern!r})")
        out[src.name] = rows
    return out


def prompts_per_source(sources: list[GRPOSource], total: int) -> dict[str, int]:
    """Split `total` prompts by proportion (largest remainder, every positive proportion gets its share).

    >>> prompts_per_source([GRPOSource(name="a", proportion=3), GRPOSource(name="b", proportion=1)], 8)
    {'a': 6, 'b': 2}
    """
    weights = {s.name: max(0.0, s.proportion) for s in sources}
    norm = sum(weights.values()) or 1.0
    exact = {k: total * w / norm for k, w in weights.items()}
    counts = {k: int(math.floor(v)) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)[: total - sum(counts.values())]:
        counts[k] += 1
    return counts


def step_prompts(cfg: GRPOConfig, rows: dict[str, list[dict]], step: int) -> list[StepPrompt]:
    """The prompts of step `step`: a pure function of (seed, step), which is what makes resume exact."""
    rng = step_rng(cfg.seed, step)
    prompts = []
    by_name = {s.name: s for s in cfg.sources}
    for name, count in prompts_per_source(cfg.sources, cfg.prompts_per_step).items():
        for j, row in enumerate(rng.sample(rows[name], min(count, len(rows[name])))):
            mode = by_name[name].mode
            prompts.append(StepPrompt(name, row, think=mode == "think" or (mode == "mixed" and j % 2 == 0)))
    return prompts


def step_sampling(cfg: GRPOConfig, step: int) -> SamplingSettings:
    """The recipe's sampling settings with step `step`'s seed block."""
    return SamplingSettings.of(cfg.rollout, seed=sampling_seed(cfg.seed, step))
