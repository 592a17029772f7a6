"""Compact base-model pretraining (report §2.2.1, at toy scale): tokenizer + tiny Qwen2 model from scratch.

Run:
    mixrl pretrain recipes/pretrain_tiny.yaml [section.key=value ...]

Steps (`mixrl pretrain` first generates the synthetic corpus into `data.out_dir` if absent; this stage only
reads it): train a byte-level BPE tokenizer with the chat and thinking-mode tokens -> pack documents into rows -> train with warm-up + cosine decay, optionally distilling
from a teacher's logits -> save Hugging Face format to RUN_DIR/final -> held-out synthetic-math accuracy.
The report prunes a 7B teacher into the 3B student: `mixrl prune` (`sft/prune.py`) does the compact counterpart, then
this distillation brings the pruned model back toward its teacher.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from transformers import AutoTokenizer

from core.config import write_resolved_config
from core.data import DataError, load_rows
from core.generate import generate_hf
from core.model import build_model, count_parameters, save_checkpoint
from core.sections import SyntheticDataConfig
from core.tokenizer import ENDOFTEXT, single_token_id, train_tokenizer
from rewards.verdict import score_response
from sft.config import PretrainConfig
from sft.distill import load_teacher
from sft.packing import pack_samples
from sft.train_loop import set_threads, train_packed


def row_to_document(row: dict) -> str:
    """Plain-text pretraining document of a dataset row: the query, the worked reasoning, the answer."""
    query = next(m["content"] for m in reversed(row["prompt"]) if m["role"] == "user")
    extra = row.get("extra_info") or {}
    parts = [query, extra.get("reasoning", ""), extra.get("response", "")]
    return "\n".join(p for p in parts if p)


def pretraining_documents(cfg: SyntheticDataConfig) -> list[str]:
    """Documents from every domain's train split (`data.out_dir/DOMAIN/train.parquet`), interleaved deterministically."""
    paths = [Path(cfg.out_dir) / d / "train.parquet" for d in cfg.train_rows]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise DataError(f"pretraining data missing: {', '.join(missing)} (`mixrl pretrain` and `mixrl data` make them)")
    docs = [row_to_document(r) for p in paths for r in load_rows(p)]
    random.Random(cfg.seed).shuffle(docs)
    return docs


def run_pretrain(cfg: PretrainConfig) -> dict:
    """Run the whole pretraining recipe on datasets already on disk; returns a summary (also RUN_DIR/summary.json)."""
    run_dir = Path(cfg.run_dir)
    write_resolved_config(cfg, run_dir)
    set_threads(cfg.train.num_threads)
    t0 = time.perf_counter()
    docs = pretraining_documents(cfg.data)
    if cfg.distill.teacher_path:
        # distillation aligns logits id by id: the student takes the teacher's tokenizer instead of training one
        tokenizer = AutoTokenizer.from_pretrained(cfg.distill.teacher_path)
    else:
        tokenizer = train_tokenizer(docs[: cfg.tokenizer.training_docs], cfg.tokenizer.vocab_size, cfg.tokenizer.min_frequency)
    eot = single_token_id(tokenizer, ENDOFTEXT)
    samples = []
    for ids in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        ids = ids + [eot]
        samples.append((ids, ids))
    rows, stats = pack_samples(samples, cfg.train.sequence_tokens, pad_id=eot)
    model = build_model(cfg.model, tokenizer, seed=cfg.seed)
    n_params = count_parameters(model)
    print(
        f"[pretrain] {len(docs)} documents -> {stats.rows} packed rows of {cfg.train.sequence_tokens} tokens "
        f"(fill {stats.fill_ratio:.0%}); vocab {len(tokenizer)}; model {n_params / 1e6:.2f}M parameters",
        flush=True,
    )
    teacher = load_teacher(cfg.distill.teacher_path, tokenizer)
    summary = train_packed(
        model, rows, train=cfg.train, optim=cfg.optim, run_dir=run_dir, stage="pretrain", seed=cfg.seed,
        teacher=teacher, distill=cfg.distill,
    )
    final = save_checkpoint(model, tokenizer, run_dir / "final")
    accuracy = base_model_math_accuracy(model, tokenizer, Path(cfg.data.out_dir) / "math" / "test.parquet", max_rows=200)
    result = {
        "stage": "pretrain",
        "parameters": n_params,
        "vocab_size": len(tokenizer),
        "steps": summary.steps,
        "trained_tokens": summary.trained_tokens,
        "tokens_per_s": round(summary.tokens_per_s, 1),
        "train_seconds": round(summary.seconds, 1),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "final_loss": round(summary.final_loss, 4),
        "heldout_math_accuracy": accuracy,
        "checkpoint": str(final),
        "tensorboard": str(run_dir / "tb"),
    }
    (run_dir / "summary.json").write_text(json.dumps(result, indent=2))
    print(f"[pretrain] done: {json.dumps(result)}", flush=True)
    return result


def base_model_math_accuracy(model, tokenizer, test_path: str | Path, *, max_rows: int = 200, max_tokens: int = 96) -> float:
    """Held-out accuracy of a base (pretrained, not chat) model: complete the plain-text problem."""
    rows = load_rows(test_path)[:max_rows]
    prompts = [tokenizer.encode(r["prompt"][-1]["content"] + "\n", add_special_tokens=False) for r in rows]
    texts = generate_hf(model, tokenizer, prompts, max_tokens=max_tokens)
    scores = [score_response(r, t.split(ENDOFTEXT)[0]) for r, t in zip(rows, texts)]
    scored = [s for s in scores if s is not None]
    return round(sum(scored) / max(1, len(scored)), 4)
