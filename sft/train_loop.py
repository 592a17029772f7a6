"""The packed-sequence training loop shared by compact pretraining and SFT.

One optimizer step = `rows_per_step` packed rows; loss = token-mean cross-entropy over trained tokens, mixed
with logit-alignment distillation when a teacher is given. AdamW (no decay on norms and biases), linear
warm-up then cosine decay, gradient clipping, fp32 or bf16 autocast. Metrics go to TensorBoard, JSONL, the
console and a PNG.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from sft.config import DistillConfig, OptimConfig, PackedTrainConfig
from sft.distill import distillation_loss
from sft.metrics import MetricsLogger
from sft.packing import collate_rows, token_losses


@dataclass
class TrainSummary:
    steps: int
    seconds: float
    trained_tokens: int
    final_loss: float
    tokens_per_s: float


def lr_at(step: int, *, lr_peak: float, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Linear warm-up to `lr_peak` over `warmup_steps`, then cosine decay to `min_ratio * lr_peak`.

    >>> lr_at(0, lr_peak=1.0, warmup_steps=10, total_steps=110, min_ratio=0.1)
    0.1
    >>> lr_at(110, lr_peak=1.0, warmup_steps=10, total_steps=110, min_ratio=0.1)
    0.1
    """
    if step < warmup_steps:
        return lr_peak * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return lr_peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW; weight decay only on matrices (not norms, biases)."""
    decay, no_decay = [], []
    for p in {id(p): p for p in model.parameters() if p.requires_grad}.values():
        (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr_peak, betas=(cfg.adam_beta1, cfg.adam_beta2))


def save_training_state(path: Path, model, optimizer, rng: random.Random, *, step: int, order: list[int],
                        trained_tokens: int) -> None:
    """Everything needed to continue exactly: weights, optimizer moments, data order, RNG states, step.

    Written to a temporary file and renamed, so a kill mid-write leaves the previous checkpoint intact.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "step": step, "order": list(order), "trained_tokens": trained_tokens,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "python_rng": rng.getstate(), "torch_rng": torch.get_rng_state(),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_training_state(path: Path, model, optimizer, rng: random.Random) -> tuple[int, list[int], int]:
    """Restore a `save_training_state` checkpoint in place; returns (step, data order, trained tokens)."""
    state = torch.load(path, weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    rng.setstate(state["python_rng"])
    torch.set_rng_state(state["torch_rng"])
    return state["step"], state["order"], state["trained_tokens"]


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
    per_pass = math.ceil(len(rows) / train.rows_per_step)
    total_steps = train.max_steps or per_pass
    optimizer = build_optimizer(model, optim)
    rng = random.Random(seed)
    order: list[int] = []
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=train.dtype == "bfloat16")
    model.train()
    if teacher is not None:
        teacher.eval()
    start = time.perf_counter()
    trained_tokens = 0
    loss_value = float("nan")
    step = 0
    checkpoint = Path(run_dir) / "checkpoint" / "state.pt"
    if train.resume and checkpoint.exists():
        step, order, trained_tokens = load_training_state(checkpoint, model, optimizer, rng)
        print(f"[{stage}] resumed from {checkpoint} at step {step}", flush=True)
    with MetricsLogger(run_dir, stage=stage, total_steps=total_steps, print_every=train.log_every_steps) as log:
        while step < total_steps:
            if train.max_minutes and time.perf_counter() - start > train.max_minutes * 60:
                print(f"[{stage}] stopping at step {step}: train.max_minutes={train.max_minutes} reached", flush=True)
                break
            if len(order) < train.rows_per_step:
                fresh = list(range(len(rows)))
                if shuffle:
                    rng.shuffle(fresh)
                order.extend(fresh)
            batch = collate_rows([rows[i] for i in order[: train.rows_per_step]])
            del order[: train.rows_per_step]
            lr = lr_at(step, lr_peak=optim.lr_peak, warmup_steps=optim.lr_warmup_steps, total_steps=total_steps, min_ratio=optim.lr_min_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast:
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
            if train.save_every_steps and step % train.save_every_steps == 0 and step < total_steps:
                save_training_state(checkpoint, model, optimizer, rng, step=step, order=order, trained_tokens=trained_tokens)
        log.plot(["loss", "lr", "tokens_per_s"] + (["kd"] if teacher is not None else []))
    seconds = time.perf_counter() - start
    model.eval()
    return TrainSummary(
        steps=step,
        seconds=seconds,
        trained_tokens=trained_tokens,
        final_loss=loss_value,
        tokens_per_s=trained_tokens / max(seconds, 1e-9),
    )
