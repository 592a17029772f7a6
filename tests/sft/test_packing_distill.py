"""Packing with sequence isolation equals unpacked training; distillation moves the student to the teacher."""

import dataclasses
import random

import pytest
import torch

from core.chat import IGNORE_INDEX
from core.checkpoint import list_checkpoints
from core.optim import build_optimizer, lr_at
from core.sections import ModelConfig, OptimConfig
from sft.config import DistillConfig, PackedTrainConfig
from sft.distill import distillation_loss, distillation_token_kl
from core.model import build_model, count_parameters, load_checkpoint, save_checkpoint
from sft.packing import collate_rows, pack_samples, token_losses
from sft.train_loop import load_training_state, train_packed


def _samples(tokenizer):
    texts = ["What is 12 + 30?\n12 + 30 = 42", "Hi", "def f(xs): return sum(xs) and more text here", "7 + 8 = 15"]
    samples = []
    for text in texts:
        ids = tokenizer.encode(text, add_special_tokens=False)
        labels = [IGNORE_INDEX] * 2 + ids[2:]  # a masked prompt prefix, like SFT
        samples.append((ids, labels))
    return samples


def _unpacked_loss(model, samples):
    total, count = 0.0, 0
    for ids, labels in samples:
        rows, _ = pack_samples([(ids, labels)], len(ids), pad_id=0)
        losses, mask, _ = token_losses(model, collate_rows(rows))
        total, count = total + float(losses.sum()), count + int(mask.sum())
    return total / count


def test_packed_loss_equals_unpacked_loss(tokenizer, tiny_model):
    samples = _samples(tokenizer)
    rows, stats = pack_samples(samples, sequence_tokens=64, pad_id=tokenizer.pad_token_id)
    assert stats.rows < len(samples)  # several samples really share a row
    batch = collate_rows(rows)
    with torch.no_grad():
        losses, mask, _ = token_losses(tiny_model, batch)
        packed = float(losses.sum() / mask.sum())
        unpacked = _unpacked_loss(tiny_model, samples)
    assert packed == pytest.approx(unpacked, rel=1e-5)
    # Negative control: without restarting positions, samples see each other and the loss changes.
    leaky = collate_rows([(r[0], list(range(len(r[0]))), r[2]) for r in rows])
    with torch.no_grad():
        losses, mask, _ = token_losses(tiny_model, leaky)
    assert float(losses.sum() / mask.sum()) != pytest.approx(unpacked, rel=1e-4)


def test_packing_layout(tokenizer):
    samples = [([1, 2, 3], [1, 2, 3]), ([4, 5], [IGNORE_INDEX, 5]), ([6, 7, 8, 9, 10, 11], [6, 7, 8, 9, 10, 11])]
    rows, stats = pack_samples(samples, sequence_tokens=6, pad_id=0)
    assert rows[0] == ([1, 2, 3, 4, 5, 0], [0, 1, 2, 0, 1, 0], [IGNORE_INDEX, 2, 3, IGNORE_INDEX, 5, IGNORE_INDEX])
    assert rows[1] == ([6, 7, 8, 9, 10, 11], [0, 1, 2, 3, 4, 5], [IGNORE_INDEX, 7, 8, 9, 10, 11])
    assert stats.truncated_samples == 0 and stats.fill_ratio == pytest.approx(11 / 12)
    rows, stats = pack_samples([(list(range(1, 10)), list(range(1, 10)))], sequence_tokens=4, pad_id=0)
    assert stats.truncated_samples == 1 and rows[0][0] == [1, 2, 3, 4]


def test_distillation_kl_hand_value():
    teacher = torch.tensor([[0.0, 0.0]])
    student = torch.tensor([[torch.log(torch.tensor(3.0)), 0.0]])
    # KL([.5,.5] || [.75,.25]) = .5 ln(.5/.75) + .5 ln(.5/.25)
    expected = 0.5 * torch.log(torch.tensor(0.5 / 0.75)) + 0.5 * torch.log(torch.tensor(2.0))
    assert float(distillation_token_kl(student, teacher, 1.0)) == pytest.approx(float(expected), rel=1e-6)
    assert float(distillation_token_kl(teacher, teacher, 2.0)) == pytest.approx(0.0, abs=1e-7)
    # temperature 2 on doubled logits is the same distributions, scaled by T^2 = 4
    assert float(distillation_token_kl(2 * student, 2 * teacher, 2.0)) == pytest.approx(4 * float(expected), rel=1e-5)
    with pytest.raises(ValueError, match="shared tokenizer"):
        distillation_token_kl(torch.zeros(1, 3), torch.zeros(1, 4), 1.0)


def test_distillation_moves_student_toward_teacher(tokenizer, tmp_path):
    small = ModelConfig(hidden_size=32, num_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256)
    teacher = build_model(small, tokenizer, seed=1)
    student = build_model(small, tokenizer, seed=2)
    samples = _samples(tokenizer) * 4
    rows, _ = pack_samples(samples, 64, pad_id=tokenizer.pad_token_id)
    batch = collate_rows(rows)

    def kl_to_teacher():
        with torch.no_grad():
            _, mask, s_logits = token_losses(student, batch)
            t_logits = teacher(input_ids=batch.input_ids, position_ids=batch.position_ids).logits
            return float(distillation_loss(s_logits[:, :-1], t_logits[:, :-1], mask, 1.0))

    before = kl_to_teacher()
    train_packed(
        student, rows, train=PackedTrainConfig(max_steps=30, rows_per_step=2, log_every_steps=100),
        optim=OptimConfig(lr_peak=3e-3, lr_warmup_steps=1), run_dir=tmp_path, stage="distill",
        teacher=teacher, distill=DistillConfig(temperature=1.0, kd_weight=1.0),
    )
    after = kl_to_teacher()
    assert after < 0.5 * before, (before, after)
    assert (tmp_path / "metrics.jsonl").exists() and list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_model_save_load_round_trip(tokenizer, tiny_model, tmp_path):
    save_checkpoint(tiny_model, tokenizer, tmp_path / "ckpt")
    model, tok = load_checkpoint(tmp_path / "ckpt")
    ids = torch.tensor([tokenizer.encode("What is 1 + 2?", add_special_tokens=False)])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, tiny_model(ids).logits)
    assert count_parameters(model) == count_parameters(tiny_model)
    assert tok.chat_template == tokenizer.chat_template
    assert model.generation_config.eos_token_id == tiny_model.generation_config.eos_token_id


def test_lr_schedule_shape():
    lrs = [lr_at(s, lr_peak=1.0, warmup_steps=10, total_steps=100, min_ratio=0.1) for s in range(101)]
    assert lrs[9] == pytest.approx(1.0) and max(lrs) == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(0.1)


def test_teacher_with_another_tokenizer_is_refused(tokenizer, tiny_model, tmp_path):
    from sft.distill import load_teacher
    from core.tokenizer import train_tokenizer

    save_checkpoint(tiny_model, tokenizer, tmp_path / "teacher")
    assert load_teacher(str(tmp_path / "teacher"), tokenizer) is not None
    assert load_teacher(None, tokenizer) is None
    other = train_tokenizer(["completely different text corpus"] * 50, vocab_size=300)
    with pytest.raises(ValueError, match="tokenizer differs"):
        load_teacher(str(tmp_path / "teacher"), other)


def test_killed_run_resumes_to_the_same_weights(tokenizer, tmp_path, monkeypatch):
    from core.metrics import MetricsLogger

    small = ModelConfig(hidden_size=32, num_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256)
    rows, _ = pack_samples(_samples(tokenizer) * 6, 48, pad_id=tokenizer.pad_token_id)
    common = dict(optim=OptimConfig(lr_peak=3e-3, lr_warmup_steps=2), stage="t", seed=3)
    train = PackedTrainConfig(max_steps=10, rows_per_step=2, checkpoint_every_steps=4, log_every_steps=100)

    reference = build_model(small, tokenizer, seed=0)
    train_packed(reference, rows, train=train, run_dir=tmp_path / "a", **common)

    class Killed(Exception):
        pass

    original = MetricsLogger.log

    def dies_at_step_7(self, step, metrics, **kw):
        if step == 7:
            raise Killed
        return original(self, step, metrics, **kw)

    monkeypatch.setattr(MetricsLogger, "log", dies_at_step_7)
    interrupted = build_model(small, tokenizer, seed=0)
    with pytest.raises(Killed):
        train_packed(interrupted, rows, train=train, run_dir=tmp_path / "b", **common)
    monkeypatch.setattr(MetricsLogger, "log", original)

    resumed = build_model(small, tokenizer, seed=0)  # a new process would start from scratch weights
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["step_4"]  # the kill left the last complete one
    summary = train_packed(resumed, rows, train=dataclasses.replace(train, resume="auto"), run_dir=tmp_path / "b", **common)
    assert summary.steps == 10
    for (name, a), (_, b) in zip(reference.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    # and resuming is not a no-op: the interrupted weights (step 7) differ from the final ones
    assert not torch.equal(interrupted.state_dict()["lm_head.weight"], resumed.state_dict()["lm_head.weight"])


def test_resume_takes_this_invocations_weight_decay_and_betas(tokenizer, tmp_path):
    """A run saved with weight decay 0 and resumed with 0.1 (and other betas) trains with the new values: the
    report restarts with new hyperparameters to break plateaus."""
    small = ModelConfig(hidden_size=32, num_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256)
    rows, _ = pack_samples(_samples(tokenizer) * 6, 48, pad_id=tokenizer.pad_token_id)
    first = dict(optim=OptimConfig(lr_peak=3e-3, lr_warmup_steps=0, weight_decay=0.0), stage="t", seed=3)
    train = PackedTrainConfig(max_steps=4, rows_per_step=2, log_every_steps=100)
    train_packed(build_model(small, tokenizer, seed=0), rows, train=train, run_dir=tmp_path, **first)
    [ckpt] = list_checkpoints(tmp_path)

    new = OptimConfig(lr_peak=3e-3, lr_warmup_steps=0, weight_decay=0.1, adam_beta1=0.5, adam_beta2=0.9)
    model = build_model(small, tokenizer, seed=0)
    optimizer = build_optimizer(model, first["optim"])
    load_training_state(ckpt, model, optimizer, random.Random(0), new)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["decay"]["weight_decay"] == 0.1 and groups["no_decay"]["weight_decay"] == 0.0
    assert all(g["betas"] == (0.5, 0.9) for g in optimizer.param_groups)

    # and the resumed run's weights differ from a resume with the old hyperparameters
    longer = dataclasses.replace(train, max_steps=6, resume=str(ckpt))
    with_new, with_old = build_model(small, tokenizer, seed=0), build_model(small, tokenizer, seed=0)
    train_packed(with_new, rows, train=longer, run_dir=tmp_path / "new", **{**first, "optim": new})
    train_packed(with_old, rows, train=longer, run_dir=tmp_path / "old", **first)
    assert not torch.equal(with_new.state_dict()["model.layers.0.mlp.up_proj.weight"],
                           with_old.state_dict()["model.layers.0.mlp.up_proj.weight"])


def test_lean_activations_train_to_the_same_weights(tokenizer, tmp_path):
    """`train.lean_activations` (the default) swaps the model's MLPs and norms for `core.lean_ops`' and trains the
    packed rows to the weights the modules' own forward and backward reach."""
    small = ModelConfig(hidden_size=32, num_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256)
    rows, _ = pack_samples(_samples(tokenizer) * 6, 48, pad_id=tokenizer.pad_token_id)
    common = dict(optim=OptimConfig(lr_peak=3e-3, lr_warmup_steps=2), stage="t", seed=3)
    models = {}
    for lean in (True, False):
        train = PackedTrainConfig(max_steps=6, rows_per_step=2, log_every_steps=100, dtype="float32", lean_activations=lean)
        models[lean] = build_model(small, tokenizer, seed=0)
        train_packed(models[lean], rows, train=train, run_dir=tmp_path / str(lean), **common)
    assert models[True].model.layers[0].mlp.forward.__name__ == "_lean_mlp_forward"
    assert models[False].model.layers[0].mlp.forward.__name__ == "forward"
    for (name, a), (_, b) in zip(models[True].state_dict().items(), models[False].state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    assert not torch.equal(models[True].state_dict()["lm_head.weight"], build_model(small, tokenizer, seed=0).state_dict()["lm_head.weight"])
