"""GRPO checkpoints: the trainer's state plus the batches the rollout side generated ahead (`core.checkpoint` layout).

A checkpoint `RUN_DIR/checkpoints/step_N/` holds the policy in Hugging Face format (`policy/`), the trainer's
optimizer, step and RNG (`trainer_state.pt`, tensors and plain containers only: loaded with
`torch.load(weights_only=True)`), and `pending_rollouts.json`: the batches already generated for steps N.. N+k, so
a resumed run trains on exactly the samples an uninterrupted one would have.

Protects against: a checkpoint copied from elsewhere running code when resumed. Nothing here unpickles: the
pending batches are JSON read back into their dataclasses field by field (`batch_to_dict` / `batch_from_dict`),
and a checkpoint with the pickle file of earlier versions (`pending_rollouts.pkl`) is refused, naming the file.
Not covered: the policy's own files (safetensors and JSON, which carry no code) and a tokenizer folder with custom
code (transformers refuses it without `trust_remote_code`, which mixrl never passes).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from core.checkpoint import find_resume_checkpoint, latest_checkpoint, save_checkpoint
from core.engine import RolloutSample
from rewards import RewardResult
from rl.config import GRPOConfig
from rl.prompts import StepPrompt
from rl.rollout import RolloutBatch, ScoredGroup
from rl.scheduler import DispatchStats, EngineStats

PENDING_FILE = "pending_rollouts.json"
UNSAFE_PENDING_FILE = "pending_rollouts.pkl"  # written by earlier versions; never unpickled

__all__ = ["PENDING_FILE", "batch_from_dict", "batch_to_dict", "latest_checkpoint", "load_pending",
           "restore_grpo_checkpoint", "save_grpo_checkpoint", "save_pending"]


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint holds a file whose loading could run code."""


# ---- the pending batches as JSON ---------------------------------------------------------------------------


def _fields(cls, data: dict) -> Any:
    """A flat dataclass from its dict; a missing field takes its default, an unknown one is an error."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)} in {PENDING_FILE}")
    return cls(**data)


def batch_to_dict(batch: RolloutBatch) -> dict:
    """A `RolloutBatch` as JSON-ready dicts and lists (`dataclasses.asdict`: every field is data)."""
    return dataclasses.asdict(batch)


def batch_from_dict(data: dict) -> RolloutBatch:
    """The inverse of `batch_to_dict`, field by field (no code runs, whatever the file holds)."""
    groups = [ScoredGroup(prompt=_fields(StepPrompt, g["prompt"]),
                          samples=[_fields(RolloutSample, s) for s in g["samples"]],
                          rewards=[_fields(RewardResult, r) for r in g["rewards"]])
              for g in data["groups"]]
    dispatch = data.get("dispatch")
    if dispatch is not None:
        dispatch = _fields(DispatchStats, {**dispatch, "engines": [_fields(EngineStats, e) for e in dispatch["engines"]]})
    rest = {k: v for k, v in data.items() if k not in ("groups", "dispatch")}
    return _fields(RolloutBatch, {**rest, "groups": groups, "dispatch": dispatch})


def save_pending(folder: str | Path, ahead: dict[int, RolloutBatch]) -> None:
    """The batches generated ahead, by step, as `folder/pending_rollouts.json`."""
    payload = {str(step): batch_to_dict(batch) for step, batch in sorted(ahead.items())}
    (Path(folder) / PENDING_FILE).write_text(json.dumps(payload, default=repr))


def load_pending(folder: str | Path) -> dict[int, RolloutBatch]:
    """The batches `save_pending` wrote ({} if none); a pickle of earlier versions is refused, never loaded."""
    folder = Path(folder)
    if (folder / UNSAFE_PENDING_FILE).exists():
        raise UnsafeCheckpointError(
            f"{folder / UNSAFE_PENDING_FILE}: refusing to unpickle it (a crafted pickle runs code when loaded). "
            f"Delete the file to resume from this checkpoint without the batches generated ahead (they are generated "
            f"again), or resume from a checkpoint written by this version ({PENDING_FILE})")
    path = folder / PENDING_FILE
    if not path.exists():
        return {}
    try:
        return {int(step): batch_from_dict(batch) for step, batch in json.loads(path.read_text()).items()}
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a pending-rollouts file of this version: {e}") from e


# ---- save and restore ---------------------------------------------------------------------------------------


def save_grpo_checkpoint(cfg: GRPOConfig, trainer, step: int, ahead: dict) -> Path:
    """The trainer's state (`TrainerGroup.save`: full state, rank 0 writes) and the batches generated ahead, as
    checkpoints/step_N (keeps `keep_checkpoints`)."""
    def write(folder: Path) -> None:
        trainer.save(str(folder), {"step": step})
        save_pending(folder, ahead)

    return save_checkpoint(cfg.run_dir, step, write, keep=cfg.keep_checkpoints)


def restore_grpo_checkpoint(cfg: GRPOConfig, trainer) -> tuple[int, dict, Path | None]:
    """Load the checkpoint `cfg.resume` names into the trainer actor, with this invocation's optimizer
    hyperparameters; returns (step to start at, batches generated ahead that the staleness bound still allows,
    the checkpoint). (0, {}, None) when starting fresh."""
    ckpt = find_resume_checkpoint(cfg.resume, cfg.run_dir)
    if ckpt is None:
        return 0, {}, None
    pending = load_pending(ckpt)  # refuses an unsafe file before anything is loaded
    start_step = trainer.load(str(ckpt))["step"]
    trainer.set_optim(cfg.trainer.optim)  # hyperparameters of this invocation win
    ahead = {}
    if cfg.max_staleness > 0:
        ahead = {s: b for s, b in pending.items() if start_step <= s <= start_step + cfg.max_staleness}
    return start_step, ahead, ckpt
