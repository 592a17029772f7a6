"""One run per run directory: an exclusive lock on `RUN_DIR/.lock`, held for the whole run.

    with hold_run_dir(cfg.run_dir):
        ...  # train, log, checkpoint

Protects against: two runs started in one run directory (a recipe launched twice, a resume started while the
first run still goes) interleaving `metrics.jsonl` and overwriting each other's checkpoints. The second one
fails at once with `RunDirBusyError`, naming the holder's pid and host. The lock is `fcntl.flock` on an open file:
the kernel releases it when the holder exits, however it dies (no stale lock to clean up), and it is exclusive
between processes and between two holders in one process.

Not covered: run directories on network filesystems whose `flock` is local to one client (some NFS setups), and
two runs that share checkpoints through `resume=PATH` of another run's directory (resume only reads).
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".lock"


class RunDirBusyError(RuntimeError):
    """Another run holds the run directory."""


@contextmanager
def hold_run_dir(run_dir: str | Path) -> Iterator[Path]:
    """Create `run_dir` if needed and hold its lock until the block ends; raises `RunDirBusyError` at once if
    another run holds it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    f = open(path, "a+")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown pid"
            raise RunDirBusyError(f"run directory {run_dir} is in use by another run ({holder}); wait for it to end, "
                                  f"stop it, or give this run another run_dir") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        yield run_dir
    finally:
        f.close()  # closing the file releases the lock
