"""Held-out evaluation of every source (`eval.per_source`): each source's own test split, filtered and in the mode of
the source, never a prompt it trains on, scored by the run's reward router on the engine's actor."""

import dataclasses
import json

import pytest

from core.data import DataError


def _cfg(ckpt, tmp_path, **eval_keys):
    from tests.rl.conftest import grpo_test_config

    return grpo_test_config(ckpt, tmp_path / "run", eval={"prompts": 4, "per_source": True, "max_response_tokens": 16, **eval_keys})


def test_heldout_prompts_follow_the_source_and_leave_out_training_prompts(tiny_grpo_checkpoint, tmp_path):
    from core.data import load_rows
    from rl.heldout import heldout_prompts, heldout_split_path

    cfg = _cfg(tiny_grpo_checkpoint, tmp_path)
    math, ifeval = cfg.sources  # math: direct; ifeval: mixed
    test_rows = load_rows(heldout_split_path(math))
    assert heldout_split_path(math).endswith("math/test.parquet")
    prompts = heldout_prompts(cfg, math)
    assert [p.row for p in prompts] == test_rows[:4] and not any(p.think for p in prompts)
    # a held-out prompt that a training row also holds is left out
    planted = heldout_prompts(cfg, math, train_rows=[test_rows[0]])
    assert [p.row for p in planted] == test_rows[1:5]
    assert [p.think for p in heldout_prompts(cfg, ifeval)] == [True, False, True, False]


def test_a_source_without_a_test_split_or_prompts_fails_before_engines_start(tiny_grpo_checkpoint, tmp_path):
    from rl.heldout import check_heldout, heldout_split_path

    cfg = _cfg(tiny_grpo_checkpoint, tmp_path)
    odd = dataclasses.replace(cfg.sources[0], path=str(tmp_path / "rows.parquet"))
    with pytest.raises(DataError, match="no 'train'"):
        heldout_split_path(odd)
    empty = dataclasses.replace(cfg.sources[0], prompt_pattern="no prompt says this")
    with pytest.raises(DataError, match="no held-out prompt for source 'math'"):
        check_heldout(dataclasses.replace(cfg, sources=[empty]), {"math": []})


def test_per_source_values_equal_the_answer_verdicts_of_the_same_outputs(shared_rollout, ray_local, tiny_grpo_checkpoint, tmp_path):
    """Scored on the actor by the run's router, the greedy value of each source equals the evaluation verdicts
    (`rewards.verdict.score_response`) of the same greedy outputs generated apart."""
    from transformers import AutoTokenizer

    from core.chat import render_prompt
    from core.engine import SamplingSettings
    from rewards.verdict import score_response
    from rl.heldout import evaluate_heldout, heldout_prompts

    cfg = _cfg(tiny_grpo_checkpoint, tmp_path, samples=2)
    tokenizer = AutoTokenizer.from_pretrained(tiny_grpo_checkpoint["model"])
    ray_local.get(shared_rollout.configure_rewards.remote(cfg))
    got = evaluate_heldout(cfg, shared_rollout, tokenizer)
    # and, for a domain with answer verdicts some of which are right, the mean length of its correct responses
    lengths = {k for k in got if k.endswith("/correct_tokens")}
    assert set(got) - lengths == {f"heldout/{s}/{m}" for s in ("math", "ifeval") for m in ("greedy", "mean@2", "prompts")}
    assert lengths <= {"heldout/math/correct_tokens", "heldout/ifeval/correct_tokens"}
    assert all(0 < got[k] <= 16 for k in lengths)
    # deterministic (greedy, and seeded samples); the greedy responses are written for a person to read
    assert got == evaluate_heldout(cfg, shared_rollout, tokenizer, samples_path=tmp_path / "heldout.jsonl")
    written = [json.loads(line) for line in (tmp_path / "heldout.jsonl").read_text().splitlines()]
    greedy = SamplingSettings(samples_per_prompt=1, max_response_tokens=16, temperature=0.0)
    for source in cfg.sources:
        prompts = heldout_prompts(cfg, source)
        outs = ray_local.get(shared_rollout.generate.remote([render_prompt(tokenizer, p.messages, p.think) for p in prompts], greedy))
        verdicts = [v for v in (score_response(p.row, o[0].text) for p, o in zip(prompts, outs)) if v is not None]
        mine = [w for w in written if w["source"] == source.name]
        assert [(w["prompt"], w["think"], w["response"]) for w in mine] == [
            (p.messages[-1]["content"], p.think, o[0].text) for p, o in zip(prompts, outs)]
        assert [w["value"] for w in mine if w["value"] is not None] == verdicts
        assert got[f"heldout/{source.name}/prompts"] == len(prompts) == 4
        assert got[f"heldout/{source.name}/greedy"] == pytest.approx(sum(verdicts) / len(verdicts)), source.name
        assert 0.0 <= got[f"heldout/{source.name}/mean@2"] <= 1.0


def test_reward_model_sources_get_a_second_judge_the_policy_never_trained_against():
    """ROUGE-L against the reference answer, for the greedy responses of reward-model-scored sources only: the
    check that read the quickstart's chat RM score rising (-1.4 -> +1.8) as reward hacking (ROUGE-L 0.87 -> 0.45)."""
    from types import SimpleNamespace

    from rewards.summary import rouge_l
    from rl.heldout import reference_overlap
    from rl.prompts import StepPrompt

    reference = "Dear Kai, thank you so much for the lovely mug. It made my week."
    rows = [{"prompt": [{"role": "user", "content": "Write a note to Kai thanking them for the mug."}],
             "reward_model": {"style": "model", "ground_truth": reference}},
            {"prompt": [{"role": "user", "content": "Write a note to Ana."}],
             "reward_model": {"style": "model", "ground_truth": "Dear Ana, congratulations on the new job!"}},
            {"prompt": [{"role": "user", "content": "What is 6 / 3?"}], "reward_model": {"style": "rule", "ground_truth": "2"}}]
    texts = ["Dear Kai, thank you for the mug. It made my week.",
             "Dear Rosa, please let me know if you can make it. Please let me know if you can make it.", "2"]
    prompts = [StepPrompt("chat", rows[0], False), StepPrompt("chat", rows[1], False), StepPrompt("math", rows[2], False)]
    results = [SimpleNamespace(samples=[SimpleNamespace(text=t)], rewards=[SimpleNamespace(details={} if i < 2 else {"correct": True})])
               for i, t in enumerate(texts)]
    got = reference_overlap(prompts, results)
    assert set(got) == {"heldout/chat/rouge-L"}
    assert got["heldout/chat/rouge-L"] == pytest.approx((rouge_l(texts[0], reference) + rouge_l(texts[1], rows[1]["reward_model"]["ground_truth"])) / 2)
    assert rouge_l(texts[0], reference) > 0.7 > 0.3 > rouge_l(texts[1], rows[1]["reward_model"]["ground_truth"])
