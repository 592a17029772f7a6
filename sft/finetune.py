"""Supervised fine-tuning with thinking-mode fusion (report §2.3.1–2.3.3) on packed sequences.

Run:
    mixrl sft recipes/sft_thinking.yaml [section.key=value ...]

Each source of the recipe is rendered by its `mode` (see `SFTSource`), repeated `epochs × resample_weight`
times (key-data resampling: hard data gets a weight above 1), shuffled together, packed and trained in one
pass. The report trains standard CoT for 3 epochs and long CoT for 9; the tiny recipe scales that down.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from core.chat import prompt_context, render_turn, tokenize_chat
from core.config import write_resolved_config
from core.data import DataError, load_rows
from core.model import count_parameters, load_checkpoint, save_checkpoint
from core.thinking import ensure_thinking
from sft.config import SFTConfig, SFTSource
from sft.distill import load_teacher
from sft.packing import pack_samples
from sft.train_loop import set_threads, train_packed


def render_row(row: dict, mode: str, partner: dict | None = None, flip: bool = False) -> list[list[dict]]:
    """Chats made from one row. `fused` gives both forms; `multiturn` pairs it with `partner` in two turns,
    the second turn in the opposite mode of the first (so an earlier switch must not carry over)."""
    if mode == "think":
        return [prompt_context(row) + render_turn(row, True)]
    if mode == "direct":
        return [prompt_context(row) + render_turn(row, False)]
    if mode == "fused":
        return [prompt_context(row) + render_turn(row, True), prompt_context(row) + render_turn(row, False)]
    if mode == "multiturn":
        if partner is None:
            raise ValueError("multiturn rendering needs a partner row")
        return [render_turn(partner, not flip) + render_turn(row, flip)]
    raise ValueError(f"unknown SFT mode {mode!r}")


def source_chats(source: SFTSource, rows: list[dict], rng: random.Random) -> list[list[dict]]:
    """All chats of one source for the whole run: epochs × resample_weight copies, fractional part sampled."""
    if source.max_rows:
        rows = rows[: source.max_rows]
    copies = source.epochs * source.resample_weight
    chats: list[list[dict]] = []
    whole, frac = int(copies), copies - int(copies)
    for copy in range(whole + (1 if frac > 0 else 0)):
        subset = rows if copy < whole else rng.sample(rows, round(frac * len(rows)))
        for i, row in enumerate(subset):
            partner = subset[(i + 1) % len(subset)] if source.mode == "multiturn" else None
            chats.extend(render_row(row, source.mode, partner, flip=rng.random() < 0.5))
    return chats


def check_sft_rows(rows: list[dict], path: str, mode: str) -> None:
    """SFT renders `extra_info.response` (and `reasoning` in thinking modes): name the first row lacking them."""
    if not rows:
        raise DataError(f"{path}: no rows")
    needs = ["response"] + (["reasoning"] if mode != "direct" else [])
    for i, row in enumerate(rows):
        extra = row.get("extra_info") or {}
        for key in needs:
            if not isinstance(extra.get(key), str):
                raise DataError(f"{path}: row {i}: SFT mode '{mode}' needs extra_info.{key} as a string, got {extra.get(key)!r}")


def build_sft_samples(cfg: SFTConfig, tokenizer) -> tuple[list[tuple[list[int], list[int]]], dict[str, int]]:
    """Tokenized (ids, labels) samples of every source, shuffled together; also the chat count per source."""
    rng = random.Random(cfg.seed)
    chats: list[list[dict]] = []
    counts: dict[str, int] = {}
    for source in cfg.sources:
        path = source.path.replace("{data_dir}", cfg.data.out_dir)
        rows = load_rows(path)
        check_sft_rows(rows, path, source.mode)
        made = source_chats(source, rows, rng)
        counts[source.name] = len(made)
        chats.extend(made)
    rng.shuffle(chats)
    return [tokenize_chat(tokenizer, chat) for chat in chats], counts


def prepare_thinking(cfg: SFTConfig, model, tokenizer) -> dict:
    """Before any data is read: a recipe with thinking sources gets a tokenizer and template that express the
    switch (added when `add_thinking_tokens`, else a clear `ChatTemplateError`); direct-only recipes change nothing."""
    if all(source.mode == "direct" for source in cfg.sources):
        return {"added_tokens": [], "template_patched": False}
    report = ensure_thinking(model, tokenizer, allow_changes=cfg.add_thinking_tokens)
    if report["added_tokens"] or report["template_patched"]:
        print(f"[sft] thinking-mode fusion on {cfg.base_model_path}: added tokens {report['added_tokens']}, "
              f"chat template {'wrapped with the switch' if report['template_patched'] else 'unchanged'}", flush=True)
    return report


def run_sft(cfg: SFTConfig) -> dict:
    """Run the SFT recipe from `cfg.base_model_path` on datasets already on disk (`mixrl sft` makes the synthetic
    ones first); saves RUN_DIR/final and RUN_DIR/summary.json."""
    run_dir = Path(cfg.run_dir)
    write_resolved_config(cfg, run_dir)
    set_threads(cfg.train.num_threads)
    t0 = time.perf_counter()
    model, tokenizer = load_checkpoint(cfg.base_model_path)
    thinking = prepare_thinking(cfg, model, tokenizer)
    samples, counts = build_sft_samples(cfg, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows, stats = pack_samples(samples, cfg.train.sequence_tokens, pad_id=pad_id)
    print(
        f"[sft] {stats.samples} chats {counts} -> {stats.rows} packed rows (fill {stats.fill_ratio:.0%}, "
        f"{stats.truncated_samples} truncated)",
        flush=True,
    )
    teacher = load_teacher(cfg.distill.teacher_path, tokenizer)
    summary = train_packed(
        model, rows, train=cfg.train, optim=cfg.optim, run_dir=run_dir, stage="sft", seed=cfg.seed,
        teacher=teacher, distill=cfg.distill,
    )
    final = save_checkpoint(model, tokenizer, run_dir / "final")
    result = {
        "stage": "sft",
        "parameters": count_parameters(model),
        "thinking_tokens_added": thinking["added_tokens"],
        "chat_template_patched": thinking["template_patched"],
        "chats_per_source": counts,
        "packed_rows": stats.rows,
        "steps": summary.steps,
        "trained_tokens": summary.trained_tokens,
        "tokens_per_s": round(summary.tokens_per_s, 1),
        "train_seconds": round(summary.seconds, 1),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "final_loss": round(summary.final_loss, 4),
        "checkpoint": str(final),
        "tensorboard": str(run_dir / "tb"),
    }
    (run_dir / "summary.json").write_text(json.dumps(result, indent=2))
    print(f"[sft] done: {json.dumps(result)}", flush=True)
    return result
