"""The build trace, read: each syscall buildtrace.py recorded, written as C, with the curriculum step
that explains it and one line on what it did for the container.

annotate() first names each process from the whole trace (name_roles), then reads the calls in time
order and learns as it goes:
  roles        the builder is `labctl`; the process that unshares CLONE_NEWPID is the `helper`; the next
               child it forks (before any setns(CLONE_NEWPID) back) is `PID 1` of the container; any
               other process is named by the program it execs (nft, ldconfig), else `child of ...`
  cgroup fds   an openat() of a file under /sys/fs/cgroup remembers its descriptor, so the write() that
               follows can say which cgroup file it set (and a close() forgets it)
Calls that build nothing (execvp trying each $PATH directory, a socket other than netlink, a chdir
that is not part of pivot_root's dance, files outside the cgroup tree) are left out.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Callable

from labctl.kernel import syscalls

# Flag names, from <linux/sched.h>, <linux/mount.h> and <linux/fs.h>, in the order they are printed.
CLONE_FLAGS = [(0x00000100, "CLONE_VM"), (0x00000200, "CLONE_FS"), (0x00000400, "CLONE_FILES"),
               (0x00000800, "CLONE_SIGHAND"), (0x00004000, "CLONE_VFORK"), (0x00010000, "CLONE_THREAD"),
               (0x00020000, "CLONE_NEWNS"), (0x00200000, "CLONE_CHILD_CLEARTID"),
               (0x01000000, "CLONE_CHILD_SETTID"), (0x02000000, "CLONE_NEWCGROUP"),
               (0x04000000, "CLONE_NEWUTS"), (0x08000000, "CLONE_NEWIPC"), (0x10000000, "CLONE_NEWUSER"),
               (0x20000000, "CLONE_NEWPID"), (0x40000000, "CLONE_NEWNET"), (0x00000080, "CLONE_NEWTIME"),
               (0x200000000, "CLONE_INTO_CGROUP")]
NAMESPACE_FLAGS = sum(syscalls.NAMESPACE_FLAGS.values())   # any of them: a process in new namespaces
MOUNT_FLAGS = [(0x1, "MS_RDONLY"), (0x2, "MS_NOSUID"), (0x4, "MS_NODEV"), (0x8, "MS_NOEXEC"),
               (0x20, "MS_REMOUNT"), (0x1000, "MS_BIND"), (0x2000, "MS_MOVE"), (0x4000, "MS_REC"),
               (1 << 17, "MS_UNBINDABLE"), (1 << 18, "MS_PRIVATE"), (1 << 19, "MS_SLAVE"), (1 << 20, "MS_SHARED")]
UMOUNT_FLAGS = [(0x1, "MNT_FORCE"), (0x2, "MNT_DETACH"), (0x4, "MNT_EXPIRE"), (0x8, "UMOUNT_NOFOLLOW")]
SOCKET_FAMILIES = {1: "AF_UNIX", 2: "AF_INET", 10: "AF_INET6", 16: "AF_NETLINK", 17: "AF_PACKET"}
NETLINK_PROTOCOLS = {0: "NETLINK_ROUTE", 12: "NETLINK_NETFILTER", 16: "NETLINK_GENERIC"}
CGROUP_ROOT = "/sys/fs/cgroup"


def decode_flags(value: int, table: list[tuple[int, str]], rest_as_signal: bool = False) -> str:
    """`MS_REC|MS_PRIVATE` from 0x44000; bits the table does not name stay as hex (or a signal name)."""
    names = [name for bit, name in table if value & bit]
    rest = value & ~sum(bit for bit, _ in table)
    if rest:
        if rest_as_signal and rest < 65:
            import signal
            with contextlib.suppress(ValueError):
                names.append(signal.Signals(rest).name)
                rest = 0
        if rest:
            names.append(hex(rest))
    return "|".join(names) or "0"


@dataclass
class Call:
    """One recorded syscall of the lab's process tree."""
    ts: int
    pid: int
    comm: str
    name: str
    ret: int
    args: list[int]
    strings: list[str]
    deref: int = 0
    duration: int = 0       # ns from entry to return
    role: str = ""
    text: str = ""          # the call as it would be written in C
    step: int = 0           # the curriculum step that explains it
    why: str = ""           # one line: what this call did for the container
    extra: dict = field(default_factory=dict)

    def as_dict(self, start_ns: int) -> dict:
        return {"ms": round((self.ts - start_ns) / 1e6, 3), "took_ms": round(self.duration / 1e6, 3),
                "pid": self.pid, "role": self.role,
                "comm": self.comm, "syscall": self.name, "call": self.text, "ret": self.ret,
                "step": self.step, "why": self.why}


@dataclass
class _Reading:
    """What annotate() has learnt so far from the calls before this one."""
    roles: dict[int, str]                                                    # host PID -> labctl, helper, PID 1
    cgroup_fds: dict[tuple[int, int], str] = field(default_factory=dict)    # (pid, fd) -> cgroup file
    kept: list[Call] = field(default_factory=list)


def _clone_flags(c: Call) -> int:
    return c.deref if c.name == "clone3" else (c.args[0] if c.name == "clone" else 0)


def name_roles(calls: list[Call], root_pid: int) -> dict[int, str]:
    """host PID -> role, from the whole trace in time order (the module docstring). Read whole, not as
    annotate() goes: that labctl's first child is a helper (or ldconfig, run by ctypes) shows only later.
    unshare(CLONE_NEWPID) names PID 1 only for the next child: `labctl run`'s helper setns()es back into
    its own PID namespace once PID 1 is forked, and the programs it runs at teardown (nft) are no PID 1."""
    parent: dict[int, int] = {}
    programs: dict[int, str] = {}
    helpers, firsts, pending = set(), set(), set()
    for c in sorted(calls, key=lambda c: c.ts):
        if c.ret < 0:
            continue
        if c.name == "unshare" and c.args[0] & syscalls.CLONE_NEWPID:
            helpers.add(c.pid)
            pending.add(c.pid)
        elif c.name == "setns" and c.args[1] & syscalls.CLONE_NEWPID:
            pending.discard(c.pid)
        elif c.name in ("clone", "clone3", "fork", "vfork") and c.ret > 0 and not _clone_flags(c) & 0x00010000:
            parent[c.ret] = c.pid                         # (0x10000: CLONE_THREAD, a thread, no process)
            if c.pid in pending:
                firsts.add(c.ret)
                pending.discard(c.pid)
        elif c.name == "execve":
            programs.setdefault(c.pid, os.path.basename(c.strings[0]))
    roles = {root_pid: "labctl"} | {pid: "helper" for pid in helpers} | {pid: "PID 1" for pid in firsts}
    for child, of in parent.items():
        roles.setdefault(child, programs.get(child) or f"child of {roles.get(of, of)}")
    return roles


def annotate(calls: list[Call], root_pid: int) -> list[Call]:
    """Keep the calls that build the container, and write each as C with its meaning and its step."""
    reading = _Reading(name_roles(calls, root_pid))
    for c in sorted(calls, key=lambda c: c.ts):
        c.role = reading.roles.get(c.pid, f"pid {c.pid}")
        explain = EXPLAIN.get(c.name)
        if explain is None or not explain(c, reading):
            continue
        c.text = f"{c.text} = {_ret(c)}"
        reading.kept.append(c)
    return reading.kept


def _ret(call: Call) -> str:
    return f"-1 {os.strerror(-call.ret)}" if call.ret < 0 else str(call.ret)


def _s(text: str) -> str:
    return f'"{text}"'


# Each explainer fills in c.text, c.why and c.step, and says whether the call is kept.

def _new_process(c: Call, r: _Reading) -> bool:
    flags = _clone_flags(c)
    if flags & 0x00010000:
        return False              # CLONE_THREAD: a thread of the same process (Python's), no new process
    if c.ret > 0:
        child = r.roles.get(c.ret, "")
        c.why = {"PID 1": "this child is PID 1 of the new PID namespace (unshare made it the next child's)",
                 "helper": "a helper process that will unshare and wait for the container"}.get(
            child, f"a new process ({child})" if child and not child.startswith("child of") else "a new process")
    c.text = f"{c.name}({decode_flags(flags, CLONE_FLAGS, rest_as_signal=True)})"
    if flags & NAMESPACE_FLAGS:
        c.why = "a new process in new namespaces"
    c.step = 1
    return True


def _unshare(c: Call, r: _Reading) -> bool:
    new_pid = c.args[0] & syscalls.CLONE_NEWPID
    c.text = f"unshare({decode_flags(c.args[0], CLONE_FLAGS)})"
    c.why = "new namespaces for this process" + (" (PID: for its next child)" if new_pid else "")
    c.step = 1
    return True


#: The calls explained by one fixed line: (how to write the call in C, what it did, its step).
_ONE_LINERS = {
    "setns": (lambda c: f"setns({c.args[0]}, {decode_flags(c.args[1], CLONE_FLAGS)})",
              "join an existing namespace through its /proc/<pid>/ns file", 1),
    "sethostname": (lambda c: f"sethostname({_s(c.strings[0])}, {c.args[1]})",
                    "the container's own hostname, in its new UTS namespace", 1),
    "pivot_root": (lambda c: f"pivot_root({_s(c.strings[0])}, {_s(c.strings[1])})",
                   "the container's root filesystem becomes / (the old root goes beneath it)", 2),
    "chroot": (lambda c: f"chroot({_s(c.strings[0])})",
               "change the root directory only (escapable: step 2 shows how)", 2),
}


def _one_liner(c: Call, r: _Reading) -> bool:
    write, c.why, c.step = _ONE_LINERS[c.name]
    c.text = write(c)
    return True


def _mount(c: Call, r: _Reading) -> bool:
    a, s = c.args, c.strings
    src = _s(s[0]) if a[0] else "NULL"
    fstype = _s(s[2]) if a[2] else "NULL"
    data = f", {_s(s[4])}" if a[4] and s[4] else ""
    c.text = f"mount({src}, {_s(s[1])}, {fstype}, {decode_flags(a[3], MOUNT_FLAGS)}{data})"
    c.why, c.step = _why_mount(s[1], s[2] if a[2] else "", a[3])
    return True


def _why_mount(target: str, fstype: str, flags: int) -> tuple[str, int]:
    if flags & syscalls.MS_PRIVATE and target == "/":
        return "stop mount events propagating to and from the host (MS_PRIVATE)", 2
    if flags & syscalls.MS_REMOUNT and flags & syscalls.MS_RDONLY:
        return "remount read-only: the shared lab image stays unchanged", 2
    if flags & syscalls.MS_BIND:
        return "bind the root filesystem onto itself: pivot_root needs a mount point", 2
    explain = {"proc": "a /proc for the new PID namespace: ps inside shows only the container",
               "tmpfs": "an empty in-memory file system (a minimal /dev, /dev/shm or /tmp)",
               "devpts": "the container's own pseudo-terminals (newinstance)",
               "sysfs": "/sys, read-only", "overlay": "the image's layers stacked into one root (OverlayFS)",
               "cgroup2": "the cgroup file system", "cgroup": "a cgroup v1 hierarchy"}
    step = 4 if fstype == "overlay" else 3 if fstype.startswith("cgroup") else 2
    return explain.get(fstype, f"a {fstype or 'bind'} mount"), step


def _umount2(c: Call, r: _Reading) -> bool:
    c.text = f"umount2({_s(c.strings[0])}, {decode_flags(c.args[1], UMOUNT_FLAGS)})"
    c.why, c.step = "detach the old root, stacked under the new one: no path leads to the host", 2
    if c.duration > 2_000_000:
        c.why += " (the kernel waits for an RCU grace period before it returns)"
    return True


def _chdir(c: Call, r: _Reading) -> bool:
    into_root = c.strings[0] == "/"
    c.text = f"chdir({_s(c.strings[0])})"
    c.why = "step into the new root" if into_root else "pivot_root works on the current directory"
    c.step = 2
    return into_root or bool(r.kept and r.kept[-1].name == "mount")


def _mknod(c: Call, r: _Reading) -> bool:
    a = c.args
    path = c.strings[1] if c.name == "mknodat" else c.strings[0]
    mode, dev = (a[2], a[3]) if c.name == "mknodat" else (a[1], a[2])
    c.text = f"{c.name}({_s(path)}, S_IFCHR|{mode & 0o777:o}, makedev({os.major(dev)}, {os.minor(dev)}))"
    if dev == 0:    # unpacking an image layer: an OCI .wh.NAME file becomes overlayfs's whiteout
        c.why, c.step = f"an OverlayFS whiteout: this layer deletes {os.path.basename(path)} of the ones below", 4
    else:
        c.why, c.step = f"device node {os.path.basename(path)} in the container's own /dev", 2
    return True


def _socket(c: Call, r: _Reading) -> bool:
    a = c.args
    if SOCKET_FAMILIES.get(a[0]) != "AF_NETLINK":
        return False
    c.text = f"socket(AF_NETLINK, {a[1]}, {NETLINK_PROTOCOLS.get(a[2], a[2])})"
    c.why, c.step = "talk to the kernel's network stack (links, addresses, routes)", 6
    return True


def _close(c: Call, r: _Reading) -> bool:
    r.cgroup_fds.pop((c.pid, c.args[0]), None)   # so a later file on the same number is not taken for it
    return False


def _openat(c: Call, r: _Reading) -> bool:
    """Never kept itself: the write that follows says what was written, and where."""
    if c.ret >= 0:
        r.cgroup_fds.pop((c.pid, c.ret), None)
        if c.strings[1].startswith(CGROUP_ROOT):
            r.cgroup_fds[(c.pid, c.ret)] = c.strings[1]
    return False


def _write(c: Call, r: _Reading) -> bool:
    path = r.cgroup_fds.get((c.pid, c.args[0]))
    if path is None:
        return False
    value = c.strings[1][:c.args[2]]
    c.text = f"write({c.args[0]} /* {_cgroup_relative(path)} */, {_s(value)}, {c.args[2]})"
    name = os.path.basename(path)
    c.why = f"move process {value} into the cgroup" if name in ("cgroup.procs", "tasks") \
        else f"set {name} of the container's cgroup"
    c.step = 3
    return True


def _cgroup_relative(path: str) -> str:
    """/sys/fs/cgroup/memory/x/labctl/y/memory.max -> memory/.../y/memory.max (short enough to read)."""
    parts = path[len(CGROUP_ROOT):].strip("/").split("/")
    return "/".join(parts[:1] + (["..."] if len(parts) > 3 else []) + parts[-2:]) if len(parts) > 1 else path


def _mkdir(c: Call, r: _Reading) -> bool:
    path = c.strings[1] if c.name == "mkdirat" else c.strings[0]
    if not path.startswith(CGROUP_ROOT):
        return False
    c.text = f"{c.name}({_s(path)})"
    c.why = ("a new cgroup is a new directory in the hierarchy" if c.name != "rmdir"
             else "an empty cgroup is removed with rmdir")
    c.step = 3
    return True


def _execve(c: Call, r: _Reading) -> bool:
    if c.ret == -2:
        return False          # ENOENT: execvp trying each directory of $PATH
    c.text = f"execve({_s(c.strings[0])}, ...)"
    c.why, c.step = f"{c.role} becomes the container's program" if c.role == "PID 1" else "run a program", 1
    return True


#: syscall name -> its explainer; a call whose name is not here is not kept.
EXPLAIN: dict[str, Callable[[Call, _Reading], bool]] = {
    "clone": _new_process, "clone3": _new_process, "fork": _new_process, "vfork": _new_process,
    "unshare": _unshare, "setns": _one_liner, "sethostname": _one_liner, "pivot_root": _one_liner,
    "chroot": _one_liner, "mount": _mount, "umount2": _umount2, "chdir": _chdir, "mknodat": _mknod, "mknod": _mknod,
    "socket": _socket, "close": _close, "openat": _openat, "write": _write,
    "mkdir": _mkdir, "mkdirat": _mkdir, "rmdir": _mkdir, "execve": _execve,
}
