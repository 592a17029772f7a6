"""The pieces of a GRPO step: data -> rollout -> rewards -> advantages -> update -> weight sync.

Run:
    mixrl train recipes/grpo_math_tiny.yaml [section.key=value ...]
    mixrl train recipes/grpo_math_tiny.yaml resume=runs/grpo_math_tiny trainer.optim.lr_peak=1e-5   # continue
    mixrl plot runs/grpo_math_tiny

The rollout engines (vLLM, `rl/rollout.py`) and the trainer (`rl/trainer.py`) are Ray actors (`rl/actors.py`):
a local Ray by default, `ray.address` for a cluster. Weights go trainer -> engines through vLLM's
weight-transfer API after every update (`rl/weight_sync.py`: gloo here, NCCL on GPUs). The pipeline that
overlaps the two sides one step apart is `rl/pipeline.py`; this module holds the step's pure parts.

Data position is the step: step s draws its prompts with `Random(seed, s)` and samples with seeds derived from
(seed, s), so a resumed run continues exactly where an uninterrupted one would be. A run directory holds the
resolved config, `metrics.jsonl`, TensorBoard events (`tb/`), PNG curves, `checkpoints/step_N/` (policy in
Hugging Face format + optimizer, step and RNG) and `summary.json`.
"""

from __future__ import annotations

import math
import random
import re
import shutil
from collections import defaultdict
from pathlib import Path

import torch

from rl import algos
from rl.grpo_config import GRPOConfig, GRPOSource
from rl.rollout import RolloutSample, SamplingSettings


# ---- data ---------------------------------------------------------------------------------------------------


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
    from sft.data.loader import DataError, load_rows

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


def step_prompts(cfg: GRPOConfig, rows: dict[str, list[dict]], step: int) -> list[dict]:
    """The prompts of step `step`: a pure function of (seed, step), which is what makes resume exact."""
    rng = random.Random(cfg.seed * 1_000_003 + step)
    items = []
    by_name = {s.name: s for s in cfg.sources}
    for name, count in prompts_per_source(cfg.sources, cfg.prompts_per_step).items():
        for j, row in enumerate(rng.sample(rows[name], min(count, len(rows[name])))):
            mode = by_name[name].mode
            think = mode == "think" or (mode == "mixed" and j % 2 == 0)
            items.append({"source": name, "row": row, "think": think})
    return items


def step_sampling(cfg: GRPOConfig, step: int) -> SamplingSettings:
    """The recipe's sampling settings with step `step`'s seed (one seed block per step: resume is exact)."""
    r = cfg.rollout
    return SamplingSettings(samples_per_prompt=r.samples_per_prompt, max_response_tokens=r.max_response_tokens,
                            temperature=r.temperature, top_p=r.top_p, top_k=r.top_k, thinking_token_budget=r.thinking_token_budget,
                            seed=(cfg.seed * 1_000_003 + step) * 1_000_000)


def render_prompt(tokenizer, row: dict, think: bool) -> list[int]:
    return tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True, return_dict=False,
                                         enable_thinking=think)


# ---- one step -----------------------------------------------------------------------------------------------


def compute_advantages(cfg: GRPOConfig, results: list, group_ids: list[int], sources: list[str]) -> tuple[torch.Tensor, list[bool]]:
    """Group advantages (masked samples excluded), then per-source normalisation."""
    rewards = torch.tensor([math.nan if r.reward is None else float(r.reward) for r in results])  # [B]
    scored = [r.reward is not None for r in results]
    adv = algos.group_advantages(rewards, group_ids, norm_by_std=cfg.algo.norm_adv_by_std, eps=cfg.algo.adv_eps)
    if cfg.algo.normalize_by_source and len(set(sources)) > 1:
        adv = algos.normalize_advantages_by_source(adv, sources, torch.tensor(scored))
    return adv, scored


def reward_metrics(items: list[dict], groups: list[list[RolloutSample]], results: list) -> dict[str, float]:
    """Reward per domain and component, accuracy (answer component), response length, masked count."""
    per: dict[str, list[float]] = defaultdict(list)
    k = 0
    lengths, truncated = [], 0
    for item, group in zip(items, groups):
        for s in group:
            r = results[k]
            k += 1
            lengths.append(len(s.response_ids))
            truncated += s.finish_reason == "length"
            if r.reward is None:
                per["masked"].append(1.0)
                continue
            per["reward"].append(r.reward)
            per[f"reward/{item['source']}"].append(r.reward)
            for name, value in r.components.items():
                per[f"component/{item['source']}/{name}"].append(value)
            if "answer" in r.components:
                per["accuracy"].append(float(r.components["answer"] >= 1.0))
                per[f"accuracy/{item['source']}"].append(float(r.components["answer"] >= 1.0))
    out = {k: sum(v) / len(v) for k, v in per.items() if k != "masked"}
    out["masked_samples"] = float(len(per.get("masked", [])))
    out["response_tokens_mean"] = sum(lengths) / max(1, len(lengths))
    out["truncated_fraction"] = truncated / max(1, len(lengths))
    return out


def evaluate(cfg: GRPOConfig, rollout, tokenizer) -> dict[str, float] | None:
    """Held-out accuracy with the engine's current weights (scored like `mixrl eval`): greedy, and with
    `eval.samples` > 1 also the mean accuracy of that many samples per prompt at `eval.temperature` (mean@k,
    a lower-variance estimate of the sampling policy's accuracy)."""
    import ray

    from sft.data.loader import load_rows
    from sft.evaluate import score_response

    if not cfg.eval.prompts:
        return None
    rows = filter_rows(load_rows(cfg.eval.path), cfg.eval.difficulties, cfg.eval.prompt_pattern)[: cfg.eval.prompts]
    prompts = [render_prompt(tokenizer, r, cfg.eval.mode == "think") for r in rows]
    settings = SamplingSettings(samples_per_prompt=1, max_response_tokens=cfg.eval.max_response_tokens, temperature=0.0)
    groups = ray.get(rollout.generate.remote(prompts, settings))
    scored = [s for s in (score_response(r, g[0].text) for r, g in zip(rows, groups)) if s is not None]
    out = {"heldout_accuracy": sum(scored) / max(1, len(scored)), "heldout_prompts": float(len(scored))}
    if cfg.eval.samples > 1:
        settings = SamplingSettings(samples_per_prompt=cfg.eval.samples, max_response_tokens=cfg.eval.max_response_tokens,
                                    temperature=cfg.eval.temperature, seed=cfg.seed + 7_777_777)
        groups = ray.get(rollout.generate.remote(prompts, settings))
        sampled = [s for r, g in zip(rows, groups) for s in (score_response(r, x.text) for x in g) if s is not None]
        out[f"heldout_mean_at_{cfg.eval.samples}"] = sum(sampled) / max(1, len(sampled))
    return out


# ---- the run ------------------------------------------------------------------------------------------------


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpts = sorted(Path(run_dir, "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    done = [p for p in ckpts if (p / "trainer_state.pt").exists()]  # a checkpoint written to the end
    return done[-1] if done else None


def build_reward_router(cfg: GRPOConfig):
    """The reward router of a run, with a sandbox client for code and a reward-model client found through the
    registry for chat (without them those domains are masked, never scored 0)."""
    from rewards import RewardRouter, reward_config_from_dict
    from rewards.code import make_code_client

    rm_client = None
    if cfg.reward_model_registry:
        from reward_services.client import RewardModelServiceClient

        rm_client = RewardModelServiceClient.from_registry(cfg.reward_model_registry)
    return RewardRouter(reward_config_from_dict(cfg.rewards), code_client=make_code_client(sandbox_url=cfg.sandbox_url or None),
                        rm_client=rm_client)


def run_grpo(cfg: GRPOConfig, *, rollout=None) -> dict:
    """Train (`rl.pipeline.run_grpo`: the one-step asynchronous pipeline; `max_staleness: 0` is synchronous)."""
    from rl.pipeline import run_grpo as run

    return run(cfg, rollout=rollout)


def save_checkpoint(cfg: GRPOConfig, trainer, step: int, extra_files: dict[str, bytes] | None = None) -> Path:
    """checkpoints/step_N (written to a temporary name, then renamed: a killed run never leaves half a
    checkpoint that resume would pick); keeps the newest `keep_checkpoints`. `extra_files`: the loop's own state
    (the batches generated ahead)."""
    import ray

    root = Path(cfg.run_dir, "checkpoints")
    tmp, final = root / f".tmp_step_{step}", root / f"step_{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    ray.get(trainer.save.remote(str(tmp), {"step": step}))
    for name, blob in (extra_files or {}).items():
        (tmp / name).write_bytes(blob)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    ckpts = sorted(root.glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    for old in ckpts[: max(0, len(ckpts) - max(1, cfg.keep_checkpoints))]:
        shutil.rmtree(old, ignore_errors=True)
    return final
