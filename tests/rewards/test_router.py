"""The reward router: routing, rule reward, group length terms, masking, and the client interfaces."""

import json
import threading

import pytest

from rewards.clients import CodeExecutionClient, CodeTestResult, RewardModelClient
from rewards.config import RewardConfig, UnknownRouteError, reward_config_from_dict
from rewards.router import RewardRouter
from rewards.types import Sample
from sandbox.spec import TestSpec, spec_from_ground_truth

PROMPT = "What is 30+3? [[BlueThink]]"
MATH = "mixrl/synthetic_math"


@pytest.fixture(scope="module")
def router(pool):
    r = RewardRouter(pool=pool)
    yield r
    r.close()


def test_group_rule_and_length_hand_computed(router):
    # Group of 4, α = 0.2 (step 0), Δ_L floor 500. Lengths 100, 400, 50, 700 -> L_min 50, L_max 700, Δ = 650.
    good = "<think>\n30+3=33\n</think>\n\nThe answer is \\boxed{33}."
    samples = [
        Sample(MATH, good, "33", prompt=PROMPT, group_id="q1", response_tokens=100),
        Sample(MATH, good, "33", prompt=PROMPT, group_id="q1", response_tokens=400),
        Sample(MATH, "The answer is \\boxed{33}.", "33", prompt=PROMPT, group_id="q1", response_tokens=50),
        Sample(MATH, "<think>\nhmm\n</think>\n\n\\boxed{34}", "33", prompt=PROMPT, group_id="q1", response_tokens=700),
    ]
    a, b, c, d = router.score_batch(samples, global_step=0)
    # A: rule 1, λ = 0.5 - 50/650 -> 1 + 0.2*(0.5 - 50/650)
    assert a.reward == pytest.approx(1 + 0.2 * (0.5 - 50 / 650))
    # B: λ = 0.5 - 350/650 < 0: a correct but long answer earns less than 1
    assert b.reward == pytest.approx(1 + 0.2 * (0.5 - 350 / 650))
    # C: correct, no think block in thinking mode -> rule 0.1; λ = 0.5 -> + 0.1
    assert c.components["format"] == 0.1 and c.details["format_fired"] == ["think_block"]
    assert c.reward == pytest.approx(0.1 + 0.1)
    # D: wrong answer -> 0, no length term
    assert d.reward == 0.0 and d.components["length"] == 0.0 and d.components["answer"] == 0.0
    assert all(r.domain == "math" and r.error is None for r in (a, b, c, d))


def test_groups_are_separate_and_step_decays_alpha(pool):
    cfg = reward_config_from_dict({"domains": {"math": {"length": {"alpha_decay_steps": 10, "alpha_floor": 0.0}}}})
    r = RewardRouter(cfg, pool=pool)
    s = [Sample(MATH, "\\boxed{1}", "1", group_id=g, response_tokens=10) for g in ("a", "b")]
    assert [x.reward for x in r.score_batch(s, global_step=0)] == pytest.approx([1.1, 1.1])  # each alone: λ = 0.5
    assert [x.reward for x in r.score_batch(s, global_step=5)] == pytest.approx([1.05, 1.05])  # α = 0.1
    assert [x.reward for x in r.score_batch(s, global_step=10)] == pytest.approx([1.0, 1.0])  # α = 0
    r.close()


def test_repetition_multiplies_rule(router):
    looping = "The answer is \\boxed{33}. " + "Let me double check. " * 10
    (res,) = router.score_batch([Sample(MATH, looping, "33")], length_terms=False)
    assert res.components["repetition"] == 0.1 and "end_loop" in res.details["repetition_detected"]
    assert res.reward == pytest.approx(0.1)


def test_verifier_timeout_is_masked_unless_configured(pool):
    s = Sample(MATH, "\\boxed{9^{9^{9}}}", "2")
    r = RewardRouter(pool=pool)
    (masked,) = r.score_batch([s])
    assert masked.reward is None and "timeout" in masked.error
    cfg = reward_config_from_dict({"domains": {"math": {"timeout_is_incorrect": True}}})
    (zero,) = RewardRouter(cfg, pool=pool).score_batch([s], length_terms=False)
    assert zero.reward == 0.0


def test_gsm8k_stem_ifeval_routes(router):
    ifeval_gt = json.dumps({"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]})
    res = router.score_batch(
        [
            Sample("openai/gsm8k", "6 * 12 = 72\n#### 72", "72"),
            Sample("unknown/mcq", "The answer is \\boxed{B}", "(B)", ability="stem"),
            Sample("mixrl/synthetic_ifeval", "<think>\nok, no commas\n</think>\n\nNo commas here", ifeval_gt),
            Sample("mixrl/synthetic_ifeval", "Commas, here", ifeval_gt),
        ],
        length_terms=False,
    )
    assert [r.domain for r in res] == ["gsm8k", "stem", "ifeval", "ifeval"]
    assert [r.reward for r in res] == [1.0, 1.0, 1.0, 0.0]


def test_unknown_route_raises(router):
    with pytest.raises(UnknownRouteError, match="no reward route for data_source='nowhere'"):
        router.score_batch([Sample("nowhere", "x", "1")])


def test_bad_config_names_domain():
    with pytest.raises(ValueError, match="names domain 'maths'"):
        reward_config_from_dict({"routes": {"x": "maths"}})


# ------------------------------------------------------------------ code and reward-model clients (test doubles)


class FakeSandbox:
    """Runs the program in-process: a test double for the sandbox client (NOT isolation). Receives the sandbox's
    `TestSpec` (kind/inputs/outputs/fn_name/test_code) and records every one; runs call and assert tests."""

    def __init__(self, fail=None):
        self.fail = fail
        self.calls = 0
        self.specs = []
        self.lock = threading.Lock()

    def run_tests(self, program, tests, *, language="python", timeout_s=10.0):
        assert isinstance(tests, TestSpec)
        with self.lock:
            self.calls += 1
            self.specs.append(tests)
        if self.fail == "raise":
            raise ConnectionError("sandbox unreachable")
        if self.fail == "error":
            return CodeTestResult(0, 0, error="sandbox overloaded")
        namespace = {}
        exec(program, namespace)  # noqa: S102 - trusted test input
        if tests.kind == "assert":
            try:
                exec(tests.test_code, namespace)  # noqa: S102
            except AssertionError:
                return CodeTestResult(0, 1)
            return CodeTestResult(1, 1)
        if tests.kind != "call":
            return CodeTestResult(0, 0, error=f"the fake runs call and assert tests, not {tests.kind}")
        fn = namespace[tests.fn_name]
        passed = sum(1 for args, out in zip(tests.inputs, tests.outputs) if fn(*args) == out)
        return CodeTestResult(passed, len(tests.inputs))


CODE_GT = json.dumps({"fn_name": "add", "inputs": [[1, 2], [3, 4]], "outputs": [3, 7]})
GOOD_CODE = "```python\ndef add(a, b):\n    return a + b\n```"
BAD_CODE = "```python\ndef add(a, b):\n    return 3\n```"


def test_fakes_satisfy_the_protocols():
    assert isinstance(FakeSandbox(), CodeExecutionClient)
    assert isinstance(FakeRM(), RewardModelClient)


def test_code_domain(pool):
    sandbox = FakeSandbox()
    r = RewardRouter(pool=pool, code_client=sandbox)
    res = r.score_batch(
        [
            Sample("mixrl/synthetic_code", GOOD_CODE, CODE_GT),
            Sample("mixrl/synthetic_code", BAD_CODE, CODE_GT),  # passes 1 of 2: all must pass
            Sample("mixrl/synthetic_code", "no code block", CODE_GT),
        ],
        length_terms=False,
    )
    assert [x.reward for x in res] == [1.0, 0.0, 0.0]
    assert res[1].components["tests_passed"] == 0.5
    assert sandbox.calls == 2


def test_a_program_runs_once_per_test_set(pool):
    """A group's samples often hold the same program: the sandbox runs it once on a test set and the verdict is
    reused (`code_cache`), unless the recipe turns that off; a sandbox failure (masked) is never reused."""
    other_gt = json.dumps({"fn_name": "add", "inputs": [[5, 5]], "outputs": [10]})
    batch = [Sample("mixrl/synthetic_code", code, gt) for code, gt in
             [(GOOD_CODE, CODE_GT), (BAD_CODE, CODE_GT), (GOOD_CODE, CODE_GT), (GOOD_CODE, other_gt), (BAD_CODE, CODE_GT)]]
    for cache, runs in ((True, 3), (False, 5)):
        sandbox = FakeSandbox()
        r = RewardRouter(reward_config_from_dict({"domains": {"code": {"code_cache": cache}}}), pool=pool, code_client=sandbox)
        first = r.score_batch(batch, length_terms=False)
        again = r.score_batch(batch, length_terms=False)
        r.close()
        assert [x.reward for x in first] == [x.reward for x in again] == [1.0, 0.0, 1.0, 1.0, 0.0]
        assert again[1].components["tests_passed"] == 0.5
        assert sandbox.calls == runs * (1 if cache else 2), (cache, sandbox.calls)
    failing = FakeSandbox("error")
    r = RewardRouter(pool=pool, code_client=failing)
    assert [x.reward for x in r.score_batch(batch[:1] * 2, length_terms=False)] == [None, None]
    r.close()
    assert failing.calls == 2


@pytest.mark.parametrize("client", [None, FakeSandbox("raise"), FakeSandbox("error")])
def test_code_infrastructure_failure_is_masked(pool, client):
    r = RewardRouter(pool=pool, code_client=client)
    (res,) = r.score_batch([Sample("mixrl/synthetic_code", GOOD_CODE, CODE_GT)])
    assert res.reward is None and res.error


@pytest.mark.parametrize("ground_truth, extra_info, kind", [
    (CODE_GT, None, "call"),                                                            # (a) our call rows
    (json.dumps({"inputs": ["1 2\n", "3 4\n"], "outputs": ["3\n", "7\n"]}), {"index": 3}, "stdio"),  # (b) verl/prime stdio
    ("", {"test_code": "assert add(1, 2) == 3"}, "assert"),                              # (c) assert-style, empty gt
], ids=["call", "prime-stdio", "assert-empty-gt"])
def test_code_client_gets_the_spec_the_parser_builds(pool, ground_truth, extra_info, kind):
    client = FakeSandbox()
    r = RewardRouter(pool=pool, code_client=client)
    (res,) = r.score_batch([Sample("mixrl/synthetic_code", GOOD_CODE, ground_truth, extra_info=extra_info)],
                           length_terms=False)
    r.close()
    assert client.specs == [spec_from_ground_truth(ground_truth, extra_info)] and client.specs[0].kind == kind
    if kind == "stdio":  # the fake does not run stdin/stdout programs: its error masks the sample
        assert res.reward is None and "code execution" in res.error
    else:
        assert res.reward == 1.0 and res.error is None


@pytest.mark.parametrize("ground_truth", ["{oops", "", "[1, 2]", '{"fn_name": "add", "inputs": [[1]]}',
                                          '{"inputs": [], "outputs": []}', '{"inputs": 3, "outputs": 3}'])
def test_unreadable_code_ground_truth_is_masked_not_zero(pool, ground_truth):
    client = FakeSandbox()
    r = RewardRouter(pool=pool, code_client=client)
    (res,) = r.score_batch([Sample("mixrl/synthetic_code", GOOD_CODE, ground_truth)])
    r.close()
    assert res.reward is None and "bad code ground truth" in res.error, res
    assert client.calls == 0


class FakeRM:
    def __init__(self, fail=False):
        self.fail = fail
        self.batches = []

    def score(self, requests):
        self.batches.append(requests)
        if self.fail:
            raise TimeoutError("rm timed out")
        return [None if "unscorable" in q.response else float(len(q.response)) for q in requests]


def test_chat_domain_batches_one_call_per_model(pool):
    rm = FakeRM()
    r = RewardRouter(pool=pool, rm_client=rm)
    res = r.score_batch(
        [
            Sample("mixrl/synthetic_chat", "<think>\nplan\n</think>\n\nhello", "", prompt="hi [[BlueThink]]"),
            Sample("mixrl/synthetic_chat", "abc", "", prompt="hi"),
            Sample("mixrl/synthetic_chat", "unscorable", "", prompt="hi"),
        ]
    )
    assert len(rm.batches) == 1 and rm.batches[0][0].model == "chat-rm"
    assert rm.batches[0][0].response == "hello"  # the RM sees the answer, not the reasoning
    assert [x.reward for x in res] == [5.0, 3.0, None]
    assert res[2].error


@pytest.mark.parametrize("client", [None, FakeRM(fail=True)])
def test_chat_failure_is_masked(pool, client):
    r = RewardRouter(pool=pool, rm_client=client)
    res = r.score_batch([Sample("mixrl/synthetic_chat", "x", "", prompt="p")] * 2)
    assert [x.reward for x in res] == [None, None] and all(x.error for x in res)


def test_concurrent_callers(router):
    out = {}

    def work(k):
        out[k] = router.score_batch([Sample(MATH, f"\\boxed{{{k}}}", str(k)) for _ in range(3)], length_terms=False)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all([x.reward for x in out[k]] == [1.0, 1.0, 1.0] for k in range(4))


def test_budget_hit_penalty_is_subtracted_only_where_the_budget_ran_out(pool):
    """A recipe may penalise samples whose thinking budget ran out (vLLM forced `</think>`, issue 16 point 6)."""
    good = "<think>\n30+3=33\n</think>\n\nThe answer is \\boxed{33}."
    cfg = reward_config_from_dict({"domains": {"math": {"budget_hit_penalty": 0.3, "length": {"group_overlong": False}}},
                                   "routes": {MATH: "math"}})
    r = RewardRouter(cfg, pool=pool)
    try:
        hit, free = r.score_batch([Sample(MATH, good, "33", prompt=PROMPT, budget_hit=True),
                                   Sample(MATH, good, "33", prompt=PROMPT)])
    finally:
        r.close()
    assert hit.reward == pytest.approx(0.7) and hit.components["budget_hit"] == -0.3
    assert free.reward == pytest.approx(1.0) and "budget_hit" not in free.components
    with pytest.raises(ValueError, match="budget_hit_penalty"):
        reward_config_from_dict({"domains": {"math": {"budget_hit_penalty": float("nan")}}})
