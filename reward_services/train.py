"""Bradley-Terry reward-model training: preference pairs, a tiny Qwen2 scalar-head RM, its loop and accuracy.

    mixrl train-rm --out runs/rm [--steps 300]     # synthetic chat pairs, held-out accuracy printed as JSON

`build_reward_model` mirrors `core.model.build_model` (a Qwen2 decoder) with a scalar head
(``Qwen2ForSequenceClassification``, ``num_labels=1``). Loss: ``-log σ(r(chosen) - r(rejected))``.
This module takes pairs and a tokenizer; where they come from (the CLI uses the synthetic chat rows) is the
caller's business, so reward_services never imports sft.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from reward_services.models import format_pair


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str


def build_reward_model(tokenizer, *, hidden_size: int = 64, num_layers: int = 2, num_attention_heads: int = 2,
                       num_key_value_heads: int = 1, intermediate_size: int = 176,
                       max_position_embeddings: int = 512, seed: int = 0):
    """A randomly initialised Qwen2 sequence classifier with one output (the reward)."""
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads, max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=False, bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, use_sliding_window=False, num_labels=1,
    )
    torch.manual_seed(seed)
    return Qwen2ForSequenceClassification(config)


def _rewards(model, tokenizer, texts: list[str], max_length: int) -> torch.Tensor:
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    ids, mask = enc["input_ids"].to(model.device), enc["attention_mask"].to(model.device)
    return model(input_ids=ids, attention_mask=mask).logits[:, 0]  # [B]


@torch.no_grad()
def pairwise_accuracy(model, tokenizer, pairs: Sequence[PreferencePair], *, max_length: int = 512,
                      batch_size: int = 32) -> float:
    """Fraction of pairs whose chosen response gets the strictly higher reward."""
    model.eval()
    wins = 0
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        chosen = _rewards(model, tokenizer, [format_pair(tokenizer, p.prompt, p.chosen) for p in chunk], max_length)
        rejected = _rewards(model, tokenizer, [format_pair(tokenizer, p.prompt, p.rejected) for p in chunk], max_length)
        wins += int((chosen > rejected).sum())
    return wins / max(1, len(pairs))


def train_bradley_terry(model, tokenizer, pairs: Sequence[PreferencePair], *, steps: int = 200, batch_size: int = 16,
                        lr: float = 1e-3, max_length: int = 512, seed: int = 0) -> dict[str, float]:
    """AdamW on the Bradley-Terry loss over random mini-batches of `pairs`; returns the last losses' mean."""
    tokenizer.padding_side = "right"
    rng = random.Random(seed)
    optim = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    losses: list[float] = []
    for _ in range(steps):
        batch = rng.sample(list(pairs), min(batch_size, len(pairs)))
        texts = [format_pair(tokenizer, p.prompt, p.chosen) for p in batch] + \
                [format_pair(tokenizer, p.prompt, p.rejected) for p in batch]
        r = _rewards(model, tokenizer, texts, max_length)  # [2B]
        margin = r[: len(batch)] - r[len(batch):]  # [B]
        loss = -F.logsigmoid(margin).mean()
        optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        losses.append(float(loss.detach()))
    model.eval()
    tail = losses[-20:] or [float("nan")]
    return {"train_loss": sum(tail) / len(tail), "steps": float(steps)}


def pairs_from_rows(rows) -> list[PreferencePair]:
    """Preference pairs from verl-schema chat rows (``extra_info["chosen"/"rejected"]``, the last prompt turn)."""
    out = []
    for k, row in enumerate(rows):
        extra = row.get("extra_info") or {}
        if "chosen" not in extra or "rejected" not in extra:
            raise ValueError(f"row {k}: extra_info needs 'chosen' and 'rejected' (a preference pair)")
        prompt = row["prompt"][-1]["content"] if isinstance(row["prompt"], list) else str(row["prompt"])
        out.append(PreferencePair(prompt, extra["chosen"], extra["rejected"]))
    return out


def load_pairs_jsonl(path) -> list[PreferencePair]:
    """``{"prompt", "chosen", "rejected"}`` per line; a bad line names the file and line number."""
    import json

    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                out.append(PreferencePair(str(d["prompt"]), str(d["chosen"]), str(d["rejected"])))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{n}: expected a JSON object with prompt, chosen, rejected ({e})") from None
    return out


def train_and_save(tokenizer, train_pairs: Sequence[PreferencePair], heldout_pairs: Sequence[PreferencePair], out_dir,
                   *, steps: int = 150, batch_size: int = 16, lr: float = 1e-3, hidden_size: int = 64,
                   num_layers: int = 2, max_length: int = 512, serve_max_length: int = 2048, seed: int = 0,
                   device: str = "auto") -> dict:
    """Build, train and save a reward model (Hugging Face folder ``out_dir``); returns the run's metrics,
    also written to ``out_dir/rm_metrics.json``.

    Training truncates pairs at `max_length` tokens (speed on CPU); the saved model accepts up to
    `serve_max_length` (RoPE has no learned positions, so this is a limit, not parameters). `device`: auto = CUDA
    when visible."""
    import json
    import time
    from pathlib import Path

    from core.device import resolve_device

    tokenizer.padding_side = "right"
    model = build_reward_model(tokenizer, hidden_size=hidden_size, num_layers=num_layers,
                               num_attention_heads=max(1, hidden_size // 32), num_key_value_heads=1,
                               intermediate_size=hidden_size * 11 // 4, max_position_embeddings=serve_max_length,
                               seed=seed).to(resolve_device(device))
    start = time.monotonic()
    before = pairwise_accuracy(model, tokenizer, heldout_pairs, max_length=max_length)
    stats = train_bradley_terry(model, tokenizer, train_pairs, steps=steps, batch_size=batch_size, lr=lr,
                                max_length=max_length, seed=seed)
    after = pairwise_accuracy(model, tokenizer, heldout_pairs, max_length=max_length)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    metrics = {"out_dir": str(out), "heldout_pairwise_accuracy": after, "initial_pairwise_accuracy": before,
               "train_pairs": len(train_pairs), "heldout_pairs": len(heldout_pairs), "train_loss": stats["train_loss"],
               "steps": steps, "parameters": sum(p.numel() for p in model.parameters()),
               "seconds": round(time.monotonic() - start, 1)}
    (out / "rm_metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
