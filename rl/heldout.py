"""Held-out accuracy of the policy during a GRPO run, through a rollout engine holding the current weights.

Scored like `mixrl eval` (the answer verdict of `rewards.verdict.score_response`): greedy, and with
`eval.samples` > 1 also mean@k, the mean accuracy of k samples per prompt at `eval.temperature` (a lower-variance
estimate of the sampling policy's accuracy).
"""

from __future__ import annotations

from core.chat import render_prompt
from core.data import load_rows
from core.engine import SamplingSettings
from core.seeds import eval_sampling_seed
from rewards.verdict import score_response
from rl.config import GRPOConfig
from rl.prompts import filter_rows


def evaluate_heldout(cfg: GRPOConfig, engine, tokenizer) -> dict[str, float] | None:
    """{"heldout_accuracy", "heldout_prompts", "heldout_mean_at_K"} with `engine` (a rollout actor); None when
    the recipe asks for no evaluation."""
    import ray

    if not cfg.eval.prompts:
        return None
    rows = filter_rows(load_rows(cfg.eval.path), cfg.eval.difficulties, cfg.eval.prompt_pattern)[: cfg.eval.prompts]
    prompts = [render_prompt(tokenizer, r["prompt"], cfg.eval.mode == "think") for r in rows]
    greedy = SamplingSettings(samples_per_prompt=1, max_response_tokens=cfg.eval.max_response_tokens, temperature=0.0)
    groups = ray.get(engine.generate.remote(prompts, greedy))
    scored = [s for s in (score_response(r, g[0].text) for r, g in zip(rows, groups)) if s is not None]
    out = {"heldout_accuracy": sum(scored) / max(1, len(scored)), "heldout_prompts": float(len(scored))}
    if cfg.eval.samples > 1:
        sampled_settings = SamplingSettings(samples_per_prompt=cfg.eval.samples, max_response_tokens=cfg.eval.max_response_tokens,
                                            temperature=cfg.eval.temperature, seed=eval_sampling_seed(cfg.seed))
        groups = ray.get(engine.generate.remote(prompts, sampled_settings))
        sampled = [s for r, g in zip(rows, groups) for s in (score_response(r, x.text) for x in g) if s is not None]
        out[f"heldout_mean_at_{cfg.eval.samples}"] = sum(sampled) / max(1, len(sampled))
    return out
