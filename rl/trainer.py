"""The GRPO policy trainer: policy and frozen reference model, logprobs in micro-batches, the update, checkpoints.

One `train_step(batch)`: reference logprobs (no grad), behaviour logprobs (recomputed, or vLLM's — see
`AlgoConfig.behaviour_logprobs`), the truncated importance weights of stale samples (`AlgoConfig.off_policy_correction`), then `updates_per_step` optimizer steps over micro-batches with gradient
accumulation, AdamW, grad-norm clipping and the warm-up/cosine schedule of `core.optim.lr_at`.

Micro-batches are right-padded, not packed: GRPO groups share a prompt and responses are short, so padding
waste is small at this scale, and padded rows keep a sequence's logprobs independent of its neighbours
(`sft.packing` isolates positions for SFT where rows are long and uneven).

Multi-GPU: `shard_fsdp2(model)` applies torch FSDP2 `fully_shard` per decoder layer behind the same interface;
the weight sender gathers DTensor shards with `full_tensor()` (`rl/weight_sync.py`). This CPU machine runs one
process per actor, so only the unsharded path is exercised here.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rl import algos
from rl.config import AlgoConfig, GRPOTrainerConfig


@dataclass
class TrainBatch:
    """One step's sequences, right-padded: prompt + response, with the response tokens marked."""

    input_ids: torch.Tensor  # [B, T] prompt + response + padding
    attention_mask: torch.Tensor  # [B, T]
    response_mask: torch.Tensor  # [B, T-1] 1 where target token t+1 is a response token of a scored sample
    rollout_logprobs: torch.Tensor  # [B, T-1] vLLM's sampling logprobs at the response targets (0 elsewhere)
    advantages: torch.Tensor  # [B]


def build_batch(sequences: list[tuple[list[int], list[int], list[float]]], advantages: list[float], scored: list[bool],
                pad_id: int) -> TrainBatch:
    """Pad (prompt_ids, response_ids, response_logprobs) triples into a `TrainBatch`; unscored samples are masked."""
    width = max(len(p) + len(r) for p, r, _ in sequences)
    B = len(sequences)
    ids = torch.full((B, width), pad_id, dtype=torch.long)
    attn = torch.zeros(B, width, dtype=torch.long)
    resp = torch.zeros(B, width - 1)
    lps = torch.zeros(B, width - 1)
    for i, (p, r, lp) in enumerate(sequences):
        n = len(p) + len(r)
        ids[i, :n] = torch.tensor(p + r)
        attn[i, :n] = 1
        if scored[i] and r:
            resp[i, len(p) - 1 : n - 1] = 1  # logits at position t predict token t+1
            lps[i, len(p) - 1 : n - 1] = torch.tensor(lp)
    return TrainBatch(ids, attn, resp, lps, torch.tensor(advantages, dtype=torch.float32))


@dataclass
class BeforeUpdate:
    """What the update compares against, computed once per batch before the first optimizer step."""

    reference: torch.Tensor | None  # [B, T-1] the frozen reference's logprobs (None without a KL term)
    behaviour: torch.Tensor  # [B, T-1] the behaviour (proximal) policy's logprobs: the PPO ratio's denominator
    is_weights: torch.Tensor | None  # [B, T-1] truncated importance weights of stale samples, or None
    rollout_gap: float  # mean |trainer − vLLM| logprob on response tokens (0 when vLLM's are used directly)
    time_reference_s: float


def sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, micro_batch: int,
                      with_entropy: bool = False, autocast: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logprob of every next token [B, T-1] (and its entropy), computed in micro-batches."""
    out, ents = [], []
    for s in range(0, input_ids.shape[0], micro_batch):
        ids, attn = input_ids[s : s + micro_batch], attention_mask[s : s + micro_batch]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits[:, :-1]  # [b, T-1, V]
        out.append(algos.token_logprobs(logits, ids[:, 1:]))
        if with_entropy:
            ents.append(algos.entropy_from_logits(logits))
    return torch.cat(out), (torch.cat(ents) if with_entropy else None)


def shard_fsdp2(model: torch.nn.Module, mesh=None) -> torch.nn.Module:
    """FSDP2 sharding for multi-GPU trainers: each decoder layer, then the root (needs torch.distributed)."""
    from torch.distributed.fsdp import fully_shard

    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


class PolicyTrainer:
    """Owns the policy, the frozen reference, the optimizer and the step counter."""

    def __init__(self, model_path: str, trainer: GRPOTrainerConfig, algo: AlgoConfig, *, total_steps: int, seed: int = 0):
        from core.model import load_checkpoint
        from core.optim import build_optimizer

        if trainer.num_threads > 0:
            torch.set_num_threads(trainer.num_threads)
        torch.manual_seed(seed)
        self.cfg, self.algo, self.total_steps = trainer, algo, total_steps
        self.policy, self.tokenizer = load_checkpoint(model_path, dtype="float32")
        self.reference = None
        if algo.kl_coef > 0:
            self.reference, _ = load_checkpoint(model_path, dtype="float32")
            self.reference.eval().requires_grad_(False)
        self.optimizer = build_optimizer(self.policy, trainer.optim)
        self.step = 0
        self.policy.eval()  # no dropout in Qwen2; eval() keeps logprobs deterministic

    def lr(self) -> float:
        from core.optim import lr_at

        o = self.cfg.optim
        return lr_at(self.step, lr_peak=o.lr_peak, warmup_steps=o.lr_warmup_steps, total_steps=self.total_steps, min_ratio=o.lr_min_ratio)

    def train_step(self, batch: TrainBatch) -> dict[str, float]:
        """Reference and behaviour logprobs, then `updates_per_step` optimizer steps. Returns metrics."""
        t0 = time.perf_counter()
        before = self.logprobs_before_update(batch)
        t1 = time.perf_counter()
        lr = self.lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        metrics: dict[str, float] = {}
        for _ in range(self.cfg.updates_per_step):
            metrics = self.optimizer_step(batch, before)
        self.step += 1
        mask = batch.response_mask
        if before.is_weights is not None:
            metrics["is_weight_mean"] = float(algos.masked_mean(before.is_weights, mask))
            metrics["is_weight_truncated_fraction"] = float(algos.masked_mean((before.is_weights >= self.algo.tis_cap).float(), mask))
        metrics.update({"lr": lr, "trainer_rollout_logprob_gap": before.rollout_gap, "time_reference_s": before.time_reference_s,
                        "time_train_s": time.perf_counter() - t1, "trained_tokens": float(mask.sum())})
        return metrics

    @torch.no_grad()
    def logprobs_before_update(self, batch: TrainBatch) -> "BeforeUpdate":
        """The frozen reference's logprobs, the behaviour policy's (recomputed by the current weights, or vLLM's)
        and the truncated importance weights of stale samples (`AlgoConfig.off_policy_correction`)."""
        mb, autocast = self.cfg.micro_batch_sequences, self.cfg.dtype == "bfloat16"
        t0 = time.perf_counter()
        ref = None
        if self.reference is not None:
            ref, _ = sequence_logprobs(self.reference, batch.input_ids, batch.attention_mask, micro_batch=mb, autocast=autocast)
        t_ref = time.perf_counter() - t0
        recompute = self.algo.behaviour_logprobs == "recompute"
        if recompute:
            old, _ = sequence_logprobs(self.policy, batch.input_ids, batch.attention_mask, micro_batch=mb, autocast=autocast)
        else:
            old = batch.rollout_logprobs
        gap = float(algos.masked_mean((old - batch.rollout_logprobs).abs(), batch.response_mask)) if recompute else 0.0
        is_w = None
        if self.algo.off_policy_correction == "tis" and recompute:
            is_w = algos.truncated_importance_weights(old, batch.rollout_logprobs, self.algo.tis_cap)  # [B, T-1]
        return BeforeUpdate(ref, old, is_w, gap, t_ref)

    def optimizer_step(self, batch: TrainBatch, before: "BeforeUpdate") -> dict[str, float]:
        """One optimizer step on the whole batch, accumulated over micro-batches; returns the loss metrics."""
        mb, autocast = self.cfg.micro_batch_sequences, self.cfg.dtype == "bfloat16"
        mask = batch.response_mask
        total_tokens = mask.sum().clamp(min=1)
        total_seqs = (mask.sum(-1) > 0).sum().clamp(min=1)
        ref, old, is_w = before.reference, before.behaviour, before.is_weights
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for s in range(0, batch.input_ids.shape[0], mb):
            sl = slice(s, s + mb)
            m = mask[sl]
            if m.sum() == 0:
                continue
            logp, ent = sequence_logprobs(self.policy, batch.input_ids[sl], batch.attention_mask[sl], micro_batch=mb,
                                          with_entropy=True, autocast=autocast)
            loss, mets = algos.grpo_loss(
                logp, old[sl], None if ref is None else ref[sl], batch.advantages[sl], m,
                clip_low=self.algo.clip_ratio_low, clip_high=self.algo.clip_ratio_high, clip_ratio_c=self.algo.clip_ratio_c,
                kl_coef=self.algo.kl_coef, kl_estimator=self.algo.kl_estimator, agg_mode=self.algo.loss_agg_mode,
                horizon=mask.shape[-1], entropy=ent, entropy_coef=self.algo.entropy_coef,
                is_weights=None if is_w is None else is_w[sl])
            # the micro-batch's share of the whole batch, so accumulated gradients equal the full-batch loss
            weight = float(m.sum() / total_tokens) if self.algo.loss_agg_mode == "token-mean" else float((m.sum(-1) > 0).sum() / total_seqs)
            (loss * weight).backward()
            for k, v in mets.items():
                sums[k] = sums.get(k, 0.0) + v * weight
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach()) * weight
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.optim.grad_clip_norm)
        self.optimizer.step()
        return {**sums, "grad_norm": float(grad_norm)}

    # checkpoints --------------------------------------------------------------------------------------------

    def save(self, path: str | Path, extra: dict) -> Path:
        """Policy in Hugging Face format, plus optimizer, step, RNG and the loop's `extra` state."""
        from core.model import save_checkpoint

        path = Path(path)
        save_checkpoint(self.policy, self.tokenizer, path / "policy")
        torch.save({"optimizer": self.optimizer.state_dict(), "step": self.step, "extra": extra,
                    "rng": {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}},
                   path / "trainer_state.pt")
        return path

    def load(self, path: str | Path) -> dict:
        """Restore from `save`; returns the loop's `extra` state."""
        from safetensors.torch import load_file

        path = Path(path)
        state = load_file(str(path / "policy" / "model.safetensors"))
        missing, unexpected = self.policy.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if "lm_head" not in k]:
            raise RuntimeError(f"{path}: checkpoint does not fit the policy (missing {missing}, unexpected {unexpected})")
        if getattr(self.policy.config, "tie_word_embeddings", False):
            self.policy.tie_weights()
        blob = torch.load(path / "trainer_state.pt", weights_only=False)
        self.optimizer.load_state_dict(blob["optimizer"])
        self.step = blob["step"]
        torch.set_rng_state(blob["rng"]["torch"])
        random.setstate(blob["rng"]["python"])
        np.random.set_state(blob["rng"]["numpy"])
        return blob["extra"]

    def set_optim(self, optim) -> None:
        """New hyperparameters on resume (the report restarts with new ones to break plateaus)."""
        from core.optim import apply_optim_config

        self.cfg.optim = optim
        apply_optim_config(self.optimizer, optim)

    def parameter_checksum(self) -> float:
        return float(sum(p.detach().double().sum() for p in self.policy.parameters()))
