"""Per-run control groups: memory, process-count and CPU limits, accounting, and killing a whole tree.

Works with cgroup v1 (one hierarchy per controller, as on this machine) and v2 (one unified hierarchy). Run
groups are created under the cgroup this process already lives in (``<own>/mixrl-sandbox-<pid>/<run>``) so the
limits of whatever contains the service still apply above ours. When the host lets us create nothing (no
write access, a read-only cgroupfs, v2 without delegated controllers), :func:`detect` says so and the sandbox
falls back to rlimits (see :mod:`sandbox.isolation`).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field

CONTROLLERS = ("pids", "memory", "cpu", "cpuacct")


@dataclass(frozen=True)
class CgroupSupport:
    """Where run groups go, per controller (v1) or for all of them (v2, key ``"unified"``)."""

    version: int | None  # 1, 2, or None when no controller is usable
    parents: dict[str, str] = field(default_factory=dict)  # controller -> directory that holds run groups

    @property
    def controllers(self) -> tuple[str, ...]:
        if self.version == 2:
            return tuple(c for c in ("pids", "memory", "cpu") if c in self.parents.get("_enabled", ""))
        return tuple(c for c in CONTROLLERS if c in self.parents)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _own_paths() -> dict[str, str]:
    """controller (or "unified") -> this process's cgroup path, from /proc/self/cgroup."""
    own = {}
    for line in _read("/proc/self/cgroup").splitlines():
        _, ctrls, path = line.split(":", 2)
        if ctrls == "":
            own["unified"] = path
        for c in ctrls.split(","):
            if c:
                own[c] = path
    return own


def _mounts() -> dict[str, tuple[str, str]]:
    """controller (or "unified") -> (mountpoint, root of the hierarchy visible there), from mountinfo."""
    found = {}
    for line in _read("/proc/self/mountinfo").splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(rfields) < 3:
            continue
        fstype, options = rfields[0], rfields[2].split(",")
        root, mountpoint = fields[3], fields[4]
        if fstype == "cgroup2":
            found.setdefault("unified", (mountpoint, root))
        elif fstype == "cgroup":
            for c in CONTROLLERS:
                if c in options:
                    found.setdefault(c, (mountpoint, root))
    return found


def _usable_parent(base: str, tag: str) -> str | None:
    """Create ``base/tag`` (our parent for run groups) and prove a child can be made in it."""
    parent = os.path.join(base, tag)
    try:
        os.makedirs(parent, exist_ok=True)
        probe = os.path.join(parent, "probe")
        os.mkdir(probe)
        os.rmdir(probe)
        return parent
    except OSError:
        return None


def detect(tag: str | None = None) -> CgroupSupport:
    """Find which controllers this process may use for run groups (creates the parent directories)."""
    tag = tag or f"mixrl-sandbox-{os.getpid()}"
    try:
        own, mounts = _own_paths(), _mounts()
    except OSError:
        return CgroupSupport(None)
    parents: dict[str, str] = {}
    for c in CONTROLLERS:
        if c not in mounts or c not in own:
            continue
        mountpoint, root = mounts[c]
        rel = own[c][len(root):] if own[c].startswith(root) else own[c]
        base = os.path.join(mountpoint, rel.lstrip("/"))
        if not os.path.isdir(base):
            base = mountpoint
        parent = _usable_parent(base, tag)
        if parent:
            parents[c] = parent
    if "pids" in parents or "memory" in parents:
        return CgroupSupport(1, parents)
    for p in parents.values():
        _rmdir_quiet(p)
    if "unified" in mounts and "unified" in own:
        mountpoint, root = mounts["unified"]
        rel = own["unified"][len(root):] if own["unified"].startswith(root) else own["unified"]
        base = os.path.join(mountpoint, rel.lstrip("/"))
        parent = _usable_parent(base, tag)
        if parent:
            try:  # delegate what our own group has to the run groups; fails when nothing is delegated
                available = _read(os.path.join(parent, "cgroup.controllers")).split()
                wanted = [c for c in ("pids", "memory", "cpu") if c in available]
                if wanted:
                    _write(os.path.join(parent, "cgroup.subtree_control"), " ".join("+" + c for c in wanted))
                enabled = _read(os.path.join(parent, "cgroup.subtree_control"))
            except OSError:
                enabled = ""
            if "pids" in enabled or "memory" in enabled:
                return CgroupSupport(2, {"unified": parent, "_enabled": enabled})
            _rmdir_quiet(parent)
    return CgroupSupport(None)


def _rmdir_quiet(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


@dataclass
class RunStats:
    cpu_time_s: float | None = None
    memory_peak_bytes: int | None = None
    oom_killed: bool = False
    pids_limit_hit: bool = False


class RunCgroup:
    """The group(s) of one run: created with limits, joined by the launcher, drained and removed at the end."""

    def __init__(self, support: CgroupSupport, name: str, *, memory_bytes: int, max_processes: int,
                 cpu_cores: float) -> None:
        self.support = support
        self.dirs: dict[str, str] = {}
        if support.version == 1:
            for c, parent in support.parents.items():
                path = os.path.join(parent, name)
                os.mkdir(path)
                self.dirs[c] = path
            if "memory" in self.dirs:
                d = self.dirs["memory"]
                _write(os.path.join(d, "memory.limit_in_bytes"), str(memory_bytes))
                if os.path.exists(os.path.join(d, "memory.memsw.limit_in_bytes")):
                    try:  # swap included, where swap accounting is on
                        _write(os.path.join(d, "memory.memsw.limit_in_bytes"), str(memory_bytes))
                    except OSError:
                        pass
            if "pids" in self.dirs:
                _write(os.path.join(self.dirs["pids"], "pids.max"), str(max_processes))
            if "cpu" in self.dirs and os.path.exists(os.path.join(self.dirs["cpu"], "cpu.cfs_quota_us")):
                _write(os.path.join(self.dirs["cpu"], "cpu.cfs_period_us"), "100000")
                _write(os.path.join(self.dirs["cpu"], "cpu.cfs_quota_us"), str(max(1000, int(cpu_cores * 100000))))
        elif support.version == 2:
            path = os.path.join(support.parents["unified"], name)
            os.mkdir(path)
            self.dirs["unified"] = path
            ctrls = support.controllers
            if "memory" in ctrls:
                _write(os.path.join(path, "memory.max"), str(memory_bytes))
                try:
                    _write(os.path.join(path, "memory.swap.max"), "0")
                except OSError:
                    pass
            if "pids" in ctrls:
                _write(os.path.join(path, "pids.max"), str(max_processes))
            if "cpu" in ctrls:
                _write(os.path.join(path, "cpu.max"), f"{max(1000, int(cpu_cores * 100000))} 100000")

    def procs_files(self) -> list[str]:
        return [os.path.join(d, "cgroup.procs") for d in self.dirs.values()]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for f in self.procs_files():
            try:
                found.update(int(x) for x in _read(f).split())
            except OSError:
                pass
        return found

    def kill_all(self, timeout_s: float = 5.0) -> bool:
        """SIGKILL every process in the group until it is empty; True when it emptied in time."""
        unified = self.dirs.get("unified")
        if unified and os.path.exists(os.path.join(unified, "cgroup.kill")):
            try:
                _write(os.path.join(unified, "cgroup.kill"), "1")
            except OSError:
                pass
        deadline = time.monotonic() + timeout_s
        while True:
            pids = self.pids()
            if not pids:
                return True
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)

    def stats(self) -> RunStats:
        s = RunStats()
        try:
            if self.support.version == 1:
                if "cpuacct" in self.dirs:
                    s.cpu_time_s = int(_read(os.path.join(self.dirs["cpuacct"], "cpuacct.usage"))) / 1e9
                if "memory" in self.dirs:
                    d = self.dirs["memory"]
                    s.memory_peak_bytes = int(_read(os.path.join(d, "memory.max_usage_in_bytes")))
                    oom = dict(line.split() for line in _read(os.path.join(d, "memory.oom_control")).splitlines())
                    if "oom_kill" in oom:
                        s.oom_killed = int(oom["oom_kill"]) > 0
                    else:  # older kernels: a failed charge is the closest signal
                        s.oom_killed = int(_read(os.path.join(d, "memory.failcnt"))) > 0
                if "pids" in self.dirs:
                    events = _read(os.path.join(self.dirs["pids"], "pids.events")).split()
                    s.pids_limit_hit = len(events) >= 2 and int(events[1]) > 0
            elif self.support.version == 2:
                d = self.dirs["unified"]
                cpu = dict(line.split() for line in _read(os.path.join(d, "cpu.stat")).splitlines())
                s.cpu_time_s = int(cpu["usage_usec"]) / 1e6
                if os.path.exists(os.path.join(d, "memory.peak")):
                    s.memory_peak_bytes = int(_read(os.path.join(d, "memory.peak")))
                if os.path.exists(os.path.join(d, "memory.events")):
                    ev = dict(line.split() for line in _read(os.path.join(d, "memory.events")).splitlines())
                    s.oom_killed = int(ev.get("oom_kill", 0)) > 0
                if os.path.exists(os.path.join(d, "pids.events")):
                    ev = dict(line.split() for line in _read(os.path.join(d, "pids.events")).splitlines())
                    s.pids_limit_hit = int(ev.get("max", 0)) > 0
        except (OSError, ValueError, KeyError):
            pass
        return s

    def remove(self) -> None:
        for d in self.dirs.values():
            for _ in range(200):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:  # still busy for a moment after the last task exits
                    time.sleep(0.005)
