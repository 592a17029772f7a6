"""Issue 17 rewards: the arithmetic-step critique (on generated traces with planted wrong steps, and on the written
forms the issue lists), its router terms, STEM letters, ROUGE-L summaries, and the free-form judge route."""

from __future__ import annotations

import re

import pytest

from mixrl.data.math_problems import generate_math
from mixrl.data.stem_problems import generate_stem
from mixrl.data.summary_tasks import generate_summary
from rewards.clients import RewardModelRequest
from rewards.config import RewardConfig, UnknownRouteError, reward_config_from_dict
from rewards.critique import CritiqueConfig, check_steps, critique_fraction, evaluate
from rewards.router import RewardRouter
from rewards.types import Sample

MATH = "mixrl/synthetic_math"


# ---- the critique on real traces ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def math_rows():
    return generate_math(200, "train", 0)


def test_generated_math_traces_pass_and_a_planted_wrong_step_is_found(math_rows):
    """Every step of the math generator's traces is right (one step per line); changing one result makes exactly
    that step wrong, and the critique names it (line and expected value), whatever else the trace holds."""
    for k, row in enumerate(math_rows):
        trace = row["extra_info"]["reasoning"]
        lines = trace.split("\n")
        c = check_steps(trace)
        assert len(c.steps) == row["extra_info"]["num_steps"] == len(lines) and c.fraction == 1.0, trace
        bad = k % len(lines)
        lhs, result = lines[bad].split(" = ")
        lines[bad] = f"{lhs} = {int(result) + 1 + k % 7}"
        planted = check_steps("\n".join(lines))
        assert planted.first_wrong is not None and planted.first_wrong.line == bad + 1
        assert planted.first_wrong.expected == result
        assert planted.correct_steps == len(lines) - 1
        assert planted.fraction == pytest.approx((len(lines) - 1) / len(lines))


@pytest.mark.parametrize("text, verdicts", [
    ("3*4=12", [True]),
    ("3 * 4 = 13", [False]),
    ("12 + 30 = 40 + 2 = 42", [True, True]),
    ("12 + 30 = 40 + 3 = 43", [False, True]),               # the chain's first link is wrong, the second right
    ("6 × 7 = 42 and 42 ÷ 6 = 7", [True, True]),             # unicode operators
    ("10 − 13 = −3", [True]),                                # unicode minus, negative result
    ("-4 * -5 = 20 and -4 - -5 = 1", [True, True]),
    ("2.5 * 4 = 10.0, 0.1 + 0.2 = 0.3", [True, True]),       # exact decimals: 0.1 + 0.2 is 0.3
    ("1,250 + 2,750 = 4,000", [True]),                       # thousands separators
    ("1,250 + 2,750 = 4,001", [False]),
    ("(3 + 4) × 2 = 14", [True]),
    ("$3 \\times 4 = 12$ and $8 \\div 2 = 5$", [True, False]),  # LaTeX
    ("22 / 7 = 3.14", [True]),                                # a rounded decimal, to its places
    ("22 / 7 = 3.15", [False]),
    ("Step 1: 7 * 8 = 56.", [True]),
    ("1. 9 + 9 = 18\n2. 18 / 3 = 5", [True, False]),
    ("5 / 0 = 0", [False]),                                   # division by zero is never a right step
    ("99999999999 * 99999999999 = 9999999999800000000001", [True]),  # exact integers, no float rounding
])
def test_written_forms(text, verdicts):
    assert [s.correct for s in check_steps(text).steps] == verdicts


@pytest.mark.parametrize("text", [
    "Let 2a + 3 = 7, so a = 2.",          # a term with a variable is not a number
    "x^2 + 3 = 12 has two roots.",
    "5 m + 3 m = 9 m",                    # units between numbers: not read (rather than misread)
    "The total = 7 apples.", "7 = 7", "f(1,2) = 3", "2**3 = 9", "3 + 4 = 7x", "version 1.2.3 = latest",
    "import os; os.system('true') = 0",
])
def test_text_that_is_not_arithmetic_is_never_a_wrong_step(text):
    assert all(s.correct for s in check_steps(text).steps), check_steps(text).steps
    assert critique_fraction(text) in (None, 1.0)


def test_parser_never_evaluates_code():
    for text in ("__import__('os')", "2**3", "1e3", "3 if 1 else 2"):
        with pytest.raises(ValueError):
            evaluate(text)


def test_config_is_validated():
    with pytest.raises(ValueError, match="critique.mode"):
        CritiqueConfig(mode="sometimes")
    with pytest.raises(ValueError, match="critique.weight"):
        CritiqueConfig(mode="multiply", weight=1.5)
    with pytest.raises(KeyError, match="rewards.domains.math.critique.wieght"):
        reward_config_from_dict({"domains": {"math": {"critique": {"wieght": 1}}}})


# ---- the critique in the router --------------------------------------------------------------------------------

GOOD = "<think>\n3 + 4 = 7\n7 * 2 = 14\n</think>\n\nThe answer is \\boxed{14}."
ONE_WRONG = "<think>\n3 + 4 = 8\n8 * 2 = 16\n7 * 2 = 14\n14 - 0 = 14\n</think>\n\nThe answer is \\boxed{14}."
NO_STEPS = "<think>\nadd, then double\n</think>\n\nThe answer is \\boxed{14}."


@pytest.mark.parametrize("critique, rewards, component", [
    ({"mode": "off"}, [1.0, 1.0, 1.0], None),
    ({"mode": "multiply", "weight": 0.5}, [1.0, 1.0 - 0.5 * 0.25, 1.0], "critique_coefficient"),
    ({"mode": "multiply", "weight": 1.0}, [1.0, 0.75, 1.0], "critique_coefficient"),
    ({"mode": "add", "weight": 0.2}, [1.2, 1.0 + 0.2 * 0.75, 1.0], "critique_term"),
])
def test_router_applies_the_critique_by_config(pool, critique, rewards, component):
    cfg = reward_config_from_dict({"domains": {"math": {"critique": critique}}})
    router = RewardRouter(cfg, pool=pool)
    try:
        results = router.score_batch([Sample(MATH, r, "14", thinking=True) for r in (GOOD, ONE_WRONG, NO_STEPS)],
                                     length_terms=False)
    finally:
        router.close()
    assert [r.reward for r in results] == pytest.approx(rewards)
    if component:
        assert results[1].components["critique"] == 0.75 and component in results[1].components
        assert results[1].details["critique_first_wrong"] == "line 2: 3 + 4 = 8"
        assert "critique" not in results[2].components  # no step: nothing to judge, no term
    else:
        assert all("critique" not in r.components for r in results)


# ---- STEM letters and summaries through the router -------------------------------------------------------------

@pytest.fixture(scope="module")
def router(pool):
    r = RewardRouter(pool=pool)
    yield r
    r.close()


@pytest.mark.parametrize("response, reward", [
    ("The answer is \\boxed{B}.", 1.0), ("The answer is (B).", 1.0), ("B)", 1.0), ("**B**", 1.0), ("(B) 42 J", 1.0),
    ("Work is force times distance.\n14 * 3 = 42\n**B**", 1.0),
    ("The answer is (C).", 0.0), ("A) 12 J\nB) 42 J\nC) 7 J", 0.0), ("I am not sure.", 0.0),
])
def test_router_scores_stem_letters(router, response, reward):
    (r,) = router.score_batch([Sample("mixrl/synthetic_stem", response, "B", ability="stem")], length_terms=False)
    assert r.domain == "stem" and r.error is None and r.reward == reward, (r.details, r.components)


def test_every_generated_row_scores_one_with_its_reference_and_less_with_a_wrong_one(router):
    stem = generate_stem(60, "train", 0) + generate_stem(20, "test", 0)
    summary = generate_summary(60, "train", 0) + generate_summary(20, "test", 0)
    samples, expect_right = [], []
    for rows in (stem, summary):
        for i, row in enumerate(rows):
            other = rows[(i + 1) % len(rows)]
            gt = row["reward_model"]["ground_truth"]
            kw = dict(ability=row["ability"], prompt=row["prompt"][0]["content"], thinking=False)
            samples.append(Sample(row["data_source"], row["extra_info"]["response"], gt, **kw))
            if row["ability"] == "stem":
                wrong_letter = "ABCDE"[("ABCDE".index(gt) + 1) % row["extra_info"]["num_options"]]
                wrong = f"The answer is \\boxed{{{wrong_letter}}}."
            else:
                wrong = other["extra_info"]["response"]
            samples.append(Sample(row["data_source"], wrong, gt, **kw))
    results = router.score_batch(samples, length_terms=False)
    for k in range(0, len(results), 2):
        right, wrong = results[k], results[k + 1]
        assert right.error is None and right.reward == 1.0, (samples[k], right)
        assert wrong.error is None and wrong.reward < 1.0, (samples[k + 1], wrong)
    assert {r.domain for r in results} == {"stem", "summary"}


def test_router_scores_summaries_by_rouge_l(router):
    ref = "Your GadgetHub order 12345 arrives on Friday between 2 pm and 4 pm."
    responses = [ref, "Summary: " + ref, "Your GadgetHub order arrives on Friday.",
                 "Your order arrives Friday.", "The weather is nice today.", ""]
    results = router.score_batch([Sample("mixrl/synthetic_summary", r, ref) for r in responses], length_terms=False)
    values = [r.reward for r in results]
    # the reference has 13 tokens ("2", "pm", "4", "pm" count); LCS = all 6 summary tokens: P = 1, R = 6/13,
    # F = 2PR / (P + R) = 12/19
    assert values[:3] == pytest.approx([1.0, 1.0, 12 / 19])
    assert values[2] > values[3] > values[4] == values[5] == 0.0
    assert all(r.domain == "summary" and r.components["rouge_l"] == r.reward for r in results)
    (masked,) = router.score_batch([Sample("mixrl/synthetic_summary", ref, " ")], length_terms=False)
    assert masked.reward is None and "empty" in masked.error


# ---- free-form answers judged against the ground truth ----------------------------------------------------------

class RecordingJudge:
    """A `RewardModelClient` standing in for the judge service: answers from a table, records the requests."""

    def __init__(self, verdicts: dict[str, float | None]) -> None:
        self.verdicts, self.requests = verdicts, []

    def score(self, requests: list[RewardModelRequest]) -> list[float | None]:
        self.requests += requests
        return [self.verdicts[r.response] for r in requests]


def test_style_model_routes_to_the_judge_with_the_ground_truth(pool):
    judge = RecordingJudge({"It is Paris.": 1.0, "It is Lyon.": 0.0, "Paris, I think.": None})
    router = RewardRouter(pool=pool, rm_client=judge)
    try:
        samples = [Sample("my/geography", r, "Paris", prompt="Capital of France?", style="model", group_id="g",
                          response_tokens=n)
                   for r, n in (("It is Paris.", 10), ("It is Lyon.", 10), ("Paris, I think.", 20))]
        right, wrong, unknown = router.score_batch(samples)
    finally:
        router.close()
    assert [r.domain for r in (right, wrong, unknown)] == ["judge"] * 3
    assert {(q.model, q.ground_truth, q.prompt) for q in judge.requests} == {("answer-judge", "Paris", "Capital of France?")}
    # the verdict is an answer reward: x format x repetition, and a correct verdict earns the length term
    assert right.components["rm_score"] == 1.0 and right.components["length"] == pytest.approx(0.2 * 0.5)
    assert right.reward == pytest.approx(1.1)
    assert wrong.reward == 0.0 and wrong.components["length"] == 0.0
    assert unknown.reward is None and "no score" in unknown.error  # the judge could not say: masked, not 0


def test_routes_win_over_style_and_style_over_ability():
    cfg = RewardConfig()
    assert cfg.resolve("mixrl/synthetic_chat", "chat", "model") == "chat"
    assert cfg.resolve("openai/gsm8k", None, "model") == "gsm8k"
    assert cfg.resolve("unknown/set", "math", "model") == "judge"
    assert cfg.resolve("unknown/set", "math", "rule") == "math"
    custom = reward_config_from_dict({"routes": {"my/essays": "judge"}, "styles": {"model": "chat"}})
    assert custom.resolve("my/essays") == "judge" and custom.resolve("x", None, "model") == "chat"
    with pytest.raises(UnknownRouteError, match=re.escape("styles: ['model']")):
        cfg.resolve("unknown/set", None, "rule")
    with pytest.raises(ValueError, match="rewards.styles"):
        reward_config_from_dict({"styles": {"model": "nowhere"}})
