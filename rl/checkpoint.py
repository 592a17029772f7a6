"""GRPO checkpoints: the trainer's state plus the batches the rollout side generated ahead (`core.checkpoint` layout).

A checkpoint `RUN_DIR/checkpoints/step_N/` holds the policy in Hugging Face format (`policy/`), the trainer's
optimizer, step and RNG (`trainer_state.pt`), and `pending_rollouts.pkl`: the batches already generated for
steps N.. N+k, so a resumed run trains on exactly the samples an uninterrupted one would have.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from core.checkpoint import find_resume_checkpoint, latest_checkpoint, save_checkpoint
from rl.config import GRPOConfig

PENDING_FILE = "pending_rollouts.pkl"

__all__ = ["PENDING_FILE", "latest_checkpoint", "restore_grpo_checkpoint", "save_grpo_checkpoint"]


def save_grpo_checkpoint(cfg: GRPOConfig, trainer, step: int, ahead: dict) -> Path:
    """The trainer's state (`TrainerGroup.save`: full state, rank 0 writes) and the batches generated ahead, as
    checkpoints/step_N (keeps `keep_checkpoints`)."""
    def write(folder: Path) -> None:
        trainer.save(str(folder), {"step": step})
        (folder / PENDING_FILE).write_bytes(pickle.dumps(dict(ahead)))

    return save_checkpoint(cfg.run_dir, step, write, keep=cfg.keep_checkpoints)


def restore_grpo_checkpoint(cfg: GRPOConfig, trainer) -> tuple[int, dict, Path | None]:
    """Load the checkpoint `cfg.resume` names into the trainer actor, with this invocation's optimizer
    hyperparameters; returns (step to start at, batches generated ahead that the staleness bound still allows,
    the checkpoint). (0, {}, None) when starting fresh."""
    ckpt = find_resume_checkpoint(cfg.resume, cfg.run_dir)
    if ckpt is None:
        return 0, {}, None
    start_step = trainer.load(str(ckpt))["step"]
    trainer.set_optim(cfg.trainer.optim)  # hyperparameters of this invocation win
    ahead = {}
    if (ckpt / PENDING_FILE).exists() and cfg.max_staleness > 0:
        ahead = {s: b for s, b in pickle.loads((ckpt / PENDING_FILE).read_bytes()).items()
                 if start_step <= s <= start_step + cfg.max_staleness}
    return start_step, ahead, ckpt
