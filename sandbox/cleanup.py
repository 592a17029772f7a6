"""Host state a `Sandbox` leaves when its owner dies without ``close()``: cgroup folders and staging dirs.

Each Sandbox names its cgroup parents ``mixrl-sandbox-<pid>-<hex>`` and its staging directory
``mixrl-sandbox-stage-<pid>-*`` (in the temp dir), so ownership is readable from the name. Two defences:

- on any interpreter exit, the Sandbox's finaliser (``weakref.finalize``, which runs at exit) removes its own
  parents *with* the run groups still inside them (killing what runs there), not just the empty parents;
- a new Sandbox sweeps, next to its own parents and in the temp dir, the folders whose owning pid is dead
  (SIGKILL, OOM kill, a crashed Ray actor: nothing at exit ran).

Not covered: an owner in another pid namespace that shares this cgroup tree looks dead from here; its folders
are swept only if that namespace's pid number is free in ours (live owners here are never touched).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from collections.abc import Iterable

PARENT_RE = re.compile(r"^mixrl-sandbox-(\d+)(?:-[0-9a-f]+)?$")
STAGE_RE = re.compile(r"^mixrl-sandbox-stage-(\d+)-")


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists (in our pid namespace)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_cgroup_tree(path: str, timeout_s: float = 2.0) -> bool:
    """Kill every process in the cgroup ``path`` and its descendants, then remove the folders bottom-up.
    True if ``path`` is gone."""
    end = time.monotonic() + timeout_s
    while os.path.isdir(path):
        for root, dirs, files in os.walk(path, topdown=False):
            for name in ("cgroup.procs", "tasks"):
                try:
                    with open(os.path.join(root, name)) as f:
                        pids = [int(x) for x in f.read().split()]
                except (OSError, ValueError):
                    continue
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:  # already exited: nothing left to kill
                        pass
                break
            try:
                os.rmdir(root)
            except OSError:  # still busy or gone: the loop retries until the deadline
                pass
        if not os.path.isdir(path) or time.monotonic() > end:
            break
        time.sleep(0.02)  # killed processes leave their cgroup asynchronously
    return not os.path.isdir(path)


def sweep_stale(cgroup_bases: Iterable[str], stage_root: str | None = None) -> list[str]:
    """Remove ``mixrl-sandbox-<pid>*`` cgroup folders under each base, and staging dirs under ``stage_root``,
    whose pid is dead. Returns what was removed."""
    removed = []
    for base in set(cgroup_bases):
        try:
            entries = os.listdir(base)
        except OSError:
            continue
        for name in entries:
            m = PARENT_RE.match(name)
            if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
                if remove_cgroup_tree(os.path.join(base, name), timeout_s=0.5):
                    removed.append(os.path.join(base, name))
    if stage_root:
        try:
            entries = os.listdir(stage_root)
        except OSError:
            entries = []
        for name in entries:
            m = STAGE_RE.match(name)
            if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
                shutil.rmtree(os.path.join(stage_root, name), ignore_errors=True)
                removed.append(os.path.join(stage_root, name))
    return removed
