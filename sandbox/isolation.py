"""Isolated execution of one untrusted program: namespaces, an unprivileged uid, cgroups, rlimits, seccomp.

    from sandbox.isolation import Sandbox, Limits
    sb = Sandbox(max_concurrency=2)
    result = sb.run_code("print(input()[::-1])", stdin="abc\\n", limits=Limits(wall_time_s=2))
    result.status, result.stdout          # ("ok", "cba\\n")

Each run goes: parent (this process) -> ``_launcher.py`` (root: joins the run's cgroups, sets rlimits, drops to a
per-slot unprivileged uid, then stays as bubblewrap's reaping parent) -> ``bwrap`` (new namespaces, read-only
system view, tmpfs workdir, seccomp) -> the program. The parent reads stdout/stderr concurrently, enforces the
wall-clock deadline and output caps, then kills the whole tree and removes the run's cgroups.

Covered (what a run cannot do, and what enforces it):
- see or signal host processes: new pid namespace (``/proc`` shows only the run's own processes); ``kill(-1, 9)``
  and killing its parent reach only the run itself;
- reach any network, including the host's loopback: new, empty network namespace, and seccomp refuses every
  socket family but AF_UNIX (so DNS fails too);
- read host secrets: the environment is emptied (bubblewrap's own, too, so ``/proc/1/environ`` is empty); only
  ``/usr`` (read-only), the interpreter's prefix (read-only) and two ``/etc`` files are mounted -- no home
  directories, no ``/work``, no ``/sys``; the uid outside is unprivileged, so root-only files stay closed;
- write anywhere but three size-capped tmpfs mounts (``/w``, the working directory, ``/tmp`` and ``/dev/shm``),
  which vanish with the run -- nothing is left for the next run; the root and ``/dev`` are remounted read-only;
- exhaust the host: cgroup limits on memory (OOM kill -> status ``memory``), process/thread count (``pids``)
  and CPU share (``cpu_cores``); RLIMIT_NPROC binds too, because the uid outside is a per-slot unprivileged uid
  (RLIMIT_NPROC does not bind root); RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_CORE=0; a wall-clock
  deadline; stdout capped (the run is killed -> ``output_limit``), stderr truncated;
- outlive the run: ``--die-with-parent`` plus the pid namespace (its init's death kills every process in it,
  double-forked daemons included), then every process left in the run's cgroup is SIGKILLed;
- regain privileges or reconfigure the kernel: no capabilities, ``no_new_privs``, user namespaces disabled
  inside, and the seccomp deny-list of :mod:`sandbox.seccomp` (mount, ptrace, bpf, io_uring, unshare, ...);
- steal the terminal: ``--new-session`` (no TIOCSTI into the service's tty).

Not covered (know these before exposing the service):
- kernel vulnerabilities: this is a namespace sandbox sharing the host kernel, not a VM (gVisor/Firecracker);
- information that is global to the kernel: ``/proc/cpuinfo``, ``/proc/meminfo``, uptime, the kernel version,
  CPU timing side channels;
- fairness under contention: the CPU limit is a share; a run's wall time depends on the host load;
- other languages than Python and bash: :data:`LANGUAGES` is where compiled languages would plug in (a compile
  step is not implemented yet);
- seccomp off x86_64, and cgroup limits where the host delegates no controller: :meth:`Sandbox.report` tells what
  the host allowed; without a pids cgroup the process limit rests on RLIMIT_NPROC alone, and without the
  memory cgroup on RLIMIT_AS;
- when the host forbids unprivileged user namespaces, bubblewrap runs as root and maps the sandbox uid to root
  outside (still without capabilities); then RLIMIT_NPROC does not bind and only the pids cgroup limits forks.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import weakref
from dataclasses import asdict, dataclass, field, fields

from sandbox import cgroups, cleanup, seccomp

OK, RUNTIME_ERROR, TIMEOUT, MEMORY, OUTPUT_LIMIT, SANDBOX_ERROR = (
    "ok", "runtime_error", "timeout", "memory", "output_limit", "sandbox_error")
STATUSES = (OK, RUNTIME_ERROR, TIMEOUT, MEMORY, OUTPUT_LIMIT, SANDBOX_ERROR)

WORKDIR = "/w"
_LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_launcher.py")
_SANDBOX_UID = 65534  # "nobody" as the program sees itself
_MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Per-run limits. The cgroup ones apply where the host allows (see Sandbox.report)."""

    wall_time_s: float = 10.0
    cpu_time_s: float = 10.0  # RLIMIT_CPU per process, rounded up to whole seconds
    memory_mb: int = 512  # cgroup memory (or RLIMIT_AS without a memory cgroup)
    max_processes: int = 32  # processes + threads of the program (pids cgroup, RLIMIT_NPROC)
    cpu_cores: float = 1.0  # cgroup CPU quota
    max_stdout_bytes: int = 4 * _MiB  # exceeded -> killed, status output_limit
    max_stderr_bytes: int = 64 * 1024  # exceeded -> truncated
    max_file_bytes: int = 16 * _MiB  # RLIMIT_FSIZE
    max_open_files: int = 64  # RLIMIT_NOFILE
    workdir_mb: int = 64  # size of each tmpfs (/w and /tmp)

    @classmethod
    def from_dict(cls, d: dict) -> "Limits":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown limit(s) {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**d)


@dataclass
class ExecutionResult:
    """What one isolated run did. ``status`` is one of STATUSES; sandbox_error means the sandbox failed, not the code."""

    status: str
    exit_code: int | None = None
    signal: int | None = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    wall_time_s: float = 0.0
    cpu_time_s: float | None = None
    memory_peak_bytes: int | None = None
    limits_hit: tuple[str, ...] = ()  # among "wall", "cpu", "memory", "pids", "stdout"
    message: str = ""  # for sandbox_error: what failed

    def to_dict(self) -> dict:
        d = asdict(self)
        d["limits_hit"] = list(self.limits_hit)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ExecutionResult":
        d = dict(d)
        d["limits_hit"] = tuple(d.get("limits_hit", ()))
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in fields(cls)}})


@dataclass(frozen=True)
class Language:
    """How to run a source file of one language inside the sandbox (``{source}`` is replaced by its path)."""

    name: str
    source_file: str
    run_argv: tuple[str, ...]


def _python_language() -> Language:
    # The base interpreter, not the venv: the venv's site-packages are not mounted. -I: ignore PYTHON* variables
    # and the user site; -S: no site-packages; -B: write no .pyc.
    exe = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    return Language("python", "main.py", (exe, "-I", "-S", "-B", "{source}"))


LANGUAGES: dict[str, Language] = {
    "python": _python_language(),
    "bash": Language("bash", "main.sh", ("/bin/bash", "{source}")),
}


@dataclass(frozen=True)
class IsolationReport:
    """What the host allowed, probed once per Sandbox."""

    mode: str  # "bwrap-unprivileged-uid" | "bwrap-root-mapped" | "unavailable"
    namespaces: tuple[str, ...]
    cgroup_version: int | None
    cgroup_controllers: tuple[str, ...]
    seccomp: bool
    rlimit_nproc_binds: bool
    detail: str = ""

    @property
    def forks_contained(self) -> bool:
        return "pids" in self.cgroup_controllers or self.rlimit_nproc_binds

    def to_dict(self) -> dict:
        return asdict(self)


def _reachable_by_others(path: str) -> bool:
    """Whether an unprivileged uid can traverse to and read ``path`` (every ancestor o+x, the dir o+rx)."""
    path = os.path.realpath(path)
    parts = path.split(os.sep)
    for i in range(2, len(parts) + 1):
        st = os.stat(os.sep.join(parts[:i]) or os.sep)
        if not st.st_mode & 0o001:
            return False
    return bool(os.stat(path).st_mode & 0o004)


class Sandbox:
    """A local pool of isolated runners: ``max_concurrency`` slots, each with its own unprivileged uid.

    ``base_uid`` picks the uids outside (``base_uid + slot``); no host account needs them. Two Sandboxes on one
    host should use disjoint ranges, since RLIMIT_NPROC counts per uid (the default derives from the pid).
    """

    def __init__(self, max_concurrency: int = 2, *, limits: Limits | None = None, base_uid: int | None = None,
                 use_cgroups: bool = True, use_seccomp: bool = True, bwrap: str | None = None) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        self.max_concurrency = max_concurrency
        self.limits = limits or Limits()
        self.base_uid = base_uid if base_uid is not None else 1_000_000 + (os.getpid() % 100_000) * 64
        self._bwrap = bwrap or shutil.which("bwrap") or "/usr/bin/bwrap"
        self._slots: "list[int]" = list(range(max_concurrency))
        self._slot_cv = threading.Condition()
        self._tag = f"mixrl-sandbox-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._cg = cgroups.detect(self._tag) if (use_cgroups and os.geteuid() == 0) else cgroups.CgroupSupport(None)
        # what owners that died without close() left next to ours (their pid is in the folder names)
        cleanup.sweep_stale([os.path.dirname(p) for c, p in self._cg.parents.items() if not c.startswith("_")],
                            tempfile.gettempdir())
        self._seccomp = seccomp.build_filter() if use_seccomp else None
        self._stage_dir: str | None = None
        self.report = self._probe()
        # Removed on close(), or when the Sandbox is collected / the interpreter exits if nobody called close().
        self._finalizer = weakref.finalize(self, _remove_host_state, dict(self._cg.parents), self._stage_dir)

    # ---- set-up -------------------------------------------------------------------------------------------

    def _interpreter_prefix(self) -> str:
        return os.path.realpath(sys.base_prefix)

    def _probe(self) -> IsolationReport:
        ns = ("user", "pid", "net", "mount", "ipc", "uts", "cgroup")
        if not os.path.exists(self._bwrap):
            return IsolationReport("unavailable", (), None, (), False, False, f"bubblewrap not found at {self._bwrap}")
        self._root = os.geteuid() == 0
        self._drop_uid = self._root
        if self._root and not _reachable_by_others(self._interpreter_prefix()):
            self._stage_dir = tempfile.mkdtemp(prefix=f"mixrl-sandbox-stage-{os.getpid()}-")
            os.chmod(self._stage_dir, 0o755)
            os.mkdir(os.path.join(self._stage_dir, "python"), 0o755)
        probe = self._execute({"main.py": b"print('ok')"}, LANGUAGES["python"], "", Limits(wall_time_s=20), slot=0)
        detail = ""
        if probe.status != OK or probe.stdout != "ok\n":
            detail = f"unprivileged-uid probe failed: {probe.message or probe.stderr[-500:]}"
            self._drop_uid = False  # the host forbids unprivileged user namespaces: let bwrap map root instead
            probe = self._execute({"main.py": b"print('ok')"}, LANGUAGES["python"], "", Limits(wall_time_s=20),
                                  slot=0)
            if probe.status != OK or probe.stdout != "ok\n":
                return IsolationReport("unavailable", (), self._cg.version, self._cg.controllers,
                                       False, False, detail + f"; root-mapped probe failed: {probe.message}")
        mode = "bwrap-unprivileged-uid" if self._drop_uid else "bwrap-root-mapped"
        return IsolationReport(mode, ns, self._cg.version, self._cg.controllers, self._seccomp is not None,
                               self._drop_uid or not self._root, detail)

    def close(self) -> None:
        """Remove the cgroup parents and the staging directory (idempotent)."""
        self._finalizer()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- public API ---------------------------------------------------------------------------------------

    def run_code(self, code: str, *, language: str = "python", stdin: str | bytes = "",
                 limits: Limits | None = None, files: dict[str, bytes] | None = None) -> ExecutionResult:
        """Run ``code`` as the main file of ``language`` with ``stdin``; extra ``files`` land in the workdir."""
        lang = LANGUAGES.get(language)
        if lang is None:
            raise ValueError(f"unsupported language {language!r}; supported: {sorted(LANGUAGES)}")
        all_files = dict(files or {})
        all_files[lang.source_file] = code.encode()
        return self.run_files(all_files, lang, stdin=stdin, limits=limits)

    def run_files(self, files: dict[str, bytes], lang: Language, *, stdin: str | bytes = "",
                  limits: Limits | None = None) -> ExecutionResult:
        """Run ``lang``'s source file out of ``files`` (name -> content, written into the tmpfs workdir)."""
        if self.report.mode == "unavailable":
            return ExecutionResult(SANDBOX_ERROR, message=f"sandbox unavailable: {self.report.detail}")
        for name in files:
            if "/" in name or name in ("", ".", ".."):
                raise ValueError(f"file names must be plain names, got {name!r}")
        slot = self._acquire_slot()
        try:
            return self._execute(files, lang, stdin, limits or self.limits, slot)
        finally:
            self._release_slot(slot)

    def sandbox_uids(self) -> range:
        return range(self.base_uid, self.base_uid + self.max_concurrency)

    # ---- one run ------------------------------------------------------------------------------------------

    def _acquire_slot(self) -> int:
        with self._slot_cv:
            while not self._slots:
                self._slot_cv.wait()
            return self._slots.pop()

    def _release_slot(self, slot: int) -> None:
        with self._slot_cv:
            self._slots.append(slot)
            self._slot_cv.notify()

    def _bwrap_argv(self, lang: Language, limits: Limits, file_fds: dict[str, int], status_fd: int,
                    seccomp_fd: int | None) -> list[str]:
        tmpfs_bytes = str(limits.workdir_mb * _MiB)
        argv = [self._bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
                "--new-session", "--uid", str(_SANDBOX_UID), "--gid", str(_SANDBOX_UID), "--hostname", "sandbox",
                "--ro-bind", "/usr", "/usr"]
        for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(top):
                argv += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                argv += ["--ro-bind", top, top]
        for f in ("/etc/ld.so.cache", "/etc/localtime"):
            argv += ["--ro-bind-try", f, f]
        prefix = self._interpreter_prefix()
        if lang.name == "python" and not prefix.startswith("/usr/"):
            source = os.path.join(self._stage_dir, "python") if (self._stage_dir and self._drop_uid) else prefix
            argv += ["--ro-bind", source, prefix]
        argv += ["--proc", "/proc", "--dev", "/dev",
                 "--perms", "1777", "--size", tmpfs_bytes, "--tmpfs", "/tmp",
                 "--perms", "1777", "--size", tmpfs_bytes, "--tmpfs", "/dev/shm",
                 "--perms", "0755", "--size", tmpfs_bytes, "--tmpfs", WORKDIR]
        for name, fd in file_fds.items():
            argv += ["--perms", "0644", "--file", str(fd), f"{WORKDIR}/{name}"]
        # bwrap builds the root in a tmpfs of its own: make it (and /dev) read-only once everything is mounted.
        argv += ["--remount-ro", "/dev", "--remount-ro", "/"]
        argv += ["--chdir", WORKDIR, "--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin",
                 "--setenv", "HOME", WORKDIR, "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONIOENCODING", "utf-8",
                 "--json-status-fd", str(status_fd)]
        if seccomp_fd is not None:
            argv += ["--seccomp", str(seccomp_fd)]
        argv += ["--"] + [a.replace("{source}", f"{WORKDIR}/{lang.source_file}") for a in lang.run_argv]
        return argv

    def _rlimits(self, limits: Limits, have_memory_cgroup: bool) -> dict[str, int]:
        r = {
            "RLIMIT_CPU": max(1, int(-(-limits.cpu_time_s // 1))),
            "RLIMIT_FSIZE": limits.max_file_bytes,
            "RLIMIT_NOFILE": limits.max_open_files,
            "RLIMIT_CORE": 0,
        }
        if self._drop_uid:  # RLIMIT_NPROC only binds a non-root uid. A little above the pids cgroup (the first
            r["RLIMIT_NPROC"] = limits.max_processes + 9  # line where there is one), for our 3 own processes.
        if not have_memory_cgroup:
            r["RLIMIT_AS"] = limits.memory_mb * _MiB + 256 * _MiB  # interpreter overhead on top
        return r

    def _execute(self, files: dict[str, bytes], lang: Language, stdin: str | bytes, limits: Limits,
                 slot: int) -> ExecutionResult:
        started = time.monotonic()
        run_cg: cgroups.RunCgroup | None = None
        fds: list[int] = []
        proc: subprocess.Popen | None = None
        try:
            if self._cg.version is not None:
                run_cg = cgroups.RunCgroup(self._cg, f"run-{slot}-{uuid.uuid4().hex[:8]}",
                                           memory_bytes=limits.memory_mb * _MiB,
                                           # +3: the launcher, bwrap and the namespace's init share the group
                                           max_processes=limits.max_processes + 3, cpu_cores=limits.cpu_cores)
            file_fds = {}
            for name, content in files.items():
                fd = os.memfd_create(f"mixrl-{name}")
                os.write(fd, content)
                os.lseek(fd, 0, os.SEEK_SET)
                fds.append(fd)
                file_fds[name] = fd
            seccomp_fd = None
            if self._seccomp is not None:
                seccomp_fd = os.memfd_create("mixrl-seccomp")
                os.write(seccomp_fd, self._seccomp)
                os.lseek(seccomp_fd, 0, os.SEEK_SET)
                fds.append(seccomp_fd)
            status_r, status_w = os.pipe()
            fds += [status_r, status_w]
            have_mem = run_cg is not None and any(k in run_cg.dirs for k in ("memory", "unified")) and (
                "memory" in self._cg.controllers)
            uid = self.base_uid + slot if self._drop_uid else None
            if self._stage_dir and not os.path.isdir(os.path.join(self._stage_dir, "python")):
                os.makedirs(os.path.join(self._stage_dir, "python"), mode=0o755)  # someone cleaned /tmp
            spec = {
                "cgroup_procs": run_cg.procs_files() if run_cg else [],
                "stage_binds": ([[self._interpreter_prefix(), os.path.join(self._stage_dir, "python")]]
                                if (self._stage_dir and self._drop_uid) else []),
                "rlimits": self._rlimits(limits, have_mem),
                "uid": uid,
                "gid": uid,
                "argv": self._bwrap_argv(lang, limits, file_fds, status_w, seccomp_fd),
            }
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", _LAUNCHER, json.dumps(spec)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=[*file_fds.values(), status_w] + ([seccomp_fd] if seccomp_fd is not None else []),
                env={}, start_new_session=True, close_fds=True)
            # The parent keeps no copy of what it passed: bwrap owns them now.
            for fd in [*file_fds.values(), status_w] + ([seccomp_fd] if seccomp_fd is not None else []):
                os.close(fd)
                fds.remove(fd)
            io = _pump(proc, stdin.encode() if isinstance(stdin, str) else stdin, limits, started,
                       kill=lambda: self._kill(proc, run_cg))
            _, wait_status, rusage = _wait_or_kill(proc.pid, grace_s=2.0)
            proc.returncode = os.waitstatus_to_exitcode(wait_status)
            wall = time.monotonic() - started
            status_doc = _read_status(status_r)
            if run_cg is not None:
                run_cg.kill_all()  # anything that escaped the pid namespace's teardown (nothing should)
            stats = run_cg.stats() if run_cg is not None else cgroups.RunStats()
            cpu = stats.cpu_time_s if stats.cpu_time_s is not None else rusage.ru_utime + rusage.ru_stime
            return _classify(proc.returncode, status_doc, io, stats, wall, cpu, limits)
        except Exception as e:  # noqa: BLE001 - any failure of ours is a sandbox failure, reported as such
            if proc is not None and proc.returncode is None:
                self._kill(proc, run_cg)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            return ExecutionResult(SANDBOX_ERROR, wall_time_s=time.monotonic() - started,
                                   message=f"{type(e).__name__}: {e}")
        finally:
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            if run_cg is not None:
                run_cg.kill_all()
                run_cg.remove()

    @staticmethod
    def _kill(proc: subprocess.Popen, run_cg: cgroups.RunCgroup | None) -> None:
        # SIGTERM to the launcher (our child, not yet reaped): it SIGKILLs bwrap, whose death takes the pid
        # namespace's init with it (--die-with-parent); the kernel then kills everything in the namespace, and the
        # launcher reaps what is re-parented to it. The cgroup sweep is the backstop (it spares the launcher so
        # that it can still reap; the parent SIGKILLs it if it has not exited after the drain).
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        if run_cg is not None:
            for pid in run_cg.pids() - {proc.pid}:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _remove_host_state(cgroup_parents: dict[str, str], stage_dir: str | None) -> None:
    for c, parent in cgroup_parents.items():
        if not c.startswith("_"):  # with any run group still inside (an exit without close(), mid-run)
            cleanup.remove_cgroup_tree(parent, timeout_s=0.5)
    if stage_dir:
        shutil.rmtree(stage_dir, ignore_errors=True)


@dataclass
class _IO:
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    killed_for: str | None = None  # "wall" | "stdout"


def _pump(proc: subprocess.Popen, stdin: bytes, limits: Limits, started: float, kill) -> _IO:
    """Feed stdin and read stdout/stderr concurrently until both close, under the deadline and the caps."""
    io = _IO()
    sel = selectors.DefaultSelector()
    for f in (proc.stdout, proc.stderr):
        os.set_blocking(f.fileno(), False)
        sel.register(f.fileno(), selectors.EVENT_READ, f is proc.stdout)
    stdin_fd = proc.stdin.fileno()
    pending = memoryview(stdin)
    if pending:
        os.set_blocking(stdin_fd, False)
        sel.register(stdin_fd, selectors.EVENT_WRITE, None)
    else:
        proc.stdin.close()
    deadline = started + limits.wall_time_s
    drain_deadline = None  # after a kill: how long we still wait for the pipes to close
    try:
        while sel.get_map():
            now = time.monotonic()
            if io.killed_for is None and now >= deadline:
                io.killed_for = "wall"
                kill()
            if io.killed_for is not None:
                drain_deadline = drain_deadline or now + 2.0
                if now >= drain_deadline:
                    break
            timeout = (drain_deadline if io.killed_for else deadline) - now
            for key, _ in sel.select(max(0.0, min(timeout, 0.5))):
                fd, is_stdout = key.fd, key.data
                if is_stdout is None:  # stdin writable
                    try:
                        n = os.write(fd, pending[:65536])
                        pending = pending[n:]
                    except (BrokenPipeError, OSError):
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(fd)
                        proc.stdin.close()
                    continue
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(fd)
                    continue
                if is_stdout:
                    room = limits.max_stdout_bytes - len(io.stdout)
                    io.stdout += chunk[:room]
                    if len(chunk) > room and io.killed_for is None:
                        io.stdout_truncated = True
                        io.killed_for = "stdout"
                        kill()
                else:
                    room = limits.max_stderr_bytes - len(io.stderr)
                    io.stderr += chunk[:max(room, 0)]
                    io.stderr_truncated |= len(chunk) > room
    finally:
        sel.close()
        for f in (proc.stdin, proc.stdout, proc.stderr):
            try:
                f.close()
            except OSError:
                pass
    return io


def _wait_or_kill(pid: int, grace_s: float):
    """wait4 the launcher; if it has not exited ``grace_s`` after the pipes closed, SIGKILL it."""
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        got, status, rusage = os.wait4(pid, os.WNOHANG)
        if got == pid:
            return got, status, rusage
        time.sleep(0.002)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return os.wait4(pid, 0)


def _read_status(fd: int) -> dict:
    """Merge bubblewrap's --json-status-fd documents ({"child-pid": ...} then {"exit-code": ...})."""
    os.set_blocking(fd, False)
    raw = b""
    try:
        while chunk := os.read(fd, 65536):
            raw += chunk
    except BlockingIOError:
        pass
    doc: dict = {}
    for line in raw.decode(errors="replace").splitlines():
        line = line.strip()
        if line:
            try:
                doc.update(json.loads(line))
            except json.JSONDecodeError:
                pass
    return doc


def _classify(returncode: int, status_doc: dict, io: _IO, stats: cgroups.RunStats, wall: float, cpu: float,
              limits: Limits) -> ExecutionResult:
    stdout = io.stdout.decode(errors="replace")
    stderr = io.stderr.decode(errors="replace")
    base = dict(stdout=stdout, stderr=stderr, stdout_truncated=io.stdout_truncated,
                stderr_truncated=io.stderr_truncated, wall_time_s=round(wall, 4), cpu_time_s=cpu,
                memory_peak_bytes=stats.memory_peak_bytes)
    if "child-pid" not in status_doc and io.killed_for is None:
        return ExecutionResult(SANDBOX_ERROR, exit_code=returncode, message=stderr.strip()[-2000:] or
                               f"sandbox set-up failed (exit {returncode})", **base)
    exit_code = status_doc.get("exit-code", returncode)
    sig = exit_code - 128 if exit_code > 128 else None
    hit = []
    if io.killed_for:
        hit.append(io.killed_for)
    if stats.oom_killed:
        hit.append("memory")
    if stats.pids_limit_hit:
        hit.append("pids")
    if sig in (signal.SIGXCPU, signal.SIGKILL) and cpu is not None and cpu >= max(1.0, limits.cpu_time_s) * 0.95:
        hit.append("cpu")
    base["limits_hit"] = tuple(hit)
    if io.killed_for == "stdout":
        status = OUTPUT_LIMIT
    elif stats.oom_killed or (exit_code != 0 and "MemoryError" in stderr[-4000:]):
        status = MEMORY
    elif io.killed_for == "wall" or "cpu" in hit or sig == signal.SIGXCPU:
        status = TIMEOUT
    elif exit_code != 0:
        status = RUNTIME_ERROR
    else:
        status = OK
    return ExecutionResult(status, exit_code=None if io.killed_for else exit_code,
                           signal=int(signal.SIGKILL) if io.killed_for else sig, **base)


__all__ = ["Sandbox", "Limits", "ExecutionResult", "IsolationReport", "Language", "LANGUAGES", "STATUSES",
           "OK", "RUNTIME_ERROR", "TIMEOUT", "MEMORY", "OUTPUT_LIMIT", "SANDBOX_ERROR"]
