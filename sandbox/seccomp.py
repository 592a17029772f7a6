"""A seccomp-BPF deny-list for sandboxed programs, built by hand (no libseccomp dependency).

bubblewrap loads the program with ``--seccomp FD`` right before it executes the sandboxed command, so the
filter binds the program and everything it forks, but not bubblewrap's own set-up.

What the filter refuses (EPERM unless noted), and why:
- syscalls that reconfigure the kernel or the mount/namespace view: mount, umount2, pivot_root, unshare, setns,
  the new mount API (open_tree ... fspick), clone with any CLONE_NEW* flag, clone3 (ENOSYS, so libc falls back to
  clone, whose flags the filter can inspect), swapon/off, reboot, sethostname, module and kexec loading, acct,
  quotactl, iopl/ioperm;
- syscalls that reach into other processes or the kernel's attack surface: ptrace, process_vm_readv/writev,
  pidfd_getfd, kcmp, bpf, perf_event_open, userfaultfd, io_uring_*, keyctl/add_key/request_key,
  open_by_handle_at/name_to_handle_at, syslog, personality;
- sockets of any family but AF_UNIX (the network namespace is already empty; this also stops netlink);
- every syscall of a foreign architecture (the process is killed) and the x32 ABI.

Only x86_64 is encoded; on other architectures :func:`build_filter` returns None and the sandbox runs without
seccomp (the namespaces, cgroups and rlimits still apply), which :mod:`sandbox.isolation` reports.
"""

from __future__ import annotations

import errno
import platform
import struct

# BPF opcodes (linux/filter.h) and seccomp return values (linux/seccomp.h).
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000
_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_SYSCALL_BIT = 0x40000000
# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]
_OFF_NR, _OFF_ARCH, _OFF_ARG0_LO = 0, 4, 16

_X86_64_DENY = {
    "ptrace": 101, "syslog": 103, "uselib": 134, "personality": 135, "vhangup": 153, "pivot_root": 155,
    "acct": 163, "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169,
    "sethostname": 170, "setdomainname": 171, "iopl": 172, "ioperm": 173, "init_module": 175,
    "delete_module": 176, "quotactl": 179, "lookup_dcookie": 212, "kexec_load": 246, "add_key": 248,
    "request_key": 249, "keyctl": 250, "unshare": 272, "move_pages": 279, "perf_event_open": 298,
    "name_to_handle_at": 303, "open_by_handle_at": 304, "setns": 308, "process_vm_readv": 310,
    "process_vm_writev": 311, "kcmp": 312, "finit_module": 313, "kexec_file_load": 320, "bpf": 321,
    "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "pidfd_getfd": 438,
}
_X86_64_CLONE, _X86_64_CLONE3, _X86_64_SOCKET = 56, 435, 41
# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
_CLONE_NEW_MASK = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
_AF_UNIX = 1


def _stmt(code: int, k: int) -> bytes:
    return struct.pack("<HBBI", code, 0, 0, k)


def _jump(code: int, k: int, jt: int, jf: int) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def build_filter(machine: str | None = None) -> bytes | None:
    """The filter as raw ``struct sock_filter`` records (what ``bwrap --seccomp`` reads), or None off x86_64.

    >>> len(build_filter("x86_64")) % 8, build_filter("aarch64")
    (0, None)
    """
    machine = machine or platform.machine()
    if machine not in ("x86_64", "amd64", "AMD64"):
        return None
    eperm = _RET_ERRNO | errno.EPERM
    prog = [
        _stmt(_LD_W_ABS, _OFF_ARCH),
        _jump(_JEQ_K, _AUDIT_ARCH_X86_64, 1, 0),
        _stmt(_RET_K, _RET_KILL_PROCESS),
        _stmt(_LD_W_ABS, _OFF_NR),
        _jump(_JGE_K, _X32_SYSCALL_BIT, 0, 1),
        _stmt(_RET_K, eperm),
    ]
    for nr in sorted(_X86_64_DENY.values()):
        prog += [_jump(_JEQ_K, nr, 0, 1), _stmt(_RET_K, eperm)]
    prog += [_jump(_JEQ_K, _X86_64_CLONE3, 0, 1), _stmt(_RET_K, _RET_ERRNO | errno.ENOSYS)]
    # clone: refuse namespace flags; the block ends in a return on both branches.
    prog += [
        _jump(_JEQ_K, _X86_64_CLONE, 0, 4),
        _stmt(_LD_W_ABS, _OFF_ARG0_LO),
        _jump(_JSET_K, _CLONE_NEW_MASK, 0, 1),
        _stmt(_RET_K, eperm),
        _stmt(_RET_K, _RET_ALLOW),
    ]
    # socket: AF_UNIX only.
    prog += [
        _jump(_JEQ_K, _X86_64_SOCKET, 0, 4),
        _stmt(_LD_W_ABS, _OFF_ARG0_LO),
        _jump(_JEQ_K, _AF_UNIX, 1, 0),
        _stmt(_RET_K, eperm),
        _stmt(_RET_K, _RET_ALLOW),
    ]
    prog.append(_stmt(_RET_K, _RET_ALLOW))
    return b"".join(prog)
