"""Multi-sample packing with sequence isolation.

Several samples share one row of `sequence_tokens`; position ids restart at 0 for each sample, and with no 2-D
attention mask transformers derives a block-diagonal causal mask from those position ids
(`masking_utils.find_packed_sequence_indices`), so no token attends across samples. The first token of each
sample is never a target: it would be predicted from the previous sample. Hence the packed loss equals the
unpacked loss (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.chat import IGNORE_INDEX


@dataclass
class PackedBatch:
    """Rows ready for the model; every tensor is [rows, sequence_tokens]."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor

    @property
    def trained_tokens(self) -> int:
        return int((self.labels[:, 1:] != IGNORE_INDEX).sum())

    def to(self, device: torch.device) -> "PackedBatch":
        return PackedBatch(self.input_ids.to(device), self.position_ids.to(device), self.labels.to(device))


@dataclass
class PackStats:
    samples: int
    rows: int
    truncated_samples: int
    fill_ratio: float  # real tokens / row capacity


def pack_samples(
    samples: list[tuple[list[int], list[int]]], sequence_tokens: int, pad_id: int
) -> tuple[list[tuple[list[int], list[int], list[int]]], PackStats]:
    """Greedily pack (ids, labels) samples in order into rows of `sequence_tokens`.

    Returns rows of (input_ids, position_ids, labels). A sample longer than a row is truncated (counted).
    Padding at the end of a row is its own segment with IGNORE_INDEX labels.
    """
    rows: list[tuple[list[int], list[int], list[int]]] = []
    ids_row: list[int] = []
    pos_row: list[int] = []
    lab_row: list[int] = []
    truncated = 0
    real_tokens = 0

    def close_row():
        pad = sequence_tokens - len(ids_row)
        ids_row.extend([pad_id] * pad)
        pos_row.extend(range(pad))
        lab_row.extend([IGNORE_INDEX] * pad)
        rows.append((list(ids_row), list(pos_row), list(lab_row)))
        ids_row.clear(), pos_row.clear(), lab_row.clear()

    for ids, labels in samples:
        if len(ids) > sequence_tokens:
            ids, labels = ids[:sequence_tokens], labels[:sequence_tokens]
            truncated += 1
        if len(ids) < 2:
            continue
        if len(ids_row) + len(ids) > sequence_tokens:
            close_row()
        ids_row.extend(ids)
        pos_row.extend(range(len(ids)))
        lab_row.extend([IGNORE_INDEX] + list(labels[1:]))
        real_tokens += len(ids)
    if ids_row:
        close_row()
    fill = real_tokens / max(1, len(rows) * sequence_tokens)
    return rows, PackStats(samples=len(samples), rows=len(rows), truncated_samples=truncated, fill_ratio=fill)


def collate_rows(rows: list[tuple[list[int], list[int], list[int]]]) -> PackedBatch:
    """Stack packed rows into a batch."""
    return PackedBatch(
        input_ids=torch.tensor([r[0] for r in rows], dtype=torch.long),
        position_ids=torch.tensor([r[1] for r in rows], dtype=torch.long),
        labels=torch.tensor([r[2] for r in rows], dtype=torch.long),
    )


def token_losses(model, batch: PackedBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token cross-entropy of next-token prediction; returns (losses [B, L-1], mask [B, L-1], logits).

    Packed rows carry restarting position ids and no attention mask, which selects the isolated mask.
    """
    logits = model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits  # [B, L, V]
    targets = batch.labels[:, 1:]  # [B, L-1]
    mask = targets != IGNORE_INDEX
    losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.clamp(min=0).reshape(-1), reduction="none"
    ).view_as(targets)
    return losses * mask, mask, logits
