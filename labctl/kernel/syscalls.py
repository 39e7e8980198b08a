"""Thin ctypes wrappers for the syscalls Python 3.11 lacks (unshare, setns, mount, pivot_root, prctl, ...).

Each wrapper raises OSError with errno set, like the os module does. Python 3.12 added os.unshare and
os.setns; Debian 12 ships 3.11, so the lab calls libc itself. Reading this file is a good way to see
how small the container's kernel interface really is.
"""
from __future__ import annotations

import ctypes
import os


def _load_libc() -> ctypes.CDLL:
    # find_library runs `ldconfig -p` in a subprocess (a fork and an exec on every labctl start): try the
    # glibc soname first, which is what it finds on Debian anyway. (ctypes.util itself imports subprocess
    # and tempfile, ~2.5 ms: only imported when the soname fails.)
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        from ctypes.util import find_library
        return ctypes.CDLL(find_library("c"), use_errno=True)


_libc = _load_libc()

# Namespace flags, from <linux/sched.h>.
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# Mount flags, from <linux/mount.h>.
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MNT_DETACH = 0x2

# mount_setattr(2) (Linux 5.12): change the flags of a whole mount tree at once, which a remount cannot.
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_IDMAP = 0x100000   # (5.12) the mount shows its files' owners through a user namespace's maps
SYS_mount_setattr = 442   # the same number on every architecture (the generic syscall table)
# The new mount API (5.2): a mount as a file descriptor, detached from any tree until it is moved into one.
SYS_open_tree = 428
SYS_move_mount = 429
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4

# The name of each namespace kind in /proc/<pid>/ns, and its clone flag.
NAMESPACE_FLAGS = {
    "uts": CLONE_NEWUTS,
    "pid": CLONE_NEWPID,
    "ipc": CLONE_NEWIPC,
    "mnt": CLONE_NEWNS,
    "net": CLONE_NEWNET,
    "user": CLONE_NEWUSER,
    "cgroup": CLONE_NEWCGROUP,
    "time": CLONE_NEWTIME,
}


def _check(result: int, what: str) -> int:
    if result == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def unshare(flags: int) -> None:
    """unshare(2): move the calling process into new namespaces of the kinds in `flags`."""
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    """setns(2): join the namespace the file descriptor (an open /proc/<pid>/ns/<kind>) refers to."""
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(source: str | None, target: str, fstype: str | None = None, flags: int = 0,
          data: str | None = None) -> None:
    """mount(2): attach a filesystem (or bind, move, or change propagation with MS_* flags)."""
    def b(s):
        return s.encode() if s is not None else None
    _check(_libc.mount(b(source), b(target), b(fstype), ctypes.c_ulong(flags), b(data)),
           f"mount {source or ''} on {target}")


def umount2(target: str, flags: int = 0) -> None:
    """umount2(2): detach the filesystem mounted at `target` (MNT_DETACH: lazily)."""
    _check(_libc.umount2(target.encode(), ctypes.c_int(flags)), f"umount {target}")


class _MountAttr(ctypes.Structure):
    """struct mount_attr from <linux/mount.h>."""
    _fields_ = [(name, ctypes.c_uint64) for name in ("attr_set", "attr_clr", "propagation", "userns_fd")]


def mount_setattr(path: str, attr_set: int, recursive: bool = True, *, fd: int = AT_FDCWD,
                  userns_fd: int = 0) -> None:
    """mount_setattr(2) with AT_RECURSIVE: set MOUNT_ATTR_* flags on the mount at `path` and all below it.
    With `fd` (a mount from open_tree) and path "": that mount itself (AT_EMPTY_PATH). MOUNT_ATTR_IDMAP
    takes `userns_fd`, an open /proc/PID/ns/user, and only a detached mount may get it."""
    attr = _MountAttr(attr_set=attr_set, userns_fd=userns_fd)
    flags = (AT_RECURSIVE if recursive else 0) | (AT_EMPTY_PATH if not path else 0)
    _check(_libc.syscall(ctypes.c_long(SYS_mount_setattr), ctypes.c_int(fd), path.encode(),
                         ctypes.c_uint(flags), ctypes.byref(attr),
                         ctypes.c_size_t(ctypes.sizeof(attr))), f"mount_setattr {path or fd}")


def open_tree(path: str, flags: int = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC) -> int:
    """open_tree(2): with OPEN_TREE_CLONE, a bind mount of `path` as a file descriptor, attached nowhere
    (a "detached mount": what mount_setattr(MOUNT_ATTR_IDMAP) wants). Closing it unmounts it."""
    return _check(_libc.syscall(ctypes.c_long(SYS_open_tree), ctypes.c_int(AT_FDCWD), path.encode(),
                                ctypes.c_uint(flags)), f"open_tree {path}")


def move_mount(fd: int, target: str) -> None:
    """move_mount(2): attach the detached mount `fd` (from open_tree) at `target`."""
    _check(_libc.syscall(ctypes.c_long(SYS_move_mount), ctypes.c_int(fd), b"", ctypes.c_int(AT_FDCWD),
                         target.encode(), ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH)), f"move_mount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2) via syscall(SYS_pivot_root=155): make new_root the root, old root at put_old."""
    _check(_libc.syscall(ctypes.c_long(155), new_root.encode(), put_old.encode()), "pivot_root")


def sethostname(name: str) -> None:
    """sethostname(2): set the hostname of the calling process's UTS namespace."""
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname")


class _CloneArgs(ctypes.Structure):
    """struct clone_args from <linux/sched.h>, every field a __u64."""
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size", "tls",
        "set_tid", "set_tid_size", "cgroup")]


CLONE_INTO_CGROUP = 0x200000000
SYS_clone3 = 435
# The interpreter's own symbols (and libc's, through it), called *with* the GIL held: a PyDLL call does
# not release it, so no other thread can run Python code between the clone and the AfterFork call.
_python = ctypes.PyDLL(None, use_errno=True)


def fork_into_cgroup(cgroup_dir_fd: int) -> int:
    """fork(), but the child is born in the cgroup v2 directory open at `cgroup_dir_fd`:
    clone3(CLONE_INTO_CGROUP). Returns the child's PID in the parent and 0 in the child, like os.fork().

    Why not fork() and then write the PID into cgroup.procs? Moving a process takes the kernel's
    cgroup_threadgroup_rwsem for writing, and the first writer after a quiet spell waits for an RCU
    grace period: 10-20 ms here, longer than everything else a container start does. A child placed at
    birth takes that lock only for reading. os.fork() cannot pass the flag (Python 3.11), so this calls
    clone3(2) itself, wrapped in the calls CPython's documentation asks of any code that forks on its
    own (PyOS_BeforeFork, PyOS_AfterFork_Parent/_Child: the import lock, the GIL, os.register_at_fork)."""
    args = _CloneArgs(flags=CLONE_INTO_CGROUP, exit_signal=17, cgroup=cgroup_dir_fd)   # 17: SIGCHLD
    _python.PyOS_BeforeFork()
    pid = _python.syscall(ctypes.c_long(SYS_clone3), ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args)))
    if pid == 0:
        _python.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    _python.PyOS_AfterFork_Parent()
    if pid == -1:
        raise OSError(err, f"clone3(CLONE_INTO_CGROUP): {os.strerror(err)}")
    return pid


# prctl(2) options, from <linux/prctl.h>: step 9's capabilities, no_new_privs and seccomp.
PR_SET_KEEPCAPS = 8
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """prctl(2): read or change an attribute of the calling thread (its capability sets, no_new_privs, ...)."""
    return _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                              ctypes.c_ulong(arg4), ctypes.c_ulong(arg5)), f"prctl({option})")


class _CapHeader(ctypes.Structure):
    """struct __user_cap_header_struct from <linux/capability.h>."""
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    """struct __user_cap_data_struct: one 32-bit word of each set (version 3 takes two of them)."""
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """capset(2): set the calling thread's effective, permitted and inheritable sets (64-bit masks,
    bit N = capability N), as _LINUX_CAPABILITY_VERSION_3's two 32-bit words each."""
    data = (_CapData * 2)(*[_CapData((effective >> s) & 0xFFFFFFFF, (permitted >> s) & 0xFFFFFFFF,
                                     (inheritable >> s) & 0xFFFFFFFF) for s in (0, 32)])
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    _check(_libc.capset(ctypes.byref(header), data), "capset")


class _SockFprog(ctypes.Structure):
    """struct sock_fprog from <linux/filter.h>: a classic BPF program, `len` instructions of 8 bytes."""
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def seccomp_filter(program: bytes) -> None:
    """prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog): from now on the kernel runs this BPF program on
    every system call of this thread and of all it execs and forks; it cannot be removed, only added to.
    Needs CAP_SYS_ADMIN, or no_new_privs set first."""
    prog = _SockFprog(len(program) // 8, program)
    _check(_libc.prctl(ctypes.c_int(PR_SET_SECCOMP), ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(prog),
                       ctypes.c_ulong(0), ctypes.c_ulong(0)), "prctl(PR_SET_SECCOMP)")


def namespace_inode(pid: int | str, kind: str) -> int:
    """The inode number of /proc/<pid>/ns/<kind>: two processes share a namespace iff these are equal."""
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
