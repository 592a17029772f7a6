"""Compact base-model pretraining (report §2.2.1, at toy scale): tokenizer + tiny Qwen2 model from scratch.

Run:
    mixrl pretrain recipes/pretrain_tiny.yaml [section.key=value ...]

Steps: generate the synthetic corpus (if absent) -> train a byte-level BPE tokenizer with the chat and
thinking-mode tokens -> pack documents into rows -> train with warm-up + cosine decay, optionally distilling
from a teacher's logits -> save Hugging Face format to RUN_DIR/final -> held-out synthetic-math accuracy.
The report prunes a 7B teacher into the 3B student; pruning is out of scope here, distillation is in.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict
from pathlib import Path

from sft.config import PretrainConfig, SyntheticDataConfig
from transformers import AutoTokenizer

from sft.distill import load_teacher
from sft.model import build_model, count_parameters, save_checkpoint
from sft.packing import pack_samples
from sft.tokenizer import ENDOFTEXT, single_token_id, train_tokenizer
from sft.train_loop import set_threads, train_packed


def ensure_datasets(cfg: SyntheticDataConfig) -> Path:
    """Generate the synthetic datasets into `cfg.out_dir` unless every requested file is already there."""
    from sft.data.synthetic import generate_datasets

    out = Path(cfg.out_dir)
    unknown = sorted(set(cfg.test_rows) - set(cfg.train_rows))
    if unknown:
        raise ValueError(f"data.test_rows: {unknown} are not generated domains (data.train_rows has {sorted(cfg.train_rows)})")
    wanted = [out / d / f"{s}.parquet" for d in cfg.train_rows for s in ("train", "test")]
    stamp = out / "generated_with.json"
    spec = asdict(cfg)
    if all(p.exists() for p in wanted) and stamp.exists() and json.loads(stamp.read_text()) == spec:
        return out
    t0 = time.perf_counter()
    for domain, rows in cfg.train_rows.items():
        generate_datasets(out, rows, cfg.test_rows.get(domain, cfg.test_rows_per_domain), seed=cfg.seed, domains=[domain])
    stamp.write_text(json.dumps(spec))
    print(f"[data] generated {dict(cfg.train_rows)} train rows into {out} in {time.perf_counter() - t0:.1f}s", flush=True)
    return out


def row_to_document(row: dict) -> str:
    """Plain-text pretraining document of a dataset row: the query, the worked reasoning, the answer."""
    query = next(m["content"] for m in reversed(row["prompt"]) if m["role"] == "user")
    extra = row.get("extra_info") or {}
    parts = [query, extra.get("reasoning", ""), extra.get("response", "")]
    return "\n".join(p for p in parts if p)


def pretraining_documents(cfg: SyntheticDataConfig) -> list[str]:
    """Documents from every domain's train split, interleaved deterministically."""
    from sft.data.loader import load_rows

    data_dir = ensure_datasets(cfg)
    docs = [row_to_document(r) for d in cfg.train_rows for r in load_rows(data_dir / d / "train.parquet")]
    random.Random(cfg.seed).shuffle(docs)
    return docs


def run_pretrain(cfg: PretrainConfig) -> dict:
    """Run the whole pretraining recipe; returns a summary (also written to RUN_DIR/summary.json)."""
    from rl.config import write_resolved_config

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
    from sft.evaluate import base_model_math_accuracy

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
