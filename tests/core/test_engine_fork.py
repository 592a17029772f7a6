"""A forked engine core (`core.engine.fork_engine_core`, what rollout actors use): vLLM's engine-core process is
forked from the process that started the engine, runs the model on the engine's threads (not the parent's count),
and samples exactly what vLLM's own spawned engine core samples for the same seeds; and the engine's texts, decoded
once per sample, are what vLLM's own detokenizer writes.

One fresh Python process runs both engines (fork first, then spawn): a fork is only safe in a process that has run
no multi-threaded torch op, which a pytest process that trained models before cannot promise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "mixrl" / "assets" / "base_tiny"
# not torch's default (every core; torch caps OMP_NUM_THREADS at the core count): a forked child that kept its
# parent's thread count would show it
THREADS = 1

SCRIPT = r"""
import asyncio, gc, json, sys

import psutil

from core.engine import RolloutEngine, SamplingSettings, response_text


def torch_threads(worker=None):
    import torch

    return torch.get_num_threads()


async def vllm_texts(engine):
    # vLLM's own token-by-token texts (detokenize=True) beside `response_text` of the same completions
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    tok = engine.engine.tokenizer
    questions = ["What is 7 + 5?", "Write a function that returns the sum of a list.", "Say hello in two words."]
    pairs = []
    for i, q in enumerate(questions):
        ids = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True)
        ids = list(ids["input_ids"]) if hasattr(ids, "keys") else list(ids)
        params = SamplingParams(n=6, max_tokens=48, temperature=1.0, seed=i, skip_special_tokens=True,
                                output_kind=RequestOutputKind.FINAL_ONLY)
        async for out in engine.engine.generate({"prompt_token_ids": ids}, params, request_id=f"text-{i}"):
            final = out
        pairs += [(c.text, response_text(tok, c), c.finish_reason) for c in final.outputs]
    return pairs


async def run(model, fork):
    engine = RolloutEngine(model, dtype="float32", max_model_len=128, max_num_seqs=8, cpu_threads=%d, fork_core=fork)
    await engine.start()
    heap = {"gc_enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}  # this process's, once the engine runs
    try:
        groups = await engine.generate([[5, 6, 7], [8, 9]], SamplingSettings(samples_per_prompt=3, max_response_tokens=12, seed=7))
        commands = [" ".join(psutil.Process(pid).cmdline()) for pid in engine.core_pids if psutil.pid_exists(pid)]
        return {"forked": engine.core_forked, "threads": await engine.engine.collective_rpc(torch_threads),
                "spawned": any("multiprocessing" in c for c in commands), "cores": len(engine.core_pids),
                "tokens": [[s.response_ids for s in g] for g in groups],
                "logprobs": [[s.response_logprobs for s in g] for g in groups],
                "texts": await vllm_texts(engine) if fork else [], **heap}
    finally:
        engine.shutdown()


print("RESULT " + json.dumps([asyncio.run(run(sys.argv[1], True)), asyncio.run(run(sys.argv[1], False))]))
""" % THREADS


@pytest.fixture(scope="module")
def fork_then_spawn() -> tuple[dict, dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VLLM_ALLOW_INSECURE_SERIALIZATION": "1"}  # a function to collective_rpc
    env.pop("OMP_NUM_THREADS", None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(MODEL)], capture_output=True, text=True, env=env,
                          timeout=300, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    forked, spawned = json.loads(lines[-1].removeprefix("RESULT "))
    return forked, spawned


def test_the_engine_core_is_forked_only_when_asked(fork_then_spawn):
    forked, spawned = fork_then_spawn
    assert forked["forked"] and not forked["spawned"] and forked["cores"] >= 1
    assert not spawned["forked"] and spawned["spawned"]  # vLLM's own start: `python -c from multiprocessing.spawn ...`


def test_a_forked_engine_core_runs_on_the_engines_threads(fork_then_spawn):
    forked, spawned = fork_then_spawn
    assert forked["threads"] == [THREADS] == spawned["threads"]


def test_a_response_is_decoded_as_vllms_detokenizer_writes_it(fork_then_spawn):
    """The engine asks vLLM for tokens only and decodes each finished sample once (`response_text`): the texts
    must be vLLM's own, for samples that ended on EOS and for samples cut at max_tokens."""
    texts = fork_then_spawn[0]["texts"]
    assert {reason for _, _, reason in texts} == {"stop", "length"}
    for theirs, ours, _ in texts:
        assert ours == theirs


def test_a_forked_engine_core_samples_what_a_spawned_one_does(fork_then_spawn):
    forked, spawned = fork_then_spawn
    assert forked["tokens"] == spawned["tokens"] and all(s for g in forked["tokens"] for s in g)
    for g_fork, g_spawn in zip(forked["logprobs"], spawned["logprobs"]):
        for a, b in zip(g_fork, g_spawn):
            assert a == pytest.approx(b, abs=1e-5)


def test_an_engine_start_leaves_vllms_objects_frozen_and_the_collector_on(fork_then_spawn):
    """vLLM's import makes about a million objects; the engine's start freezes them (`core.engine.imports_frozen`,
    and again before its core forks), so neither process's collector walks them again: 2 s of the quickstart's
    start-up. The collector still runs for what the processes make from then on."""
    forked, _ = fork_then_spawn
    assert forked["gc_enabled"]
    assert forked["frozen"] > 200_000
