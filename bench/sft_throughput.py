"""SFT training throughput: mixrl's packed trainer vs a plain Hugging Face `Trainer`, same model, same data.

Run:
    .venv/bin/python bench/sft_throughput.py [--rows 600] [--steps 30] [--dtype bfloat16]

Both train the same freshly initialised tiny Qwen2 model on the same thinking-fusion chats (synthetic math,
both modes) for the same number of optimizer steps with the same number of samples per step. The baseline
pads each batch to its longest sample (`DataCollatorForSeq2Seq`, the usual TRL/HF SFT set-up without packing);
ours packs samples into rows with sequence isolation. Throughput is trained (loss-bearing) tokens per second.
Prints one JSON object; `speedup` is ours / baseline, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from core.chat import IGNORE_INDEX  # noqa: E402
from core.sections import ModelConfig, OptimConfig  # noqa: E402
from sft.config import PackedTrainConfig  # noqa: E402
from mixrl.data.math_problems import generate_math  # noqa: E402
from sft.finetune import render_row  # noqa: E402
from core.chat import tokenize_chat  # noqa: E402
from core.model import build_model, count_parameters  # noqa: E402
from sft.packing import pack_samples  # noqa: E402
from sft.pretrain import row_to_document  # noqa: E402
from core.tokenizer import train_tokenizer  # noqa: E402
from sft.train_loop import train_packed  # noqa: E402


def build_samples(rows: int, seed: int):
    data = generate_math(rows, "train", seed)
    tokenizer = train_tokenizer([row_to_document(r) for r in data], vocab_size=1024)
    samples = [tokenize_chat(tokenizer, chat) for row in data for chat in render_row(row, "fused")]
    return tokenizer, samples


def bench_packed(tokenizer, samples, *, steps: int, samples_per_step: int, dtype: str, seed: int) -> dict:
    model = build_model(ModelConfig(), tokenizer, seed=seed)
    mean_len = sum(len(s[0]) for s in samples) / len(samples)
    # rows of 512 tokens holding, on average, the same number of samples per step as the baseline's batch
    sequence_tokens = 512
    rows_per_step = max(1, round(samples_per_step * mean_len / sequence_tokens))
    rows, stats = pack_samples(samples, sequence_tokens, pad_id=tokenizer.pad_token_id)
    with tempfile.TemporaryDirectory() as run_dir:
        summary = train_packed(
            model, rows, train=PackedTrainConfig(max_steps=steps, sequence_tokens=sequence_tokens, rows_per_step=rows_per_step, dtype=dtype, log_every_steps=10**9),
            optim=OptimConfig(lr_peak=1e-3, lr_warmup_steps=2), run_dir=run_dir, stage="bench", seed=seed,
        )
    return {"trained_tokens": summary.trained_tokens, "seconds": round(summary.seconds, 3),
            "tokens_per_s": round(summary.tokens_per_s, 1), "rows_per_step": rows_per_step, "fill_ratio": round(stats.fill_ratio, 3),
            "parameters": count_parameters(model)}


def bench_hf_trainer(tokenizer, samples, *, steps: int, samples_per_step: int, dtype: str, seed: int) -> dict:
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    model = build_model(ModelConfig(), tokenizer, seed=seed)
    dataset = Dataset.from_dict({"input_ids": [s[0] for s in samples], "labels": [s[1] for s in samples],
                                 "attention_mask": [[1] * len(s[0]) for s in samples]})
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, max_steps=steps, per_device_train_batch_size=samples_per_step, learning_rate=1e-3,
            warmup_steps=2, lr_scheduler_type="cosine", weight_decay=0.1, max_grad_norm=1.0, logging_steps=10**9,
            save_strategy="no", report_to=[], use_cpu=True, bf16=dtype == "bfloat16", seed=seed, dataloader_num_workers=0,
            disable_tqdm=True,
        )
        pad_collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX, padding=True)
        counted = {"tokens": 0}

        def collate(features):  # counts the loss-bearing tokens the baseline really trains on
            batch = pad_collator(features)
            counted["tokens"] += int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            return batch

        trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collate)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    trained = counted["tokens"]
    return {"trained_tokens": trained, "seconds": round(seconds, 3), "tokens_per_s": round(trained / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--samples-per-step", type=int, default=32)
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    tokenizer, samples = build_samples(args.rows, args.seed)
    common = dict(steps=args.steps, samples_per_step=args.samples_per_step, dtype=args.dtype, seed=args.seed)
    baseline = bench_hf_trainer(tokenizer, samples, **common)
    ours = bench_packed(tokenizer, samples, **common)
    print(json.dumps({
        "benchmark": "sft_throughput",
        "samples": len(samples), "steps": args.steps, "samples_per_step": args.samples_per_step, "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "hf_trainer": baseline, "mixrl_packed": ours,
        "speedup": round(ours["tokens_per_s"] / baseline["tokens_per_s"], 3),
    }, indent=2))


if __name__ == "__main__":
    main()
