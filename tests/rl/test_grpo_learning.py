"""GRPO learns: from the quickstart's SFT tiny checkpoint, a fixed-seed run raises held-out accuracy on the math
slice it trains on, synchronously and one-step asynchronously.

The checkpoint is built here by the quickstart's own stages (data -> pretraining -> SFT), with a fixed number
of steps instead of the quickstart's time box, so that every machine trains the same model. The GRPO runs are
the quickstart's GRPO stage (`rl.config.quickstart_grpo_default`): level-1 division in thinking mode, the
slice of the synthetic math where the tiny model is right often enough (about a quarter of the time) for
groups to hold both right and wrong answers. Held-out accuracy is measured on test prompts no training prompt
equals, greedy and mean@8. A fixed seed makes each run deterministic on a given machine (vLLM samples with
per-sample seeds; the pipeline's order does not depend on timing).
"""

import dataclasses
import json

import pytest

# The module-scoped checkpoint (500 pretraining steps + one SFT pass, the quickstart's own) took 18 min on a 2-core
# machine whose bf16 matmuls run slower than fp32 (145 vs 220 GFLOP/s): more than the suite's 900 s per test.
pytestmark = [pytest.mark.vllm, pytest.mark.timeout(3000)]

# Minimum rises asserted (absolute, held-out), below the smallest rise seen across seeds 0 and 1 on 2 cores
# (issue 5/6 notes): mean@8 is the mean accuracy of 8 samples per prompt at temperature 1 (640 samples: the
# low-variance measure), greedy is one answer per prompt (80 prompts: one prompt is 1.25 points).
# On another 2-core machine (bf16 matmuls slower than fp32) the quickstart checkpoint came out different (greedy
# 37.5% / mean@8 21.9% before RL) and synchronous greedy stayed at 37.5% while mean@8 rose +12.8 points: greedy on
# 80 prompts is too noisy for a positive margin, so it is asserted not to fall; mean@8 carries the claim.
MIN_RISE = {  # staleness: (mean@8, greedy)
    0: (0.08, 0.0),  # seen: mean@8 +12.8 .. +15.5 points, greedy +0.0 .. +10.0
    1: (0.05, 0.0),  # seen: mean@8 +8.1 .. +20.3 points, greedy +2.5 .. +18.8
}


@pytest.fixture(scope="module")
def sft_tiny(tmp_path_factory):
    """The quickstart's SFT tiny checkpoint and data (pretraining and SFT with the quickstart's defaults)."""
    from core.config import build
    from mixrl.config import QuickstartConfig
    from mixrl.data.synthetic import ensure_datasets
    from mixrl.quickstart import chain_paths
    from sft.finetune import run_sft
    from sft.pretrain import run_pretrain

    root = tmp_path_factory.mktemp("sft_tiny")
    cfg = chain_paths(build(QuickstartConfig, {"run_root": str(root), "pretrain": {"train": {"max_minutes": 0}},
                                                    "sft": {"train": {"max_minutes": 0}}}, source="test"))
    ensure_datasets(cfg.pretrain.data)
    run_pretrain(cfg.pretrain)
    run_sft(cfg.sft)
    return cfg


@pytest.mark.parametrize("staleness", [0, 1])
def test_grpo_raises_heldout_accuracy(ray_local, sft_tiny, tmp_path, staleness):
    from rl.grpo import run_grpo

    grpo = dataclasses.replace(sft_tiny.grpo, run_dir=str(tmp_path / "grpo"), max_staleness=staleness, reward_model_registry="")
    summary = run_grpo(grpo)
    greedy = summary["heldout_accuracy_before"], summary["heldout_accuracy_after"]
    sampled = summary["heldout_mean_at_8_before"], summary["heldout_mean_at_8_after"]
    print(json.dumps({"staleness": staleness, "greedy": greedy, "mean_at_8": sampled}))
    min_sampled, min_greedy = MIN_RISE[staleness]
    assert sampled[1] >= sampled[0] + min_sampled, sampled
    assert greedy[1] >= greedy[0] + min_greedy, greedy
    rows = [json.loads(line) for line in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["staleness_max"] for r in rows) == staleness
