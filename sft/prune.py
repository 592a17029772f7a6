"""Compact pruning path (report §2.2.1: the 3B base was pruned from a 7B model, then distilled from it).

Run:
    mixrl prune recipes/prune_tiny.yaml [section.key=value ...]

Steps (`mixrl prune` first generates the synthetic datasets into `data.out_dir` if absent; this stage only reads
them): check the targets against the checkpoint's config.json -> render and pack the train split in the text form
the checkpoint was trained on (`data_format`: chat as SFT renders it, or pretraining documents) -> measure
importance on `calibration_rows` of them (`sft/pruning.py`: block influence, MLP channel activations, head output
norms) -> build the smaller model -> held-out loss and KL to the teacher -> logit-alignment distillation from the
unpruned model (`sft/train_loop.train_packed`, the pretraining loop) -> held-out loss and KL again -> save
RUN_DIR/pruned (before distillation) and RUN_DIR/final (after), both plain Hugging Face folders, and
RUN_DIR/summary.json.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch
from transformers import AutoConfig

from core.chat import IGNORE_INDEX, tokenize_chat
from core.config import ConfigError, write_resolved_config
from core.data import DataError, load_rows
from core.model import count_parameters, load_checkpoint, save_checkpoint
from core.sections import SyntheticDataConfig
from core.thinking import missing_control_tokens
from core.tokenizer import ENDOFTEXT, single_token_id
from sft.config import PruneConfig
from sft.distill import distillation_token_kl, load_teacher
from sft.packing import PackedBatch, collate_rows, pack_samples, token_losses
from sft.finetune import render_row
from sft.pretrain import row_to_document
from sft.pruning import PrunePlan, PruneTargets, apply_plan, check_targets, measure_importance, model_dimensions, plan_pruning
from sft.train_loop import set_threads, train_packed

Row = tuple[list[int], list[int], list[int]]


def prune_targets(cfg: PruneConfig) -> PruneTargets:
    """The recipe's depth and width sections as one `PruneTargets`."""
    return PruneTargets(
        drop_layers=tuple(cfg.depth.drop_layers),
        num_layers=cfg.depth.target_layers,
        intermediate_size=cfg.width.target_intermediate_size,
        num_key_value_heads=cfg.width.target_key_value_heads,
        num_attention_heads=cfg.width.target_attention_heads,
    )


def split_rows(cfg: SyntheticDataConfig, split: str) -> list[dict]:
    """Rows of every domain's `split` (`data.out_dir/DOMAIN/SPLIT.parquet`), interleaved deterministically."""
    paths = [Path(cfg.out_dir) / d / f"{split}.parquet" for d in cfg.train_rows]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise DataError(f"pruning data missing: {', '.join(missing)} (`mixrl prune` and `mixrl data` make them)")
    rows = [r for p in paths for r in load_rows(p)]
    random.Random(cfg.seed).shuffle(rows)
    return rows


def rows_to_samples(rows: list[dict], tokenizer, data_format: str) -> list[tuple[list[int], list[int]]]:
    """(ids, labels) samples in the text form the checkpoint was trained on.

    `chat`: each row rendered by the checkpoint's chat template as SFT renders it (`sft.finetune.render_row`),
    in both thinking modes when the tokenizer has the thinking tokens, only the assistant turns trained;
    `document`: the pretraining document of each row (`sft.pretrain.row_to_document`) ended by <|endoftext|>.
    """
    if data_format == "document":
        eot = single_token_id(tokenizer, ENDOFTEXT)
        docs = [row_to_document(r) for r in rows]
        return [(ids + [eot], ids + [eot]) for ids in tokenizer(docs, add_special_tokens=False)["input_ids"]]
    mode = "direct" if missing_control_tokens(tokenizer) else "fused"
    return [tokenize_chat(tokenizer, chat) for r in rows for chat in render_row(r, mode)]


def packed_rows(rows: list[dict], tokenizer, data_format: str, sequence_tokens: int) -> list[Row]:
    """`rows_to_samples` packed into isolated rows of `sequence_tokens`."""
    pad = single_token_id(tokenizer, ENDOFTEXT)
    packed, _ = pack_samples(rows_to_samples(rows, tokenizer, data_format), sequence_tokens, pad_id=pad)
    return packed


def batches(rows: list[Row], rows_per_batch: int) -> list[PackedBatch]:
    """Consecutive `rows_per_batch`-row batches of `rows`."""
    return [collate_rows(rows[i : i + rows_per_batch]) for i in range(0, len(rows), rows_per_batch)]


@torch.no_grad()
def heldout_metrics(model, teacher, rows: list[Row], rows_per_batch: int) -> dict[str, float]:
    """Over the trained tokens of `rows` (fp32, eval mode): `loss`, the token-mean next-token cross-entropy of
    `model`, and `kl_to_teacher`, the token-mean KL(p_teacher ‖ p_model) at temperature 1 — how far the model still
    is from the teacher's distribution, which is what distillation recovers (0 for the teacher itself)."""
    model.eval()
    teacher.eval()
    ce, kl, count = 0.0, 0.0, 0
    for batch in batches(rows, rows_per_batch):
        losses, mask, logits = token_losses(model, batch)
        teacher_logits = teacher(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits
        token_kl = distillation_token_kl(logits[:, :-1], teacher_logits[:, :-1], 1.0)  # [B, L-1]
        ce, kl, count = ce + float(losses.sum()), kl + float((token_kl * mask).sum()), count + int(mask.sum())
    return {"loss": ce / max(count, 1), "kl_to_teacher": kl / max(count, 1)}


def describe(plan: PrunePlan, config) -> dict:
    """What the plan kept, for the summary: layers by original index and the new sizes."""
    return {
        "kept_layers": plan.kept_layers,
        "sizes": model_dimensions(config),
        "kept_query_heads": plan.query_heads,
        "kept_key_value_heads": plan.key_value_heads,
    }


def check_prune_config(cfg: PruneConfig) -> None:
    """Refuse a missing checkpoint or impossible targets from config.json alone, before data or weights load."""
    try:
        config = AutoConfig.from_pretrained(cfg.model_path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model_path: {cfg.model_path} is not a Hugging Face checkpoint ({str(exc).splitlines()[0]})") from None
    check_targets(config, prune_targets(cfg))


def run_prune(cfg: PruneConfig) -> dict:
    """Prune `cfg.model_path`, distil it from the unpruned teacher; returns a summary (also RUN_DIR/summary.json)."""
    t0 = time.perf_counter()
    check_prune_config(cfg)
    targets = prune_targets(cfg)
    run_dir = Path(cfg.run_dir)
    write_resolved_config(cfg, run_dir)
    set_threads(cfg.train.num_threads)
    model, tokenizer = load_checkpoint(cfg.model_path)
    train_rows = packed_rows(split_rows(cfg.data, "train"), tokenizer, cfg.data_format, cfg.train.sequence_tokens)
    held_rows = packed_rows(split_rows(cfg.data, "test"), tokenizer, cfg.data_format, cfg.train.sequence_tokens)
    held_rows = held_rows[: cfg.heldout_rows]
    calibration = batches(train_rows[: cfg.calibration_rows], cfg.train.rows_per_step)

    t_score = time.perf_counter()
    scores = measure_importance(model, calibration)
    plan = plan_pruning(scores, model.config, targets)
    student = apply_plan(model, plan)
    score_seconds = time.perf_counter() - t_score
    print(f"[prune] {count_parameters(model) / 1e6:.2f}M -> {count_parameters(student) / 1e6:.2f}M parameters; "
          f"block influence {[round(float(x), 4) for x in scores.block_influence]}; kept layers {plan.kept_layers}",
          flush=True)
    pruned_dir = save_checkpoint(student, tokenizer, run_dir / "pruned")
    teacher = load_teacher(cfg.distill.teacher_path, tokenizer) if cfg.distill.teacher_path else model
    heldout = {"teacher": heldout_metrics(teacher, teacher, held_rows, cfg.train.rows_per_step),
               "pruned_before_distill": heldout_metrics(student, teacher, held_rows, cfg.train.rows_per_step)}
    print(f"[prune] held-out before distillation: {json.dumps(heldout)}", flush=True)

    summary = train_packed(student, train_rows, train=cfg.train, optim=cfg.optim, run_dir=run_dir, stage="prune",
                           seed=cfg.seed, teacher=teacher, distill=cfg.distill)
    heldout["pruned_after_distill"] = heldout_metrics(student, teacher, held_rows, cfg.train.rows_per_step)
    final = save_checkpoint(student, tokenizer, run_dir / "final")
    result = {
        "stage": "prune",
        "model_path": cfg.model_path,
        "parameters_before": count_parameters(model),
        "parameters_after": count_parameters(student),
        "plan": describe(plan, student.config),
        "architecture": student.config.architectures,
        "heldout_loss": {k: round(v["loss"], 4) for k, v in heldout.items()},
        "heldout_kl_to_teacher": {k: round(v["kl_to_teacher"], 4) for k, v in heldout.items() if k != "teacher"},
        "heldout_tokens": sum(label != IGNORE_INDEX for row in held_rows for label in row[2][1:]),
        "calibration_rows": len(train_rows[: cfg.calibration_rows]),
        "scoring_seconds": round(score_seconds, 1),
        "distill_steps": summary.steps,
        "distill_seconds": round(summary.seconds, 1),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "pruned": str(pruned_dir),
        "checkpoint": str(final),
        "tensorboard": str(run_dir / "tb"),
    }
    (run_dir / "summary.json").write_text(json.dumps(result, indent=2))
    print(f"[prune] done: {json.dumps(result)}", flush=True)
    return result
