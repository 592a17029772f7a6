"""GRPO learns, on every domain at once: from the quickstart's shipped base checkpoint, a fixed-seed run of the
quickstart's own GRPO stage (`mixrl.config.quickstart_grpo_default`: one one-step asynchronous run mixing math,
code through the sandbox, IFEval and chat scored by the reward-model service found through its registry) raises
each domain's held-out score.

The start is the quickstart's own: the shipped base (`mixrl/base_checkpoint.py`: the quickstart's pretraining and
SFT by step count in fp32, verified by hash), the data it was trained on generated here, and the reward model the
quickstart trains and serves (`mixrl.quickstart.start_reward_model_service`). Held-out prompts are each source's
test split, none equal to a training prompt: greedy and mean@8 for math, code and IFEval (answer verdicts), the
reward model's mean score for chat, with ROUGE-L against the reference answers as a second judge the policy never
trained against. A fixed seed fixes the prompts and every sample's seed (vLLM samples with per-sample seeds; the
pipeline's order does not depend on timing, and the reward model scores each item alone): a run repeats itself on
one machine for most of its steps (two runs of seed 0 parted at rounding level at step 75 of 100), while other CPUs'
kernels and the other precision round differently and drift apart sooner, hence margins well under the rises
measured. A zero learning rate leaves the policy, and so every measure,
unchanged; a flipped advantage sign lowers them: either fails.
"""

import dataclasses
import json

import pytest

# one 200-step mixed run with held-out evaluations of 4 x 32 prompts before and after: 12-15 minutes on 2 cores
pytestmark = [pytest.mark.vllm, pytest.mark.timeout(3000)]

# Minimum rises asserted (absolute, held-out, 32 prompts per domain), under the smallest rise measured over seeds
# 0, 1 and 2 (and other runs of seed 0) of the stage at 100 steps (8 / 4 / 3 / 1 prompts a step, two
# mini-batches) from the shipped base on a 2-core Xeon with AMX, where precision `auto` is bf16: other CPUs' kernels
# round otherwise and the same seed drifts onto another path (the stage's other shares, 8 / 4 / 2 / 2, gave IFEval
# +3.1 / +3.9 / +5.5 and math +19.9 / +21.5 / +24.2 from the same base: the spread between paths is wide).
# mean@8 is the mean of 8 samples per prompt at temperature 1 (256 samples per domain, one sample = 0.4 points: the
# low-variance measure). Greedy accuracy (one answer per prompt, one prompt = 3.1 points) is printed, not asserted:
# it moved 0.0 / +9.4 / -6.2 on math, +9.4 / +12.5 / 0.0 on code and -3.1 / +6.2 / +15.6 on IFEval.
# Chat's ROUGE-L against the references falls (0.86 -> 0.56-0.70): the policy finds notes the tiny reward model
# scores above their fit to the request, so the test asserts the reward model's score, not a gain in chat.
# The reward model's service scores each item alone (`reward_model.batch_invariant`): batched, its scores moved at
# rounding level with the batches the timing formed, and the same seed gave another run.
# At 200 steps with code on level 1, seeds 0 / 1 / 2 rose math +18.8 / +27.4 / +23.4, code +14.9 / +14.8 / +8.3,
# IFEval +15.6 / +16.8 / +13.3 points mean@8 and chat +2.79 / +2.69 / +2.94; with code on level 2 (8 / 4 / 3 / 1):
# math +18.0 / +22.7 / +21.8, code +33.6 / +34.8 / +30.1, IFEval +9.7 / +12.9 / +12.9. The stage as it is now
# (7 / 3 / 5 / 1, 200 steps): math +19.5 / +25.0 / +25.4, code +28.1 / +24.6 / +26.2, IFEval +15.2 / +17.2 / +15.6,
# chat +1.84 / +1.79 / +3.20, and no greedy accuracy fell; after the trainer's mask-free micro-batches (other paths):
# math +20.7 / +25.8 / +31.2, code +35.2 / +31.3 / +30.9, IFEval +15.2 / +15.6 / +24.2, chat +2.38 / +3.82 / +1.98;
# this test's own run in the full suite passed. The margins of math, IFEval and chat stay those set from the
# 100-step runs; code's is under half its smallest rise.
MIN_RISE = {
    # +12.9 / +26.6 / +13.7 points (seeds 0 / 1 / 2); other runs of seed 0: +6.6 (it drifted from the first at
    # rounding level at step 75), and with the engines returning token ids only (their timing changed, and vLLM's
    # bf16 sampling with it, from step 14) +5.5 and, in this test, +9.8
    "math/mean@8": 0.03,
    "code/mean@8": 0.10,  # level 2: +28.1 / +24.6 / +26.2 (100 steps, level 1: +11.3 / +11.3 / +4.7)
    # +9.0 / +7.8 / +7.8; other runs of seed 0: +10.9, +6.6 and, in this test, +1.2: IFEval's rise is the least
    # sure of the four, so its margin is one sample in 256 (a policy left as it was, or pushed the wrong way, fails)
    "ifeval/mean@8": 0.004,
    "chat/mean@8": 0.3,  # the reward model's mean score: +1.50 / +1.64 / +1.14; other runs of seed 0: +2.37, +1.88
}
# and the three rule-verified domains together (mean@8 points summed): at 100 steps with code on level 1, 33.2 / 45.7 /
# 26.2 over the seeds and 22.0 at the least over the other runs of seed 0; at 200 steps, level 1: 49.3 / 59.0 / 45.0;
# level 2, 8 / 4 / 3 / 1: 61.3 / 70.4 / 64.8; now (7 / 3 / 5 / 1): 62.8 / 66.8 / 67.2, and 71.1 / 72.7 / 86.3 after
# the trainer's mask-free micro-batches, so the sum must reach 35
# points, about half the least measured.
MIN_RULE_RISE = 0.35


@pytest.fixture(scope="module")
def quickstart_stage(tmp_path_factory):
    """The quickstart's GRPO stage on its shipped base checkpoint (verified by hash), with the data it was trained
    on generated here and the quickstart's reward-model service running (stopped after the module)."""
    from core.config import build
    from mixrl.config import QuickstartConfig
    from mixrl.data.synthetic import ensure_datasets
    from mixrl.quickstart import chain_paths, shipped_base, start_reward_model_service, stop_instances

    cfg = chain_paths(build(QuickstartConfig, {"run_root": str(tmp_path_factory.mktemp("quickstart"))}, source="test"))
    shipped_base(cfg)
    ensure_datasets(cfg.pretrain.data)
    rm, instances = start_reward_model_service(cfg)
    try:
        yield dataclasses.replace(cfg.grpo, reward_model_registry=rm["registry"])
    finally:
        stop_instances(instances)


def test_mixed_grpo_raises_every_domain(ray_local, quickstart_stage, tmp_path):
    from rl.grpo import run_grpo

    summary = run_grpo(dataclasses.replace(quickstart_stage, run_dir=str(tmp_path / "grpo")))
    got = {key: (summary[f"heldout/{key}_before"], summary[f"heldout/{key}_after"])
           for key in ("math/mean@8", "math/greedy", "code/mean@8", "code/greedy", "ifeval/mean@8", "ifeval/greedy",
                       "chat/mean@8", "chat/rouge-L")}
    print(json.dumps(got))
    for key, rise in MIN_RISE.items():
        before, after = got[key]
        assert after >= before + rise, (key, got[key])
    rule = sum(got[f"{d}/mean@8"][1] - got[f"{d}/mean@8"][0] for d in ("math", "code", "ifeval"))
    assert rule >= MIN_RULE_RISE, (rule, got)
    rows = [json.loads(line) for line in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["staleness_max"] for r in rows) == 1
    assert max(r["kl"] for r in rows) < 0.5  # the policy stays near the reference while it learns
