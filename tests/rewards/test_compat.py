"""verl, TRL and OpenRLHF entry points."""

import json
import math
import threading
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

import rewards
from rewards.compat import compute_score, make_reward_server, make_trl_reward
from rewards.router import RewardRouter

GOOD = "<think>\n6*12\n</think>\n\nThe answer is \\boxed{72}."


def _verl_config(path):
    from omegaconf import OmegaConf

    return OmegaConf.create({"reward": {"custom_reward_function": {"path": path, "name": "compute_score", "reward_kwargs": {}}}})


@pytest.mark.parametrize("path", ["pkg://rewards.compat", str(Path(rewards.__file__).parent / "compat.py")])
def test_loads_through_verls_custom_reward_loader(pool, path):
    from verl.trainer.ppo.reward import get_custom_reward_fn

    fn = get_custom_reward_fn(_verl_config(path))
    out = fn(data_source="lighteval/MATH", solution_str=GOOD, ground_truth="72", extra_info={"num_turns": None})
    assert out["score"] == 1.0 and out["acc"] == 1.0
    wrong = fn(data_source="openai/gsm8k", solution_str="#### 71", ground_truth="72", extra_info=None)
    assert wrong["score"] == 0.0 and wrong["acc"] == 0.0
    # verl passes these when a reward router is configured; they must not break the call.
    fn(data_source="math_dapo", solution_str=GOOD, ground_truth="72", reward_router_address=None, reward_model_tokenizer=None)


def test_compute_score_keys_are_fixed_and_masking_is_nan(pool):
    ok = compute_score("HuggingFaceH4/MATH-500", GOOD, "72", {"prompt": "Q [[BlueThink]]"})
    masked = compute_score("mixrl/synthetic_chat", "hello", "", {"prompt": "hi"})  # no RM client configured
    assert ok.keys() == masked.keys()
    assert math.isnan(masked["score"]) and masked["masked"] == 1.0 and "reward-model" in masked["error"]
    penalised = compute_score("aime2024", "\\boxed{72}", "72", {"prompt": "Q [[BlueThink]]"})
    assert penalised["acc"] == 1.0 and penalised["score"] == pytest.approx(0.1)  # thinking on, no think block


def test_set_default_router_configures_compute_score(pool):
    from rewards.compat import set_default_router

    class RM:
        def score(self, requests):
            return [0.25 for _ in requests]

    set_default_router(RewardRouter(pool=pool, rm_client=RM()))
    try:
        assert compute_score("mixrl/synthetic_chat", "hello", "", {"prompt": "hi"})["score"] == 0.25
    finally:
        set_default_router(None)
    assert math.isnan(compute_score("mixrl/synthetic_chat", "hello", "", {"prompt": "hi"})["score"])


def test_compute_score_from_threads(pool):
    # verl calls compute_score from executor threads: math-verify's signal-based timeouts would raise there.
    results = [None] * 4

    def run(i):
        results[i] = compute_score("lighteval/MATH", f"\\boxed{{x^2+{i}x}}", f"x(x+{i})")["acc"]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [1.0] * 4


def test_trl_reward_function(pool):
    f = make_trl_reward(RewardRouter(pool=pool))
    prompts = [[{"role": "user", "content": "What is 6*12? [[BlueThink]]"}]] * 2 + [[{"role": "user", "content": "2+2?"}]]
    completions = [
        [{"role": "assistant", "content": GOOD}],
        [{"role": "assistant", "content": "\\boxed{70}"}],
        [{"role": "assistant", "content": "\\boxed{4}"}],
    ]
    out = f(
        prompts=prompts,
        completions=completions,
        reward_model=[{"ground_truth": "72"}, {"ground_truth": "72"}, {"ground_truth": "4"}],
        data_source=["mixrl/synthetic_math"] * 3,
        completion_ids=[[0] * 100, [0] * 300, [0] * 10],
        trainer_state=SimpleNamespace(global_step=0),
    )
    # Group of the first two: only the correct one gets α·λ = 0.2 * 0.5; the third is a group of one.
    assert out == pytest.approx([1.1, 0.0, 1.1])
    assert f.__name__ == "mixrl_reward"


def _post(url, payload):
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def server_url(pool):
    server = make_reward_server("127.0.0.1", 0, router=RewardRouter(pool=pool))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_openrlhf_get_reward(server_url):
    prompt = "<|user|>What is 6*12?<|assistant|>"
    status, body = _post(
        server_url + "/get_reward",
        {"query": [prompt + "\\boxed{72}", prompt + "\\boxed{71}"], "prompts": [prompt, prompt], "labels": ["72", "72"]},
    )
    assert status == 200
    assert body["rewards"] == pytest.approx([1.1, 0.0]) and body["scores"] == body["rewards"]
    assert body["extra_logs"]["acc"] == [1.0, 0.0]


def test_openrlhf_masked_reward_is_null(server_url):
    status, body = _post(
        server_url + "/get_reward",
        {"query": ["hi"], "prompts": [""], "labels": [""], "data_sources": ["mixrl/synthetic_chat"]},
    )
    assert status == 200 and body["rewards"] == [None] and body["extra_logs"]["masked"] == [1.0]


@pytest.mark.parametrize(
    "payload,message",
    [
        ({"query": "not a list", "labels": []}, "'query' must be a list"),
        ({"query": ["a"], "labels": []}, "'labels' must be a list"),
        ({"query": ["a"], "labels": ["1"], "data_sources": ["nowhere"]}, "no reward route"),
    ],
)
def test_openrlhf_bad_input_is_400_and_server_stays_up(server_url, payload, message):
    status, body = _post(server_url + "/get_reward", payload)
    assert status == 400 and message in body["error"]
    with urllib.request.urlopen(server_url + "/health", timeout=10) as resp:
        assert json.loads(resp.read()) == {"status": "ok"}
