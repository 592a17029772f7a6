"""Shared fixtures: one 2-slot Sandbox for the whole session (2 cores are shared), and leak checks."""

import os

import pytest

from sandbox.isolation import Limits, Sandbox

# Small limits for hostile programs: a fork bomb gets 16 tasks, a memory hog 128 MiB, a sleeper 1.5 s.
HOSTILE = Limits(wall_time_s=1.5, cpu_time_s=2, memory_mb=128, max_processes=16, max_stdout_bytes=1 << 20,
                 workdir_mb=8, max_open_files=32)


@pytest.fixture(scope="session")
def sb():
    if os.geteuid() != 0:
        pytest.skip("the sandbox tests need root (cgroups, per-slot uids)")
    s = Sandbox(max_concurrency=2, limits=HOSTILE)
    if s.report.mode == "unavailable":
        pytest.skip(f"no isolation on this host: {s.report.detail}")
    yield s
    s.close()


def processes_of(uids) -> list[tuple[int, str]]:
    """(pid, command line) of every process whose real uid is in ``uids``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                uid_line = next(line for line in f if line.startswith("Uid:"))
            if int(uid_line.split()[1]) in uids:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    found.append((int(entry), f.read().replace(b"\0", b" ").decode(errors="replace")))
        except (OSError, StopIteration):
            pass
    return found


def leftover_run_cgroups(s: Sandbox) -> list[str]:
    left = []
    for c, parent in s._cg.parents.items():
        if c.startswith("_") or not os.path.isdir(parent):
            continue
        left += [os.path.join(parent, d) for d in os.listdir(parent) if os.path.isdir(os.path.join(parent, d))]
    return left


@pytest.fixture
def no_leaks(sb):
    """After the test: no process runs under a sandbox uid and no run cgroup is left."""
    yield
    import time

    deadline = time.monotonic() + 2.0
    while processes_of(set(sb.sandbox_uids())) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_of(set(sb.sandbox_uids())) == []
    assert leftover_run_cgroups(sb) == []
