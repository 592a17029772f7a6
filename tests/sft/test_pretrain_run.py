"""`run_pretrain` end to end at toy size, then again distilling from the first run's checkpoint."""

import json

from rl.config import load_config
from sft.config import PretrainConfig
from sft.pretrain import run_pretrain


def _cfg(tmp_path, name, *extra):
    return load_config(PretrainConfig, None, [
        f"run_dir={tmp_path / name}", f"data.out_dir={tmp_path / 'data'}", "data.train_rows={math: 200, chat: 50}",
        "data.test_rows_per_domain=10", "tokenizer.vocab_size=300", "model.hidden_size=64", "model.num_layers=2",
        "model.num_attention_heads=2", "model.num_key_value_heads=1", "model.intermediate_size=128",
        "train.max_steps=12", "train.rows_per_step=2", "train.sequence_tokens=256", "optim.lr_warmup_steps=2", *extra,
    ])


def test_pretrain_then_distill_from_it(tmp_path):
    first = run_pretrain(_cfg(tmp_path, "teacher"))
    assert first["steps"] == 12 and 0.0 <= first["heldout_math_accuracy"] <= 1.0
    final = tmp_path / "teacher" / "final"
    assert (final / "model.safetensors").exists() and (final / "tokenizer.json").exists()
    assert json.loads((tmp_path / "teacher" / "summary.json").read_text())["parameters"] == first["parameters"]

    second = run_pretrain(_cfg(tmp_path, "student", f"distill.teacher_path={final}", "distill.kd_weight=0.5"))
    assert second["vocab_size"] == first["vocab_size"]  # the student took the teacher's tokenizer
    rows = [json.loads(line) for line in (tmp_path / "student" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all("kd" in r for r in rows)
    assert (tmp_path / "student" / "config.yaml").exists()
