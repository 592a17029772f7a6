"""Shared fixtures of the GRPO tests: one tiny checkpoint, one local Ray, one vLLM rollout engine per session.

The checkpoint is built here (small synthetic data, a short pretraining run on a 2-layer model with head_dim 32,
which vLLM's CPU attention needs), never taken from `runs/`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_grpo_checkpoint(tmp_path_factory) -> dict:
    """{'model': HF folder, 'data': dataset folder} of a ~0.1M-parameter Qwen2 trained for a few steps."""
    from core.sections import ModelConfig, SyntheticDataConfig
    from mixrl.data.synthetic import ensure_datasets
    from sft.config import PackedTrainConfig, PretrainConfig, TokenizerConfig
    from sft.pretrain import run_pretrain

    root = tmp_path_factory.mktemp("grpo_ckpt")
    cfg = PretrainConfig(
        run_dir=str(root / "pretrain"),
        data=SyntheticDataConfig(out_dir=str(root / "data"), train_rows={"math": 300, "ifeval": 100}, test_rows_per_domain=20),
        tokenizer=TokenizerConfig(vocab_size=400, training_docs=400),
        model=ModelConfig(hidden_size=64, num_layers=2, num_attention_heads=2, num_key_value_heads=1, intermediate_size=128,
                          max_position_embeddings=512),
        train=PackedTrainConfig(max_steps=15, sequence_tokens=256, rows_per_step=4, log_every_steps=100),
    )
    cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, lr_warmup_steps=2))
    ensure_datasets(cfg.data)
    summary = run_pretrain(cfg)
    return {"model": summary["checkpoint"], "data": str(root / "data")}


def grpo_test_config(ckpt: dict, run_dir: Path, **overrides):
    """A GRPOConfig sized for tests: 4 prompts × 4 samples × 16 tokens, 2 steps."""
    from core.config import build
    from rl.config import GRPOConfig

    raw = {
        "run_dir": str(run_dir),
        "model_path": ckpt["model"],
        "sources": [{"name": "math", "path": f"{ckpt['data']}/math/train.parquet", "proportion": 3.0},
                    {"name": "ifeval", "path": f"{ckpt['data']}/ifeval/train.parquet", "proportion": 1.0, "mode": "mixed"}],
        "prompts_per_step": 4,
        "max_steps": 2,
        # fp32 on both sides whatever the machine: tests compare the engine's numbers with the trainer's
        # (precision `auto` is exercised by the learning test and the quickstart)
        "rollout": {"samples_per_prompt": 4, "max_response_tokens": 16, "max_model_len": 256, "dtype": "float32"},
        "trainer": {"micro_batch_sequences": 8, "dtype": "float32",
                    "optim": {"lr_peak": 1e-3, "lr_warmup_steps": 0, "lr_min_ratio": 1.0}},
        "ray": {"num_cpus": 2},
    }
    for key, value in overrides.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and isinstance(raw.get(key), dict) else value
    return build(GRPOConfig, raw, source="test")


@pytest.fixture(scope="session")
def ray_local():
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def shared_rollout(ray_local, tiny_grpo_checkpoint, tmp_path_factory):
    """One started rollout actor for every in-process test (each run syncs its own weights in first)."""
    from rl.actors import start_rollout

    cfg = grpo_test_config(tiny_grpo_checkpoint, tmp_path_factory.mktemp("unused"))
    actor = start_rollout(cfg, tiny_grpo_checkpoint["model"])
    yield actor
    ray_local.get(actor.shutdown.remote())
    ray_local.kill(actor)
