"""The packed-sequence training loop shared by compact pretraining and SFT.

One optimizer step = `rows_per_step` packed rows; loss = token-mean cross-entropy over trained tokens, mixed
with logit-alignment distillation when a teacher is given. AdamW (no decay on norms and biases), linear
warm-up then cosine decay, gradient clipping, fp32 or bf16 autocast, on `train.device` (auto = CUDA when visible).
Metrics go to TensorBoard, JSONL, the console and a PNG.
"""

from __future__ import annotations

import math
import pickle
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from core.checkpoint import find_resume_checkpoint, save_checkpoint
from core.device import autocast, resolve_device, resolve_dtype
from core.lean_ops import apply_lean_ops
from core.metrics import MetricsLogger
from core.run_dir import hold_run_dir
from core.optim import apply_optim_config, build_optimizer, lr_at
from core.sections import OptimConfig
from sft.config import DistillConfig, PackedTrainConfig
from sft.distill import distillation_loss
from sft.packing import collate_rows, token_losses

STATE_FILE = "state.pt"


@dataclass
class TrainSummary:
    steps: int
    seconds: float
    trained_tokens: int
    final_loss: float
    tokens_per_s: float


def save_training_state(run_dir: str | Path, model, optimizer, rng: random.Random, *, step: int, order: list[int],
                        trained_tokens: int, keep: int) -> Path:
    """Everything needed to continue exactly — weights, optimizer moments, data order, RNG states, step — as
    RUN_DIR/checkpoints/step_N/state.pt (`core.checkpoint`: complete or absent, never half written)."""
    state = {
        "step": step, "order": list(order), "trained_tokens": trained_tokens,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "python_rng": _plain_rng(rng.getstate()), "torch_rng": torch.get_rng_state(),
    }
    return save_checkpoint(run_dir, step, lambda folder: torch.save(state, folder / STATE_FILE), keep=keep)


def load_training_state(checkpoint: Path, model, optimizer, rng: random.Random, optim: OptimConfig) -> tuple[int, list[int], int]:
    """Restore a `save_training_state` checkpoint in place, with `optim`'s hyperparameters (this invocation's, not
    the saved run's); returns (step, data order, trained tokens)."""
    try:  # tensors and plain containers only: a crafted pickle cannot run code here
        state = torch.load(checkpoint / STATE_FILE, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        raise pickle.UnpicklingError(
            f"{checkpoint / STATE_FILE}: refusing to load it: it holds objects other than tensors and plain containers "
            f"(a crafted file could run code). {str(e).splitlines()[0]}") from None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    apply_optim_config(optimizer, optim)
    version, mt, gauss = state["python_rng"]
    rng.setstate((version, tuple(mt), gauss))
    torch.set_rng_state(state["torch_rng"])
    return state["step"], state["order"], state["trained_tokens"]


def _plain_rng(state: tuple) -> list:
    """`random.Random.getstate()` as lists (weights-only loadable)."""
    version, mt, gauss = state
    return [version, list(mt), gauss]


def set_threads(num_threads: int) -> None:
    if num_threads > 0:
        torch.set_num_threads(num_threads)


def train_packed(
    model: torch.nn.Module,
    rows: list[tuple[list[int], list[int], list[int]]],
    *,
    train: PackedTrainConfig,
    optim: OptimConfig,
    run_dir: str | Path,
    stage: str,
    seed: int = 0,
    teacher: torch.nn.Module | None = None,
    distill: DistillConfig | None = None,
    shuffle: bool = True,
) -> TrainSummary:
    """Train `model` in place on packed `rows`, cycling (reshuffled) if `train.max_steps` exceeds one pass.

    `train.max_steps == 0` means exactly one pass over the rows (SFT: the epochs are already in the rows).
    """
    if not rows:
        raise ValueError(f"{stage}: no training rows (is the dataset empty?)")
    set_threads(train.num_threads)
    device = resolve_device(train.device)
    model.to(device)
    if teacher is not None:
        teacher.to(device)
    if train.lean_activations:
        apply_lean_ops(model)
    if train.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    per_pass = math.ceil(len(rows) / train.rows_per_step)
    total_steps = train.max_steps or per_pass
    optimizer = build_optimizer(model, optim)
    rng = random.Random(seed)
    order: list[int] = []
    model.train()
    if teacher is not None:
        teacher.eval()
    start = time.perf_counter()
    trained_tokens = 0
    loss_value = float("nan")
    step = 0
    saved: Path | None = None
    checkpoint = find_resume_checkpoint(train.resume, run_dir)
    if checkpoint is not None:
        step, order, trained_tokens = load_training_state(checkpoint, model, optimizer, rng, optim)
        print(f"[{stage}] resumed from {checkpoint} at step {step}", flush=True)
    first_step = step
    dtype = resolve_dtype(train.dtype, device)  # auto: bf16 only where this hardware multiplies it faster
    with hold_run_dir(run_dir), MetricsLogger(run_dir, stage=stage, total_steps=total_steps, print_every=train.log_every_steps) as log:
        while step < total_steps:
            if train.max_minutes and time.perf_counter() - start > train.max_minutes * 60:
                print(f"[{stage}] stopping at step {step}: train.max_minutes={train.max_minutes} reached", flush=True)
                break
            if len(order) < train.rows_per_step:
                fresh = list(range(len(rows)))
                if shuffle:
                    rng.shuffle(fresh)
                order.extend(fresh)
            batch = collate_rows([rows[i] for i in order[: train.rows_per_step]]).to(device)
            del order[: train.rows_per_step]
            lr = lr_at(step, lr_peak=optim.lr_peak, warmup_steps=optim.lr_warmup_steps, total_steps=total_steps, min_ratio=optim.lr_min_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast(device, dtype):
                losses, mask, logits = token_losses(model, batch)
                ce = losses.sum() / mask.sum().clamp(min=1)
                loss = ce
                metrics = {"loss": 0.0, "ce": float(ce.detach()), "lr": lr}
                if teacher is not None and distill is not None and distill.kd_weight > 0:
                    with torch.no_grad():
                        teacher_logits = teacher(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits
                    kd = distillation_loss(logits[:, :-1], teacher_logits[:, :-1], mask, distill.temperature)
                    loss = (1 - distill.kd_weight) * ce + distill.kd_weight * kd
                    metrics["kd"] = float(kd.detach())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip_norm)
            optimizer.step()
            step += 1
            tokens = int(mask.sum())
            trained_tokens += tokens
            loss_value = float(loss.detach())
            metrics["loss"] = loss_value
            metrics["grad_norm"] = float(grad_norm)
            log.log(step, metrics, tokens=tokens)
            if train.checkpoint_every_steps and step % train.checkpoint_every_steps == 0:
                saved = save_training_state(run_dir, model, optimizer, rng, step=step, order=order,
                                            trained_tokens=trained_tokens, keep=train.keep_checkpoints)
        if step > first_step and (saved is None or saved.name != f"step_{step}"):  # the end (or the time box) is a checkpoint too
            save_training_state(run_dir, model, optimizer, rng, step=step, order=order, trained_tokens=trained_tokens,
                                keep=train.keep_checkpoints)
        log.plot(["loss", "lr", "tokens_per_s"] + (["kd"] if teacher is not None else []))
    seconds = time.perf_counter() - start
    model.eval()
    if train.gradient_checkpointing:
        model.gradient_checkpointing_disable()
    model.to("cpu")  # callers save and evaluate it where it is cheap to keep; training state is in the checkpoint
    return TrainSummary(
        steps=step,
        seconds=seconds,
        trained_tokens=trained_tokens,
        final_loss=loss_value,
        tokens_per_s=trained_tokens / max(seconds, 1e-9),
    )
