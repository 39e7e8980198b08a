"""Putting a container's processes into its cgroup (step 3) without the wait a move costs.

runc writes PID 1's PID into cgroup.procs from outside. That write takes the kernel's
cgroup_threadgroup_rwsem for writing, and the first writer after a quiet spell waits for an RCU grace
period: 10-20 ms here, longer than the rest of a container start. So the lab does it in two steps that
take no such lock:
  1. fork_into: the child is born in the cgroup's v2 directory, clone3(CLONE_INTO_CGROUP)
  2. join_self, first thing in the child: "0" into `tasks` in each v1 hierarchy (and into v2's
     cgroup.procs if clone3 was refused)
Used for PID 1 (create.py) and for every process `labctl exec` starts. `cgroup` is the description
containers/resources.py stores in the container's record: {"name", "dirs", "hierarchies"}.
"""
from __future__ import annotations

import errno
import os


def _dirs(cgroup: dict | None, version: int) -> list[str]:
    if not cgroup:
        return []
    return [cgroup["dirs"][h["mountpoint"]] for h in cgroup["hierarchies"]
            if h["version"] == version and h["mountpoint"] in cgroup["dirs"]]


def fork_into(cgroup: dict | None) -> int:
    """os.fork() for a process that belongs in the container's cgroup (PID 1, or one `exec` starts):
    the child is born in the cgroup's v2 directory, if it has one, by clone3(CLONE_INTO_CGROUP), and
    must then call join_self() before anything else. Neither step waits for the RCU grace period that
    writing a PID into cgroup.procs costs (10-20 ms, see syscalls.fork_into_cgroup)."""
    global _born_in_v2
    v2 = _dirs(cgroup, 2)
    _born_in_v2 = False
    if not v2:
        return os.fork()
    from labctl.errors import LabError
    from labctl.kernel import syscalls
    try:
        fd = os.open(v2[0], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise LabError(f"the container's cgroup {v2[0]} cannot be opened ({exc.strerror})",
                       "is the container still running? `labctl ps -a`") from None
    try:
        _born_in_v2 = True   # what the child sees (it is a copy of us at the clone)
        return syscalls.fork_into_cgroup(fd)
    except OSError as exc:
        _born_in_v2 = False
        if exc.errno in (errno.ENOSYS, errno.EPERM):
            # clone3 refused: a seccomp profile that blocks it (a container of containers) or a kernel
            # before 5.7. Fall back to fork(); the child joins v2 in join_self(), the slow way.
            return os.fork()
        raise LabError(f"could not start a process in the container's cgroup {v2[0]}: {exc.strerror}",
                       "is the container still running? `labctl ps -a`; `labctl doctor` checks cgroups") from None
    finally:
        os.close(fd)


_born_in_v2 = False


def join_self(cgroup: dict | None) -> None:
    """In the child of fork_into(): move into the container's cgroup in every v1 hierarchy ("0" into
    `tasks`), and into v2 if clone3 could not place us there at birth.

    "0" into `tasks` moves the calling thread, which for a single-threaded process (a fresh fork) is
    the whole process. Unlike a write into cgroup.procs it does not take the global
    cgroup_threadgroup_rwsem for writing, so it does not wait for an RCU grace period
    (kernel/cgroup/cgroup.c, cgroup_procs_write_start)."""
    files = [f"{d}/tasks" for d in _dirs(cgroup, 1)]
    if not _born_in_v2:
        files += [f"{d}/cgroup.procs" for d in _dirs(cgroup, 2)]
    for path in files:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
