"""Training-state checkpoints and resume, one vocabulary for every stage (SFT, pretraining, GRPO).

Recipe keys (same names in `sft` and `rl` schemas):
    checkpoint_every_steps: N   a checkpoint every N steps and at the end; 0 = only at the end
    keep_checkpoints: K         keep the newest K checkpoints
    resume: ""                  start fresh
            "auto"              continue from this run's own latest checkpoint if there is one
            PATH                a run directory (its latest checkpoint) or one checkpoint folder (`.../step_N`)

Layout: `RUN_DIR/checkpoints/step_N/`, written under a temporary name and renamed when complete, so a killed run
never leaves half a checkpoint that resume would pick. A write that fails (a full disk, a refused state) removes
its temporary folder and raises; a full disk names the folder and the space left. Temporary folders left by a run
killed mid-write are swept by the next save (one run per run directory: `core.run_dir`).

    path = save_checkpoint(run_dir, step, lambda tmp: torch.save(state, tmp / "state.pt"), keep=2)
    ckpt = find_resume_checkpoint(cfg.resume, run_dir)   # None = start fresh
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Callable
from pathlib import Path

AUTO = "auto"


def checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoints_dir(run_dir)
    return sorted((p for p in root.glob("step_*") if p.is_dir() and p.name.split("_")[1].isdigit()),
                  key=lambda p: int(p.name.split("_")[1]))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(run_dir: str | Path, step: int, write: Callable[[Path], None], *, keep: int) -> Path:
    """`write(folder)` fills a temporary folder, which then becomes `checkpoints/step_N`; older ones beyond `keep`
    are removed."""
    root = checkpoints_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp_step_*"):  # a run killed mid-write
        shutil.rmtree(stale, ignore_errors=True)
    tmp, final = root / f".tmp_step_{step}", root / f"step_{step}"
    tmp.mkdir()
    try:
        write(tmp)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno == errno.ENOSPC:
            free = shutil.disk_usage(root).free
            raise OSError(errno.ENOSPC, f"no space left on the disk of {root} writing checkpoint step_{step} "
                                        f"({free / 2**20:.0f} MiB free now; the partial checkpoint was removed): {e}") from e
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    found = list_checkpoints(run_dir)
    for old in found[: max(0, len(found) - max(1, keep))]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def find_resume_checkpoint(resume: str, run_dir: str | Path) -> Path | None:
    """The checkpoint `resume` names (see the module docstring); None = start fresh.

    An explicit path that holds no checkpoint is an error (a typo must not silently restart from scratch).
    """
    if not resume:
        return None
    if resume == AUTO:
        return latest_checkpoint(run_dir)
    path = Path(resume)
    if path.name.startswith("step_") and path.is_dir():
        return path
    found = latest_checkpoint(path)
    if found is None:
        raise FileNotFoundError(f"resume={resume}: no complete checkpoint under {checkpoints_dir(path)}")
    return found
