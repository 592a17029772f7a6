"""The privileged first step of every sandboxed run, executed as its own short-lived process.

    python -I -S sandbox/_launcher.py '<json spec>'      (started by sandbox.isolation, never by hand)

It does, in order, what must happen before bubblewrap starts and cannot be done safely from a threaded parent
(``preexec_fn`` is not thread-safe): join the run's cgroups, stage read-only sources that the unprivileged uid
could not reach in a private mount namespace (e.g. an interpreter under root's 0700 home), set rlimits, drop to
the run's unprivileged uid/gid, and start bubblewrap with an empty environment. Any failure exits 125 with a
``mixrl-launcher:`` line on stderr; bubblewrap never started, so the parent reports ``sandbox_error``.

It then stays as bubblewrap's parent and a child subreaper: bubblewrap's outer process does not wait for the
namespace's init, which would otherwise be re-parented to the host's PID 1 as a zombie (and never reaped when
the service itself is PID 1 in a container). SIGTERM makes it SIGKILL bubblewrap, which takes the namespace down.
"""

import ctypes  # imported before dropping privileges: the interpreter may live where the sandbox uid cannot read
import json
import os
import resource
import signal
import sys

_CLONE_NEWNS = 0x00020000
_PR_SET_PDEATHSIG, _PR_SET_CHILD_SUBREAPER = 1, 36
_MS_RDONLY, _MS_BIND, _MS_REC, _MS_PRIVATE = 0x1, 0x1000, 0x4000, 0x40000


def _fail(msg: str) -> None:
    os.write(2, f"mixrl-launcher: {msg}\n".encode())
    os._exit(125)


def _stage(binds: list[list[str]]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNS) != 0:
        _fail(f"unshare(CLONE_NEWNS): {os.strerror(ctypes.get_errno())}")
    if libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        _fail(f"make / private: {os.strerror(ctypes.get_errno())}")
    for src, dst in binds:
        if libc.mount(src.encode(), dst.encode(), None, _MS_BIND | _MS_REC, None) != 0:
            _fail(f"bind {src} -> {dst}: {os.strerror(ctypes.get_errno())}")


def main() -> None:
    spec = json.loads(sys.argv[1])
    me = str(os.getpid())
    for procs in spec["cgroup_procs"]:
        try:
            with open(procs, "w") as f:
                f.write(me)
        except OSError as e:
            _fail(f"join cgroup {procs}: {e}")
    if spec["stage_binds"]:
        _stage(spec["stage_binds"])
    for name, value in spec["rlimits"].items():
        try:
            resource.setrlimit(getattr(resource, name), (value, value))
        except (OSError, ValueError) as e:
            _fail(f"setrlimit {name}={value}: {e}")
    uid, gid = spec["uid"], spec["gid"]
    if uid is not None:
        try:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        except OSError as e:
            _fail(f"drop to uid {uid}: {e}")
    _supervise(spec["argv"])


def _supervise(argv: list[str]) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        _fail(f"PR_SET_CHILD_SUBREAPER: {os.strerror(ctypes.get_errno())}")
    parent = os.getpid()
    child = os.fork()
    if child == 0:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(125)
        try:
            os.execve(argv[0], argv, {})
        except OSError as e:
            _fail(f"exec {argv[0]}: {e}")

    def on_term(signum, frame):
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, on_term)
    # Hold no copy of the pipes: the parent sees EOF as soon as the sandbox's side closes.
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, 65536)
    code = 125
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code
    os._exit(code)


if __name__ == "__main__":
    main()
