"""`run_pretrain` end to end at toy size, then again distilling from the first run's checkpoint."""

import json

from core.config import load_config
from core.model import load_checkpoint
from mixrl.data.synthetic import ensure_datasets
from sft.config import PretrainConfig
from sft.pretrain import base_model_math_accuracy, run_pretrain


def _cfg(tmp_path, name, *extra):
    cfg = load_config(PretrainConfig, None, [
        f"run_dir={tmp_path / name}", f"data.out_dir={tmp_path / 'data'}", "data.train_rows={math: 200, chat: 50}",
        "data.test_rows_per_domain=10", "tokenizer.vocab_size=300", "model.hidden_size=64", "model.num_layers=2",
        "model.num_attention_heads=2", "model.num_key_value_heads=1", "model.intermediate_size=128",
        "train.max_steps=12", "train.rows_per_step=2", "train.sequence_tokens=256", "optim.lr_warmup_steps=2", *extra,
    ])
    ensure_datasets(cfg.data)
    return cfg


def test_pretrain_then_distill_from_it(tmp_path):
    first = run_pretrain(_cfg(tmp_path, "teacher"))
    assert first["steps"] == 12
    final = tmp_path / "teacher" / "final"
    assert (final / "model.safetensors").exists() and (final / "tokenizer.json").exists()
    # the reported held-out accuracy is the saved model's own (recomputed from the checkpoint on disk)
    model, tokenizer = load_checkpoint(final)
    assert first["heldout_math_accuracy"] == base_model_math_accuracy(model, tokenizer, tmp_path / "data" / "math" / "test.parquet")
    losses = [json.loads(line)["loss"] for line in (tmp_path / "teacher" / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0]  # 12 steps of a random-init model on its own corpus: the loss falls
    assert json.loads((tmp_path / "teacher" / "summary.json").read_text())["parameters"] == first["parameters"]

    second = run_pretrain(_cfg(tmp_path, "student", f"distill.teacher_path={final}", "distill.kd_weight=0.5"))
    assert second["vocab_size"] == first["vocab_size"]  # the student took the teacher's tokenizer
    rows = [json.loads(line) for line in (tmp_path / "student" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all("kd" in r for r in rows)
    assert (tmp_path / "student" / "config.yaml").exists()
