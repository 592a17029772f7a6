"""Partial rollouts (in-flight weight updates) on a real vLLM-CPU engine: a weight update lands while requests are
generating; they freeze (vLLM's pause "keep"), take the new weights and go on, every token tagged with its version."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.vllm

N_TOKENS = 160  # long enough that the update lands mid-request


@pytest.fixture(scope="module")
def partial_rollout(ray_local, tiny_grpo_checkpoint, tmp_path_factory):
    """A rollout actor whose engine runs partial rollouts (streamed tokens, pause "keep" around updates)."""
    from rl.actors import start_rollout
    from tests.rl.conftest import grpo_test_config

    cfg = grpo_test_config(tiny_grpo_checkpoint, tmp_path_factory.mktemp("partial"), max_staleness=1,
                           rollout={"partial_rollouts": True, "max_model_len": 256})
    actor = start_rollout(cfg, tiny_grpo_checkpoint["model"])
    yield actor
    ray_local.get(actor.shutdown.remote())
    ray_local.kill(actor)


def _connect(ray, actor):
    """A gloo weight sender in this process, joined to the engine's transfer group."""
    from rl.weight_sync import GlooWeightSender

    sender = GlooWeightSender("127.0.0.1")
    joined = actor.init_weight_transfer.remote(sender.listen())
    sender.connect()
    ray.get(joined)
    return sender


def test_update_mid_request_tags_tokens_and_loses_none(ray_local, partial_rollout, tiny_grpo_checkpoint):
    """Tokens sampled before the update are exactly the old weights' (same seeds, no update: same tokens and
    logprobs) and carry version 0; the rest carry version 1 and follow the new weights; every sample has all its
    tokens once (none lost, none repeated across the pause)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.engine import SamplingSettings

    ray = ray_local
    tok = AutoTokenizer.from_pretrained(tiny_grpo_checkpoint["model"])
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True,
                                       return_dict=False) for q in ("Calculate 12 + 7.", "What is 3 * 4?", "Name a color.")]
    settings = SamplingSettings(samples_per_prompt=2, max_response_tokens=N_TOKENS, temperature=1.0, seed=7, ignore_eos=True)
    sender = _connect(ray, partial_rollout)
    reference = ray.get(partial_rollout.generate.remote(prompts, settings))  # the checkpoint's weights throughout
    assert all(s.token_versions == [0] * N_TOKENS for g in reference for s in g)

    other = AutoModelForCausalLM.from_pretrained(tiny_grpo_checkpoint["model"], torch_dtype=torch.float32)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    running = partial_rollout.generate.remote(prompts, settings)
    deadline = time.monotonic() + 60
    while ray.get(partial_rollout.diagnostic_tokens_in_flight.remote()) < 6 * 20:  # ~20 tokens per sample
        assert time.monotonic() < deadline, "the engine generated no tokens"
        time.sleep(0.005)
    updated = partial_rollout.update_weights.remote(sender.update_info(other), 1)
    sender.send(other)
    assert ray.get(updated) == 1
    groups = ray.get(running)

    spans = []
    for group, ref_group in zip(groups, reference):
        for sample, ref in zip(group, ref_group):
            versions = sample.token_versions
            assert len(sample.response_ids) == len(versions) == len(sample.response_logprobs) == N_TOKENS
            assert versions == sorted(versions) and set(versions) <= {0, 1}, versions
            assert sample.weight_version == min(versions) == sample.versions()[0]
            b = versions.count(0)
            spans.append(b)
            assert sample.response_ids[:b] == ref.response_ids[:b]  # the old weights' tokens, none lost or repeated
            torch.testing.assert_close(torch.tensor(sample.response_logprobs[:b]), torch.tensor(ref.response_logprobs[:b]))
            if b < N_TOKENS:
                assert sample.response_ids[b:] != ref.response_ids[b:]  # the new weights took over at the boundary
    assert any(0 < b < N_TOKENS for b in spans), f"the update landed outside every request: version-0 spans {spans}"
    assert ray.get(partial_rollout.weight_version.remote()) == 1
    # the engine goes on normally after the update: a new request is entirely version 1
    [[fresh]] = ray.get(partial_rollout.generate.remote(prompts[:1], SamplingSettings(samples_per_prompt=1, max_response_tokens=8,
                                                                                          temperature=0.0, ignore_eos=True)))
    assert fresh.token_versions == [1] * 8


def test_partial_rollouts_need_staleness(tiny_grpo_checkpoint, tmp_path):
    from core.config import ConfigError
    from rl.config import check_config
    from tests.rl.conftest import grpo_test_config

    cfg = grpo_test_config(tiny_grpo_checkpoint, tmp_path, max_staleness=0, rollout={"partial_rollouts": True})
    with pytest.raises(ConfigError, match="partial_rollouts needs max_staleness >= 1"):
        check_config(cfg)


def test_grpo_with_partial_rollouts(ray_local, partial_rollout, tiny_grpo_checkpoint, tmp_path):
    """A GRPO run whose syncs land mid-request: it trains on every step's batch, no sample older than the bound
    (its oldest token), some samples spanning two versions, and the checkpoint holds the batch in flight whole."""
    import json

    from rl.checkpoint import load_pending
    from rl.grpo import run_grpo
    from tests.rl.conftest import grpo_test_config

    cfg = grpo_test_config(tiny_grpo_checkpoint, tmp_path / "run", max_staleness=1, max_steps=4, checkpoint_every_steps=2,
                           rollout={"partial_rollouts": True, "max_response_tokens": 128, "ignore_eos": True})
    summary = run_grpo(cfg, rollout=partial_rollout)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert summary["steps"] == 4 and summary["weight_version"] == 4 and len(rows) == 4
    assert all(r["staleness_max"] <= 1 for r in rows)
    assert sum(r["partial_samples"] for r in rows) > 0, "no sync landed mid-request"
    assert all(0 <= r["staleness_tokens_mean"] <= 1 for r in rows)
    pending = load_pending(tmp_path / "run" / "checkpoints" / "step_2")
    # the batches of steps 3 and 4 (the second started right after step 2's sync) were in flight: saved whole
    assert sorted(pending) == [2, 3]
    assert all(len(s.response_ids) == len(s.versions()) > 0 and s.finish_reason == "length"
               for b in pending.values() for s in b.samples)
