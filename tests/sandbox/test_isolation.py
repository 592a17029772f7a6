"""The isolated runner: results, limits, what the host allowed, and the rlimit fallback without cgroups."""

from dataclasses import replace

import pytest

from sandbox import seccomp
from sandbox.isolation import OK, RUNTIME_ERROR, SANDBOX_ERROR, ExecutionResult, Limits, Sandbox

from .conftest import HOSTILE, processes_of


def test_runs_python_with_stdin_and_reports_times(sb, no_leaks):
    r = sb.run_code("import sys\nprint(sys.stdin.read()[::-1])", stdin="abc")
    assert (r.status, r.exit_code, r.stdout, r.signal) == (OK, 0, "cba\n", None)
    assert 0 < r.wall_time_s < HOSTILE.wall_time_s and r.cpu_time_s is not None and r.cpu_time_s > 0


def test_exit_code_and_signal(sb, no_leaks):
    assert sb.run_code("raise SystemExit(3)").exit_code == 3
    r = sb.run_code("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)")
    assert r.status == RUNTIME_ERROR and r.signal == 11


def test_identity_environment_and_view(sb, no_leaks):
    code = ("import os\nprint(os.getuid(), os.getgid())\nprint(sorted(os.environ))\nprint(os.getcwd())\n"
            "print(sorted(os.listdir('/')))\nprint(os.listdir('/proc/self/fd'))\n")
    lines = sb.run_code(code).stdout.splitlines()
    assert lines[0] == "65534 65534"
    assert lines[1] == str(sorted(["HOME", "LANG", "PATH", "PWD", "PYTHONIOENCODING"]))
    assert lines[2] == "/w"
    assert "work" not in lines[3] and "home" not in lines[3] and "sys" not in lines[3]
    assert lines[4] == str(["0", "1", "2", "3"])  # 3 is listdir's own: nothing leaked from the parent


def test_bash_plugs_in_as_a_language(sb, no_leaks):
    r = sb.run_code("read x; echo $((x * 2))", language="bash", stdin="21\n")
    assert r.stdout == "42\n"
    with pytest.raises(ValueError, match="unsupported language"):
        sb.run_code("x", language="cobol")


def test_report_says_what_the_host_allowed(sb):
    rep = sb.report
    assert rep.mode in ("bwrap-unprivileged-uid", "bwrap-root-mapped")
    assert {"user", "pid", "net", "mount", "ipc", "uts"} <= set(rep.namespaces)
    assert rep.forks_contained
    assert rep.seccomp == (seccomp.build_filter() is not None)


def test_rlimit_nproc_binds_without_cgroups(no_leaks, sb):
    # A pool with cgroups switched off: the per-slot unprivileged uid's RLIMIT_NPROC is the only fork limit.
    plain = Sandbox(1, limits=HOSTILE, use_cgroups=False, base_uid=sb.base_uid)  # same uids: no_leaks checks them
    try:
        assert plain.report.cgroup_version is None and plain.report.rlimit_nproc_binds
        code = ("import os, time\nn = 0\nfor _ in range(60):\n    try:\n        if os.fork() == 0:\n"
                "            time.sleep(30)\n            os._exit(0)\n        n += 1\n    except OSError:\n"
                "        break\nprint(n)\n")
        r = plain.run_code(code)
        assert r.status == OK and int(r.stdout) <= HOSTILE.max_processes + 9, r
        big = plain.run_code("x = bytearray(1 << 30)\nprint('allocated')")  # RLIMIT_AS stands in for memory
        assert big.status == "memory", big
    finally:
        plain.close()
    assert processes_of(set(sb.sandbox_uids())) == []


def test_limits_reject_unknown_keys():
    with pytest.raises(ValueError, match="valid"):
        Limits.from_dict({"wall_time_s": 1, "memory": 3})


def test_execution_result_round_trips():
    r = ExecutionResult(OK, 0, None, "x", "", limits_hit=("wall",))
    assert ExecutionResult.from_dict(r.to_dict()) == r


def test_missing_bubblewrap_is_a_sandbox_error():
    s = Sandbox(1, bwrap="/nonexistent/bwrap")
    try:
        r = s.run_code("print(1)")
        assert r.status == SANDBOX_ERROR and "bubblewrap" in r.message
    finally:
        s.close()


def test_limits_apply_per_run(sb, no_leaks):
    r = sb.run_code("import time\ntime.sleep(0.5)\nprint('late')", limits=replace(HOSTILE, wall_time_s=0.2))
    assert r.status == "timeout"
    r = sb.run_code("x = bytearray(100 << 20)\nprint('ok')", limits=replace(HOSTILE, memory_mb=256))
    assert r.status == OK
