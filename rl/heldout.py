"""Held-out accuracy of the policy during a GRPO run, through a rollout engine holding the current weights.

One slice (`eval.path`): scored like `mixrl eval` (the answer verdict of `rewards.verdict.score_response`),
greedy, and with `eval.samples` > 1 also mean@k, the mean accuracy of k samples per prompt at `eval.temperature`
(a lower-variance estimate of the sampling policy's accuracy).

Every source (`eval.per_source`): each source's own test split, filtered and in the thinking mode of the source,
without any prompt the source trains on, generated AND scored on the engine's actor by the run's reward router
(`RolloutActor.rollout`): code goes through the sandbox, chat through the reward-model service. The value of a
sample is its answer verdict (1/0) where the domain has one, else its reward (a reward model's score); masked
samples (a verdict that could not be computed) are left out, never counted as wrong.

With `samples_path`, the greedy pass's responses are written there as JSONL (source, prompt, thinking mode,
response, value; null = masked), so a person can read what a score rose on (the run writes
heldout_before.jsonl and heldout_after.jsonl).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from core.chat import render_prompt
from core.data import DataError, load_rows
from core.engine import SamplingSettings
from core.seeds import eval_sampling_seed
from rewards.verdict import score_response
from rl.config import GRPOConfig, GRPOSource
from rl.prompts import StepPrompt, filter_rows


def evaluate_heldout(cfg: GRPOConfig, engine, tokenizer, train_rows: dict[str, list[dict]] | None = None,
                     samples_path: Path | None = None) -> dict[str, float] | None:
    """{"heldout_accuracy", "heldout_prompts", "heldout_mean_at_K"} with `engine` (a rollout actor), or with
    `eval.per_source` the metrics of `evaluate_sources` (held-out rows equal to a `train_rows` prompt left out);
    None when the recipe asks for no evaluation."""
    import ray

    if not cfg.eval.prompts:
        return None
    if cfg.eval.per_source:
        return evaluate_sources(cfg, engine, tokenizer, train_rows, samples_path)
    rows = filter_rows(load_rows(cfg.eval.path), cfg.eval.difficulties, cfg.eval.prompt_pattern)[: cfg.eval.prompts]
    prompts = [render_prompt(tokenizer, r["prompt"], cfg.eval.mode == "think") for r in rows]
    greedy = SamplingSettings(samples_per_prompt=1, max_response_tokens=cfg.eval.max_response_tokens, temperature=0.0)
    groups = ray.get(engine.generate.remote(prompts, greedy))
    verdicts = [(score_response(r, g[0].text), len(g[0].response_ids)) for r, g in zip(rows, groups)]
    if samples_path is not None:
        write_samples(samples_path, [(cfg.eval.path, r["prompt"], cfg.eval.mode == "think", g[0].text, v)
                                     for r, g, (v, _) in zip(rows, groups, verdicts)])
    scored = [v for v, _ in verdicts if v is not None]
    out = {"heldout_accuracy": sum(scored) / max(1, len(scored)), "heldout_prompts": float(len(scored))}
    lengths = {"greedy": correct_tokens_mean(verdicts)}
    if cfg.eval.samples > 1:
        sampled_settings = SamplingSettings(samples_per_prompt=cfg.eval.samples, max_response_tokens=cfg.eval.max_response_tokens,
                                            temperature=cfg.eval.temperature, seed=eval_sampling_seed(cfg.seed))
        groups = ray.get(engine.generate.remote(prompts, sampled_settings))
        verdicts = [(score_response(r, x.text), len(x.response_ids)) for r, g in zip(rows, groups) for x in g]
        sampled = [v for v, _ in verdicts if v is not None]
        out[f"heldout_mean_at_{cfg.eval.samples}"] = sum(sampled) / max(1, len(sampled))
        lengths["sampled"] = correct_tokens_mean(verdicts)  # over the k samples: more of them than greedy
    if (length := lengths.get("sampled", lengths["greedy"])) is not None:
        out["heldout_correct_tokens"] = length
    return out


def correct_tokens_mean(verdicts: list[tuple[float | None, int]]) -> float | None:
    """Mean response length (tokens) of the correct responses among (verdict, length) pairs; None when none is
    correct. What the group-overlong penalty should shorten without costing accuracy (report Fig. 5).

    >>> correct_tokens_mean([(1.0, 10), (0.0, 50), (None, 70), (1.0, 20)]), correct_tokens_mean([(0.0, 5)])
    (15.0, None)
    """
    lengths = [n for v, n in verdicts if v is not None and v >= 1.0]
    return sum(lengths) / len(lengths) if lengths else None


def heldout_split_path(source: GRPOSource) -> str:
    """The held-out split beside a source's training file: DIR/train.parquet -> DIR/test.parquet."""
    path = Path(source.path)
    if "train" not in path.name:
        raise DataError(f"eval.per_source: source '{source.name}' reads {path}, whose name has no 'train' to find its "
                        f"test split by (name the file *train*, with a *test* file beside it)")
    return str(path.with_name(path.name.replace("train", "test")))


def heldout_prompts(cfg: GRPOConfig, source: GRPOSource, train_rows: list[dict] | None = None) -> list[StepPrompt]:
    """The first `eval.prompts` rows of a source's test split, filtered as the source is and without any prompt
    its training rows hold; thinking on as the source has it ("mixed": every other prompt)."""
    train = {r["prompt"][-1]["content"] for r in (train_rows or [])}
    rows = [r for r in filter_rows(load_rows(heldout_split_path(source)), source.difficulties, source.prompt_pattern)
            if r["prompt"][-1]["content"] not in train][: cfg.eval.prompts]
    return [StepPrompt(source.name, r, think=source.mode == "think" or (source.mode == "mixed" and j % 2 == 0))
            for j, r in enumerate(rows)]


def write_samples(path: Path, records: list[tuple[str, list[dict], bool, str, float | None]]) -> None:
    """(source, prompt messages, think, response, value) records as JSONL; the prompt is its last message's text."""
    keys = ("source", "prompt", "think", "response", "value")
    with open(path, "w") as f:
        for source, messages, think, response, value in records:
            f.write(json.dumps(dict(zip(keys, (source, messages[-1]["content"], think, response, value)))) + "\n")


def evaluate_sources(cfg: GRPOConfig, engine, tokenizer, train_rows: dict[str, list[dict]] | None = None,
                     samples_path: Path | None = None) -> dict[str, float]:
    """{"heldout/<source>/greedy", "heldout/<source>/mean@k", "heldout/<source>/prompts"} for every source, with
    `engine` (a rollout actor with the run's rewards configured); "heldout/<source>/rouge-L" for reward-model-scored
    sources (`reference_overlap`)."""
    import ray

    from rl.rollout import reward_template
    from rl.scheduler import RolloutRequest

    prompts = [p for src in cfg.sources for p in heldout_prompts(cfg, src, (train_rows or {}).get(src.name))]
    ids = [render_prompt(tokenizer, p.messages, p.think) for p in prompts]
    passes = {"greedy": SamplingSettings(samples_per_prompt=1, max_response_tokens=cfg.eval.max_response_tokens, temperature=0.0)}
    if cfg.eval.samples > 1:
        passes[f"mean@{cfg.eval.samples}"] = SamplingSettings(
            samples_per_prompt=cfg.eval.samples, max_response_tokens=cfg.eval.max_response_tokens,
            temperature=cfg.eval.temperature, seed=eval_sampling_seed(cfg.seed))
    out: dict[str, float] = {}
    for name, settings in passes.items():
        futures = [engine.rollout.remote(RolloutRequest(i, 0, ids[i], dataclasses.replace(settings, seed=settings.seed + i * settings.samples_per_prompt)),
                                         reward_template(p, i), 0, False) for i, p in enumerate(prompts)]
        values: dict[str, list[float]] = {src.name: [] for src in cfg.sources}
        verdicts: dict[str, list[tuple[float | None, int]]] = {src.name: [] for src in cfg.sources}
        results = ray.get(futures)
        if samples_path is not None and name == "greedy":
            write_samples(samples_path, [(p.source, p.messages, p.think, r.samples[0].text, sample_value(r.rewards[0]))
                                         for p, r in zip(prompts, results)])
        if name == "greedy":
            overlap = reference_overlap(prompts, results)
        for p, result in zip(prompts, results):
            values[p.source].extend(v for v in map(sample_value, result.rewards) if v is not None)
            verdicts[p.source].extend((r.details.get("correct"), len(s.response_ids)) for s, r in zip(result.samples, result.rewards))
        for source, vals in values.items():
            out[f"heldout/{source}/{name}"] = sum(vals) / len(vals) if vals else float("nan")
            if (length := correct_tokens_mean(verdicts[source])) is not None:  # a domain with verdicts, some correct
                out[f"heldout/{source}/correct_tokens"] = length  # the last pass's
    out.update(overlap)
    for src in cfg.sources:
        out[f"heldout/{src.name}/prompts"] = float(sum(p.source == src.name for p in prompts))
    return out


def reference_overlap(prompts: list[StepPrompt], results) -> dict[str, float]:
    """{"heldout/<source>/rouge-L": mean ROUGE-L F1 of the greedy response against the row's reference answer} for
    the sources scored by a reward model (no answer verdict): a second judge of the held-out responses, one the
    policy never trained against, so that a reward model's score that rises while this falls reads as reward
    hacking, not as better answers."""
    from rewards.summary import rouge_l

    scores: dict[str, list[float]] = {}
    for p, result in zip(prompts, results):
        reference = (p.row.get("reward_model") or {}).get("ground_truth")
        if (p.row.get("reward_model") or {}).get("style") != "model" or not isinstance(reference, str) or not reference:
            continue
        if result.rewards[0].details.get("correct") is None:
            scores.setdefault(p.source, []).append(rouge_l(result.samples[0].text, reference))
    return {f"heldout/{source}/rouge-L": sum(v) / len(v) for source, v in scores.items()}


def sample_value(reward) -> float | None:
    """A held-out sample's value: its answer verdict (1/0) where the domain has one, else its reward (a reward
    model's score); None when masked."""
    if reward.reward is None:
        return None
    correct = reward.details.get("correct")
    return float(correct) if correct is not None else float(reward.reward)


def check_heldout(cfg: GRPOConfig, train_rows: dict[str, list[dict]]) -> None:
    """Before any engine starts: with `eval.per_source`, every source has held-out prompts (a DataError names the
    source and its test split otherwise)."""
    if not (cfg.eval.prompts and cfg.eval.per_source):
        return
    for src in cfg.sources:
        if not heldout_prompts(cfg, src, train_rows.get(src.name)):
            raise DataError(f"eval.per_source: {heldout_split_path(src)} has no held-out prompt for source '{src.name}' "
                            f"(difficulties={src.difficulties}, prompt_pattern={src.prompt_pattern!r}, minus its training prompts)")


def heldout_table(summary: dict) -> dict[str, dict[str, tuple[float | None, float | None]]]:
    """{domain: {"greedy" | "mean@k": (before, after)}} from a GRPO summary's held-out keys (`<metric>_before` /
    `<metric>_after`: per source, or the one evaluation slice, labelled "RL slice").

    >>> heldout_table({"heldout/math/greedy_before": 0.2, "heldout/math/greedy_after": 0.4, "heldout/math/prompts_before": 9,
    ...                "heldout_accuracy_before": 0.1, "heldout_accuracy_after": 0.3})
    {'math': {'greedy': (0.2, 0.4)}, 'RL slice': {'greedy': (0.1, 0.3)}}
    """
    table: dict[str, dict[str, tuple[float | None, float | None]]] = {}
    for key, before in summary.items():
        if not key.endswith("_before") or key.endswith(("prompts_before", "correct_tokens_before")):  # counts, lengths
            continue
        metric = key.removesuffix("_before")
        if metric.startswith("heldout/"):
            _, domain, measure = metric.split("/", 2)
        elif metric.startswith("heldout_"):
            domain = "RL slice"
            measure = "greedy" if metric == "heldout_accuracy" else metric.removeprefix("heldout_").replace("_at_", "@")
        else:
            continue
        table.setdefault(domain, {})[measure] = (before, summary.get(f"{metric}_after"))
    return table


def format_heldout(metrics: dict[str, float]) -> str:
    """One console line of held-out figures: per source, accuracies in percent and a reward model's score (or any
    value outside [0, 1]) as it is; counts and lengths stay in the summary.

    >>> format_heldout({"heldout/math/greedy": 0.25, "heldout/math/mean@8": 0.2, "heldout/math/prompts": 32.0,
    ...                 "heldout/chat/greedy": -2.1, "heldout/chat/rouge-L": 0.87})
    'math greedy 25.0% mean@8 20.0% | chat greedy -2.10 rouge-L 0.87'
    >>> format_heldout({"heldout_accuracy": 0.3, "heldout_prompts": 80.0, "heldout_mean_at_8": 0.25})
    'greedy 30.0% mean@8 25.0%'
    """
    table = heldout_table({f"{k}_before": v for k, v in metrics.items()})
    parts = []
    for domain, row in table.items():
        score = any(v is not None and not 0.0 <= v <= 1.0 for v, _ in row.values())
        cells = " ".join(f"{m} {v:.2f}" if score or m == "rouge-L" else f"{m} {100 * v:.1f}%" for m, (v, _) in row.items())
        parts.append(cells if domain == "RL slice" else f"{domain} {cells}")
    return " | ".join(parts)
