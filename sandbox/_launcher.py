"""The privileged first step of every sandboxed run, executed as its own short-lived process.

    python -I -S sandbox/_launcher.py '<json spec>'      (started by sandbox.isolation, never by hand)

It does, in order, what must happen before bubblewrap starts and cannot be done safely from a threaded parent
(``preexec_fn`` is not thread-safe): join the run's cgroups, stage read-only sources that the unprivileged uid
could not reach in a private mount namespace (e.g. an interpreter under root's 0700 home), set rlimits, drop to
the run's unprivileged uid/gid, and exec bubblewrap with an empty environment. Any failure exits 125 with a
``mixrl-launcher:`` line on stderr; bubblewrap never started, so the parent reports ``sandbox_error``.
"""

import json
import os
import resource
import sys

_CLONE_NEWNS = 0x00020000
_MS_RDONLY, _MS_BIND, _MS_REC, _MS_PRIVATE = 0x1, 0x1000, 0x4000, 0x40000


def _fail(msg: str) -> None:
    os.write(2, f"mixrl-launcher: {msg}\n".encode())
    os._exit(125)


def _stage(binds: list[list[str]]) -> None:
    import ctypes

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
    try:
        os.execve(spec["argv"][0], spec["argv"], {})
    except OSError as e:
        _fail(f"exec {spec['argv'][0]}: {e}")


if __name__ == "__main__":
    main()
