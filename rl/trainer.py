"""The GRPO policy trainer: policy and frozen reference model, logprobs in micro-batches, the update, checkpoints.

One `train_step(batch)`: reference logprobs (no grad), behaviour logprobs (see `AlgoConfig.behaviour_logprobs`:
with one optimizer step per batch the training forward's own detached logprobs ARE the proximal policy's, so no
extra pass runs; with several PPO mini-batches of one update the first mini-batch's are too, so only the later ones
are recomputed (`first_minibatch_own`); otherwise recomputed, or vLLM's), the rollout correction of stale samples
(`AlgoConfig.rollout_correction`: importance weights, and a keep-mask that takes rejected tokens out of the loss),
then `updates_per_step` × mini-batches optimizer steps (PPO epochs over `minibatch_cuts`: even slices, or one per
source), each over micro-batches with gradient accumulation, with the policy loss `algo.policy_loss`
(`rl.policy_losses`), AdamW, grad-norm clipping and the warm-up/cosine schedule of `core.optim.lr_at`. Every phase is
timed (`time_reference_s`, `time_behaviour_s`, `time_train_s`, `time_trainer_s` = the whole call), so the
driver's waits are true.

Device: `trainer.device` (auto = CUDA when visible), bf16 autocast on that device by `trainer.dtype` (auto = bf16
where the hardware multiplies it faster, `core.device.resolve_dtype`);
`gradient_checkpointing` and `reference_offload` (the reference waits on the CPU between uses) for GPU memory.

Sharded: when this process is one rank of a torch.distributed group (`rl.trainer_group.TrainerGroup` forms it) or
`trainer.fsdp` is set, the policy and the reference are sharded with FSDP2 `fully_shard` per decoder layer
(`shard_fsdp2`). Each rank trains on its share of the step's sequences (`shard_batch`); the loss is normalised by
the WHOLE batch's token (or sequence) count, all-reduced, and scaled by N against FSDP's averaging of gradients
over ranks, so N ranks make the same update as one process on the whole batch. Every rank runs the same number of micro-batches
(FSDP's collectives need it): shards are padded to equal size with fully masked rows. Metrics are reduced over
the group, so every rank returns the same numbers.

Checkpoints hold full (unsharded) state: the policy in Hugging Face format and the optimizer keyed by parameter
name (`torch.distributed.checkpoint.state_dict`), so a run saved with N ranks resumes with any number of ranks.

Micro-batches are right-padded, not packed, so a sequence's logprobs stay independent of its neighbours
(`sft.packing` isolates positions for SFT where rows are long and uneven). Rows go into micro-batches by length,
longest first, and each micro-batch is cut to its own longest row (`length_sorted_micro_batches`): a mixed-domain
step's short answers no longer pay for its longest trace, and under causal attention cutting right padding
changes no logprob.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from core.device import autocast, full_value, resolve_device, resolve_dtype
from rl import algos
from rl.algo_extras import minibatch_slices, run_slices
from rl.config import ROLLOUT_RS_OPTIONS, AlgoConfig, GRPOTrainerConfig, effective_correction
from rl.policy_losses import POLICY_LOSSES
from rl.rollout_correction import ROLLOUT_CORRECTIONS


@dataclass
class TrainBatch:
    """One step's sequences, right-padded: prompt + response, with the response tokens marked."""

    input_ids: torch.Tensor  # [B, T] prompt + response + padding
    attention_mask: torch.Tensor  # [B, T]
    response_mask: torch.Tensor  # [B, T-1] 1 where target token t+1 is a response token of a scored sample
    rollout_logprobs: torch.Tensor  # [B, T-1] vLLM's sampling logprobs at the response targets (0 elsewhere)
    advantages: torch.Tensor  # [B]
    # [B] the PPO mini-batch of each row under `algo.minibatch_split: source` (the index of its run of one source,
    # `build_batch(minibatch=...)`); all 0 otherwise, where `algo.mini_batches_per_update` cuts even slices
    minibatch: torch.Tensor

    def to(self, device: torch.device) -> "TrainBatch":
        return TrainBatch(*(getattr(self, f.name).to(device) for f in dataclasses.fields(self)))

    def rows(self, sl: slice) -> "TrainBatch":
        return TrainBatch(*(getattr(self, f.name)[sl] for f in dataclasses.fields(self)))


def build_batch(sequences: list[tuple[list[int], list[int], list[float]]], advantages: list[float], scored: list[bool],
                pad_id: int, forced: list[list[int]] | None = None, minibatch: list[int] | None = None) -> TrainBatch:
    """Pad (prompt_ids, response_ids, response_logprobs) triples into a `TrainBatch`; unscored samples are masked.
    `forced`: per sample, 1 on the response tokens vLLM forced (`RolloutSample.forced_mask`: the thinking budget ran
    out); they leave the response mask, so they get no gradient and no importance ratio (the policy did not choose
    them). None or an empty list = none forced. `minibatch`: per sample, its PPO mini-batch (`TrainBatch.minibatch`).

    >>> b = build_batch([([1], [2, 3, 4], [0.0] * 3)], [1.0], [True], pad_id=0, forced=[[0, 1, 0]])
    >>> b.response_mask.tolist()
    [[1.0, 0.0, 1.0]]
    """
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
            if forced is not None and forced[i] and any(forced[i]):
                resp[i, len(p) - 1 : n - 1] *= 1 - torch.tensor(forced[i], dtype=resp.dtype)
    minibatch = torch.tensor(minibatch if minibatch is not None else [0] * B, dtype=torch.long)
    return TrainBatch(ids, attn, resp, lps, torch.tensor(advantages, dtype=torch.float32), minibatch)


def minibatch_cuts(batch: TrainBatch, algo: AlgoConfig) -> list[slice]:
    """The batch's PPO mini-batches, one optimizer step each: one per run of one source (`algo.minibatch_split:
    source`), else `algo.mini_batches_per_update` even slices (at most one per sequence: dynamic sampling can leave
    a step fewer sequences than mini-batches).

    >>> b = build_batch([([1], [2], [0.0])] * 3, [1.0, 2.0, 3.0], [True] * 3, pad_id=0, minibatch=[0, 0, 1])
    >>> minibatch_cuts(b, AlgoConfig(minibatch_split="source")), minibatch_cuts(b, AlgoConfig())
    ([slice(0, 2, None), slice(2, 3, None)], [slice(0, 3, None)])
    """
    B = batch.input_ids.shape[0]
    if algo.minibatch_split == "source":
        return run_slices(batch.minibatch.tolist())
    return minibatch_slices(B, min(max(algo.mini_batches_per_update, 1), B))


def shard_batch(batch: TrainBatch, world_size: int, mini_batches: int | list[slice] = 1) -> list[TrainBatch]:
    """The step's sequences split evenly over `world_size` ranks, in order; padded to a multiple of `world_size`
    with fully masked copies of the first row (no loss, no metrics), so every rank runs the same micro-batches.

    With `mini_batches` > 1 (PPO mini-batches, `algo.mini_batches_per_update`) each of the whole batch's mini-batches
    (`minibatch_slices`, or the given slices: `minibatch_cuts`) is split over the ranks on its own, and a rank holds
    its parts in mini-batch order: the rank's own `minibatch_cuts` then cut it at the same places, so optimizer step i
    trains on mini-batch i of the whole batch whatever the rank count (split per rank instead, step i would take rows
    from every mini-batch). A padding row copies its mini-batch's first row, so it keeps that mini-batch's label.

    >>> b = build_batch([([1], [2], [0.0])] * 3, [1.0, 2.0, 3.0], [True] * 3, pad_id=0)
    >>> [s.advantages.tolist() for s in shard_batch(b, 2)], [s.response_mask.sum().item() for s in shard_batch(b, 2)]
    ([[1.0, 2.0], [3.0, 0.0]], [2.0, 1.0])
    >>> b = build_batch([([1], [2], [0.0])] * 4, [1.0, 2.0, 3.0, 4.0], [True] * 4, pad_id=0)
    >>> [s.advantages.tolist() for s in shard_batch(b, 2, mini_batches=2)]
    [[1.0, 3.0], [2.0, 4.0]]
    """
    if world_size == 1:
        return [batch]
    B = batch.input_ids.shape[0]
    cuts = mini_batches if isinstance(mini_batches, list) else minibatch_slices(B, min(max(mini_batches, 1), B))
    if len(cuts) > 1:
        parts = [shard_batch(batch.rows(sl), world_size) for sl in cuts]
        return [TrainBatch(*(torch.cat([getattr(part[r], f.name) for part in parts]) for f in dataclasses.fields(batch)))
                for r in range(world_size)]
    pad = (-B) % world_size
    if pad:
        filler = batch.rows(slice(0, 1))
        filler = dataclasses.replace(filler, response_mask=torch.zeros_like(filler.response_mask),
                                     rollout_logprobs=torch.zeros_like(filler.rollout_logprobs),
                                     advantages=torch.zeros_like(filler.advantages))
        batch = TrainBatch(*(torch.cat([getattr(batch, f.name)] + [getattr(filler, f.name)] * pad)
                             for f in dataclasses.fields(batch)))
    per = (B + pad) // world_size
    return [batch.rows(slice(r * per, (r + 1) * per)) for r in range(world_size)]


@dataclass
class BeforeUpdate:
    """What the update compares against, computed once per batch before the first optimizer step."""

    reference: torch.Tensor | None  # [B, T-1] the frozen reference's logprobs (None without a KL term)
    # [B, T-1] the behaviour (proximal) policy's logprobs, the PPO ratio's denominator; None = the training
    # forward's own detached logprobs (one optimizer step per batch: the same weights, so the same numbers)
    behaviour: torch.Tensor | None
    is_weights: torch.Tensor | None  # [B, T-1] truncated importance weights of stale samples, or None
    rollout_gap: float  # mean |trainer − vLLM| logprob on response tokens (0 when vLLM's are used directly)
    time_reference_s: float
    time_behaviour_s: float = 0.0
    keep: torch.Tensor | None = None  # [B, T-1] the response mask after the correction's rejection (None = unchanged)
    correction_metrics: dict = dataclasses.field(default_factory=dict)  # `rl.rollout_correction` metrics of the batch
    # the first mini-batch's rows when its proximal logprobs are its own training forward's (`first_minibatch_own`):
    # `behaviour` and `is_weights` are not computed there, and `rollout_gap` / `later_sums` cover the other rows
    own_rows: slice | None = None
    # the other rows' masked sums, for the whole batch's metrics: importance weight, truncated, tokens
    later_sums: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def rows(self, sl: slice) -> "BeforeUpdate":
        """The mini-batch `sl`'s share (tensors sliced by row; numbers kept)."""
        cut = lambda t: None if t is None else t[sl]  # noqa: E731
        return dataclasses.replace(self, reference=cut(self.reference), behaviour=cut(self.behaviour),
                                   is_weights=cut(self.is_weights), keep=cut(self.keep))


def length_sorted_micro_batches(attention_mask: torch.Tensor, micro_batch: int) -> list[tuple[torch.Tensor, int]]:
    """The rows of a right-padded batch in micro-batches of `micro_batch`, longest rows first, each with its width
    (its longest row): columns past it are padding in every row of the micro-batch.

    >>> [(idx.tolist(), w) for idx, w in length_sorted_micro_batches(torch.tensor([[1, 0, 0], [1, 1, 1], [1, 1, 0]]), 2)]
    [([1, 2], 3), ([0], 1)]
    """
    lengths = attention_mask.sum(-1)  # [B]
    order = torch.argsort(lengths, descending=True, stable=True)
    return [(idx, max(int(lengths[idx].max()), 1)) for idx in order.split(micro_batch)]


def padding_mask_or_none(attention_mask: torch.Tensor) -> torch.Tensor | None:
    """None when every row is right-padded (its ones, then its zeros), else the mask itself. Under causal attention
    position t sees only positions <= t, so a row's real tokens get the same outputs with or without the mask: its
    padding comes after them. Without a mask the model takes the causal-only path (SDPA's `is_causal` kernel; the
    grouped-query K/V heads are not repeated to every query head, nor kept so for backward): a train step of the peer
    workload (fp32, one micro-batch of 64 sequences) peaks at 2.98 GB instead of 3.19 GB in a plain process, at the
    same speed. A left-padded or gapped row keeps the mask; an empty row (all padding, a shard's filler) counts as
    right-padded: its outputs are computed over pad tokens and masked by the caller.

    >>> padding_mask_or_none(torch.tensor([[1, 1, 0], [1, 1, 1]])) is None
    True
    >>> padding_mask_or_none(torch.tensor([[0, 1, 1], [1, 1, 1]])).tolist()
    [[0, 1, 1], [1, 1, 1]]
    """
    right_padded = bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all())  # no 0 before a 1 in any row
    return None if right_padded else attention_mask


def sequence_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, micro_batch: int,
                      with_entropy: bool = False, entropy_grad: bool = True,
                      dtype: str = "float32") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logprob of every next token [B, T-1] (and its entropy; past a row's end they are padding's, masked by the
    caller, and 0 past its micro-batch's width), computed on the inputs' device in length-sorted micro-batches cut to
    their longest row (`length_sorted_micro_batches`), right-padded rows under causal attention alone
    (`padding_mask_or_none`), under `dtype` autocast (float32: none). One fp32 log-softmax serves both
    (`algos.token_logprobs` and `algos.entropy_from_logits` compute the same numbers); `entropy_grad=False` keeps
    the entropy out of the autograd graph (a metric only: no entropy bonus in the loss)."""
    B, T = input_ids.shape
    out = torch.zeros(B, T - 1, device=input_ids.device)
    ents = torch.zeros(B, T - 1, device=input_ids.device) if with_entropy else None
    for idx, width in length_sorted_micro_batches(attention_mask, micro_batch):
        ids, attn = input_ids[idx, :width], attention_mask[idx, :width]
        with autocast(ids.device, dtype):
            logits = model(input_ids=ids, attention_mask=padding_mask_or_none(attn), use_cache=False).logits[:, :-1]
        logp_all = torch.log_softmax(logits.float(), dim=-1)  # [b, w-1, V]
        out[idx, : width - 1] = logp_all.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # [b, w-1]
        if with_entropy:
            with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
                src = logp_all if entropy_grad else logp_all.detach()
                ents[idx, : width - 1] = -(src.exp() * src).sum(-1)  # [b, w-1]
    return out, ents


def shard_fsdp2(model: torch.nn.Module, mesh=None, *, offload: bool = False) -> torch.nn.Module:
    """FSDP2: each decoder layer, then the root (needs torch.distributed). `offload`: parameters live on the CPU
    between uses (a frozen reference). FSDP averages gradients over ranks (the trainer scales its loss to match)."""
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

    policy = CPUOffloadPolicy() if offload else OffloadPolicy()
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh, offload_policy=policy)
    fully_shard(model, mesh=mesh, offload_policy=policy)
    return model



def save_hf_folder(model, tokenizer, state: dict[str, torch.Tensor], folder: Path) -> None:
    """A Hugging Face model folder from a full state dict (the model itself may be sharded): safetensors weights
    (a tied output embedding stored once), config, generation config, tokenizer."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    model.config.save_pretrained(folder)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


class NonFiniteStepError(RuntimeError):
    """The update produced inf/NaN: refused steps in a row (`trainer.max_nonfinite_steps`), or weights to save."""


def rng_state() -> dict:
    """torch, Python and numpy RNG states as tensors, lists and numbers only (loadable with weights_only=True)."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {"torch": torch.get_rng_state(), "python": [version, list(mt), gauss],
            "numpy": {"name": name, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}


def set_rng_state(state: dict) -> None:
    """The inverse of `rng_state`."""
    torch.set_rng_state(state["torch"])
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], np.asarray(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))


class PolicyTrainer:
    """Owns the policy, the frozen reference, the optimizer and the step counter (one rank's share when sharded)."""

    def __init__(self, model_path: str, trainer: GRPOTrainerConfig, algo: AlgoConfig, *, total_steps: int, seed: int = 0):
        from core.lean_ops import apply_lean_ops
        from core.model import load_checkpoint
        from core.optim import build_optimizer

        if trainer.num_threads > 0:
            torch.set_num_threads(trainer.num_threads)
        torch.manual_seed(seed)
        self.cfg, self.algo, self.total_steps = trainer, algo, total_steps
        self.device = resolve_device(trainer.device)
        self.dtype = resolve_dtype(trainer.dtype, self.device)  # auto: measured once per process
        self.rank, self.world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        self.sharded = self.world_size > 1 or trainer.fsdp
        self.policy, self.tokenizer = load_checkpoint(model_path, dtype="float32")
        if trainer.gradient_checkpointing:
            self.policy.gradient_checkpointing_enable()
        self.reference = None
        if algo.kl_coef > 0:
            self.reference, _ = load_checkpoint(model_path, dtype="float32")
            self.reference.eval().requires_grad_(False)
        # before sharding (each swap is probed on plain tensors); the reference too, so both run the same ops
        self.lean_ops = apply_lean_ops(self.policy) if trainer.lean_activations else None
        if trainer.lean_activations and self.reference is not None:
            apply_lean_ops(self.reference)
        self.offload_reference = trainer.reference_offload and self.device.type != "cpu"
        if self.sharded:
            from torch.distributed.device_mesh import init_device_mesh

            mesh = init_device_mesh(self.device.type, (self.world_size,))
            shard_fsdp2(self.policy.to(self.device), mesh)
            if self.reference is not None:
                shard_fsdp2(self.reference if self.offload_reference else self.reference.to(self.device), mesh,
                            offload=self.offload_reference)
        else:
            self.policy.to(self.device)
            if self.reference is not None and not self.offload_reference:
                self.reference.to(self.device)
        self.optimizer = build_optimizer(self.policy, trainer.optim)
        self.step = 0
        self.nonfinite_steps = 0  # consecutive steps refused for inf/NaN (`refuse_nonfinite`)
        # no dropout in Qwen2; eval() keeps logprobs deterministic. transformers checkpoints activations only in
        # training mode, so with gradient_checkpointing the policy stays in train() (the same numbers here).
        self.policy.train(trainer.gradient_checkpointing)

    def lr(self) -> float:
        from core.optim import lr_at

        o = self.cfg.optim
        return lr_at(self.step, lr_peak=o.lr_peak, warmup_steps=o.lr_warmup_steps, total_steps=self.total_steps, min_ratio=o.lr_min_ratio)

    def group_sum(self, values: list[float]) -> list[float]:
        """`values` summed over the ranks (as they are with one rank)."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.world_size > 1:
            dist.all_reduce(t)
        return t.tolist()

    def group_masked_mean(self, values: torch.Tensor, mask: torch.Tensor) -> float:
        total, count = self.group_sum([float((values * mask).sum()), float(mask.sum())])
        return total / max(count, 1.0)

    def behaviour_source(self) -> str:
        """Where the PPO ratio's denominator comes from: "recompute", "rollout", or "training_forward" (the
        training forward's own detached logprobs: `behaviour_logprobs: auto` with one optimizer step per batch).
        More than one optimizer step per batch (updates_per_step × mini_batches_per_update) moves the weights away
        from the proximal policy after the first, and a rejecting correction changes the token count the loss is
        normalised by before the first micro-batch: both recompute."""
        if self.algo.behaviour_logprobs != "auto":
            return self.algo.behaviour_logprobs
        if self.cfg.updates_per_step * self.algo.mini_batches_per_update > 1 or self.algo.minibatch_split == "source":
            return "recompute"
        return "recompute" if effective_correction(self.algo)[0] in ROLLOUT_RS_OPTIONS else "training_forward"

    def first_minibatch_own(self, batch: TrainBatch) -> slice | None:
        """The first PPO mini-batch's rows when `behaviour_logprobs: auto` recomputes for several mini-batches of
        ONE update: that mini-batch trains on the weights that have not moved yet, so its training forward's
        detached logprobs are the proximal policy's and only the later mini-batches need the no-grad pass
        (half of it with two mini-batches). None (recompute every row): any other source, more than one update per
        batch (every row trains again on moved weights) or a rejecting correction (its keep-mask is needed before
        the first micro-batch)."""
        if self.algo.behaviour_logprobs != "auto" or self.behaviour_source() != "recompute":
            return None
        if self.cfg.updates_per_step != 1:
            return None
        if effective_correction(self.algo)[0] in ROLLOUT_RS_OPTIONS:
            return None
        cuts = minibatch_cuts(batch, self.algo)
        return cuts[0] if len(cuts) > 1 else None

    def correct(self, proximal: torch.Tensor, behaviour: torch.Tensor, mask: torch.Tensor
                ) -> tuple[torch.Tensor | None, torch.Tensor, dict[str, float]]:
        """The run's rollout correction (`rl.config.effective_correction`): IS weights (or None), keep-mask, metrics."""
        name, kwargs = effective_correction(self.algo)
        return ROLLOUT_CORRECTIONS[name](proximal, behaviour, mask, **kwargs)

    def train_step(self, batch: TrainBatch) -> dict[str, float]:
        """Reference and behaviour logprobs, then `updates_per_step` optimizer steps. Returns metrics (over the
        whole group's batch when sharded)."""
        t0 = time.perf_counter()
        if self.cfg.num_threads > 0 and torch.get_num_threads() != self.cfg.num_threads:
            torch.set_num_threads(self.cfg.num_threads)  # per OS thread under OpenMP: an actor's pool thread needs it too
        batch = batch.to(self.device)
        before = self.logprobs_before_update(batch)
        t1 = time.perf_counter()
        lr = self.lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        metrics: dict[str, float] = {}
        update = batch if before.keep is None else dataclasses.replace(batch, response_mask=before.keep)
        # every rank holds the same number of rows, its parts of the whole batch's mini-batches in order
        # (`shard_batch`), so every rank makes the same optimizer steps on the same mini-batches
        cuts = minibatch_cuts(batch, self.algo)
        slices = cuts if len(cuts) > 1 else [None]
        per_update: dict[str, float] = {}
        first: dict[str, float] = {}
        for u in range(self.cfg.updates_per_step):
            for i, sl in enumerate(slices):  # PPO mini-batches: one optimizer step each
                part = (update, before) if sl is None else (update.rows(sl), before.rows(sl))
                if before.own_rows is not None and u == i == 0:  # unmoved weights: the forward's own logprobs
                    part = (part[0], dataclasses.replace(part[1], behaviour=None, is_weights=None))
                metrics = self.optimizer_step(*part)
                first = first or metrics
                if self.cfg.updates_per_step * len(slices) > 1:
                    k = u * len(slices) + i
                    per_update.update({f"update_{k}/{key}": metrics[key] for key in ("clip_fraction", "ppo_kl", "loss")
                                       if key in metrics})
        metrics.update(per_update)
        self.step += 1
        mask = batch.response_mask
        if before.own_rows is not None:  # the first mini-batch's own measures and the other rows', token-weighted
            [own_tokens] = self.group_sum([float(mask[before.own_rows].sum())])
            is_sum, truncated, tokens = before.later_sums
            total = max(own_tokens + tokens, 1.0)
            gap = first["trainer_rollout_logprob_gap"] * own_tokens + before.rollout_gap * tokens
            metrics["trainer_rollout_logprob_gap"] = gap / total
            if "is_weight_mean" in first:
                metrics["is_weight_mean"] = (first["is_weight_mean"] * own_tokens + is_sum) / total
                own_truncated = first["is_weight_truncated_fraction"] * own_tokens
                metrics["is_weight_truncated_fraction"] = (own_truncated + truncated) / total
        elif before.is_weights is not None:
            metrics["is_weight_mean"] = self.group_masked_mean(before.is_weights, mask)
            metrics["is_weight_truncated_fraction"] = self.group_masked_mean((before.is_weights >= self.algo.tis_cap).float(), mask)
        for key, value in before.correction_metrics.items():
            metrics[f"rollout_correction/{key}"] = value
        if before.behaviour is not None and before.own_rows is None:  # else the update measured the gap itself
            metrics["trainer_rollout_logprob_gap"] = before.rollout_gap
        [trained] = self.group_sum([float(mask.sum())])
        now = time.perf_counter()
        metrics.update({"lr": lr, "time_reference_s": before.time_reference_s, "time_behaviour_s": before.time_behaviour_s,
                        "time_train_s": now - t1, "time_trainer_s": now - t0, "trained_tokens": trained,
                        "trainer_threads": float(torch.get_num_threads())})
        return metrics

    def _reference_logprobs(self, batch: TrainBatch) -> torch.Tensor | None:
        if self.reference is None:
            return None
        mb, dtype = self.cfg.micro_batch_sequences, self.dtype
        if self.offload_reference and not self.sharded:  # on the device only while it is used
            self.reference.to(self.device)
        try:
            ref, _ = sequence_logprobs(self.reference, batch.input_ids, batch.attention_mask, micro_batch=mb, dtype=dtype)
        finally:
            if self.offload_reference and not self.sharded:
                self.reference.to("cpu")
        return ref

    @torch.no_grad()
    def logprobs_before_update(self, batch: TrainBatch) -> BeforeUpdate:
        """The frozen reference's logprobs, the behaviour policy's (recomputed by the current weights, or vLLM's)
        and the truncated importance weights of stale samples (`AlgoConfig.off_policy_correction`)."""
        mb, dtype = self.cfg.micro_batch_sequences, self.dtype
        t0 = time.perf_counter()
        ref = self._reference_logprobs(batch)
        t1 = time.perf_counter()
        source = self.behaviour_source()
        if source == "training_forward":  # computed by the update itself (`optimizer_step`)
            return BeforeUpdate(ref, None, None, 0.0, t1 - t0)
        own = self.first_minibatch_own(batch) if source == "recompute" else None
        later = batch.response_mask  # [B, T-1] the tokens whose proximal logprobs are computed here
        if own is not None:  # the first mini-batch's come from its own training forward (`first_minibatch_own`)
            rest = slice(own.stop, None)
            old = torch.zeros_like(batch.rollout_logprobs)
            old[rest], _ = sequence_logprobs(self.policy, batch.input_ids[rest], batch.attention_mask[rest],
                                             micro_batch=mb, dtype=dtype)
            later = batch.response_mask.clone()
            later[own] = 0
        elif source == "recompute":
            old, _ = sequence_logprobs(self.policy, batch.input_ids, batch.attention_mask, micro_batch=mb, dtype=dtype)
        else:
            old = batch.rollout_logprobs
        recompute = source == "recompute"
        gap = self.group_masked_mean((old - batch.rollout_logprobs).abs(), later) if recompute else 0.0
        is_w, keep, corr, sums = None, None, {}, (0.0, 0.0, 0.0)
        if recompute and effective_correction(self.algo)[0] != "none":
            is_w, kept, _ = self.correct(old, batch.rollout_logprobs, later)  # [B, T-1] each
            if own is not None and is_w is not None:
                truncated = (is_w >= self.algo.tis_cap).float()
                sums = tuple(self.group_sum([float((is_w * later).sum()), float((truncated * later).sum()),
                                             float(later.sum())]))
            if effective_correction(self.algo)[0] in ROLLOUT_RS_OPTIONS:
                keep = kept  # rejected tokens leave the loss (the keep-mask replaces the response mask)
                mask = batch.response_mask
                rejected = (mask - keep).clamp(min=0)  # [B, T-1]
                seqs = (mask.sum(-1) > 0).float()  # [B]
                n_rej, n_seq = self.group_sum([float(((rejected.sum(-1) > 0).float() * seqs).sum()), float(seqs.sum())])
                corr = {"masked_fraction": self.group_masked_mean(rejected, mask),
                        "seq_masked_fraction": n_rej / max(n_seq, 1.0)}
        if own is not None and is_w is None:
            sums = (0.0, 0.0, self.group_sum([float(later.sum())])[0])
        return BeforeUpdate(ref, old, is_w, gap, t1 - t0, time.perf_counter() - t1, keep, corr, own, sums)

    def optimizer_step(self, batch: TrainBatch, before: BeforeUpdate) -> dict[str, float]:
        """One optimizer step on the whole batch (the group's, when sharded), accumulated over micro-batches."""
        mb, dtype = self.cfg.micro_batch_sequences, self.dtype
        mask = batch.response_mask
        total_tokens, total_seqs = (max(v, 1.0) for v in self.group_sum([float(mask.sum()), float((mask.sum(-1) > 0).sum())]))
        ref, old, is_w = before.reference, before.behaviour, before.is_weights
        own = old is None  # the proximal policy is this forward's own (detached) logprobs
        correct = own and effective_correction(self.algo)[0] != "none"
        cap = self.algo.tis_cap
        policy_loss = None if self.algo.policy_loss == "vanilla" else POLICY_LOSSES[self.algo.policy_loss]
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        vs_rollout = [0.0, 0.0, 0.0, 0.0]  # masked sums: |trainer - vLLM| logprob, IS weight, truncated, tokens
        for idx, width in length_sorted_micro_batches(batch.attention_mask, mb):
            sl = (idx, slice(0, width - 1))  # the micro-batch's rows, cut to its longest: [b, w-1]
            m = mask[sl]
            if m.sum() == 0 and not self.sharded:
                continue
            logp, ent = sequence_logprobs(self.policy, batch.input_ids[idx, :width], batch.attention_mask[idx, :width],
                                          micro_batch=mb, with_entropy=True, entropy_grad=self.algo.entropy_coef != 0,
                                          dtype=dtype)
            if m.sum() == 0:  # a sharded rank still runs forward and backward: FSDP's collectives need every rank
                (logp.sum() * 0.0).backward()
                continue
            old_mb, is_mb = (logp.detach(), None) if own else (old[sl], None if is_w is None else is_w[sl])  # [b, w-1]
            if own:
                behaviour = batch.rollout_logprobs[sl]
                vs_rollout[0] += float(((old_mb - behaviour).abs() * m).sum())
                if correct:  # no rejection here (a rejecting correction recomputes): weights only
                    is_mb, _, _ = self.correct(old_mb, behaviour, m)  # [b, T-1]
                if is_mb is not None:
                    vs_rollout[1] += float((is_mb * m).sum())
                    vs_rollout[2] += float(((is_mb >= cap).float() * m).sum())
                vs_rollout[3] += float(m.sum())
            loss, mets = algos.grpo_loss(
                logp, old_mb, None if ref is None else ref[sl], batch.advantages[idx], m,
                clip_low=self.algo.clip_ratio_low, clip_high=self.algo.clip_ratio_high, clip_ratio_c=self.algo.clip_ratio_c,
                kl_coef=self.algo.kl_coef, kl_estimator=self.algo.kl_estimator, agg_mode=self.algo.loss_agg_mode,
                horizon=mask.shape[-1], entropy=ent, entropy_coef=self.algo.entropy_coef, is_weights=is_mb,
                policy_loss=policy_loss, policy_loss_extra=dict(self.algo.policy_loss_extra) or None)
            # the micro-batch's share of the whole batch, so accumulated gradients summed over ranks equal the whole
            # batch's; FSDP averages over ranks, hence the world size (gloo has no pre-multiplied sum to avoid it)
            weight = float(m.sum()) / total_tokens if self.algo.loss_agg_mode == "token-mean" else float((m.sum(-1) > 0).sum()) / total_seqs
            weight *= self.world_size if self.sharded else 1
            (loss * weight).backward()
            share = weight / (self.world_size if self.sharded else 1)  # of the group's batch, for the metrics
            for k, v in mets.items():
                sums[k] = sums.get(k, 0.0) + v * share
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach()) * share
        grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.optim.grad_clip_norm)
        out = {**self._group_metrics(sums), "grad_norm": float(full_value(grad_norm))}
        out["nonfinite_skipped"] = float(self.refuse_nonfinite(out))
        if not out["nonfinite_skipped"]:
            self.optimizer.step()
        if own:  # what `logprobs_before_update` reports when it computes the behaviour logprobs itself
            gap, is_sum, truncated, tokens = self.group_sum(vs_rollout)
            out["trainer_rollout_logprob_gap"] = gap / max(tokens, 1.0)
            if correct:
                out.update({"is_weight_mean": is_sum / max(tokens, 1.0), "is_weight_truncated_fraction": truncated / max(tokens, 1.0)})
        return out

    def refuse_nonfinite(self, metrics: dict[str, float]) -> bool:
        """True (and the gradients dropped) when this step's loss or gradient norm is inf/NaN: the step is skipped.

        Protects against: one bad batch (an inf advantage, an overflow) turning every weight into NaN while the run
        goes on and checkpoints them. `trainer.max_nonfinite_steps` refusals in a row raise `NonFiniteStepError`: a
        run that cannot make a finite step stops, saying why. The loss and norm are the group's, so every rank
        decides the same.
        """
        loss, norm = metrics.get("loss", 0.0), metrics["grad_norm"]
        if math.isfinite(loss) and math.isfinite(norm):
            self.nonfinite_steps = 0
            return False
        self.optimizer.zero_grad(set_to_none=True)
        self.nonfinite_steps += 1
        limit = self.cfg.max_nonfinite_steps
        if self.nonfinite_steps >= limit:
            raise NonFiniteStepError(
                f"{self.nonfinite_steps} consecutive non-finite steps (loss {loss}, grad_norm {norm}) at trainer step "
                f"{self.step}: stopping, trainer.max_nonfinite_steps = {limit}. The weights are those of the last finite "
                f"step. Look for inf/NaN rewards or advantages, or lower trainer.optim.lr_peak")
        if self.rank == 0:
            print(f"[trainer] step {self.step}: non-finite loss {loss} / grad_norm {norm}: update skipped "
                  f"({self.nonfinite_steps}/{limit} in a row)", flush=True)
        return True

    def check_finite_parameters(self, what: str) -> None:
        """Raise `NonFiniteStepError` naming the parameters holding inf/NaN (every rank checks its shards)."""
        bad = [name for name, p in self.policy.named_parameters()
               if not torch.isfinite(p.detach().to_local() if hasattr(p, "to_local") else p.detach()).all()]
        [count] = self.group_sum([float(len(bad))])
        if count:
            raise NonFiniteStepError(f"refusing to {what}: non-finite values in parameter(s) {bad[:5] or '(on another rank)'}"
                                     f"{' ...' if len(bad) > 5 else ''}")

    def _group_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """Per-rank weighted sums -> the group's values (the same keys on every rank, even one with no tokens)."""
        if self.world_size == 1:
            return sums
        keys: list[list[str]] = [[] for _ in range(self.world_size)]
        dist.all_gather_object(keys, sorted(sums))
        names = sorted(set().union(*keys))
        return dict(zip(names, self.group_sum([sums.get(k, 0.0) for k in names])))

    # checkpoints --------------------------------------------------------------------------------------------

    def _state_options(self):
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=True, cpu_offload=self.world_size > 1)

    def save(self, path: str | Path, extra: dict) -> Path:
        """Policy in Hugging Face format, plus optimizer (keyed by parameter name), step, RNG and the loop's `extra`
        state. Every rank takes part (the full state is gathered); rank 0 writes."""
        from torch.distributed.checkpoint.state_dict import get_state_dict

        path = Path(path)
        self.check_finite_parameters(f"save {path}")  # a NaN checkpoint would poison every run resumed from it
        model_state, optim_state = get_state_dict(self.policy, self.optimizer, options=self._state_options())
        if self.rank == 0:
            save_hf_folder(self.policy, self.tokenizer, model_state, path / "policy")
            torch.save({"optimizer": optim_state, "step": self.step, "extra": extra,
                        "rng": rng_state()},
                       path / "trainer_state.pt")
        if self.world_size > 1:
            dist.barrier()
        return path

    def load(self, path: str | Path) -> dict:
        """Restore from `save` (saved with any number of ranks); returns the loop's `extra` state."""
        from safetensors.torch import load_file
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        path = Path(path)
        state = load_file(str(path / "policy" / "model.safetensors"))
        tied = getattr(self.policy.config, "tie_word_embeddings", False)
        expected = {n for n, _ in self.policy.named_parameters(remove_duplicate=False)}
        if tied and "lm_head.weight" in expected and "lm_head.weight" not in state:
            state["lm_head.weight"] = state["model.embed_tokens.weight"]  # saved once; the model holds it twice
        unexpected, missing = set(state) - expected, expected - set(state)
        if unexpected or missing:
            raise RuntimeError(f"{path}: checkpoint does not fit the policy (missing {sorted(missing)}, unexpected {sorted(unexpected)})")
        try:  # tensors and plain containers only: a crafted pickle cannot run code here
            blob = torch.load(path / "trainer_state.pt", weights_only=True)
        except pickle.UnpicklingError as e:
            raise pickle.UnpicklingError(
                f"{path / 'trainer_state.pt'}: refusing to load it: it holds objects other than tensors and plain "
                f"containers (a crafted file could run code; checkpoints of mixrl before the weights-only format are "
                f"refused too). {str(e).splitlines()[0]}") from None
        set_state_dict(self.policy, self.optimizer, model_state_dict=state, optim_state_dict=blob["optimizer"],
                       options=StateDictOptions(full_state_dict=True))
        self.step = blob["step"]
        set_rng_state(blob["rng"])
        return blob["extra"]

    def set_optim(self, optim) -> None:
        """New hyperparameters on resume (the report restarts with new ones to break plateaus)."""
        from core.optim import apply_optim_config

        self.cfg.optim = optim
        apply_optim_config(self.optimizer, optim)

    def parameter_checksum(self) -> float:
        """Sum of every parameter (all ranks take part when sharded)."""
        return float(sum(full_value(p.detach()).double().sum() for p in self.policy.parameters()))
